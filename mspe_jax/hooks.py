"""Hooks: code the training loop calls at fixed points, installed with ``hooks=(...)``.

    train_lib.train_and_evaluate(config, workdir, hooks=[MyHook()])

Every method is optional (the defaults do nothing). Steps are numbered from 1: ``step`` is
the step about to run (``before_step``) or just run (``after_step``). The tests use hooks to
inject faults (a SIGKILL, NaN pixels) into real runs; users can inspect batches or state.
"""

from __future__ import annotations


class Hook:
  """Base class of training-loop hooks."""

  def before_step(self, step: int, batch: dict) -> dict:
    """Called with this host's numpy batch before the step; returns the batch to use."""
    del step
    return batch

  def after_step(self, step: int, state, metrics) -> None:
    """Called after the step, its logging and the start of its checkpoint save (if any).

    ``state`` and ``metrics`` are device arrays; reading them waits for the step.
    """
    del step, state, metrics
