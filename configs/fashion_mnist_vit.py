r"""Pretrains the small ViT the offline demo starts from: Fashion-MNIST, 28 px, patch 4.

A 7x7 token grid, width 128, depth 4, 4 heads, MLP 512 (0.8 M parameters), trained from
scratch in ``full`` mode with AdamW, random resized crops and flips.

Command (about 70 minutes on 2 CPU cores; writes runs/fmnist_vit/model.npz):

  python train.py --config configs/fashion_mnist_vit.py --workdir runs/fmnist_vit

Expected result: 87.3% top-1 on the 10,000 Fashion-MNIST test images at 28 px (measured,
seed 0, 5,616 steps; 52.2% at 14 px). The shipped ``assets/fashion_mnist_vit.npz`` is this
run's ``model.npz``.

``get_config("smoke")``: a handful of steps on tiny batches, for tests.
"""

from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.mode = "full"
  c.init_file = ""
  c.model.patch_size = 4
  c.model.width = 128
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.mlp_dim = 512
  c.model.image_size = 28
  c.model.num_classes = 10

  c.data.name = "fashion_mnist"
  c.data.eval_split = "test"
  c.input.batch_size = 128
  c.input.eval_crop_fraction = 1.0
  c.input.augment.crop_scale = (0.5, 1.0)
  c.input.augment.flip = True
  c.input.augment.color_jitter = 0.1

  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 500
  c.optim.grad_clip = 1.0
  c.num_epochs = 12
  c.log_every = 50
  c.checkpoint_every = 500
  c.eval_every = 1000
  c.eval_resolutions = (28, 14)
  c.eval_examples = 10000
  c.eval_batch_size = 500

  if common.parse_arg(arg):
    common.smoke(c, steps=6, batch=16, checkpoint_every=3, eval_examples=64)
  return c
