r"""The segmentation sweep (paper Table 2's protocol) on the canvas testbed's test canvases.

Methods: vanilla, PI-resize ("FlexiViT" in the paper), image resize and MSPE (the --workdir
run; ``compare.mspe_distill`` the label-free one). Sizes: a quarter (14 px), half (28 px),
native (56 px) and above native (84 px), plus the sizes between (21, 42 px). Scores:
mIoU, mAcc and F1 from one confusion matrix per (method, size), the logits upsampled to the
input size and then to the 56 px label map (MMSegmentation's protocol). ``masks``: a picture
of predicted masks next to the ground truth for the first ``mask_examples`` canvases.

Command (after configs/fashion_mnist_seg_mspe.py and _distill.py; 6.6 minutes on 2 CPU
cores for the first 1,000 test canvases):

  python eval.py --config configs/fashion_mnist_seg_eval.py --workdir runs/demo_seg \
      --config.compare.mspe_distill=runs/demo_seg_distill

Expected result: runs/demo_seg/eval/results.{md,json,csv}, miou_vs_resolution.png and
masks.png; the measured table is in README ("Segmentation") and docs/seg_results.md.

``get_config("smoke")``: two sizes, 32 canvases, for tests.
"""

from ml_collections.config_dict import placeholder

from configs import common
from configs.fashion_mnist_seg_mspe import SHIPPED_SEGMENTER


def get_config(arg: str | None = None):
  c = common.eval_config()
  c.pretrained = SHIPPED_SEGMENTER
  c.compare.mspe_distill = placeholder(str)  # `make demo-seg` sets it to runs/demo_seg_distill
  c.methods = ("vanilla", "pi", "img_resize")
  c.per_kernel = False
  c.resolutions = (14, 21, 28, 42, 56, 84)
  c.grid_baselines = ()
  c.data.name = "fashion_mnist_seg"
  c.data.split = "test"
  c.crop_fraction = 1.0
  c.eval_examples = 1000     # the first 1,000 test canvases (2,000: twice the 5 minutes)
  c.batch_size = 250
  c.masks = (14, 28, 56)
  c.mask_examples = 3
  if common.parse_arg(arg):
    c.resolutions = (14, 56)
    c.masks = (14,)
    c.mask_examples = 2
    c.data.split = "test[:64]"
    c.eval_examples = 32
    c.batch_size = 16
  return c
