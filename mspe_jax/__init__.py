"""mspe-jax: Multi-Scale Patch Embedding (MSPE, NeurIPS 2024) for big_vision / AugReg ViTs.

    import mspe_jax
    model, params = mspe_jax.load_pretrained("B_16.npz", patch_embed="mspe")
    logits, extras = model.apply({"params": params}, images)   # NHWC in [-1, 1], any size
"""

from mspe_jax import pi_resize
from mspe_jax.checkpoints import load_pretrained, save_npz
from mspe_jax.ckpt_manager import load_from_workdir
from mspe_jax.mspe import init_mspe_params
from mspe_jax.vit import ViT, check_images, decode_variant

__all__ = ["ViT", "check_images", "decode_variant", "init_mspe_params", "load_from_workdir",
           "load_pretrained",
           "pi_resize", "save_npz"]
__version__ = "0.1.0"
