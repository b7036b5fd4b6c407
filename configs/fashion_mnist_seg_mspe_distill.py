r"""Label-free MSPE on the offline segmenter: every Eq. 7 term is the per-pixel distillation
from the frozen segmenter at the native 56 px (its own kernel) on the same canvas; the
training pipeline carries no label maps. Otherwise as ``configs/fashion_mnist_seg_mspe.py``.

Command (11.7 minutes on 2 CPU cores: one teacher forward per step):

  python train.py --config configs/fashion_mnist_seg_mspe_distill.py --workdir runs/demo_seg_distill

Expected result (measured 2026-11-29, first 1,000 test canvases): mIoU at 14 / 21 / 28 / 42 /
56 / 84 px of 11.5 / 24.3 / 28.1 / 33.9 / 33.6 / 34.4% (with labels: 12.3 / 24.9 / 29.7 /
35.1 / 33.6 / 35.9%).

``get_config("smoke")``: a handful of steps on tiny batches, for tests.
"""

from configs import fashion_mnist_seg_mspe


def get_config(arg: str | None = None):
  c = fashion_mnist_seg_mspe.get_config(arg)
  c.loss.kind = "distill"
  return c
