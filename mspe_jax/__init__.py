"""mspe-jax: Multi-Scale Patch Embedding (MSPE, NeurIPS 2024) for big_vision / AugReg ViTs.

    import mspe_jax
    model, params = mspe_jax.load_pretrained("B_16.npz", "mspe")
    logits, extras = model.apply({"params": params}, images)   # NHWC in [-1, 1], any size
    pi_logits, _ = model.apply({"params": params}, images, mspe_jax.PatchEmbed("pi"))

The house, one job per module:

* maths and geometry (pure): ``pi_resize`` (resize matrices, cached pseudo-inverses),
  ``geometry`` (sizes, crops, resizes, patches);
* the model: ``patch_embed`` (the policy value: vanilla / PI / resize / MSPE, ``plan``,
  routing), ``vit`` (architecture + one policy), ``attention``;
* files: ``npz`` (AugReg / big_vision ``.npz`` in and out), ``checkpointer`` (orbax steps),
  ``workdir`` (a training run as a model);
* training: ``terms`` (Eq. 7's draws), ``mspe_step`` / ``full_step`` (one step each),
  ``train_state``, ``guard`` (non-finite), ``hooks``, ``metrics``, ``train_lib`` (the loop);
* evaluation: ``sweep`` (methods x shapes), ``eval_lib`` (the entry), ``report``, ``flops``;
* ``data`` (tf.data / TFDS / Debian Fashion-MNIST), ``losses``, ``optim``, ``jax_utils``,
  ``cpu_tuning``, ``config_cli``.
"""

from mspe_jax import pi_resize
from mspe_jax.npz import load_pretrained, save_npz
from mspe_jax.patch_embed import PatchEmbed, Plan, init_mspe_params
from mspe_jax.vit import ViT, check_images, decode_variant
from mspe_jax.workdir import load_from_workdir

__all__ = ["PatchEmbed", "Plan", "ViT", "check_images", "decode_variant", "init_mspe_params",
           "load_from_workdir", "load_pretrained", "pi_resize", "save_npz"]
__version__ = "0.2.0"
