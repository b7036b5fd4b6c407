"""The sweep computes the baselines as the paper defines them, on real data."""

import json

import pytest

from tests.conftest import DEMO_EVAL_IMAGES, top1

pytestmark = pytest.mark.xdist_group("demo")  # one demo run per worker


def test_native_resolution_agrees_exactly(demo_runs):
  res = demo_runs["eval"]
  native = [top1(res, m, 28) for m in ("vanilla", "pi", "mspe", "mspe_distill", "img_resize")]
  assert len(set(native)) == 1, native
  assert native[0] > 0.85  # the shipped model


def test_pi_keeps_accuracy_at_twice_native_while_vanilla_drops(demo_runs):
  res = demo_runs["eval"]
  native, pi, vanilla = (top1(res, m, h) for m, h in (("pi", 28), ("pi", 56), ("vanilla", 56)))
  assert abs(pi - native) <= 0.005 + 1e-9, (pi, native)  # within 0.5 points, inclusive
  assert vanilla < native - 0.02, (vanilla, native)


def test_oracle_is_an_upper_bound_never_the_default(demo_runs):
  res = demo_runs["eval"]
  rows = res["rows"]
  for name in ("mspe",):
    routed = {(r["sweep"], r["height"], r["width"]): r for r in rows if r["method"] == name}
    oracle = {(r["sweep"], r["height"], r["width"]): r for r in rows
              if r["method"] == name + "_oracle"}
    assert set(oracle) == {k for k in routed if k[0] == "square"}  # where kernels were forced
    for k in oracle:
      assert oracle[k]["top1"] >= routed[k]["top1"]
      assert "oracle" in oracle[k]["note"]
    # the routed rows use the kernel the rule picks, not the best one on the test set
    assert {routed[("square", r, r)]["kernel_index"] for r in (7, 14, 21)} == {0, 1, 2}
  assert "upper bound, not a method" in res["markdown"]


def test_json_has_every_method_and_shape_and_the_protocol(demo_runs):
  res = demo_runs["eval"]
  with open(res["paths"]["json"]) as f:
    doc = json.load(f)
  cfg = demo_runs["eval_config"]
  p = doc["protocol"]
  assert p["num_images"] == DEMO_EVAL_IMAGES and p["dataset"] == "fashion_mnist"
  assert p["split"] == "test" and "jax.image.resize('bilinear', antialias=True)" in p[
      "low_resolution_input"]
  assert set(p["checkpoints"]) == {"pretrained", "mspe", "mspe_distill"}
  assert not any(r["method"].startswith("mspe_distill_") for r in doc["rows"])  # per_kernel
  assert "sha256" in p["checkpoints"]["pretrained"] and "orbax checkpoint step" in p[
      "checkpoints"]["mspe"]
  keys = [(r["method"], r["sweep"], r["height"], r["width"]) for r in doc["rows"]]
  assert len(keys) == len(set(keys))
  methods = {r["method"] for r in doc["rows"]}
  base = {"vanilla", "pi", "img_resize", "mspe", "mspe_oracle", "mspe_distill"} | {
      f"mspe_k{i}" for i in range(4)}
  assert base <= methods
  squares = {(r["method"], r["height"]) for r in doc["rows"] if r["sweep"] == "square"}
  for m in base:
    for s in cfg.resolutions:
      assert (m, s) in squares, (m, s)
  aspect = {(r["method"], r["width"]) for r in doc["rows"] if r["sweep"] == "fixed_height"}
  for m in ("vanilla", "pi", "img_resize", "mspe", "mspe_distill"):
    for w in cfg.widths:
      assert (m, w) in aspect
  for r in doc["rows"]:
    assert 0 <= r["top1"] <= 1 and r["gflops"] > 0 and r["patch_gflops"] > 0
  # FLOPs: the fixed grid keeps the encoder cost, vanilla's grid shrinks with the input.
  flops = {(r["method"], r["height"]): r["gflops"] for r in doc["rows"] if r["sweep"] == "square"}
  assert flops[("vanilla", 14)] < flops[("mspe", 14)] < flops[("mspe", 56)] * 1.01
  for name in ("md", "csv"):
    assert open(res["paths"][name]).read()
  assert res["paths"]["square"].endswith(".png") and res["paths"]["fixed_height"].endswith(".png")
  assert "fixed_width" not in res["paths"]  # that sweep was switched off
  grid = {(r["method"], r["height"], r["width"]) for r in doc["rows"] if r["sweep"] == "grid"}
  for m in ("img_resize", "mspe", "mspe_distill"):
    assert {(m, h, w) for h in (7, 14) for w in (7, 14)} <= grid
  assert not {m for m, _, _ in grid} & {"vanilla", "pi"}  # config.grid_baselines
  assert res["paths"]["grid_mspe"].endswith("grid_mspe_minus_img_resize.png")
  assert "## mspe minus image resize, top-1 points" in res["markdown"]
  programs = p["compiled_eval_programs"]
  family = lambda m: "mspe_distill" if m.startswith("mspe_distill") else (  # noqa: E731
      "mspe" if m.startswith("mspe") else m)
  computations = {(family(r["method"]), r["height"], r["width"], r["kernel_index"])
                  for r in doc["rows"] if not r["method"].endswith("_oracle")}
  assert programs["embed"] == len(computations)  # one per (model, shape, kernel)
  vanilla_grids = {tuple(r["grid"]) for r in doc["rows"] if r["method"] == "vanilla"}
  assert programs["encoder"] == len(vanilla_grids | {(7, 7)})  # one per token grid


def test_routing_rules_are_rows_of_the_same_kernels_run_once(demo_runs):
  """config.routings: the model under each rule, on every sweep; a rule's row is the forced
  kernel's row where it picks that kernel (computed once, so equal exactly); the markdown
  compares the rules."""
  rows = demo_runs["eval"]["rows"]
  by = {(r["method"], r["sweep"], r["height"], r["width"]): r for r in rows}
  rules = ("geometric", "larger", "smaller", "range")
  for rule in rules:
    mine = [r for r in rows if r["method"] == f"mspe_route_{rule}"]
    assert {r["sweep"] for r in mine} == {"square", "fixed_height", "grid"}
    for r in mine:
      if r["sweep"] == "square" and r["kernel_index"] >= 0:
        forced = by[(f"mspe_k{r['kernel_index']}", "square", r["height"], r["width"])]
        assert r["correct"] == forced["correct"]
  for r in rows:  # the model's own rule is the default, smaller: the same rows
    if r["method"] == "mspe":
      assert r["correct"] == by[("mspe_route_smaller",) + tuple(
          r[k] for k in ("sweep", "height", "width"))]["correct"]
  # the rules do differ somewhere on this grid (else the comparison would say nothing)
  picks = {(r["height"], r["width"]): set() for r in rows if r["sweep"] == "grid"}
  for r in rows:
    if r["sweep"] == "grid" and r["method"].startswith("mspe_route_"):
      picks[(r["height"], r["width"])].add(r["kernel_index"])
  assert any(len(k) > 1 for k in picks.values()), picks
  md = demo_runs["eval"]["markdown"]
  assert "## Routing rules" in md
  for rule in rules:
    assert f"| {rule} | " in md
  assert "mspe_route_" not in md.split("## Routing rules")[0]  # not in the main tables


def test_eval_of_a_folder_that_is_not_a_training_run_says_so(tmp_path):
  """eval.py evaluates the --workdir's own run; an empty folder is an error, not another
  model's table."""
  from configs import fashion_mnist_eval
  from mspe_jax import eval_lib
  with pytest.raises(ValueError, match=r"is neither an .npz file nor a training workdir \(no "
                                       r"model_config.json\)"):
    eval_lib.evaluate(fashion_mnist_eval.get_config("smoke"), str(tmp_path))


def test_report_draws_the_grid_heatmap_and_one_curve_per_fixed_value(tmp_path):
  from mspe_jax import report
  rows = []
  for sweep, hws in (("fixed_height", [(14, 7), (14, 28), (21, 7), (21, 28)]),
                     ("grid", [(7, 7), (7, 14), (14, 7), (14, 14)])):
    for method, acc in (("img_resize", 0.5), ("mspe", 0.6), ("mspe_k0", 0.1)):
      for h, w in hws:
        rows.append({"method": method, "sweep": sweep, "height": h, "width": w,
                     "top1": acc + 0.02 * (method == "mspe" and h == w), "gflops": 1.0,
                     "patch_gflops": 0.1})
  protocol = {"dataset": "toy", "num_images": 10, "native_resolution": 28,
              "checkpoints": {"pretrained": "a.npz", "mspe": "run"}}
  paths = report.write(str(tmp_path), rows, protocol)
  assert {"fixed_height_14", "fixed_height_21", "grid_mspe"} <= set(paths)
  assert paths["grid_mspe"].endswith("grid_mspe_minus_img_resize.png")
  md = open(paths["md"]).read()
  assert "(paper Fig. 4) (height 14)" in md and "(paper Fig. 4) (height 21)" in md
  assert "## mspe minus image resize, top-1 points" in md
  assert "| 7 | +12.0 | +10.0 |" in md  # h = 7: w = 7, w = 14
  assert "Per-kernel" not in md  # mspe_k0 has no square rows
  heights, widths, diff = report.grid_difference(rows, "mspe")
  assert heights == widths == [7, 14] and round(diff[(7, 14)], 6) == 10.0


def test_leftover_study_config_takes_a_policy():
  from configs import fashion_mnist_leftover
  assert fashion_mnist_leftover.get_config("resize_up").leftover == "resize_up"
  assert fashion_mnist_leftover.get_config("resize,smoke").eval_examples == 64
  with pytest.raises(ValueError, match="needs a leftover policy argument"):
    fashion_mnist_leftover.get_config(None)
