r"""The paper's Table 2 sweep on ADE20K: a SETR-Naive MSPE run against vanilla, PI-resize
("FlexiViT" in the paper) and image resizing at 128, 256, 512 (native) and 768 px; mIoU,
mAcc and F1 (``configs/vit_l_setr_mspe.py`` says how to get the models and the data).

Command:

  python eval.py --config configs/vit_l_setr_eval.py --workdir runs/setr_l_mspe \
      --config.pretrained=runs/setr_l/model.npz --config.data.name=ade20k:<dir>

Not run by us (no ADE20K here). ``get_config("smoke")``: for tests on self-made files.
"""

from configs import common


def get_config(arg: str | None = None):
  c = common.eval_config()
  c.pretrained = "runs/setr_l/model.npz"
  c.methods = ("vanilla", "pi", "img_resize")
  c.per_kernel = False
  c.resolutions = (128, 256, 384, 512, 768)
  c.grid_baselines = ()
  c.data.name = "ade20k:data/ADEChallengeData2016"
  c.data.split = "validation"
  c.crop_fraction = 1.0
  c.batch_size = 16
  c.masks = (128, 256, 512)
  c.mask_examples = 4
  if common.parse_arg(arg):
    c.resolutions = (16, 64)
    c.masks = (16,)
    c.mask_examples = 2
    c.eval_examples = 4
    c.batch_size = 2
  return c
