"""A checkpoint written on a GPU (tests/fixtures, made by scripts/make_gpu_checkpoint_fixture.py
on an H100) restores on this CPU: as a model, and as a training state to resume from."""

import os
import tarfile

import jax
import numpy as np

from mspe_jax import checkpoints, ckpt_manager, jax_utils
from tests import runner

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "gpu_checkpoint.tar.gz")


def test_gpu_checkpoint_restores_on_cpu(tmp_path):
  with tarfile.open(FIXTURE) as tar:
    tar.extractall(tmp_path, filter="data")
  work = tmp_path / "gpu_workdir"
  saved_on = (work / "saved_on.txt").read_text()
  assert "gpu" in saved_on.lower() and jax.default_backend() == "cpu"
  expected = runner.npz(work / "expected_params.npz")
  model, params, step = ckpt_manager.load_from_workdir(str(work))
  assert step == 2 and model.base_sizes == (1, 2, 3, 4)
  got = {k: np.asarray(v) for k, v in checkpoints.flatten(params).items()}
  assert sorted(got) == sorted(expected)
  for k in expected:
    np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
  # As train.py resumes: onto the current mesh's replicated sharding.
  mesh = jax_utils.make_mesh()
  ckpt = ckpt_manager.Checkpointer(str(work / "checkpoints"))
  target = {"params": params, "opt_state": None, "step": 0}
  meta = ckpt._mngr().item_metadata(2).tree  # noqa: SLF001
  target["opt_state"] = jax.tree_util.tree_map(
      lambda m: np.zeros(m.shape, m.dtype), meta["opt_state"])
  restored_step, state = ckpt.restore_latest(
      ckpt_manager.abstract_like(target, jax_utils.replicated(mesh)))
  ckpt.close()
  assert restored_step == 2
  leaf = jax.tree_util.tree_leaves(state["params"])[0]
  assert leaf.sharding.device_set == set(jax.devices())
