"""A shortened `make demo-seg`: MSPE on the shipped segmenter raises mIoU at a quarter of
native over its PI-resize initialisation, and native predictions stay the segmenter's."""

import pytest

pytestmark = pytest.mark.xdist_group("demo_seg")

STEPS = 60
EVAL_IMAGES = 200


def miou(res, method, size):
  return next(r["miou"] for r in res["rows"]
              if r["method"] == method and r["sweep"] == "square" and r["height"] == size)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
  from configs import fashion_mnist_seg_eval, fashion_mnist_seg_mspe
  from mspe_jax import eval_lib, train_lib
  work = tmp_path_factory.mktemp("demo_seg")
  cfg = fashion_mnist_seg_mspe.get_config()
  # Two kernels to keep it short: base 1 px for the quarter (14 px), base 4 px above native;
  # 56 px stays the segmenter's own kernel.
  cfg.mspe.base_sizes = (1, 4)
  cfg.mspe.resolutions = ((14,), (70,))
  cfg.total_steps = STEPS
  cfg.input.batch_size = 16
  cfg.data.train_split = "train[:2000]"
  cfg.eval_every = None
  cfg.checkpoint_every = STEPS
  cfg.progress_bar = False
  summary = train_lib.train_and_evaluate(cfg, str(work))
  ecfg = fashion_mnist_seg_eval.get_config()
  ecfg.resolutions = (14, 56)
  ecfg.masks = ()
  ecfg.data.split = "test[:1000]"  # canvases built from the first 1,000 test images only
  ecfg.eval_examples = EVAL_IMAGES
  ecfg.batch_size = 100
  ecfg.progress_bar = False
  return summary, eval_lib.evaluate(ecfg, str(work))


def test_short_mspe_run_raises_quarter_resolution_miou_over_pi_resize(seg_run):
  _, res = seg_run
  # the full demo (200 steps of 32): 12.3 vs 10.5% on 1,000 test canvases
  assert miou(res, "mspe", 14) > miou(res, "pi", 14) + 0.005


def test_native_predictions_are_the_segmenters_bit_for_bit(seg_run):
  _, res = seg_run
  native = {r["method"]: r for r in res["rows"] if r["height"] == 56}
  assert native["mspe"]["confusion"] == native["vanilla"]["confusion"]
  assert native["mspe"]["kernel_index"] == -1


def test_segmentation_compiles_one_encoder_for_every_resolution(seg_run):
  summary, _ = seg_run
  assert summary["programs/encoder"] == 1  # the grid is fixed: one for 14 to 112 px
