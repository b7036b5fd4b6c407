"""Writes tests/fixtures/gpu_checkpoint.tar.gz: a real training checkpoint saved on a GPU.

Run on a machine with an accelerator (it refuses a CPU-only one):

  python scripts/make_gpu_checkpoint_fixture.py OUT_DIR

Two MSPE steps of the tiny AugReg-format test model on synthetic data, with the same
MSPEStep and Checkpointer as train.py, then a tarball of the workdir (orbax
checkpoint + model_config.json) and the expected parameters as .npz. The CPU test restores
it and compares.
"""

import os
import sys
import tarfile

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402
from mspe_jax import checkpointer, jax_utils, losses, npz, optim, terms, workdir  # noqa: E402
from mspe_jax.mspe_step import MSPEStep  # noqa: E402
from tests import reference  # noqa: E402


def main(out_dir, allow_cpu=False):
  if jax.default_backend() == "cpu" and not allow_cpu:
    raise SystemExit("This must run on an accelerator (the point is a non-CPU checkpoint).")
  os.makedirs(out_dir, exist_ok=True)
  work = os.path.join(out_dir, "gpu_workdir")
  path = os.path.join(out_dir, "tiny.npz")
  np.savez(path, **reference.augreg_arrays(0))
  model, params = npz.load_pretrained(path, "mspe")
  mesh = jax_utils.make_mesh()
  tx, _ = optim.make_optimizer(common._optim_cfg(), 10)  # noqa: SLF001
  step = MSPEStep(model, tx, mesh, losses.make_loss("ce"))
  state = jax_utils.replicate(step.init(params), mesh)
  rng = np.random.default_rng(0)
  batch = jax_utils.shard_batch({"image": rng.uniform(-1, 1, (8, 28, 28, 3)).astype(np.float32),
                                 "label": rng.integers(0, 10, 8).astype(np.int32)}, mesh)
  subsets = terms.validate_subsets(((7,), (14,), (21,), (28,)), model)
  for i in range(2):
    state, _ = step(state, batch, terms.draw_terms(i, 0, subsets, model, 1.0))
  print("saving from", {str(x.sharding) for x in jax.tree_util.tree_leaves(state.params)})
  os.makedirs(work, exist_ok=True)
  workdir.save_model_config(work, model)
  ckpt = checkpointer.Checkpointer(os.path.join(work, "checkpoints"), async_save=False)
  ckpt.save(2, state)
  ckpt.close()
  npz.save_npz(os.path.join(work, "expected_params.npz"), jax.device_get(state.params))
  with open(os.path.join(work, "saved_on.txt"), "w") as f:
    f.write(f"{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}\n")
  with tarfile.open(os.path.join(out_dir, "gpu_checkpoint.tar.gz"), "w:gz") as tar:
    tar.add(work, arcname="gpu_workdir")
  print("wrote", os.path.join(out_dir, "gpu_checkpoint.tar.gz"))


if __name__ == "__main__":
  main(sys.argv[1], allow_cpu="--allow-cpu" in sys.argv)
