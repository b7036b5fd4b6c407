r"""Label-free MSPE on the offline segmenter: every Eq. 7 term is the per-pixel distillation
from the frozen segmenter at the native 56 px (its own kernel) on the same canvas; the
training pipeline carries no label maps. Otherwise as ``configs/fashion_mnist_seg_mspe.py``.

Command:

  python train.py --config configs/fashion_mnist_seg_mspe_distill.py --workdir runs/demo_seg_distill

``get_config("smoke")``: a handful of steps on tiny batches, for tests.
"""

from configs import fashion_mnist_seg_mspe


def get_config(arg: str | None = None):
  c = fashion_mnist_seg_mspe.get_config(arg)
  c.loss.kind = "distill"
  return c
