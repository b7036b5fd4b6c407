"""A checkpoint written on a GPU (tests/fixtures, made by scripts/make_gpu_checkpoint_fixture.py
on an H100) restores on this CPU: as a model, and as a training state to resume from."""

import os
import tarfile

import jax
import numpy as np

from bench import common as bench_common
from mspe_jax import checkpointer, jax_utils, losses, npz, optim, workdir
from mspe_jax.mspe_step import MSPEStep
from tests import runner

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "gpu_checkpoint.tar.gz")


def test_gpu_checkpoint_restores_on_cpu(tmp_path):
  with tarfile.open(FIXTURE) as tar:
    tar.extractall(tmp_path, filter="data")
  work = tmp_path / "gpu_workdir"
  saved_on = (work / "saved_on.txt").read_text()
  assert "gpu" in saved_on.lower() and jax.default_backend() == "cpu"
  expected = runner.npz(work / "expected_params.npz")
  model, params, step = workdir.load_from_workdir(str(work))
  assert step == 2 and model.base_sizes == (1, 2, 3, 4)
  got = {k: np.asarray(v) for k, v in npz.flatten(params).items()}
  assert sorted(got) == sorted(expected)
  for k in expected:
    np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
  # As train.py resumes: into the MSPE step's TrainState, on the current mesh's replicated
  # sharding (the fixture was saved as a plain dict of the same fields).
  mesh = jax_utils.make_mesh()
  tx, _ = optim.make_optimizer(bench_common._optim_cfg(), 10)  # noqa: SLF001  (as the script)
  state = MSPEStep(model, tx, mesh, losses.make_loss("ce")).init(params)
  ckpt = checkpointer.Checkpointer(str(work / "checkpoints"))
  restored_step, state = ckpt.restore_latest(
      jax_utils.abstract_like(state, jax_utils.replicated(mesh)))
  ckpt.close()
  assert restored_step == 2 and int(state.step) == 2
  leaf = jax.tree_util.tree_leaves(state.params)[0]
  assert leaf.sharding.device_set == set(jax.devices())
  np.testing.assert_array_equal(np.asarray(state.params["mspe"]["embedding_0"]["kernel"]),
                                expected["mspe/embedding_0/kernel"])
