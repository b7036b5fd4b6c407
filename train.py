r"""Trains MSPE (or a ViT from scratch) as a config says.

  python train.py --config configs/vit_b_mspe.py --workdir runs/vit_b_mspe
  python train.py --config configs/fashion_mnist_mspe.py --workdir runs/demo \
      --config.total_steps=100

``--config path.py:arg`` passes ``arg`` to ``get_config``; ``--config.x=y`` overrides a
field (a field that does not exist is an error that names it). Re-running the same command
resumes from the last checkpoint in ``--workdir``.
"""

from absl import app, flags
from ml_collections import config_flags

from mspe_jax.config_cli import parse_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config (path.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and model.npz.")
flags.mark_flags_as_required(["config", "workdir"])


def train(config, workdir: str, hooks=()) -> dict:
  """What ``main`` runs (``hooks``: see ``mspe_jax.hooks``); prints the final summary."""
  import logging
  for name in ("absl", "jax"):  # orbax's per-save chatter, backend probing
    logging.getLogger(name).setLevel(logging.WARNING)
  import jax
  if config.multihost:
    jax.distributed.initialize()
  from mspe_jax import train_lib
  logging.getLogger("mspe_jax").info("Config:\n%s", config)
  summary = train_lib.train_and_evaluate(config, workdir, hooks)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
