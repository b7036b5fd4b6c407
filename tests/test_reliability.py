"""Faults: damaged checkpoints, a full disk, NaN/inf, determinism. Nothing finished is lost."""

import glob
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fashion_mnist_mspe
from mspe_jax import checkpointer, jax_utils, train_lib
from mspe_jax.guard import NonFiniteError, NonFiniteGuard
from mspe_jax.mspe_step import MSPEStep
from tests import fault_hooks, runner


def _state(v):
  return {"params": {"w": np.full(64, v, np.float32), "b": np.arange(3, dtype=np.float32) + v},
          "step": int(v)}


def _target():
  return jax_utils.abstract_like(_state(0), jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def _saved(tmp_path, steps=(1, 2, 3)):
  ckpt = checkpointer.Checkpointer(str(tmp_path), keep=10)
  for s in steps:
    ckpt.save(s, _state(s))
  ckpt.close()
  return str(tmp_path)


def _data_files(step_dir):
  return sorted(f for f in glob.glob(os.path.join(step_dir, "**", "d", "*"), recursive=True)
                if os.path.isfile(f))


@pytest.mark.parametrize("damage", ["missing_array_file", "zero_length_file", "no_commit_marker",
                                    "corrupted_bytes"])
def test_damaged_latest_step_is_skipped(tmp_path, damage, caplog):
  directory = _saved(tmp_path)
  step3 = os.path.join(directory, "3")
  files = _data_files(step3)
  assert files
  if damage == "missing_array_file":
    for f in files:
      os.remove(f)
  elif damage == "zero_length_file":
    open(files[0], "w").close()
  elif damage == "no_commit_marker":
    os.remove(os.path.join(step3, checkpointer.COMMIT_MARKER))
  else:
    for f in files:
      data = bytearray(open(f, "rb").read())
      data[len(data) // 2:] = b"\xff" * (len(data) - len(data) // 2)
      open(f, "wb").write(bytes(data))
  with caplog.at_level(logging.WARNING):
    step, state = checkpointer.Checkpointer(directory).restore_latest(_target())
  assert step == 2
  np.testing.assert_array_equal(state["params"]["w"], _state(2)["params"]["w"])
  assert f"Skipping damaged checkpoint {step3}" in caplog.text
  # moved aside, not deleted
  assert not os.path.exists(step3) and os.path.isdir(step3 + ".damaged-0")


def test_no_good_step_left_is_an_error_and_deletes_nothing(tmp_path):
  directory = _saved(tmp_path, (1, 2))
  for s in (1, 2):
    os.remove(os.path.join(directory, str(s), checkpointer.COMMIT_MARKER))
  before = sorted(os.listdir(directory))
  with pytest.raises(checkpointer.NoGoodCheckpointError,
                     match=r"steps \[1, 2\] are all damaged.*Nothing was deleted"):
    checkpointer.Checkpointer(directory).restore_latest(_target())
  assert sorted(os.listdir(directory)) == before


def _disk_full_run(tmp_path):
  """Runs the child on a full disk: a 300 kB tmpfs in a mount namespace where this machine
  allows one (as here and in CI), else a file-size limit (EFBIG instead of ENOSPC)."""
  child = os.path.join(runner.REPO, "tests", "disk_full_child.py")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  mount = tmp_path / "small_fs"
  mount.mkdir()
  script = f"mount -t tmpfs -o size=300k tmpfs {mount} && {sys.executable} {child} {mount}/ckpt"
  attempts = []
  if shutil.which("unshare"):
    attempts.append(["unshare", "-rm", "sh", "-c", script])
  if os.geteuid() == 0:
    attempts.append(["sh", "-c", script + f"; s=$?; umount {mount}; exit $s"])
  for cmd in attempts:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode == 0:
      return "No space left on device", proc
  proc = subprocess.run([sys.executable, child, str(tmp_path / "ckpt"), "--fsize-limit"],
                        capture_output=True, text=True, timeout=300, env=env)
  return "File too large", proc


def test_disk_full_while_saving_fails_loudly_and_keeps_the_previous_step(tmp_path):
  reason, proc = _disk_full_run(tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert "Saving checkpoint step 2" in out["error"] and reason in out["error"]
  assert "Earlier checkpoints are intact (latest: 1)" in out["error"]
  assert out["steps"] == [1] and out["restored_step"] == 1 and out["intact"]


def test_disk_full_fallback_file_size_limit(tmp_path):
  """The fallback used where no tmpfs can be mounted fails the same way."""
  child = os.path.join(runner.REPO, "tests", "disk_full_child.py")
  proc = subprocess.run([sys.executable, child, str(tmp_path / "ckpt"), "--fsize-limit"],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert "Saving checkpoint step 2" in out["error"] and "File too large" in out["error"]
  assert out["steps"] == [1] and out["restored_step"] == 1 and out["intact"]


# ----------------------------------------------------------------- through the training loop

@pytest.fixture(scope="module")
def tiny_config(augreg_file, tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("cache"))

  def make(**overrides):
    cfg = fashion_mnist_mspe.get_config("smoke")
    cfg.init_file = str(augreg_file)
    cfg.mspe.resolutions = ((7,), (14,), (21,), (28, 35))
    cfg.mspe.freeze_native_kernel = False
    cfg.checkpoint_every = 2
    cfg.eval_every = None
    cfg.progress_bar = False
    cfg.compilation_cache_dir = cache
    for k, v in overrides.items():
      setattr(cfg, k, v)
    return cfg
  return make


def _params(workdir):
  return runner.npz(os.path.join(workdir, "model.npz"))


def test_same_seed_is_bitwise_deterministic(tiny_config, tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  train_lib.train_and_evaluate(tiny_config(total_steps=6), str(a))
  train_lib.train_and_evaluate(tiny_config(total_steps=6), str(b))
  pa, pb = _params(a), _params(b)
  for k in pa:
    np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
  train_lib.train_and_evaluate(tiny_config(total_steps=6, seed=1), str(tmp_path / "c"))
  pc = _params(tmp_path / "c")
  assert any(not np.array_equal(pa[k], pc[k]) for k in pa)  # the seed matters


def test_damaged_checkpoint_in_a_run_resumes_from_the_previous_one(tiny_config, tmp_path, caplog):
  # A constant learning rate, so that a 4-step run extended to 6 equals a 6-step run.
  ref = tmp_path / "ref"
  constant = dict(total_steps=6)
  cfg = tiny_config(**constant)
  cfg.optim.decay = "constant"
  train_lib.train_and_evaluate(cfg, str(ref))
  work = tmp_path / "work"
  cfg4 = tiny_config(total_steps=4)
  cfg4.optim.decay = "constant"
  train_lib.train_and_evaluate(cfg4, str(work))
  step4 = work / "checkpoints" / "4"
  open(_data_files(str(step4))[0], "w").close()  # a copy cut short
  with caplog.at_level(logging.WARNING):
    out = train_lib.train_and_evaluate(cfg, str(work))
  assert f"Skipping damaged checkpoint {step4}" in caplog.text
  assert out["origin"].startswith("checkpoint step 2")
  pr, pw = _params(ref), _params(work)
  for k in pr:
    np.testing.assert_array_equal(pw[k], pr[k], err_msg=k)


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_nonfinite_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path,
                                                                         kind, monkeypatch):
  cfg = tiny_config(total_steps=8)
  hooks = []
  if kind == "loss":
    hooks.append(fault_hooks.NaNPixelsAt(5))  # NaN pixels: a non-finite loss at step 5
  else:  # the gradients of step 5 come out NaN (the loss stays finite)
    real, calls = MSPEStep.gradients, itertools.count(1)

    def poisoned(self, params, batch, terms):
      values, grads = real(self, params, batch, terms)
      if next(calls) == 5:
        grads = [g.replace(dtokens=g.dtokens * jnp.nan) for g in grads]
      return values, grads
    monkeypatch.setattr(MSPEStep, "gradients", poisoned)
  word = "loss" if kind == "loss" else "gradient"
  with pytest.raises(NonFiniteError,
                     match=rf"Non-finite {word} at step 5 .*latest checkpoint is step 4"):
    train_lib.train_and_evaluate(cfg, str(tmp_path), hooks=hooks)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert not (tmp_path / "model.npz").exists()
  monkeypatch.undo()
  # The run can be resumed once the cause is fixed: it continues from step 4.
  out = train_lib.train_and_evaluate(tiny_config(total_steps=8), str(tmp_path))
  assert out["origin"].startswith("checkpoint step 4") and out["step"] == 8


def test_guard_checks_without_syncing_every_step():
  guard = NonFiniteGuard()
  for step, (loss, norm) in enumerate([(1.0, 2.0), (0.5, float("inf")), (float("nan"), 1.0)], 1):
    guard.watch(step, {"loss": jnp.float32(loss), "grad_norm": jnp.float32(norm)})
  with pytest.raises(NonFiniteError, match=r"Non-finite gradient at step 2 \(loss=0.5"):
    guard.check()
  guard.watch(4, {"loss": jnp.float32(0.25), "grad_norm": jnp.float32(1.0)})
  assert guard.check() == [(4, 0.25, 1.0)]  # the window starts after the last check


def test_batch_not_divisible_by_devices_through_train_py(tmp_path, augreg_file):
  proc = runner.run_script("train.py", "configs/fashion_mnist_mspe.py:smoke", tmp_path,
                           {"init_file": augreg_file, "input.batch_size": 12}, devices=8,
                           check=False, timeout=300)
  assert proc.returncode != 0
  assert "Global batch size 12 is not divisible by the 8 devices" in proc.stderr
