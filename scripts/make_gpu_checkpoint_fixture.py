"""Writes tests/fixtures/gpu_checkpoint.tar.gz: a real training checkpoint saved on a GPU.

Run on a machine with an accelerator (it refuses a CPU-only one):

  python scripts/make_gpu_checkpoint_fixture.py OUT_DIR

Two MSPE steps of the tiny AugReg-format test model on synthetic data, with the same
StepFunctions and Checkpointer as train.py, then a tarball of the workdir (orbax
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
from mspe_jax import checkpoints, ckpt_manager, jax_utils, losses, optim, steps  # noqa: E402
from tests import reference  # noqa: E402


def main(out_dir, allow_cpu=False):
  if jax.default_backend() == "cpu" and not allow_cpu:
    raise SystemExit("This must run on an accelerator (the point is a non-CPU checkpoint).")
  os.makedirs(out_dir, exist_ok=True)
  work = os.path.join(out_dir, "gpu_workdir")
  npz = os.path.join(out_dir, "tiny.npz")
  np.savez(npz, **reference.augreg_arrays(0))
  model, params = checkpoints.load_pretrained(npz, patch_embed="mspe")
  mesh = jax_utils.make_mesh()
  tx, _ = optim.make_optimizer(common._optim_cfg(), 10)  # noqa: SLF001
  fns = steps.StepFunctions(model, tx, mesh, losses.make_loss("ce"))
  trainable, frozen = jax_utils.replicate(steps.split_params(params, "mspe"), mesh)
  opt_state = jax_utils.replicate(tx.init(trainable), mesh)
  rng = np.random.default_rng(0)
  batch = jax_utils.shard_batch({"image": rng.uniform(-1, 1, (8, 28, 28, 3)).astype(np.float32),
                                 "label": rng.integers(0, 10, 8).astype(np.int32)}, mesh)
  subsets = ((7,), (14,), (21,), (28,))
  for step in range(2):
    terms = steps.draw_terms(step, 0, steps.validate_subsets(subsets, model), model, 1.0)
    grads = [fns.value_and_grad(trainable, frozen, batch["image"], batch["label"], None,
                                t.weight, t)[1] for t in terms]
    trainable, opt_state, _ = fns.update(trainable, opt_state, grads)
  merged = steps.merge_params(trainable, frozen)
  print("saving from", {str(x.sharding) for x in jax.tree_util.tree_leaves(merged)})
  os.makedirs(work, exist_ok=True)
  ckpt_manager.save_model_config(work, model)
  ckpt = ckpt_manager.Checkpointer(os.path.join(work, "checkpoints"), async_save=False)
  ckpt.save(2, {"params": merged, "opt_state": opt_state, "step": 2})
  ckpt.close()
  checkpoints.save_npz(os.path.join(work, "expected_params.npz"), jax.device_get(merged))
  with open(os.path.join(work, "saved_on.txt"), "w") as f:
    f.write(f"{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}\n")
  with tarfile.open(os.path.join(out_dir, "gpu_checkpoint.tar.gz"), "w:gz") as tar:
    tar.add(work, arcname="gpu_workdir")
  print("wrote", os.path.join(out_dir, "gpu_checkpoint.tar.gz"))


if __name__ == "__main__":
  main(sys.argv[1], allow_cpu="--allow-cpu" in sys.argv)
