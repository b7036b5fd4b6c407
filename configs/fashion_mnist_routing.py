r"""The routing-rule study: which kernel serves a non-square input, measured on held-out images.

The demo's MSPE run trains on ``train[:55000]``; this sweep runs it on the other 5,000
training images (``train[55000:]``, never the test images the README's tables report) at
every ``(h, w)`` pair of 7 ... 56 px, once per routing rule of ``mspe_jax.patch_embed``
(geometric mean, larger side, smaller side, training range). Rules that pick the same kernel
for a shape share one computation. ``results.md`` ends with the rules' mean top-1 over all
shapes, the shapes below native and the non-square shapes below native.

Command (after configs/fashion_mnist_mspe.py, or ``make routing``; 34 minutes measured on
2 CPU cores while another run shared them):

  python eval.py --config configs/fashion_mnist_routing.py --workdir runs/demo \
      --out_dir=runs/demo/routing

Measured result: see ``mspe_jax/patch_embed.py`` (module docstring), measured with the leftover
policy of that day (add ``--config.leftover=resize`` to reproduce it; the default is now
``resize_up``, which changes the shapes with a 10 px side).

``get_config("smoke")``: two sizes, 64 images, for tests.
"""

from configs import common
from configs.fashion_mnist_mspe import SHIPPED_MODEL, VALIDATION_SPLIT


def get_config(arg: str | None = None):
  c = common.eval_config()
  c.pretrained = SHIPPED_MODEL
  c.methods = ("img_resize",)   # for reference; the rules are the point
  c.per_kernel = False
  c.routings = ("geometric", "larger", "smaller", "range")
  c.grid_sizes = (7, 10, 14, 21, 28, 42, 56)
  c.data.name = "fashion_mnist"
  c.data.split = VALIDATION_SPLIT
  c.crop_fraction = 1.0
  c.eval_examples = None       # all 5,000
  c.batch_size = 500
  if common.parse_arg(arg):
    c.grid_sizes = (7, 14)
    c.eval_examples = 64
    c.batch_size = 32
  return c
