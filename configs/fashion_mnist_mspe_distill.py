r"""Label-free MSPE: the demo's MSPE run with every Eq. 7 term replaced by distillation.

The teacher is the frozen pretrained model with its own kernel at native resolution, on the
same augmented image; each kernel's student term is ``KL(teacher || student) * T^2`` at its
resolution. The training pipeline carries no labels at all (they are dropped before
preprocessing), so the same recipe trains on a folder of unlabelled images
(``--config.data.name=folder:/path/to/images --config.data.train_split=train``: the
default split, ``train[:55000]``, is Fashion-MNIST's). Labels are read only by the periodic
evaluation on the test split, to measure.

Command (5.6 minutes on 2 CPU cores: one teacher forward per step):

  python train.py --config configs/fashion_mnist_mspe_distill.py --workdir runs/demo_distill

Expected result (measured 2026-11-28, first 2,000 test images): 71.9 / 84.0 / 86.7 / 88.2%
top-1 at 7 / 14 / 21 / 28 px, against 71.9 / 84.0 / 87.2 / 88.2% with labels (README); at
14 x 28 and 28 x 14 px 83.2 and 82.8% (with labels 84.0 and 83.4%).

``get_config("smoke")``: a handful of steps on tiny batches, for tests.
"""

from configs import fashion_mnist_mspe


def get_config(arg: str | None = None):
  c = fashion_mnist_mspe.get_config(arg)
  c.loss.kind = "distill"
  c.loss.temperature = 1.0
  return c
