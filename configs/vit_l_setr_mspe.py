r"""MSPE on a SETR-Naive ViT-L/16 segmenter, ADE20K at 512 px: the paper's Table 2 setting.

The segmenter: SETR-Naive (``model.task = "segmentation"``: LayerNorm, 1x1 to 256, ReLU, 1x1
to 150 classes, bilinear upsampling) on ViT-L/16 at 512 px, a 32x32 token grid, in this
project's ``.npz`` format. MMSegmentation's SETR checkpoints are PyTorch files with other
parameter names; we do not convert them. Train one with the ``"segmenter"`` variant below
from an AugReg ViT-L/16 (the paper's starting point is a well-trained SETR-Naive), then
MSPE on it:

* K = 4 kernels of base size 4, 8, 12, 16 px (PI-resize initialised, bias copied) on the
  fixed 32x32 grid; square resolutions, every multiple of the grid routed by Eq. 10 (128 px,
  a quarter of native, to the 4 px kernel; 256 px to the 8 px one; ...); lambda = 1 (Eq. 7
  with the per-pixel cross-entropy, ADE20K's "other" label ignored); encoder and head
  frozen; SGD lr 1e-3, momentum 0.9, weight decay 5e-4, cosine decay, 5 epochs, batch 8
  per device (the paper: 64 per GPU for classification; its segmentation batch is not
  given); random resized crop and flip (the paper's MMSegmentation pipeline adds
  PhotoMetricDistortion; we have brightness / contrast / saturation jitter).

Data: ADE20K as distributed (``ADEChallengeData2016/images/{training,validation}/*.jpg`` and
``annotations/.../*.png``), read by ``data.name = "ade20k:<dir>"`` (label 0 "other" becomes
the ignore label and the rest shift by one, MMSegmentation's ``reduce_zero_label``). TFDS's
``scene_parse150`` is not this benchmark (it holds the instance annotations of the 2017
challenge). Evaluation crops the 512 px centre of each image (shorter side resized to
512 px, labels by nearest neighbour); MMSegmentation scores whole images at their own size
with a sliding window, so numbers are close to but not the paper's protocol.

Commands:

  python train.py --config configs/vit_l_setr_mspe.py:segmenter --workdir runs/setr_l \
      --config.init_file=<AugReg L/16 .npz> --config.data.name=ade20k:<dir>
  python train.py --config configs/vit_l_setr_mspe.py --workdir runs/setr_l_mspe \
      --config.init_file=runs/setr_l/model.npz --config.data.name=ade20k:<dir>
  python eval.py --config configs/vit_l_setr_eval.py --workdir runs/setr_l_mspe \
      --config.pretrained=runs/setr_l/model.npz --config.data.name=ade20k:<dir>

Not run by us (no ADE20K, no ViT-L here). Paper Table 2 (ADE20K, mIoU at 128 px, a quarter
of native): vanilla 2.89, PI-resize ("FlexiViT") 31.44, MSPE 39.65; native unchanged.

Variants (``get_config(arg)``): ``""`` MSPE; ``"segmenter"``: SETR-Naive fine-tuning of
every parameter from a classifier ``.npz`` (SGD lr 0.01, momentum 0.9, weight decay 0,
160k steps of batch 16 as MMSegmentation's SETR schedule, cosine instead of its poly
decay); ``"smoke"``: a few steps, for tests with self-made files in the ADE20K layout.
"""

from configs import common

VARIANTS = ("", "segmenter", "smoke")
ADE20K_CLASSES = 150


def get_config(arg: str | None = None):
  if arg not in VARIANTS and arg is not None:
    raise ValueError(f"Unknown variant {arg!r} of configs/vit_l_setr_mspe.py; expected one of "
                     f"{[v for v in VARIANTS if v]} or none.")
  c = common.base_config()
  c.mode = "mspe"
  c.init_file = "runs/setr_l/model.npz"
  c.model.image_size = 512
  c.model.task = "segmentation"
  c.model.num_classes = ADE20K_CLASSES
  c.mspe.base_sizes = (4, 8, 12, 16)
  c.mspe.resolutions = ()  # every multiple of the 32x32 grid up to 2x native, routed by Eq. 10
  c.mspe.lam = 1.0
  c.mspe.freeze_native_kernel = False
  c.loss.ignore_label = 255

  c.data.name = "ade20k:data/ADEChallengeData2016"
  c.data.train_split = "training"
  c.data.eval_split = "validation"
  c.input.per_device_batch = 8
  c.input.eval_crop_fraction = 1.0
  c.input.augment.crop_scale = (0.25, 1.0)
  c.input.augment.crop_ratio = (3 / 4, 4 / 3)
  c.input.augment.flip = True
  c.input.augment.color_jitter = 0.2

  c.optim.name = "sgd"
  c.optim.lr = 1e-3
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.decay = "cosine"
  c.num_epochs = 5
  c.log_every = 50
  c.checkpoint_every = 1000
  c.eval_every = 1000
  c.eval_resolutions = (512, 256, 128)
  c.eval_examples = 500
  c.eval_batch_size = 16

  if arg == "segmenter":
    c.mode = "full"
    c.init_file = "checkpoints/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1.npz"
    c.input.per_device_batch = None
    c.input.batch_size = 16
    c.optim.lr = 0.01
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.total_steps = 160_000
    c.checkpoint_every = 4000
    c.eval_every = 16_000
    c.eval_resolutions = (512,)
  if arg == "smoke":
    common.smoke(c, steps=3, batch=2, checkpoint_every=3, eval_examples=4)
    c.model.image_size = 64
    c.mspe.resolutions = ((16,), (32,), (48,), (64,))
    c.eval_resolutions = (64, 16)
  return c
