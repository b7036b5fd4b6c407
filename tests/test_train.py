"""Training through train.py: modes, 1 vs 8 devices, compile counts, kill-and-resume."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fashion_mnist_mspe
from mspe_jax import cpu_tuning, jax_utils, losses, npz, optim, terms, vit
from mspe_jax.mspe_step import MSPEStep, kernel_gradients
from tests import runner

MSPE_SMOKE = "configs/fashion_mnist_mspe.py:smoke"
FAULTS = "tests/fault_hooks.py"  # train.py with fault-injection hooks
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
  init = npz.flatten(npz.load_pretrained(augreg_file, "mspe")[1])
  assert sorted(trained) == sorted(init)
  changed = sorted(k for k in init if not np.array_equal(init[k], trained[k]))
  assert changed and all(k.startswith("mspe/") for k in changed), changed
  # every kernel and bias received gradient
  assert len(changed) == 8
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6", "8"]  # keep the last 3
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in lines if "train/loss" in r] == list(range(1, 9))
  assert any(k.startswith("train/loss_k0_") for k in lines[0]) and "eval/top1_28x28" in lines[-1]
  assert any("steps_per_sec" in r for r in lines)  # clu's ReportProgress
  assert os.path.isdir(workdir / "tensorboard") and os.listdir(workdir / "tensorboard")


def test_smoke_full_training_through_train_py(tmp_path, cache_dir):
  proc = runner.run_script("train.py", "configs/fashion_mnist_vit.py:smoke", tmp_path,
                           {"compilation_cache_dir": cache_dir, "progress_bar": False})
  out = runner.summary(proc)
  assert out["step"] == 6 and out["origin"] == "scratch (seed 0)"
  assert out["programs/bucket"] == 1 and out["programs/encoder"] == 0
  params = runner.npz(tmp_path / "model.npz")
  assert "mspe/embedding_0/kernel" not in params and params["head/kernel"].any()


def test_eight_devices_match_one(tmp_path, reference_run, smoke_overrides, augreg_file):
  ref_dir, _ = reference_run
  proc = runner.run_script("train.py", MSPE_SMOKE, tmp_path,
                           dict(smoke_overrides, compilation_cache_dir=str(tmp_path / "c8")),
                           devices=8)
  assert runner.summary(proc)["step"] == 8
  one, eight = runner.npz(ref_dir / "model.npz"), runner.npz(tmp_path / "model.npz")
  for k in one:
    np.testing.assert_allclose(eight[k], one[k], rtol=2e-4, atol=2e-6, err_msg=k)
  # ... and both moved every MSPE kernel away from its initial value.
  init = npz.flatten(npz.load_pretrained(augreg_file, "mspe")[1])
  for k in (k for k in init if k.startswith("mspe/") and k.endswith("/kernel")):
    assert np.abs(eight[k] - init[k]).max() > 1e-4, k


def test_kill_and_resume_gives_bitwise_equal_parameters(tmp_path, reference_run, smoke_overrides):
  """SIGKILL at a random step, during a checkpoint save, and from outside; then finish."""
  ref_dir, _ = reference_run
  rng = random.Random(1234)
  kill_at = rng.choice([2, 3, 4])             # at the start of a step
  kill_in_save = rng.choice([6])              # while step 6's checkpoint is being written
  work = tmp_path / "w"
  p1 = runner.run_script(FAULTS, MSPE_SMOKE, work, smoke_overrides, check=False,
                         flags=[f"--kill_at_step={kill_at}"])
  assert p1.returncode == -signal.SIGKILL
  p2 = runner.run_script(FAULTS, MSPE_SMOKE, work, smoke_overrides, check=False,
                         flags=[f"--kill_after_save_at_step={kill_in_save}"])
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


def _step_setup(augreg_file, batch=4, seed=0):
  model, params = npz.load_pretrained(augreg_file, "mspe")
  mesh = jax_utils.make_mesh()
  tx, _ = optim.make_optimizer(fashion_mnist_mspe.get_config().optim, 100)
  step = MSPEStep(model, tx, mesh, losses.make_loss("ce"))
  state = jax_utils.replicate(step.init(params), mesh)
  rng = np.random.default_rng(seed)
  batch = jax_utils.shard_batch({"image": rng.uniform(-1, 1, (batch, 28, 28, 3)).astype(np.float32),
                                 "label": rng.integers(0, 10, batch).astype(np.int32)}, mesh)
  return model, params, step, state, batch


def test_compile_count_is_additive(augreg_file):
  model, _, step, state, batch = _step_setup(augreg_file)
  subsets = terms.validate_subsets(((7, 8, 9, 10), (14, 15, 16, 17), (21, 22), (28, 30, 35)),
                                   model)
  seen = set()
  for i in range(40):
    step_terms = terms.draw_terms(i, 0, subsets, model, lam=1.0)
    seen |= {(t.kernel, t.hw) for t in step_terms}
    state, _ = step(state, batch, step_terms)
  total = sum(len(s) for s in subsets)
  programs = step.compiled_programs()
  # per bucket: the patch embedding (a resize and two matmuls)
  assert programs["bucket"] == len(seen) <= total + 1
  assert programs["encoder"] == 1  # the frozen encoder: one program for every resolution
  assert programs["update"] <= 2  # K or K+1 terms per step
  assert sum(programs.values()) <= total + 3
  assert np.prod([len(s) for s in subsets]) > 5 * total  # what a single jit would compile


def test_step_never_waits_for_the_device_and_donates_the_old_state(augreg_file):
  """The step only enqueues work: no device-to-host transfer (so the loop syncs only where it
  chooses to), and the update reuses the trainable parameters' and optimizer's buffers."""
  model, _, step, state, batch = _step_setup(augreg_file)
  step_terms = terms.draw_terms(0, 0, terms.default_subsets(model), model, lam=1.0)
  state, _ = step(state, batch, step_terms)  # compile outside the guard
  old = state
  with jax.transfer_guard_device_to_host("disallow"):
    for _ in range(2):
      state, metrics = step(state, batch, step_terms)
  assert state.step == old.step + 2 and isinstance(metrics["loss"], jax.Array)
  assert old.params["mspe"]["embedding_0"]["kernel"].is_deleted()  # donated
  assert not old.params["Transformer"]["encoder_norm"]["scale"].is_deleted()  # frozen: kept
  assert np.isfinite(float(metrics["loss"]))


def test_terms_follow_eq7(augreg_file):
  model, _ = npz.load_pretrained(augreg_file, "mspe")
  subsets = ((( 7, 7),), ((14, 14),), ((21, 21),), ((28, 28),))
  step_terms = terms.draw_terms(0, 0, subsets, model, lam=1.0)
  # the native term coincides with kernel 3's draw: one term of weight 1 + lambda
  assert [(t.kernel, t.hw, t.weight) for t in step_terms] == [
      (0, (7, 7), 1.0), (1, (14, 14), 1.0), (2, (21, 21), 1.0), (3, (28, 28), 2.0)]
  frozen = model.clone(policy=model.policy.replace(freeze_native_kernel=True))
  assert [t.weight for t in terms.draw_terms(0, 0, subsets, frozen, lam=1.0)] == [1.0] * 4
  # draws are a pure function of (seed, step)
  big = terms.validate_subsets(((7, 8, 9), (14, 15), (21, 22), (28, 35, 42)), model)
  assert terms.draw_terms(5, 3, big, model, 1.0) == terms.draw_terms(5, 3, big, model, 1.0)
  assert len({tuple(terms.draw_terms(s, 3, big, model, 1.0)) for s in range(20)}) > 5
  # square_fraction: that share of each kernel's draws comes from its square shapes
  ranges = terms.range_subsets(model, ((1, 2), (2, 3), (3, 4), (4, 6)))
  def share(fraction):  # fraction of square draws over 200 steps x 4 kernels
    drawn = [t.hw for s in range(200)
             for t in terms.draw_terms(s, 0, ranges, model, 0.0, fraction)]
    return np.mean([h == w for h, w in drawn])
  assert share(1.0) == 1.0 and 0.36 < share(0.0) < 0.56 and 0.63 < share(0.5) < 0.83  # 0.46, 0.73
  assert terms.draw_terms(7, 0, ranges, model, 0.0) == terms.draw_terms(7, 0, ranges, model, 0.0,
                                                                         0.0)
  with pytest.raises(ValueError, match="square_fraction"):
    terms.draw_terms(0, 0, ranges, model, 0.0, 1.5)


def test_bad_subsets_and_batches(augreg_file):
  model, _ = npz.load_pretrained(augreg_file, "mspe")
  with pytest.raises(ValueError, match="subset 1 .* is empty"):
    terms.validate_subsets(((7,), (), (21,), (28,)), model)
  with pytest.raises(ValueError, match=r"subset 0 has sizes \[\(5, 5\)\] below the 7x7 token grid"):
    terms.validate_subsets(((5, 7), (14,), (21,), (28,)), model)
  with pytest.raises(ValueError, match="one resolution subset per MSPE kernel"):
    terms.validate_subsets(((7,), (14,)), model)

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


def test_factored_kernel_gradient_is_the_gradient_of_the_whole_model(augreg_file):
  """embed -> frozen encoder -> Q^T dtokens equals jax.grad of the whole model's weighted loss
  with respect to the MSPE kernels (plain autodiff, one program)."""
  model, params, step, state, batch = _step_setup(augreg_file, seed=1)
  ce = losses.make_loss("ce")
  for term in (terms.Term(0, (7, 7), 1.0), terms.Term(3, (28, 28), 2.0),
               terms.Term(1, (10, 21), 1.0)):
    values, grads = step.gradients(state.params, batch, [term])
    got = kernel_gradients({"mspe": state.params["mspe"]}, grads)["mspe"]

    def loss(mspe, term=term):
      x = jax.image.resize(batch["image"], (4, *term.hw, 3), "bilinear")
      logits = model.apply({"params": {**params, "mspe": mspe}}, x,
                           model.policy.replace(kernel=term.kernel))[0]
      return term.weight * ce(logits, batch["label"], None)
    want_value, want = jax.value_and_grad(loss)(params["mspe"])
    np.testing.assert_allclose(term.weight * values[0], want_value, rtol=1e-5)
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-6)
    assert np.abs(got[f"embedding_{term.kernel}"]["kernel"]).sum() > 0


def test_encoder_chains_change_the_schedule_not_the_result(augreg_file):
  model, params = npz.load_pretrained(augreg_file, "mspe")
  enc = vit.encoder_params(params)
  tokens = jnp.asarray(np.random.default_rng(2).standard_normal((8, 7, 7, model.width)),
                       jnp.float32)

  def logits_and_grad(chains):
    def f(t):
      logits = cpu_tuning.encode_logits(model, enc, t, chains)
      return jnp.sum(jax.nn.log_softmax(logits)[:, 1]), logits
    (_, logits), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(tokens)
    return logits, grad

  one = logits_and_grad(1)
  for chains in (2, 3, 4):  # 3 does not divide 8: falls back to 2
    for a, b in zip(logits_and_grad(chains), one):  # matmul rounding only
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert cpu_tuning.encoder_chains(jax_utils.make_mesh()) == (
      min(4, 2 * os.cpu_count()) if jax.default_backend() == "cpu" else 1)


def test_per_axis_ranges_give_every_aspect_ratio_and_the_run_draws_them(augreg_file, tmp_path):
  """kernel_ranges (the authors' recipe): height and width drawn independently from each
  kernel's range; a run's logged terms show the shapes its config says, non-square ones too."""
  from mspe_jax import train_lib
  model, _ = npz.load_pretrained(augreg_file, "mspe")
  ranges = ((1, 2), (2, 3), (3, 4), (4, 6))
  subsets = terms.range_subsets(model, ranges)
  assert [len(s) for s in subsets] == [4, 4, 4, 9]
  assert subsets[0] == ((7, 7), (7, 14), (14, 7), (14, 14))
  assert terms.range_subsets(model, ranges, "square")[3] == ((28, 28), (35, 35), (42, 42))
  assert terms.range_subsets(model, ((1, 8),) * 4, step=3)[0][-3:] == ((56, 28), (56, 49),
                                                                         (56, 56))  # hi kept
  with pytest.raises(ValueError, match="one kernel range per MSPE kernel"):
    terms.range_subsets(model, ranges[:2])
  with pytest.raises(ValueError, match=r"Kernel range 1 must be \(lo, hi\)"):
    terms.range_subsets(model, ((1, 2), (3, 2), (3, 4), (4, 6)))

  cfg = fashion_mnist_mspe.get_config("smoke")
  cfg.init_file = str(augreg_file)
  cfg.mspe.kernel_ranges = ranges
  cfg.mspe.freeze_native_kernel = False
  cfg.total_steps, cfg.log_every, cfg.eval_every = 12, 1, None
  cfg.progress_bar = False
  cfg.compilation_cache_dir = str(tmp_path / "cache")
  out = train_lib.train_and_evaluate(cfg, str(tmp_path / "run"))
  lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  drawn = {(int(k.split("_")[1][1:]), tuple(int(v) for v in k.split("_")[2].split("x")))
           for line in lines for k in line if k.startswith("train/loss_k")}
  for k, hw in drawn:
    assert hw in subsets[k] or hw == (28, 28), (k, hw)  # (28, 28): the native term (lambda)
  assert any(h != w for _, (h, w) in drawn)
  # one program per distinct shape drawn, the encoder once, the update once or twice
  assert out["programs/bucket"] == len(drawn) and out["programs/encoder"] == 1
  assert out["programs/update"] <= 2


@pytest.mark.parametrize("rule,table", [
    ("geometric", {(1, 1): 0, (1, 4): 1, (2, 8): 3, (4, 1): 1, (3, 2): 1, (1, 3): 1, (2, 3): 1}),
    ("larger", {(1, 1): 0, (1, 4): 3, (2, 8): 3, (4, 1): 3, (3, 2): 2, (1, 3): 2, (2, 3): 2}),
    ("smaller", {(1, 1): 0, (1, 4): 0, (2, 8): 1, (4, 1): 0, (3, 2): 1, (1, 3): 0, (2, 3): 1}),
    # range: the first kernel whose per-axis range holds both sides, else geometric
    ("range", {(1, 1): 0, (1, 4): 1, (2, 8): 3, (4, 1): 1, (3, 2): 1, (1, 3): 1, (2, 3): 1,
               (3, 4): 2, (4, 6): 3, (2, 2): 0}),
])
def test_routing_of_non_square_shapes_follows_the_documented_rule(rule, table):
  from mspe_jax.patch_embed import PatchEmbed
  policy = PatchEmbed("mspe", routing=rule, kernel_ranges=((1, 2), (2, 3), (3, 4), (4, 6)),
                      base_sizes=(1, 2, 3, 4))
  for kernel_hw, k in table.items():
    hw = (7 * kernel_hw[0], 7 * kernel_hw[1])
    assert policy.plan(*hw, patch=(4, 4), grid=(7, 7)).kernel_index == k, (rule, kernel_hw)
  # the default is the rule measured best on held-out images (patch_embed's docstring)
  assert PatchEmbed("mspe").routing == "smaller"
  with pytest.raises(ValueError, match="Unknown routing 'area'"):
    PatchEmbed("mspe", routing="area")
  with pytest.raises(ValueError, match="routing='range' needs kernel_ranges"):
    PatchEmbed("mspe", routing="range")
