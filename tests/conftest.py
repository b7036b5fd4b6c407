"""Shared fixtures: self-made checkpoints in the exact AugReg / big_vision formats."""

import numpy as np
import pytest

from tests import reference as ref

TINY = dict(width=32, depth=2, heads=4, mlp=64, patch=4, grid=7, classes=10)


@pytest.fixture(scope="session")
def augreg_arrays():
  return ref.augreg_arrays(0, **TINY)


@pytest.fixture(scope="session")
def augreg_file(tmp_path_factory, augreg_arrays):
  path = tmp_path_factory.mktemp("ckpt") / "augreg_tiny.npz"
  np.savez(path, **augreg_arrays)
  return path


@pytest.fixture
def images():
  def make(n, h, w, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, 3)).astype(np.float32)
  return make


# ----------------------------------------------------------------------------- the demo
# A shortened `make demo` (same library code as train.py / eval.py): MSPE with labels and
# label-free MSPE on the shipped model, then a sweep on part of the test set.

SHIPPED = "assets/fashion_mnist_vit.npz"
DEMO_STEPS = {"mspe": 150, "mspe_distill": 40}
DEMO_BATCH = 64
DEMO_EVAL_IMAGES = 1000


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
  from configs import fashion_mnist_eval, fashion_mnist_mspe, fashion_mnist_mspe_distill
  from mspe_jax import data, eval_lib, train_lib

  root = tmp_path_factory.mktemp("demo")
  seen_keys = set()
  real_iterator = data.train_iterator

  def spy(*args, **kwargs):  # records what the training loop receives
    for batch in real_iterator(*args, **kwargs):
      seen_keys.update(batch)
      yield batch

  summaries = {}
  for name, module in (("mspe", fashion_mnist_mspe), ("mspe_distill", fashion_mnist_mspe_distill)):
    cfg = module.get_config()
    cfg.total_steps = DEMO_STEPS[name]
    cfg.input.batch_size = DEMO_BATCH
    cfg.eval_every = None
    cfg.checkpoint_every = DEMO_STEPS[name]
    cfg.progress_bar = False
    cfg.compilation_cache_dir = str(root / "cache")
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(data, "train_iterator", spy)
      summaries[name] = train_lib.train_and_evaluate(cfg, str(root / name))
    summaries[name]["batch_keys"] = sorted(seen_keys)
    seen_keys.clear()

  ecfg = fashion_mnist_eval.get_config()
  ecfg.compare.mspe_distill = str(root / "mspe_distill")  # and the workdir's own run as mspe
  ecfg.methods = ("vanilla", "pi", "img_resize")
  ecfg.resolutions = (7, 10, 14, 21, 28, 56)
  ecfg.widths = (28,)
  ecfg.fixed_widths = ()
  ecfg.grid_sizes = (7, 14, 28)
  ecfg.routings = ("geometric", "larger", "smaller", "range")
  ecfg.eval_examples = DEMO_EVAL_IMAGES
  ecfg.batch_size = 500
  ecfg.progress_bar = False
  result = eval_lib.evaluate(ecfg, str(root / "mspe"))
  return {"root": root, "summaries": summaries, "eval": result, "eval_config": ecfg}


def top1(result, method, h, w=None, sweep=None):
  w = h if w is None else w
  sweep = sweep or ("square" if h == w else None)
  for r in result["rows"]:
    if r["method"] == method and r["height"] == h and r["width"] == w and (
        sweep is None or r["sweep"] == sweep):
      return r["top1"]
  raise KeyError((method, h, w))
