r"""Label-free MSPE: the demo's MSPE run with every Eq. 7 term replaced by distillation.

The teacher is the frozen pretrained model with its own kernel at native resolution, on the
same augmented image; each kernel's student term is ``KL(teacher || student) * T^2`` at its
resolution. The training pipeline carries no labels at all (they are dropped before
preprocessing), so the same recipe trains on a folder of unlabelled images
(``--config.data.name=folder:/path/to/images``). Labels are read only by the periodic
evaluation on the test split, to measure.

Command (about as long as configs/fashion_mnist_mspe.py: one teacher forward per step):

  python train.py --config configs/fashion_mnist_mspe_distill.py --workdir runs/demo_distill

Expected result (measured, first 2,000 test images): 70.2 / 83.7 / 87.8 / 88.2% top-1 at
7 / 14 / 21 / 28 px, against 69.8 / 84.8 / 87.8 / 88.2% with labels (README).

``get_config("smoke")``: a handful of steps on tiny batches, for tests.
"""

from configs import fashion_mnist_mspe


def get_config(arg: str | None = None):
  c = fashion_mnist_mspe.get_config(arg)
  c.loss.kind = "distill"
  c.loss.temperature = 1.0
  return c
