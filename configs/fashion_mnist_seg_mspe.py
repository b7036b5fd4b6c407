r"""MSPE on the offline segmenter (paper Table 2's setting, on the canvas testbed).

The segmenter (``assets/fashion_mnist_seg.npz``, ``configs/fashion_mnist_seg.py``: SETR-Naive
on the small ViT, 56 px, patch 4, a 14x14 token grid) gets K = 4 kernels of base size 1, 2,
3, 4 px, initialised by PI-resize. Only they train; encoder and head are frozen. Loss:
paper Eq. 7 with the per-pixel cross-entropy (``mspe_jax.segmentation``; the logits on the
grid upsampled to the 56 px label map, ``loss.ignore_label`` pixels skipped); each step one
resolution per kernel from its subset (the multiples of the grid Eq. 10 routes to it: 14 px
to kernel 0, 28 px to kernel 1, 42 px to kernel 2, 70 to 112 px to kernel 3; 56 px, the
native size, is served by the pretrained kernel, frozen, so native predictions are the
segmenter's bit for bit). Square resolutions only: the paper's Table 2 is square. Trains on
the canvases of ``train[:55000]``.

Command (10.8 minutes on 2 CPU cores; 6 + 2 step programs: one per (kernel, size), the frozen
encoder once, one update):

  python train.py --config configs/fashion_mnist_seg_mspe.py --workdir runs/demo_seg

Expected result (measured 2026-11-29; first 1,000 test canvases, configs/fashion_mnist_seg_eval.py):
mIoU at 14 / 21 / 28 / 42 / 56 / 84 px of 12.3 / 24.9 / 29.7 / 35.1 / 33.6 / 35.9%, against
PI-resize (the untrained kernels) 10.4 / 10.8 / 11.5 / 33.7 / 33.6 / 34.5% and image resize
19.0 / 25.7 / 28.0 / 34.2 / 33.6 / 35.8%; 56 px is the segmenter's own, bit for bit.

``get_config("smoke")``: a handful of steps on tiny batches, for tests.
"""

from configs import common
from configs.fashion_mnist_seg import SEG_SIZE

SHIPPED_SEGMENTER = "assets/fashion_mnist_seg.npz"


def get_config(arg: str | None = None):
  c = common.base_config()
  c.mode = "mspe"
  c.init_file = SHIPPED_SEGMENTER
  c.model.image_size = SEG_SIZE
  c.mspe.base_sizes = (1, 2, 3, 4)
  c.mspe.resolutions = ((14,), (28,), (42,), (70, 84, 112))
  c.mspe.lam = 1.0
  c.mspe.freeze_native_kernel = True

  c.data.name = "fashion_mnist_seg"
  c.data.train_split = "train[:55000]"
  c.data.eval_split = "test"
  c.input.batch_size = 32
  c.input.eval_crop_fraction = 1.0
  c.input.augment.crop_scale = (1.0, 1.0)
  c.input.augment.flip = True
  c.input.augment.color_jitter = 0.1

  c.optim.name = "sgd"
  c.optim.lr = 0.03
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.decay = "cosine"
  c.total_steps = 200
  c.log_every = 10
  c.checkpoint_every = 100
  c.eval_every = 200
  c.eval_resolutions = (56, 28, 14)
  c.eval_examples = 500
  c.eval_batch_size = 250

  if common.parse_arg(arg):
    common.smoke(c, steps=4, batch=8, checkpoint_every=2, eval_examples=16)
    c.data.train_split = "train[:256]"
    c.data.eval_split = "test[:64]"
  return c
