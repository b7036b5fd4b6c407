r"""Trains the offline segmentation testbed's segmenter: SETR-Naive on the demo's small ViT.

The canvases (``data.name = "fashion_mnist_seg"``, ``mspe_jax.seg_canvas``): 56 x 56 px,
2-4 Fashion-MNIST garments on a textured background, 11 classes (background + 10 garment
classes). The model: the shipped classifier's encoder (``assets/fashion_mnist_vit.npz``,
patch 4, width 128, depth 4; its position embedding resampled from 7x7 to the 14x14 grid
of 56 px) with a SETR-Naive head (LayerNorm, 1x1 to 128, ReLU, 1x1 to 11 classes), every
parameter trained (``mode="full"``) with the per-pixel cross-entropy, AdamW, random resized
crops of the canvas (labels cropped with it) and flips. Trains on the canvases of
``train[:55000]``; the tables use the canvases of ``test``.

Command (writes runs/fmnist_seg/model.npz; ``assets/fashion_mnist_seg.npz`` is that file):

  python train.py --config configs/fashion_mnist_seg.py --workdir runs/fmnist_seg

Measured (2026-11-29, seed 0, 1,500 steps of batch 32, 33.5 minutes on 2 CPU cores shared
with test runs for part of it): on the first 1,000 test canvases at 56 px, mIoU 33.6%,
mAcc 46.7%, F1 47.3% (step 500: 23.5 / 35.5 / 33.8; step 1,000: 31.6 / 43.3 / 44.8). The
background is easy; the garment classes that Fashion-MNIST itself confuses (shirt,
T-shirt, pullover, coat) keep the mean low. The classifier's encoder helps: the same run
from scratch (``--config.init_file= --config.model.patch_size=4 --config.model.width=128
--config.model.depth=4 --config.model.num_heads=4 --config.model.mlp_dim=512``, stopped after
step 500) scored mIoU 18.4 / mAcc 28.6 / F1 26.0 at step 500 against 23.5 / 35.5 / 33.8, with
training loss 0.751 against 0.692.

``get_config("smoke")``: a handful of steps on tiny batches, for tests.
"""

from configs import common
from configs.fashion_mnist_mspe import SHIPPED_MODEL

SEG_SIZE = 56  # the canvases' side: the segmenter's native resolution


def get_config(arg: str | None = None):
  c = common.base_config()
  c.mode = "full"
  c.init_file = SHIPPED_MODEL   # the classifier's encoder; a new SETR-Naive head
  c.model.image_size = SEG_SIZE
  c.model.task = "segmentation"
  c.model.num_classes = 11

  c.data.name = "fashion_mnist_seg"
  c.data.train_split = "train[:55000]"
  c.data.eval_split = "test"
  c.input.batch_size = 32
  c.input.eval_crop_fraction = 1.0
  c.input.augment.crop_scale = (0.5, 1.0)
  c.input.augment.flip = True
  c.input.augment.color_jitter = 0.1

  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 100
  c.optim.grad_clip = 1.0
  c.total_steps = 1500
  c.log_every = 50
  c.checkpoint_every = 250
  c.eval_every = 500
  c.eval_resolutions = (SEG_SIZE,)
  c.eval_examples = 1000
  c.eval_batch_size = 250

  if common.parse_arg(arg):
    common.smoke(c, steps=4, batch=8, checkpoint_every=2, eval_examples=16)
    c.data.train_split = "train[:256]"
    c.data.eval_split = "test[:64]"
  return c
