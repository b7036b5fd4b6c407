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
    head/{kernel,bias}                      (D, classes)        task "classification"
    head/{LayerNorm_0,Dense_0,Dense_1}/...  SETR-Naive head     task "segmentation"
    mspe/embedding_{k}/{kernel,bias}        (b_k, b_k, 3, D)    MSPE policy only

The model is its architecture plus one patch-embedding policy (``mspe_jax.patch_embed``):
``ViT(..., policy=PatchEmbed("mspe"))`` declares the MSPE kernels and routes by default;
any call can take another policy, ``model.apply(v, x, policy=PatchEmbed("pi"))``, the way
big_vision's FlexiViT takes the sequence shape per call.

``task="segmentation"`` makes it a SETR-Naive segmenter (``mspe_jax.segmentation``): the same
encoder, a per-token head, logits ``(B, H, W, classes)`` at the input size.

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

from mspe_jax import attention, geometry, pi_resize, segmentation
from mspe_jax.patch_embed import PRETRAINED_KERNEL, PatchEmbed, Plan

POOL_TYPES = ("tok", "gap")
TASKS = ("classification", "segmentation")

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


class PatchKernel(nn.Module):
  """One patch-embedding kernel and bias with ``nn.Conv``'s parameter names.

  Calling it returns the raw ``(kernel, bias)``; its parameters are ``kernel`` (HWIO) and
  ``bias`` (D,), exactly as big_vision's ``embedding`` conv.
  """
  size: tuple[int, int]
  in_channels: int
  width: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self):
    kernel = self.param("kernel", self.kernel_init, (*self.size, self.in_channels, self.width))
    bias = self.param("bias", nn.initializers.zeros, (self.width,))
    return kernel, bias


class MSPEKernels(nn.Module):
  """The K MSPE kernels, parameters ``embedding_{k}/{kernel,bias}`` (base size ``b_k``).

  ``__call__(k)`` returns kernel ``k``'s ``(kernel, bias)`` at its base size; all K are
  declared on every call so the parameter tree is always complete.
  """
  base_sizes: tuple[int, ...]
  in_channels: int
  width: int

  @nn.compact
  def __call__(self, k: int):
    kernels = [PatchKernel((b, b), self.in_channels, self.width, name=f"embedding_{i}")()
               for i, b in enumerate(self.base_sizes)]
    return kernels[k]


ENCODER_KEYS = ("pos_embedding", "cls", "Transformer", "head")


def encoder_params(params):
  """The parameters ``ViT.encode`` reads (the same structure for every policy)."""
  return {k: params[k] for k in ENCODER_KEYS if k in params}


class ViT(nn.Module):
  """ViT classifier or segmenter: the architecture fields plus one patch-embedding ``policy``.

  Attributes:
    num_classes: head size; 0 or None means no head (logits are the pre-logits).
    patch_size, width, depth, mlp_dim, num_heads: the architecture (see ``decode_variant``).
    image_size: native resolution; the token grid is ``N = image_size // patch``.
    pool_type: ``"tok"`` (cls token, AugReg) or ``"gap"`` (global average pooling).
    task: ``"classification"`` (a linear head on the pooled token) or ``"segmentation"``
      (SETR-Naive: a per-token head of width ``head_hidden``, None: ``width``; the class
      token, if any, is encoded and dropped).
    policy: the default patch-embedding policy; its mode ``"mspe"`` also declares the MSPE
      kernels (``mspe/embedding_{k}``, base sizes ``policy.kernel_sizes(p)``).
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
  head_zeroinit: bool = True
  task: str = "classification"
  head_hidden: int | None = None
  dtype: Any = jnp.float32
  policy: PatchEmbed = PatchEmbed()

  # ---- static geometry (plain Python, usable outside apply) ----

  @property
  def patch(self) -> tuple[int, int]:
    return geometry.as_hw(self.patch_size, "patch_size")

  @property
  def grid(self) -> tuple[int, int]:
    """The native token grid ``(N, N)``."""
    ih, iw = geometry.as_hw(self.image_size, "image_size")
    ph, pw = self.patch
    if ih % ph or iw % pw:
      raise ValueError(f"image_size {self.image_size} is not a multiple of patch {self.patch}.")
    return ih // ph, iw // pw

  @property
  def base_sizes(self) -> tuple[int, ...]:
    """Base sizes of the MSPE kernels this model declares (``()`` without an MSPE policy)."""
    return self.policy.kernel_sizes(self.patch[0]) if self.policy.mode == "mspe" else ()

  def plan(self, height: int, width: int, policy: PatchEmbed | None = None) -> Plan:
    """How ``policy`` (default: the model's) embeds an ``height x width`` input."""
    return self._policy(policy).plan(height, width, patch=self.patch, grid=self.grid)

  def _policy(self, policy: PatchEmbed | None) -> PatchEmbed:
    policy = self.policy if policy is None else policy
    if not isinstance(policy, PatchEmbed):
      raise TypeError(f"policy must be a PatchEmbed, got {type(policy).__name__}.")
    if policy.mode == "mspe" and policy.kernel_sizes(self.patch[0]) != self.base_sizes:
      raise ValueError(
          f"Policy {policy} needs MSPE kernels of base sizes {policy.kernel_sizes(self.patch[0])}"
          f", but this model declares {self.base_sizes or 'none'}: build the model with that "
          "policy (e.g. load_pretrained(path, 'mspe')).")
    return policy

  # ---- the model: embed (patch embedding) then encode (everything after it) ----

  def setup(self):
    if self.pool_type not in POOL_TYPES:
      raise ValueError(f"Unknown pool_type {self.pool_type!r}; expected one of {POOL_TYPES}.")
    if self.task not in TASKS:
      raise ValueError(f"Unknown task {self.task!r}; expected one of {TASKS}.")
    if self.task == "segmentation" and not self.num_classes:
      raise ValueError("A segmentation model needs num_classes > 0 (background included).")
    d = self.width
    self.embedding = PatchKernel(self.patch, self.in_channels, d)
    if self.base_sizes:
      self.mspe = MSPEKernels(self.base_sizes, self.in_channels, d)
    self.pos_embedding = self.param("pos_embedding", nn.initializers.normal(stddev=d ** -0.5),
                                    (1, self.grid[0] * self.grid[1], d))
    if self.pool_type == "tok":
      self.cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
    self.Transformer = Encoder(self.depth, self.mlp_dim or 4 * d, self.num_heads, self.dtype)
    if self.task == "segmentation":
      self.head = segmentation.SegHead(self.num_classes, self.head_hidden or d, self.dtype)
    elif self.num_classes:
      head_init = nn.initializers.zeros if self.head_zeroinit else nn.initializers.lecun_normal()
      self.head = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=head_init)

  def _prepare(self, images, policy):
    """``(x, plan, policy, kernel, bias)``: the checked input fitted to the plan, and the
    stored kernel the plan uses (before any resampling)."""
    policy = self._policy(policy)
    check_images(images, self.in_channels)
    plan = policy.plan(images.shape[1], images.shape[2], patch=self.patch, grid=self.grid)
    x = policy.fit(images.astype(self.dtype), plan)
    kernel, bias = self.embedding()
    if self.base_sizes:
      kernels = self.mspe(max(plan.kernel_index or 0, 0))  # declares all MSPE parameters
      if plan.kernel_index is not None and plan.kernel_index != PRETRAINED_KERNEL:
        kernel, bias = kernels
    return x, plan, policy, jnp.asarray(kernel), jnp.asarray(bias)

  def embed(self, images, policy: PatchEmbed | None = None):
    """NHWC images -> patch tokens ``(B, gh, gw, D)``, before the position embedding."""
    x, plan, policy, kernel, bias = self._prepare(images, policy)
    kernel = policy.resample(kernel, plan.kernel_hw)
    kh, kw, c, d = kernel.shape
    tokens = geometry.extract_patches(x, (kh, kw)) @ kernel.reshape(kh * kw * c, d).astype(
        x.dtype)
    return tokens + bias.astype(x.dtype)

  def embed_projected(self, images, policy: PatchEmbed | None = None):
    """``(tokens, Q)``: ``embed``'s tokens computed as ``Q @ kernel + bias`` with the kernel
    at its stored size, and ``Q`` (see ``PatchEmbed.project``).

    The gradient of the stored kernel is ``Q^T dtokens``, the bias's ``sum(dtokens)``, and
    ``Q``'s shape does not depend on the input size: training keeps the kernel's gradient
    and update in programs that do not depend on the resolution.
    """
    x, plan, policy, kernel, bias = self._prepare(images, policy)
    kh, kw, c, d = kernel.shape
    q = policy.project(x, plan, (kh, kw))
    tokens = q @ kernel.reshape(kh * kw * c, d).astype(x.dtype) + bias.astype(x.dtype)
    return tokens, q

  def encode(self, tokens, sequence: bool = True):
    """Patch tokens ``(B, gh, gw, D)`` -> ``(logits, extras)``; the position embedding is
    resampled when the grid is not the native one (``vanilla`` mode).

    ``sequence=False`` computes only what the logits need: with ``pool_type="tok"`` the last
    block's attention and MLP run for the class token alone (its other outputs are never
    read), and ``extras["encoded"]`` is then ``(B, 1, D)``. Training and evaluation use it.
    A segmenter returns logits on the token grid, ``(B, gh, gw, classes)`` (every token is
    needed: ``sequence`` changes nothing).
    """
    n, gh, gw, d = tokens.shape
    tokens = tokens.reshape(n, gh * gw, d)
    posemb = pi_resize.resample_posemb(jnp.asarray(self.pos_embedding), (gh, gw),
                                       old_grid=self.grid)
    x = tokens + posemb.astype(self.dtype)
    if self.pool_type == "tok":
      x = jnp.concatenate([jnp.tile(jnp.asarray(self.cls, self.dtype), (n, 1, 1)), x], axis=1)
    segmenter = self.task == "segmentation"
    last_queries = 1 if self.pool_type == "tok" and not (sequence or segmenter) else None
    encoded = self.Transformer(x, last_queries)
    if segmenter:
      patches = encoded[:, 1:] if self.pool_type == "tok" else encoded
      extras = {"tokens": tokens, "encoded": encoded}
      return self.head(patches.reshape(n, gh, gw, d)), extras
    pre_logits = encoded[:, 0] if self.pool_type == "tok" else jnp.mean(encoded, axis=1)
    extras = {"tokens": tokens, "encoded": encoded, "pre_logits": pre_logits}
    if not self.num_classes:
      return pre_logits, extras
    return self.head(pre_logits), extras

  def __call__(self, images, policy: PatchEmbed | None = None, sequence: bool = True):
    """``encode(embed(images, policy), sequence)``; a segmenter's logits upsampled
    (bilinear) to the input size."""
    logits, extras = self.encode(self.embed(images, policy), sequence)
    if self.task == "segmentation":
      logits = segmentation.upsample(logits, images.shape[1:3])
    return logits, extras
