r"""Resolution and aspect-ratio sweep of a training run and the baselines; tables and plots.

  python eval.py --config configs/fashion_mnist_eval.py --workdir runs/demo
  python eval.py --config configs/vit_b_eval.py --workdir runs/vit_b_mspe \
      --config.data.data_dir=/data/tfds

Evaluates the newest checkpoint of the run in ``--workdir`` (the output names it) against the
baselines on ``config.pretrained``; outputs land in ``<workdir>/eval/`` (or ``--out_dir``):
results.md (also printed), results.json, results.csv and PNG plots.
"""

from absl import app, flags
from ml_collections import config_flags

from mspe_jax.config_cli import parse_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Eval config (path.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py workdir: its model is evaluated and "
                                "the results go to <workdir>/eval.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the results go (default <workdir>/eval).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import logging
  for name in ("absl", "jax"):  # orbax's chatter, backend probing
    logging.getLogger(name).setLevel(logging.WARNING)
  from mspe_jax import eval_lib
  result = eval_lib.evaluate(_CONFIG.value, _WORKDIR.value, _OUT_DIR.value)
  print(result["markdown"])
  print("Wrote:", ", ".join(sorted(result["paths"].values())))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
