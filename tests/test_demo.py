"""The shortened demo reproduces the paper's claims on Fashion-MNIST (issue: offline demo)."""

import pytest

from tests.conftest import top1

pytestmark = pytest.mark.xdist_group("demo")  # one demo run per worker

BELOW_NATIVE = (7, 10, 14, 21)


def test_mspe_beats_the_baselines_below_native(demo_runs):
  res = demo_runs["eval"]
  for r in BELOW_NATIVE:
    mspe = top1(res, "mspe", r)
    assert mspe > top1(res, "pi", r), r
    assert mspe > top1(res, "vanilla", r), r
  for r in (7, 14):  # a quarter and half of native
    assert top1(res, "mspe", r) > top1(res, "img_resize", r), r


def test_training_raises_half_resolution_accuracy_over_untrained_kernels(demo_runs):
  # "pi" is exactly the untrained MSPE model (kernels initialised by PI-resize).
  res = demo_runs["eval"]
  assert top1(res, "mspe", 14) > top1(res, "pi", 14) + 0.05


def test_native_accuracy_is_unchanged(demo_runs):
  res = demo_runs["eval"]
  assert top1(res, "mspe", 28) == top1(res, "vanilla", 28)


def test_label_free_run_never_sees_labels_and_still_helps(demo_runs):
  assert demo_runs["summaries"]["mspe_distill"]["batch_keys"] == ["image"]
  assert demo_runs["summaries"]["mspe"]["batch_keys"] == ["image", "label"]
  res = demo_runs["eval"]
  assert top1(res, "mspe_distill", 14) > top1(res, "pi", 14) + 0.05
  assert top1(res, "mspe_distill", 7) > top1(res, "pi", 7)


def test_mspe_beats_image_resize_at_non_square_sizes_below_native(demo_runs):
  """Per-axis kernel ranges in training and the smaller-side routing (issue: any aspect
  ratio): at 7 x 14 and 14 x 7 px (the grid sweep) MSPE is above resizing the image, PI-resize
  and the geometric-mean rule, which sends these inputs to a kernel too large for one axis."""
  rows = demo_runs["eval"]["rows"]
  grid = {(r["method"], r["height"], r["width"]): r["top1"] for r in rows
          if r["sweep"] == "grid"}
  for hw in ((7, 14), (14, 7)):
    mspe = grid[("mspe",) + hw]
    assert mspe > grid[("img_resize",) + hw], hw
    assert mspe > grid[("mspe_route_geometric",) + hw], hw
