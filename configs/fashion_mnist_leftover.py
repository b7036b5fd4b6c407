r"""The leftover study: what to do with the pixels past the 7x7 grid, measured on held-out images.

A side of ``h`` px that is not a multiple of the grid is resized before the embedding, either
to the nearest multiple (``"resize"``: 10 -> 7, 24 -> 21 px, dropping detail) or up to the
next one (``"resize_up"``: 10 -> 14, 24 -> 28 px, no pixel dropped, a larger kernel). The two
differ only where ``h mod 7 < 3.5``; this sweep covers such sides (8 ... 30 px squares and
every pair of 10, 17, 24, 28, 42 px) on the 5,000 held-out training images
(``train[55000:]``), never the test images of the README's tables. Run it once per policy:

  python eval.py --config configs/fashion_mnist_leftover.py:resize --workdir runs/demo \
      --out_dir=runs/demo/leftover_resize
  python eval.py --config configs/fashion_mnist_leftover.py:resize_up --workdir runs/demo \
      --out_dir=runs/demo/leftover_resize_up

Measured result: see ``mspe_jax/geometry.py`` (module docstring).

``get_config("<policy>,smoke")``: two sizes, 64 images, for tests.
"""

from configs import common
from configs.fashion_mnist_mspe import SHIPPED_MODEL, VALIDATION_SPLIT
from mspe_jax.geometry import LEFTOVER_POLICIES


def get_config(arg: str | None = None):
  policy, _, rest = (arg or "").partition(",")
  if policy not in LEFTOVER_POLICIES:
    raise ValueError(f"configs/fashion_mnist_leftover.py needs a leftover policy argument, one "
                     f"of {LEFTOVER_POLICIES} (e.g. ':resize_up'), got {arg!r}.")
  c = common.eval_config()
  c.pretrained = SHIPPED_MODEL
  c.methods = ("img_resize",)   # for reference: it resizes the image to 28 px either way
  c.per_kernel = False
  c.leftover = policy
  c.resolutions = (8, 9, 15, 16, 22, 23, 29, 30)
  c.grid_sizes = (10, 17, 24, 28, 42)
  c.data.name = "fashion_mnist"
  c.data.split = VALIDATION_SPLIT
  c.crop_fraction = 1.0
  c.eval_examples = None        # all 5,000
  c.batch_size = 500
  if common.parse_arg(rest or None):
    c.resolutions = (10, 24)
    c.grid_sizes = ()
    c.eval_examples = 64
    c.batch_size = 32
  return c
