r"""The paper's ImageNet sweep (Table 1, Fig. 4 and 9) for an MSPE ViT-B/16 and the baselines.

Command (after configs/vit_b_mspe.py trained into runs/vit_b_mspe; evaluates that run's
newest checkpoint as ``mspe``):

  python eval.py --config configs/vit_b_eval.py --workdir runs/vit_b_mspe \
      --config.pretrained=checkpoints/B_16-...-res_224.npz --config.data.data_dir=<tfds dir>

Expected result (paper Table 1, 28 / 56 / 112 / 224 / 448 px, timm's 85.1% model):
vanilla 8.52 / 54.67 / 78.75 / 85.10 / 53.81; PI-resize 14.86 / 63.44 / 80.24 / 85.10 /
85.11; MSPE 56.41 / 77.94 / 83.75 / 85.10 / 85.11. Not run by us (no ImageNet here).
Runtime: 50,000 images x 54 shapes (12 square, 3 x 6 at fixed height, 4 x 6 at fixed width)
x up to 15 methods; not measured here.

``get_config("smoke")``: two sizes, a few images (tests use a self-made TFDS dataset).
"""

from configs import common
from configs.vit_b_mspe import AUGREG_B16


def get_config(arg: str | None = None):
  c = common.eval_config()
  c.pretrained = AUGREG_B16
  c.resolutions = (28, 42, 56, 70, 84, 98, 112, 126, 140, 168, 224, 448)
  c.fixed_heights = (192, 256, 384)  # paper Fig. 4
  c.widths = (28, 56, 112, 224, 448, 896)
  c.fixed_widths = (128, 192, 256, 384)  # paper Fig. 9
  c.heights = (28, 56, 112, 224, 448, 896)
  c.data.name = "imagenet2012"
  c.data.split = "validation"
  c.crop_fraction = 0.875
  c.eval_examples = 50000
  c.batch_size = 250
  if common.parse_arg(arg):
    c.resolutions = (56, 224)
    c.fixed_heights = (128,)
    c.widths = (112,)
    c.fixed_widths = ()
    c.heights = ()
    c.eval_examples = 4
    c.batch_size = 2
  return c
