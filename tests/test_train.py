"""Training through train.py: modes, 1 vs 8 devices, compile counts, kill-and-resume."""

import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fashion_mnist_mspe
from mspe_jax import checkpoints, jax_utils, losses, optim, steps
from tests import runner

MSPE_SMOKE = "configs/fashion_mnist_mspe.py:smoke"
pytestmark = pytest.mark.xdist_group("train")  # the reference run is shared


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def smoke_overrides(augreg_file, cache_dir):
  """The MSPE smoke config on the tiny AugReg-format model: 8 steps, checkpoints every 2."""
  return {"init_file": str(augreg_file), "total_steps": 8, "checkpoint_every": 2,
          "log_every": 1, "eval_every": 8, "compilation_cache_dir": cache_dir,
          "progress_bar": False, "mspe.resolutions": "((7,),(14,),(21,),(28,35))"}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, smoke_overrides):
  """An uninterrupted MSPE smoke run through train.py (1 device)."""
  workdir = tmp_path_factory.mktemp("mspe_ref")
  proc = runner.run_script("train.py", MSPE_SMOKE, workdir, smoke_overrides)
  return workdir, proc


def test_smoke_mspe_trains_only_the_mspe_kernels(reference_run, augreg_file):
  workdir, proc = reference_run
  out = runner.summary(proc)
  assert out["step"] == 8 and "pretrained file" in out["origin"]
  trained = runner.npz(workdir / "model.npz")
  init = checkpoints.flatten(checkpoints.load_pretrained(augreg_file, patch_embed="mspe")[1])
  assert sorted(trained) == sorted(init)
  changed = sorted(k for k in init if not np.array_equal(init[k], trained[k]))
  assert changed and all(k.startswith("mspe/") for k in changed), changed
  # every kernel and bias received gradient
  assert len(changed) == 8
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6", "8"]  # keep the last 3
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 9 and '"train/loss_k0_7x7"' in lines[0] and "eval/top1_28x28" in lines[-1]
  assert os.path.isdir(workdir / "tensorboard") and os.listdir(workdir / "tensorboard")


def test_smoke_full_training_through_train_py(tmp_path, cache_dir):
  proc = runner.run_script("train.py", "configs/fashion_mnist_vit.py:smoke", tmp_path,
                           {"compilation_cache_dir": cache_dir, "progress_bar": False})
  out = runner.summary(proc)
  assert out["step"] == 6 and out["origin"] == "scratch (seed 0)"
  assert out["programs/bucket"] == 1 and out["programs/encoder"] == 0
  params = runner.npz(tmp_path / "model.npz")
  assert "mspe/embedding_0/kernel" not in params and params["head/kernel"].any()


def test_eight_devices_match_one(tmp_path, reference_run, smoke_overrides):
  ref_dir, _ = reference_run
  proc = runner.run_script("train.py", MSPE_SMOKE, tmp_path,
                           dict(smoke_overrides, compilation_cache_dir=str(tmp_path / "c8")),
                           devices=8)
  assert runner.summary(proc)["step"] == 8
  one, eight = runner.npz(ref_dir / "model.npz"), runner.npz(tmp_path / "model.npz")
  init = runner.npz(tmp_path / "model.npz")
  for k in one:
    np.testing.assert_allclose(eight[k], one[k], rtol=2e-4, atol=2e-6, err_msg=k)
  assert not np.array_equal(init["mspe/embedding_0/kernel"], np.zeros(1))


def test_kill_and_resume_gives_bitwise_equal_parameters(tmp_path, reference_run, smoke_overrides):
  """SIGKILL at a random step, during a checkpoint save, and from outside; then finish."""
  ref_dir, _ = reference_run
  rng = random.Random(1234)
  kill_at = rng.choice([2, 3, 4])             # at the start of a step
  kill_in_save = rng.choice([6])              # while step 6's checkpoint is being written
  work = tmp_path / "w"
  p1 = runner.run_script("train.py", MSPE_SMOKE, work,
                         dict(smoke_overrides, debug_kill_at_step=kill_at), check=False)
  assert p1.returncode == -signal.SIGKILL
  p2 = runner.run_script("train.py", MSPE_SMOKE, work,
                         dict(smoke_overrides, debug_kill_during_save_at_step=kill_in_save),
                         check=False)
  assert p2.returncode == -signal.SIGKILL, p2.stderr[-3000:]
  # An external SIGKILL at a random moment of the third attempt.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "train.py", f"--config={MSPE_SMOKE}", f"--workdir={work}"] + [
      f"--config.{k}={v}" for k, v in smoke_overrides.items()]
  metrics = work / "metrics.jsonl"
  lines_before = len(metrics.read_text().splitlines())
  p3 = subprocess.Popen(cmd, cwd=runner.REPO, env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and p3.poll() is None:  # kill it once it is training
    if len(metrics.read_text().splitlines()) > lines_before:
      time.sleep(rng.uniform(0.0, 0.3))
      break
    time.sleep(0.05)
  p3.kill()
  assert p3.wait() == -signal.SIGKILL, "the third attempt finished before it could be killed"
  p4 = runner.run_script("train.py", MSPE_SMOKE, work, smoke_overrides)
  out = runner.summary(p4)
  assert out["step"] == 8
  log = (work / "train.log").read_text()
  assert "initialised from the pretrained file" in log and "Resumed from checkpoint step" in log
  ref, got = runner.npz(ref_dir / "model.npz"), runner.npz(work / "model.npz")
  for k in ref:
    np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
  # Same cache as the reference run: the final restart compiled nothing new.
  assert out["compiles/compiled"] == 0, out
  assert out["compiles/loaded_from_cache"] > 0


def test_compile_count_is_additive(augreg_file):
  model, params = checkpoints.load_pretrained(augreg_file, patch_embed="mspe")
  subsets = steps.validate_subsets(((7, 8, 9, 10), (14, 15, 16, 17), (21, 22), (28, 30, 35)),
                                   model)
  mesh = jax_utils.make_mesh()
  trainable, frozen = steps.split_params(params, "mspe")
  tx, _ = optim.make_optimizer(fashion_mnist_mspe.get_config().optim, 100)
  fns = steps.StepFunctions(model, tx, mesh, losses.make_loss("ce"), mode="mspe")
  trainable, frozen = jax_utils.replicate((trainable, frozen), mesh)
  opt_state = jax_utils.replicate(tx.init(trainable), mesh)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (4, 28, 28, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, 4), jnp.int32)
  seen = set()
  for step in range(40):
    terms = steps.draw_terms(step, 0, subsets, model, lam=1.0)
    seen |= {(t.kernel, t.hw) for t in terms}
    grads = [fns.value_and_grad(trainable, frozen, images, labels, None, t.weight, t)[1]
             for t in terms]
    trainable, opt_state, _ = fns.update(trainable, opt_state, grads)
  total = sum(len(s) for s in subsets)
  programs = fns.compiled_programs()
  # per bucket: the patch embedding (a resize and two matmuls)
  assert programs["bucket"] == len(seen) <= total + 1
  assert programs["encoder"] == 1  # the frozen encoder: one program for every resolution
  assert programs["update"] <= 2  # K or K+1 terms per step
  assert sum(programs.values()) <= total + 3
  assert np.prod([len(s) for s in subsets]) > 5 * total  # what a single jit would compile


def test_terms_follow_eq7(augreg_file):
  model, _ = checkpoints.load_pretrained(augreg_file, patch_embed="mspe")
  subsets = ((( 7, 7),), ((14, 14),), ((21, 21),), ((28, 28),))
  terms = steps.draw_terms(0, 0, subsets, model, lam=1.0)
  # the native term coincides with kernel 3's draw: one term of weight 1 + lambda
  assert [(t.kernel, t.hw, t.weight) for t in terms] == [
      (0, (7, 7), 1.0), (1, (14, 14), 1.0), (2, (21, 21), 1.0), (3, (28, 28), 2.0)]
  frozen = model.clone(freeze_native_kernel=True)
  assert [t.weight for t in steps.draw_terms(0, 0, subsets, frozen, lam=1.0)] == [1.0] * 4
  # draws are a pure function of (seed, step)
  big = ((7, 8, 9), (14, 15), (21, 22), (28, 35, 42))
  big = steps.validate_subsets(big, model)
  assert steps.draw_terms(5, 3, big, model, 1.0) == steps.draw_terms(5, 3, big, model, 1.0)
  assert len({tuple(steps.draw_terms(s, 3, big, model, 1.0)) for s in range(20)}) > 5


def test_bad_subsets_and_batches(augreg_file):
  model, _ = checkpoints.load_pretrained(augreg_file, patch_embed="mspe")
  with pytest.raises(ValueError, match="subset 1 .* is empty"):
    steps.validate_subsets(((7,), (), (21,), (28,)), model)
  with pytest.raises(ValueError, match=r"subset 0 has sizes \[\(5, 5\)\] below the 7x7 token grid"):
    steps.validate_subsets(((5, 7), (14,), (21,), (28,)), model)
  with pytest.raises(ValueError, match="one resolution subset per MSPE kernel"):
    steps.validate_subsets(((7,), (14,)), model)

  class FakeMesh:
    devices = np.empty(8)
  with pytest.raises(ValueError, match="Global batch size 12 is not divisible by the 8 devices"):
    jax_utils.check_batch(12, FakeMesh())


def test_misspelt_config_field_is_named(tmp_path):
  proc = runner.run_script("train.py", MSPE_SMOKE, tmp_path, {"optim.learning_rate": 0.1},
                           check=False, timeout=120)
  assert proc.returncode == 2
  assert ("Unknown config field 'optim.learning_rate': optim has no field 'learning_rate'. "
          "Its fields are: b1, b2, decay,") in proc.stderr
  proc = runner.run_script("train.py", MSPE_SMOKE, tmp_path, {"optimizer.lr": 0.1},
                           check=False, timeout=120)
  assert "the config has no field 'optimizer'" in proc.stderr


def test_split_step_equals_one_program(augreg_file):
  """embed -> frozen encoder -> embed gradient gives the gradient of the whole model."""
  model, params = checkpoints.load_pretrained(augreg_file, patch_embed="mspe")
  mesh = jax_utils.make_mesh()
  tx, _ = optim.make_optimizer(fashion_mnist_mspe.get_config().optim, 10)
  fns = steps.StepFunctions(model, tx, mesh, losses.make_loss("ce"), mode="mspe")
  trainable, frozen = jax_utils.replicate(steps.split_params(params, "mspe"), mesh)
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.uniform(-1, 1, (4, 28, 28, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, 4), jnp.int32)
  for term in (steps.Term(0, (7, 7), 1.0), steps.Term(3, (28, 28), 2.0),
               steps.Term(1, (10, 21), 1.0)):
    v1, g1 = fns.value_and_grad(trainable, frozen, images, labels, None, term.weight, term)
    g1 = fns.sum_grads(trainable, [g1])
    v2, g2 = fns.term_grad(trainable, frozen, images, labels, None, jnp.float32(term.weight),
                           kernel=term.kernel, hw=term.hw)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(np.abs(a).sum() > 0 for a in jax.tree_util.tree_leaves(g1))


def test_encoder_chains_change_the_schedule_not_the_result(augreg_file):
  model, params = checkpoints.load_pretrained(augreg_file, patch_embed="mspe")
  enc = steps.encoder_params(params)
  tokens = jnp.asarray(np.random.default_rng(2).standard_normal((8, 7, 7, model.width)),
                       jnp.float32)

  def logits_and_grad(chains):
    def f(t):
      logits = steps.encode_logits(model, enc, t, chains)
      return jnp.sum(jax.nn.log_softmax(logits)[:, 1]), logits
    (_, logits), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(tokens)
    return logits, grad

  one = logits_and_grad(1)
  for chains in (2, 3, 4):  # 3 does not divide 8: falls back to 2
    for a, b in zip(logits_and_grad(chains), one):  # matmul rounding only
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert steps.encoder_chains(jax_utils.make_mesh()) == (
      min(4, 2 * os.cpu_count()) if jax.default_backend() == "cpu" else 1)
