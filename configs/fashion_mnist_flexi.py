r"""FlexiViT on Fashion-MNIST: the shipped ViT trained on with a random patch size every step.

FlexiViT (Beyer et al., CVPR 2023) as big_vision trains it, scaled to the 28 px testbed: the
student starts from the shipped fixed-patch model (``assets/fashion_mnist_vit.npz``, patch 4,
7x7 position embedding) and every parameter trains; each step draws one patch size uniformly
from 2 ... 7 px (sequence 14x14 down to 4x4; a size that does not divide 28 px sees the
central ``p * (28 // p)`` px, as in ``"vanilla"`` mode), PI-resizes the stored 4x4 kernel to
it and resamples the 7x7 position embedding bilinearly to the grid. The loss distils the
frozen fixed-patch model at its own patch size (FlexiViT's distillation setting: teacher =
initialisation) plus cross-entropy on the labels. Patch 1 (784 tokens) is left out of
training: it costs as much as all the others together on 2 CPU cores; it is evaluated.

The stored kernel stays at the teacher's 4x4 (big_vision stores 32x32, larger than most of
its patch sizes): the parameter tree is then a plain ViT at 28 px, and MSPE can train on top
of it unchanged (``configs/fashion_mnist_mspe.py`` with ``--config.init_file`` = the result).

Command (seed 0; 1,500 steps of batch 128 in 41 minutes on 2 CPU cores, shared with another
job for the first quarter; 6 step programs, one per patch size, and the teacher):

  python train.py --config configs/fashion_mnist_flexi.py --workdir runs/flexi

The shipped ``assets/fashion_mnist_flexivit.npz`` is this run's ``model.npz`` (measured
2026-11-28). Top-1 on the first 2,000 test images at 28 px, patch 2 / 3 / 4 / 5 / 6 / 7:
81.1 / 86.7 / 88.0 / 85.0 / 82.4 / 79.7% (the fixed model at its own patch 4: 88.2%; the
fixed model with its kernel PI-resized, FlexiViT's zero-shot, on the first 1,000: 28.9 / 84.3
/ - / 79.0 / 62.1 / 56.5%). README and docs/flexi_results.md have the full sweep.

``get_config("smoke")``: a handful of steps on tiny batches, for tests.
"""

from configs import common
from configs.fashion_mnist_mspe import SHIPPED_MODEL, TRAIN_SPLIT

PATCH_SIZES = (2, 3, 4, 5, 6, 7)


def get_config(arg: str | None = None):
  c = common.base_config()
  c.mode = "flexi"
  c.init_file = SHIPPED_MODEL
  c.model.image_size = 28
  c.flexi.patch_sizes = PATCH_SIZES
  c.loss.kind = "ce+distill"
  c.loss.temperature = 1.0

  c.data.name = "fashion_mnist"
  c.data.train_split = TRAIN_SPLIT
  c.data.eval_split = "test"
  c.input.batch_size = 128
  c.input.eval_crop_fraction = 1.0
  c.input.augment.crop_scale = (0.5, 1.0)   # the shipped model's pretraining augmentation
  c.input.augment.flip = True
  c.input.augment.color_jitter = 0.1

  c.optim.name = "adamw"
  c.optim.lr = 3e-4
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 100
  c.optim.grad_clip = 1.0
  c.total_steps = 1500
  c.log_every = 25
  c.checkpoint_every = 250
  c.eval_every = 500
  c.eval_examples = 2000
  c.eval_batch_size = 500

  if common.parse_arg(arg):
    common.smoke(c, steps=6, batch=16, checkpoint_every=3, eval_examples=64)
    c.flexi.patch_sizes = (2, 4, 7)
  return c
