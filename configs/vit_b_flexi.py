r"""FlexiViT-B on ImageNet-1k: big_vision's FlexiViT recipe (Beyer et al., CVPR 2023).

Every parameter trains; each step draws one sequence side uniformly from 5, 6, 8, 10, 12,
15, 16, 20, 24, 30 at 240 px, i.e. a patch size of 48, 40, 30, 24, 20, 16, 15, 12, 10 or 8 px
(the same draw on every host: a function of ``(seed, step)``; one compiled program per patch
size, 10 in all). The kernel is stored at 32x32 and the position embedding at 7x7, as in the
published ``flexivit_*_i1k.npz``: the initialisation (an AugReg ViT-B/8) is PI-resized to
32x32 and its 28x28 position embedding resampled to 7x7 when the run starts
(``config.flexi.kernel_size / posemb_size``); every call PI-resizes the kernel to the drawn
patch size and resamples the position embedding bilinearly to the grid. The loss is
FlexiViT's distillation: KL (temperature 1) to the frozen initialisation at its own 8 px
patch. Adam (b2 0.999), lr 1e-4 with 5,000 warm-up steps and cosine decay, weight decay 1e-5,
gradient clipping at 1.0, batch 4096, inception crop and flip, 90 epochs.

Where we differ from big_vision: no mixup (our pipeline has none; big_vision's distillation
uses mixup with p = 1); the teacher sees the student's 240 px crop (big_vision resizes its
copy to 224 px), so its 28x28 position embedding is resampled to 30x30.

Get the initialisation (AugReg ViT-B/8, ImageNet-21k pre-trained, ImageNet-1k fine-tuned at
224 px; https://github.com/google-research/vision_transformer):

  F=B_8-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz
  gsutil cp gs://vit_models/augreg/$F checkpoints/

Command (not run by us: no ImageNet here; a pod slice or a multi-GPU node is the normal case):

  python train.py --config configs/vit_b_flexi.py --workdir runs/vit_b_flexi \
      --config.init_file=checkpoints/B_8-...-res_224.npz --config.data.data_dir=<tfds dir>

What the FlexiViT paper reports: a FlexiViT-B matches the fixed ViT-B/16 and ViT-B/30 at
their own patch sizes and beats them at every other. Not run by us. ``eval.py`` measures the
patch sweep with ``--config.flexivit=<workdir> --config.patch_sizes=...``.

``get_config("smoke")``: 3 steps, batch 2, two patch sizes (tests use it on a self-made
checkpoint and a self-made TFDS ``imagenet2012``).
"""

from configs import common

AUGREG_B8 = ("checkpoints/B_8-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0"
             "--imagenet2012-steps_20k-lr_0.01-res_224.npz")
IMAGE_SIZE = 240
SEQUENCE_SIDES = (5, 6, 8, 10, 12, 15, 16, 20, 24, 30)  # big_vision's flexi.seqhw
PATCH_SIZES = tuple(IMAGE_SIZE // s for s in SEQUENCE_SIDES)  # 48 ... 8 px


def get_config(arg: str | None = None):
  c = common.base_config()
  c.mode = "flexi"
  c.init_file = AUGREG_B8
  c.model.image_size = IMAGE_SIZE
  c.flexi.patch_sizes = PATCH_SIZES
  c.flexi.kernel_size = 32
  c.flexi.posemb_size = 7
  c.loss.kind = "distill"
  c.loss.temperature = 1.0

  c.data.name = "imagenet2012"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.input.batch_size = 4096
  c.input.eval_crop_fraction = 0.875
  c.input.augment.crop_scale = (0.08, 1.0)   # inception crop
  c.input.augment.flip = True
  c.input.augment.color_jitter = 0.0

  c.optim.name = "adamw"
  c.optim.lr = 1e-4
  c.optim.b2 = 0.999
  c.optim.weight_decay = 1e-5
  c.optim.warmup_steps = 5000
  c.optim.decay = "cosine"
  c.optim.grad_clip = 1.0
  c.num_epochs = 90
  c.log_every = 50
  c.checkpoint_every = 1000
  c.eval_every = 5000
  c.eval_examples = 10000
  c.eval_batch_size = 256

  if common.parse_arg(arg):
    common.smoke(c, steps=3, batch=2, checkpoint_every=3, eval_examples=4)
    c.flexi.patch_sizes = (48, 16)
  return c
