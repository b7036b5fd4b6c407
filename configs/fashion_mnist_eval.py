r"""The offline resolution sweep: Fashion-MNIST test set, every baseline and MSPE.

Sizes from 1/4 to 2x the native 28 px: every multiple of the 7x7 grid (7 ... 56), sizes
between them (10, 18, 24, 32, 40) where the leftover-pixel policy decides, the two
aspect-ratio sweeps (height 14 with widths 7 ... 56, width 14 with heights 7 ... 56), and
the grid: every (h, w) pair of 7, 10, 14, 21, 28, 42, 56 px for the MSPE models and image
resizing (``grid_baselines``), drawn as heatmaps of MSPE minus image resize.

Command (after the MSPE training of configs/fashion_mnist_mspe.py; 16 minutes on 2 CPU cores
for the first 2,000 test images; ``--config.eval_examples=10000`` for all of them):

  python eval.py --config configs/fashion_mnist_eval.py --workdir runs/demo \
      --config.compare.mspe_distill=runs/demo_distill

Evaluates the model trained in ``--workdir`` (as ``mspe``) and, when set, the label-free run
(``compare.mspe_distill``). Expected result: ``runs/demo/eval/results.{md,json,csv}`` and
PNG plots (square sweep, one curve per fixed height / width, one heatmap per MSPE model);
routed MSPE above PI-resize and vanilla at every size below 28 px and above image resize at
7 and 14 px; 28 px equal for vanilla, pi and mspe. README and docs/demo_results.md show the
measured tables.

``get_config("smoke")``: two sizes, 64 images, for tests.
"""

from ml_collections.config_dict import placeholder

from configs import common
from configs.fashion_mnist_mspe import SHIPPED_MODEL


def get_config(arg: str | None = None):
  c = common.eval_config()
  c.pretrained = SHIPPED_MODEL
  c.compare.mspe_distill = placeholder(str)  # `make demo` sets it to runs/demo_distill
  c.resolutions = (7, 10, 14, 18, 21, 24, 28, 32, 35, 40, 42, 49, 56)
  c.fixed_heights = (14,)
  c.widths = (7, 14, 21, 28, 42, 56)
  c.fixed_widths = (14,)
  c.heights = (7, 14, 21, 28, 42, 56)
  c.grid_sizes = (7, 10, 14, 21, 28, 42, 56)  # every (h, w) pair: MSPE and image resize
  c.data.name = "fashion_mnist"
  c.data.split = "test"
  c.crop_fraction = 1.0
  c.eval_examples = 2000      # the first 2,000 test images: ~200 (method, size) pairs on 2 cores
  c.batch_size = 500
  if common.parse_arg(arg):
    c.resolutions = (14, 28)
    c.widths = (28,)
    c.fixed_widths = ()
    c.heights = ()
    c.grid_sizes = ()
    c.eval_examples = 64
    c.batch_size = 32
  return c
