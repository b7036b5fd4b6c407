"""FlexiViT: the patch-size policy against a numpy forward pass, big_vision FlexiViT files,
flexible-patch training (draws, compile count, kill and resume) and its effect on real data."""

import json
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mspe_jax
from configs import fashion_mnist_flexi
from mspe_jax import jax_utils, npz, terms, train_lib
from mspe_jax.patch_embed import PatchEmbed
from tests import reference as ref
from tests import runner

FLEXI_SMOKE = "configs/fashion_mnist_flexi.py:smoke"
shares_reference = pytest.mark.xdist_group("flexi")  # the reference run is shared


def _logits(model, params, x, policy=None):
  return jax.jit(lambda p, x: model.apply({"params": p}, x, policy)[0])(params, jnp.asarray(x))


def test_flexi_at_the_stored_patch_is_the_standard_vit_bit_for_bit(augreg_file, images):
  model, params = mspe_jax.load_pretrained(augreg_file, "vanilla")
  for hw in ((28, 28), (20, 36)):
    x = images(3, *hw)
    want = _logits(model, params, x)
    for policy in (PatchEmbed("flexi"), PatchEmbed("flexi", patch=4)):
      np.testing.assert_array_equal(_logits(model, params, x, policy), want)


@pytest.mark.parametrize("patch", [2, 3, 5, 7])
def test_flexi_patch_size_parity_with_numpy(augreg_file, augreg_arrays, images, patch):
  """Patch p: the stored 4x4 kernel PI-resized to p (pinv from the definition), stride p, the
  grid 28 // p (centre crop) and the position embedding resampled bilinearly, in float64."""
  model, params = mspe_jax.load_pretrained(augreg_file, "flexi")
  x = images(2, 28, 28, seed=patch)
  got = _logits(model, params, x, PatchEmbed("flexi", patch=patch))
  kernel = ref.pi_resize_kernel(augreg_arrays["embedding/kernel"].astype(np.float64),
                                (patch, patch))
  want = ref.vit_forward(augreg_arrays, x, kernel=kernel)
  assert ref.rel_err(got, want) < 1e-4, patch


def test_flexi_policy_errors():
  with pytest.raises(ValueError, match="needs mode='flexi'"):
    PatchEmbed("pi", patch=4)
  with pytest.raises(ValueError, match="needs mode 'pi' or 'resize'"):
    PatchEmbed("flexi", grid=7)
  with pytest.raises(ValueError, match="smaller than one 8x8 patch"):
    PatchEmbed("flexi", patch=8).plan(7, 20, patch=(4, 4), grid=(7, 7))
  with pytest.raises(ValueError, match="at least one patch size"):
    terms.check_patch_sizes(())
  with pytest.raises(ValueError, match="one per patch size"):
    terms.check_patch_sizes((2, 4), (1.0,))
  with pytest.raises(ValueError, match="Repeated"):
    terms.check_patch_sizes((2, 2))


def test_big_vision_flexivit_file_loads_and_runs_at_several_sequence_lengths(tmp_path, images):
  """big_vision's FlexiViT layout: a 32x32 kernel, a 7x7 position embedding, ``gap``
  pooling (no ``cls``); run at 240 px with big_vision's sequence sides 5, 8 and 15."""
  arrays = ref.augreg_to_big_vision(ref.augreg_arrays(3, patch=32, grid=7))
  del arrays["params/cls"]
  path = tmp_path / "flexivit_tiny.npz"
  np.savez(path, **arrays)
  model, params = mspe_jax.load_pretrained(path, "flexi")
  assert model.patch == (32, 32) and model.grid == (7, 7) and model.pool_type == "gap"
  x = images(2, 240, 240)
  for seq in (5, 8, 15):
    p = 240 // seq
    logits, extras = model.apply({"params": params}, jnp.asarray(x), PatchEmbed("flexi", patch=p))
    assert extras["tokens"].shape == (2, seq * seq, 32) and np.isfinite(logits).all(), seq
  # On a fixed ViT's token grid (the eval's ``flexivit`` row) it is FlexiViT at h // N.
  on_grid = _logits(model, params, x, PatchEmbed("pi", grid=15))
  np.testing.assert_array_equal(on_grid, _logits(model, params, x, PatchEmbed("flexi", patch=16)))
  bad = dict(arrays)
  bad["params/embedding/kernel"] = bad["params/embedding/kernel"][..., :16]  # width 16 != 32
  np.savez(tmp_path / "bad.npz", **bad)
  with pytest.raises(ValueError, match=r"does not fit the model:\n  shape mismatches"):
    mspe_jax.load_pretrained(tmp_path / "bad.npz", "flexi")


def test_patch_draws_are_a_pure_function_of_seed_and_step():
  patches, probs = terms.check_patch_sizes((2, 3, 4, 5), (1, 1, 1, 5))
  draw = lambda seed, step: terms.draw_patch_term(step, seed, patches, probs, (28, 28))  # noqa: E731
  first = [draw(0, s)[0].patch for s in range(400)]
  assert first == [draw(0, s)[0].patch for s in range(400)]
  assert first != [draw(1, s)[0].patch for s in range(400)]
  counts = {p: first.count(p) for p in patches}
  assert set(counts) == set(patches) and counts[(5, 5)] > 2 * counts[(2, 2)]  # weights apply
  term = draw(0, 7)[0]
  assert term.hw == (28, 28) and term.weight == 1.0 and term.name.startswith("p")


@pytest.fixture(scope="module")
def flexi_overrides(augreg_file, tmp_path_factory):
  return {"init_file": str(augreg_file), "total_steps": 8, "checkpoint_every": 2,
          "log_every": 1, "eval_every": 8, "progress_bar": False,
          "compilation_cache_dir": str(tmp_path_factory.mktemp("flexi_cache"))}


@pytest.fixture(scope="module")
def flexi_reference(tmp_path_factory, flexi_overrides):
  """An uninterrupted FlexiViT smoke run through train.py on the tiny AugReg-format model."""
  workdir = tmp_path_factory.mktemp("flexi_ref")
  return workdir, runner.run_script("train.py", FLEXI_SMOKE, workdir, flexi_overrides)


@shares_reference
def test_flexi_training_trains_everything_and_compiles_once_per_patch_size(flexi_reference,
                                                                           augreg_file):
  workdir, proc = flexi_reference
  out = runner.summary(proc)
  assert out["step"] == 8
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  drawn = {k.split("_")[1] for line in lines for k in line if k.startswith("train/loss_p")}
  assert len(drawn) >= 2, drawn
  # one program per distinct patch size drawn, the update once, the teacher once
  assert out["programs/bucket"] == len(drawn), (out, drawn)
  assert out["programs/update"] == 1 and out["programs/teacher"] == 1
  assert {f"eval/top1_p{p}x{p}" for p in (2, 4, 7)} <= set(lines[-1])
  trained = runner.npz(workdir / "model.npz")
  init = npz.flatten(npz.load_pretrained(augreg_file, "vanilla")[1])
  assert sorted(trained) == sorted(init)  # a plain ViT tree: no MSPE kernels
  moved = [k for k in init if not np.array_equal(init[k], trained[k])]
  assert len(moved) == len(init), sorted(set(init) - set(moved))  # every parameter trains


@shares_reference
def test_flexi_kill_and_resume_gives_bitwise_equal_parameters(tmp_path, flexi_reference,
                                                               flexi_overrides):
  ref_dir, _ = flexi_reference
  work = tmp_path / "w"
  p1 = runner.run_script("tests/fault_hooks.py", FLEXI_SMOKE, work, flexi_overrides,
                         check=False, flags=["--kill_at_step=5"])
  assert p1.returncode == -signal.SIGKILL, p1.stderr[-3000:]
  out = runner.summary(runner.run_script("train.py", FLEXI_SMOKE, work, flexi_overrides))
  assert out["step"] == 8 and "checkpoint step" in out["origin"]  # 4, or 2 if 4 was unfinished
  want, got = runner.npz(ref_dir / "model.npz"), runner.npz(work / "model.npz")
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_flexi_training_beats_zero_shot_pi_resize_on_fashion_mnist(tmp_path):
  """40 steps of FlexiViT training on the shipped model raise top-1 at patches 5 and 7
  (5x5 and 4x4 sequences) over PI-resizing the fixed model's kernel (FlexiViT's zero-shot)."""
  cfg = fashion_mnist_flexi.get_config()
  cfg.flexi.patch_sizes = (5, 7)
  cfg.total_steps, cfg.input.batch_size, cfg.optim.warmup_steps = 40, 64, 5
  cfg.optim.lr = 1e-3
  cfg.eval_every, cfg.eval_examples, cfg.checkpoint_every = 40, 1000, 40
  cfg.progress_bar = False
  out = train_lib.train_and_evaluate(cfg, str(tmp_path / "run"))
  model, params, _ = train_lib.build_model(cfg)
  evaluate = train_lib.make_evaluator(cfg, model, jax_utils.make_mesh(), has_labels=True)
  zero_shot = evaluate(params)
  # measured (1,000 test images): 56.5 -> 73.7% at patch 7, 79.0 -> 81.5% at patch 5
  assert out["eval/top1_p7x7"] > zero_shot["eval/top1_p7x7"] + 0.10, (out, zero_shot)
  assert out["eval/top1_p5x5"] > zero_shot["eval/top1_p5x5"], (out, zero_shot)


@shares_reference
def test_eval_has_the_flexivit_row_and_the_patch_sweep(tmp_path, flexi_reference, augreg_file):
  """eval.py with a FlexiViT: its row on the fixed grid, labelled apart from ``pi``, and
  FlexiViT's patch sweep (table, plot, JSON rows with series and patch size)."""
  workdir, _ = flexi_reference
  proc = runner.run_script("eval.py", "configs/fashion_mnist_flexi_eval.py:smoke", tmp_path,
                           {"pretrained": augreg_file, "flexivit": workdir, "model_name": "",
                            "patch_sizes": "(2,4)", "progress_bar": False},
                           flags=[f"--out_dir={tmp_path / 'eval'}"])
  doc = json.loads((tmp_path / "eval" / "results.json").read_text())
  rows = {(r["method"], r["sweep"], r["height"]): r for r in doc["rows"]}
  assert {"vanilla", "pi", "img_resize", "flexivit"} <= {r["method"] for r in doc["rows"]}
  for series in ("pi", "flexivit"):
    for p, grid in ((2, [14, 14]), (4, [7, 7])):
      r = rows[(f"{series}_p{p}", "patch", 28)]
      assert r["series"] == series and r["patch"] == p and r["grid"] == grid
  # patch 4 is the stored kernel: the fixed model's zero-shot row is the fixed model itself
  assert rows[("pi_p4", "patch", 28)]["correct"] == rows[("vanilla", "square", 28)]["correct"]
  assert rows[("pi_p2", "patch", 28)]["gflops"] > rows[("pi_p4", "patch", 28)]["gflops"]
  md = (tmp_path / "eval" / "results.md").read_text()
  assert "FlexiViT's sweep" in md and "what the MSPE paper labels 'FlexiViT'" in md
  assert (tmp_path / "eval" / "accuracy_vs_patch_size.png").stat().st_size > 10_000
  assert "orbax checkpoint step 8" in doc["protocol"]["checkpoints"]["flexivit"]  # the workdir
  assert "| flexivit |" in proc.stdout
