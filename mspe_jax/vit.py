"""Vision Transformer with big_vision parameter names and switchable patch embeddings.

The parameter tree is public API and matches big_vision's ``vit.py`` (Linen numbering):

    embedding/{kernel,bias}                 (p, p, 3, D), (D,)
    cls                                     (1, 1, D)           pool_type "tok" only
    pos_embedding                           (1, N*N, D)         no cls slot
    Transformer/encoderblock_{i}/LayerNorm_0/{scale,bias}
    Transformer/encoderblock_{i}/MultiHeadDotProductAttention_0/
        {query,key,value}/kernel            (D, H, D/H)
        {query,key,value}/bias              (H, D/H)
        out/{kernel,bias}                   (H, D/H, D), (D,)
    Transformer/encoderblock_{i}/LayerNorm_1/{scale,bias}
    Transformer/encoderblock_{i}/MlpBlock_0/Dense_{0,1}/{kernel,bias}
    Transformer/encoder_norm/{scale,bias}
    head/{kernel,bias}                      (D, classes)
    mspe/embedding_{k}/{kernel,bias}        (b_k, b_k, 3, D)    patch_embed "mspe" only

``patch_embed`` picks how images become tokens (see ``mspe_jax.mspe`` for the details):

* ``"vanilla"``: the pretrained kernel at patch ``p``; the grid follows the input
  (centre-cropped to a multiple of ``p``) and the position embedding is resampled.
* ``"pi"``: fixed ``N x N`` grid, kernel ``(h//N, w//N)`` by PI-resize of the pretrained one.
* ``"resize"``: as ``"pi"`` but plain interpolation of the kernel (the paper's ablation).
* ``"mspe"``: fixed grid, the routed MSPE kernel PI-resized to ``(h//N, w//N)``.

``__call__`` returns ``(logits, extras)``; inputs are NHWC float images in [-1, 1]. It is
``encode(embed(images))``: ``embed`` is the only part that depends on the input size in the
fixed-grid modes, so the training and evaluation code compile ``encode`` once and ``embed``
per resolution (``model.apply(variables, x, method="embed")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mspe_jax import attention, pi_resize
from mspe_jax import mspe as mspe_lib

PATCH_EMBED_MODES = ("vanilla", "pi", "resize", "mspe")
POOL_TYPES = ("tok", "gap")

VARIANTS = {
    "Ti": dict(width=192, depth=12, mlp_dim=768, num_heads=3),
    "S": dict(width=384, depth=12, mlp_dim=1536, num_heads=6),
    "M": dict(width=512, depth=12, mlp_dim=2048, num_heads=8),
    "B": dict(width=768, depth=12, mlp_dim=3072, num_heads=12),
    "L": dict(width=1024, depth=24, mlp_dim=4096, num_heads=16),
}


def decode_variant(variant: str) -> dict[str, Any]:
  """``"B/16"`` -> ``dict(width=768, depth=12, mlp_dim=3072, num_heads=12,
  patch_size=(16, 16))``."""
  name, _, patch = str(variant).partition("/")
  if name not in VARIANTS or not patch.isdigit() or int(patch) < 1:
    raise ValueError(f"Unknown ViT variant {variant!r}: expected '<{'|'.join(VARIANTS)}>/<patch>', "
                     "e.g. 'B/16'.")
  return dict(VARIANTS[name], patch_size=(int(patch), int(patch)))


def check_images(images, in_channels: int = 3) -> None:
  """Raises ValueError naming the problem for inputs the model cannot take.

  Shape and dtype are checked always (they are static under ``jax.jit``); NaN/inf only for
  concrete arrays.
  """
  shape = tuple(getattr(images, "shape", ()))
  if len(shape) != 4:
    raise ValueError(f"Expected a batch of NHWC images of rank 4, got shape {shape}.")
  if shape[-1] != in_channels:
    raise ValueError(f"Expected {in_channels} channels in NHWC images, got shape {shape} "
                     f"(channels last; grey images must be tiled to {in_channels} channels).")
  dtype = getattr(images, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"Images must be floating point in [-1, 1], got dtype {dtype} "
                     "(convert uint8 with x / 127.5 - 1).")
  if not isinstance(images, jax.core.Tracer) and not np.isfinite(np.asarray(images)).all():
    raise ValueError(f"Images of shape {shape} contain NaN or inf pixels.")


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    init = dict(kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.normal(stddev=1e-6))
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, **init)(x)
    x = nn.gelu(x)  # tanh approximation, as big_vision / AugReg
    return nn.Dense(d, dtype=self.dtype, **init)(x)


class Encoder1DBlock(nn.Module):
  mlp_dim: int
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, num_queries: int | None = None):
    """``num_queries``: compute the outputs of the first ``num_queries`` tokens only."""
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    y = attention.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype)(
        y, num_queries)
    x = x[:, :y.shape[1]] + y
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    y = MlpBlock(self.mlp_dim, dtype=self.dtype)(y)
    return x + y


class Encoder(nn.Module):
  depth: int
  mlp_dim: int
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, last_queries: int | None = None):
    """``last_queries``: the last block computes the first ``last_queries`` outputs only."""
    for i in range(self.depth):
      x = Encoder1DBlock(self.mlp_dim, self.num_heads, self.dtype, name=f"encoderblock_{i}")(
          x, last_queries if i == self.depth - 1 else None)
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")(x)


class ViT(nn.Module):
  """ViT classifier; see the module docstring for names and patch-embedding modes.

  Attributes:
    num_classes: head size; 0 or None means no head (logits are the pre-logits).
    patch_size, width, depth, mlp_dim, num_heads: the architecture (see ``decode_variant``).
    image_size: native resolution; the token grid is ``N = image_size // patch``.
    pool_type: ``"tok"`` (cls token, AugReg) or ``"gap"`` (global average pooling).
    patch_embed: ``"vanilla" | "pi" | "resize" | "mspe"``.
    leftover: pixels past the fixed grid: ``"resize" | "crop" | "pad"`` (see ``mspe_jax.mspe``).
    resize_method, antialias: the image resize the PI matrices invert (and the leftover resize).
    kernel_resize_method: interpolation used by ``patch_embed="resize"``.
    mspe_base_sizes: MSPE base kernel sizes (default ``p*(k+1)/4``, k < 4).
    freeze_native_kernel: in ``"mspe"`` mode the pretrained ``embedding`` kernel serves inputs
      whose kernel is exactly the native patch, so native accuracy is unchanged bit for bit.
    mspe_kernel: force one MSPE kernel instead of routing (``-1``: the pretrained kernel).
  """
  num_classes: int | None = 1000
  patch_size: Sequence[int] = (16, 16)
  width: int = 768
  depth: int = 12
  mlp_dim: int | None = None
  num_heads: int = 12
  image_size: int | Sequence[int] = 224
  in_channels: int = 3
  pool_type: str = "tok"
  patch_embed: str = "vanilla"
  leftover: str = "resize"
  resize_method: str = "bilinear"
  antialias: bool = True
  kernel_resize_method: str = "bilinear"
  mspe_base_sizes: Sequence[int] | None = None
  freeze_native_kernel: bool = False
  mspe_kernel: int | None = None
  head_zeroinit: bool = True
  dtype: Any = jnp.float32

  # ---- static geometry (plain Python, usable outside apply) ----

  @property
  def patch(self) -> tuple[int, int]:
    return pi_resize.as_hw(self.patch_size, "patch_size")

  @property
  def grid(self) -> tuple[int, int]:
    """The native token grid ``(N, N)``."""
    ih, iw = pi_resize.as_hw(self.image_size, "image_size")
    ph, pw = self.patch
    if ih % ph or iw % pw:
      raise ValueError(f"image_size {self.image_size} is not a multiple of patch {self.patch}.")
    return ih // ph, iw // pw

  @property
  def base_sizes(self) -> tuple[int, ...]:
    if self.mspe_base_sizes is None:
      return mspe_lib.default_base_sizes(self.patch[0])
    return mspe_lib.check_base_sizes(self.mspe_base_sizes)

  def plan(self, height: int, width: int) -> dict[str, Any]:
    """How an ``height x width`` input is embedded: kernel size, token grid, kernel index.

    ``kernel_index`` is the MSPE kernel used (``-1``: the pretrained kernel; ``None`` outside
    ``"mspe"`` mode). Raises ValueError for inputs too small for the grid.
    """
    if self.patch_embed not in PATCH_EMBED_MODES:
      raise ValueError(f"Unknown patch_embed {self.patch_embed!r}; expected one of "
                       f"{PATCH_EMBED_MODES}.")
    if self.patch_embed == "vanilla":
      ph, pw = self.patch
      if height < ph or width < pw:
        raise ValueError(f"Input of {height}x{width} px is smaller than one {ph}x{pw} patch "
                         "(patch_embed='vanilla').")
      return dict(kernel_hw=(ph, pw), grid=(height // ph, width // pw), kernel_index=None)
    kernel_hw = mspe_lib.fixed_grid_kernel((height, width), self.grid, self.leftover)
    index = None
    if self.patch_embed == "mspe":
      base = self.base_sizes
      if self.mspe_kernel is not None:
        if not -1 <= self.mspe_kernel < len(base):
          raise ValueError(f"mspe_kernel={self.mspe_kernel} out of range for {len(base)} kernels.")
        index = int(self.mspe_kernel)
      elif self.freeze_native_kernel and kernel_hw == self.patch:
        index = mspe_lib.NATIVE_KERNEL
      else:
        index = mspe_lib.route(kernel_hw, base)
    return dict(kernel_hw=kernel_hw, grid=self.grid, kernel_index=index)

  # ---- the model: embed (patch embedding) then encode (everything after it) ----

  def setup(self):
    if self.pool_type not in POOL_TYPES:
      raise ValueError(f"Unknown pool_type {self.pool_type!r}; expected one of {POOL_TYPES}.")
    d = self.width
    self.embedding = mspe_lib.PatchKernel(self.patch, self.in_channels, d)
    if self.patch_embed == "mspe":
      self.mspe = mspe_lib.MSPEKernels(self.base_sizes, self.in_channels, d)
    self.pos_embedding = self.param("pos_embedding", nn.initializers.normal(stddev=d ** -0.5),
                                    (1, self.grid[0] * self.grid[1], d))
    if self.pool_type == "tok":
      self.cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
    self.Transformer = Encoder(self.depth, self.mlp_dim or 4 * d, self.num_heads, self.dtype)
    if self.num_classes:
      head_init = nn.initializers.zeros if self.head_zeroinit else nn.initializers.lecun_normal()
      self.head = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=head_init)

  def _stored_kernel(self, plan):
    """The kernel and bias ``embed`` uses, at their stored size (before any resampling)."""
    kernel, bias = self.embedding()
    if self.patch_embed == "mspe":
      if plan["kernel_index"] != mspe_lib.NATIVE_KERNEL:
        kernel, bias = self.mspe(plan["kernel_index"])
      else:
        self.mspe(0)  # declare the MSPE parameters even when the native kernel serves
    return kernel, bias

  def _fit(self, images):
    """Checks ``images`` and fits them to the token grid: ``(x, plan)``."""
    check_images(images, self.in_channels)
    _, h, w, _ = images.shape
    plan = self.plan(h, w)
    x = images.astype(self.dtype)
    if self.patch_embed == "vanilla":
      gh, gw = plan["grid"]
      return mspe_lib.center_crop(x, (gh * self.patch[0], gw * self.patch[1])), plan
    x, _, _ = mspe_lib.fit_to_grid(x, self.grid, self.leftover, self.resize_method,
                                   self.antialias)
    return x, plan

  def _resampling(self):
    how = "resize" if self.patch_embed == "resize" else "pi"
    return how, (self.kernel_resize_method if how == "resize" else self.resize_method)

  def embed(self, images):
    """NHWC images -> patch tokens ``(B, gh, gw, D)``, before the position embedding."""
    x, plan = self._fit(images)
    kernel, bias = self._stored_kernel(plan)
    if self.patch_embed != "vanilla":
      how, method = self._resampling()
      kernel = mspe_lib.resample(kernel, plan["kernel_hw"], how, method, self.antialias)
    return mspe_lib.patchify(x, kernel, bias)

  def embed_projected(self, images):
    """``(tokens, Q)``: ``embed``'s tokens computed as ``Q @ kernel + bias`` with the kernel
    at its stored size, and ``Q`` (see ``mspe_lib.project_patches``).

    The gradient of the stored kernel is ``Q^T dtokens``, the bias's ``sum(dtokens)``, and
    ``Q``'s shape does not depend on the input size: training keeps the kernel's gradient
    and update in programs that do not depend on the resolution.
    """
    x, plan = self._fit(images)
    kernel, bias = self._stored_kernel(plan)
    kh, kw, c, d = kernel.shape
    if self.patch_embed == "vanilla":
      q = mspe_lib.extract_patches(x, (kh, kw))
    else:
      how, method = self._resampling()
      q = mspe_lib.project_patches(x, plan["kernel_hw"], (kh, kw), how, method, self.antialias)
    tokens = q @ kernel.reshape(kh * kw * c, d).astype(x.dtype) + bias.astype(x.dtype)
    return tokens, q

  def encode(self, tokens, sequence: bool = True):
    """Patch tokens ``(B, gh, gw, D)`` -> ``(logits, extras)``; the position embedding is
    resampled when the grid is not the native one (``vanilla`` mode).

    ``sequence=False`` computes only what the logits need: with ``pool_type="tok"`` the last
    block's attention and MLP run for the class token alone (its other outputs are never
    read), and ``extras["encoded"]`` is then ``(B, 1, D)``. Training and evaluation use it.
    """
    n, gh, gw, d = tokens.shape
    tokens = tokens.reshape(n, gh * gw, d)
    posemb = pi_resize.resample_posemb(self.pos_embedding, (gh, gw), old_grid=self.grid)
    x = tokens + posemb.astype(self.dtype)
    if self.pool_type == "tok":
      x = jnp.concatenate([jnp.tile(self.cls.astype(self.dtype), (n, 1, 1)), x], axis=1)
    last_queries = 1 if self.pool_type == "tok" and not sequence else None
    encoded = self.Transformer(x, last_queries)
    pre_logits = encoded[:, 0] if self.pool_type == "tok" else jnp.mean(encoded, axis=1)
    extras = {"tokens": tokens, "encoded": encoded, "pre_logits": pre_logits}
    if not self.num_classes:
      return pre_logits, extras
    return self.head(pre_logits), extras

  def __call__(self, images, sequence: bool = True):
    """``encode(embed(images), sequence)``."""
    return self.encode(self.embed(images), sequence)
