"""Fault injection through the training loop's hooks (``mspe_jax.hooks``).

In-process: ``train_lib.train_and_evaluate(config, workdir, hooks=[NaNPixelsAt(5)])``.
As a process (what a pre-empted job looks like): ``python tests/fault_hooks.py`` takes
train.py's flags plus ``--kill_at_step`` (SIGKILL when that step starts) and
``--kill_after_save_at_step`` (SIGKILL right after that step's checkpoint save has started,
while orbax is still writing it).
"""

import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mspe_jax.hooks import Hook  # noqa: E402


def _sigkill_self() -> None:
  """Die like a pre-empted job: no cleanup, no flushing."""
  os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(Hook):
  def __init__(self, step: int):
    self.step = step

  def before_step(self, step, batch):
    if step == self.step:
      _sigkill_self()
    return batch


class KillAfterSaveAtStep(Hook):
  def __init__(self, step: int):
    self.step = step

  def after_step(self, step, state, metrics):
    if step == self.step:
      _sigkill_self()


class NaNPixelsAt(Hook):
  """NaN pixels in one step's batch: a non-finite loss at that step."""

  def __init__(self, step: int):
    self.step = step

  def before_step(self, step, batch):
    if step == self.step:
      return dict(batch, image=np.full_like(batch["image"], np.nan))
    return batch


if __name__ == "__main__":
  from absl import app, flags

  import train
  from mspe_jax.config_cli import parse_flags

  kill_at = flags.DEFINE_integer("kill_at_step", None, "SIGKILL when this step starts.")
  kill_after_save = flags.DEFINE_integer("kill_after_save_at_step", None,
                                         "SIGKILL once this step's checkpoint save started.")

  def main(argv):
    del argv
    hooks = []
    if kill_at.value:
      hooks.append(KillAtStep(kill_at.value))
    if kill_after_save.value:
      hooks.append(KillAfterSaveAtStep(kill_after_save.value))
    train.train(train._CONFIG.value, train._WORKDIR.value, hooks)  # noqa: SLF001

  app.run(main, flags_parser=parse_flags)
