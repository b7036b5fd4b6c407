"""Patch-embedding policies: how an image of any size becomes the encoder's tokens.

A policy is a value, ``PatchEmbed(mode=..., ...)``: the ViT holds one as its default and
takes another per call (``model.apply(v, x, policy=...)``), the way big_vision's FlexiViT
takes the sequence shape per call. ``policy.plan(h, w, patch=, grid=)`` says what happens to
an ``h x w`` input (a ``Plan``); everything mode-specific lives in this file.

Modes:

* ``"vanilla"``: the pretrained kernel at patch ``p``; the grid follows the input
  (centre-cropped to a multiple of ``p``) and the position embedding is resampled.
* ``"pi"``: fixed ``N x N`` grid (see ``mspe_jax.geometry``), kernel ``(h//N, w//N)`` by
  PI-resize of the pretrained one (the MSPE paper's "FlexiViT" row).
* ``"resize"``: as ``"pi"`` but plain interpolation of the kernel (the paper's ablation).
* ``"mspe"``: fixed grid, K kernels of base sizes ``b_k`` (default ``p * (k+1) / K``, K = 4),
  the routed one PI-resized to ``(h//N, w//N)``.
* ``"flexi"`` (FlexiViT, Beyer et al. 2023): the patch size is the policy's ``patch`` (None:
  the stored kernel's), the grid follows the input (``h // p``, centre-cropped like
  ``"vanilla"``), the stored kernel is PI-resized to ``p`` and the position embedding
  resampled to the grid. At the stored size it is ``"vanilla"``, bit for bit. A FlexiViT
  draws ``p`` per training step (``train.py`` ``mode="flexi"``); ``"pi"`` is FlexiViT's
  resize with ``p`` chosen so the grid stays ``N x N``.

Routing (paper Eq. 10; ``route``): the kernel whose base size is nearest to the effective
kernel size ``(kh, kw) = (h//N, w//N)``, i.e. whose base resolution ``N * b_k`` is nearest to
the input's; ties go to the smaller base (PI-upsampling is exact). Eq. 10 is stated for
square inputs, where every rule below agrees. For a non-square input the default rule is
``"smaller"`` (the base nearest to ``min(kh, kw)``), chosen by measurement: the demo's MSPE
model (``configs/fashion_mnist_mspe.py``, per-axis kernel ranges (1, 2), (2, 4), (3, 6),
(4, 8) px, trained on ``train[:55000]``) evaluated on the 5,000 held-out training images
``train[55000:]`` at every ``(h, w)`` pair of 7, 10, 14, 21, 28, 42, 56 px
(``configs/fashion_mnist_routing.py``; leftover ``"resize"``, the default then), mean top-1 %:

  rule        49 shapes   34 below native   30 non-square below native   best or tied
  smaller       79.4          76.0                 75.6                    43 of 49
  range         65.5          57.3                 54.8                    20 of 49
  geometric     65.5          57.1                 54.2                    25 of 49
  larger        60.5          49.9                 46.0                    21 of 49

(image resize to 28 px: 77.1 / 73.4 / 74.0). ``"geometric"`` (``sqrt(kh * kw)``, our first
rule), ``"larger"`` and ``"range"`` (the first kernel whose per-axis training range holds
both sides, else geometric) send a 7 x 28 input to a kernel of base 2 or more, which then
has to downsample one axis: 30 to 55 points below image resize there. The smaller side keeps
every row or column of the input. With ``freeze_native_kernel`` the pretrained kernel serves
the native kernel size itself, so native accuracy is the pretrained model's bit for bit.

Kernel resampling is one linear map ``M`` on the kernel's spatial positions
(``kernel_matrix``): the pseudo-inverse of the image resize for ``"pi"`` and ``"mspe"``, the
resize itself for ``"resize"``. ``resample`` applies it to a kernel (``M W``, for inference)
and ``project`` to the patches (``M^T x``, so that the tokens are ``(M^T x) W``: training
keeps the kernel's gradient independent of the input size).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mspe_jax import geometry, pi_resize

MODES = ("vanilla", "pi", "resize", "mspe", "flexi")
PRETRAINED_KERNEL = -1  # kernel index meaning "the pretrained `embedding` kernel"


class Plan(NamedTuple):
  """What a policy does with an ``h x w`` input."""
  kernel_hw: tuple[int, int]   # the effective kernel (= stride)
  grid: tuple[int, int]        # the token grid
  kernel_index: int | None     # MSPE kernel used (PRETRAINED_KERNEL: the pretrained one);
                               # None outside "mspe" mode
  input_hw: tuple[int, int]    # the input after the leftover policy: grid * kernel_hw


def default_base_sizes(patch: int, num_kernels: int = 4) -> tuple[int, ...]:
  """Base kernel sizes ``round(p * (k+1) / K)`` (4, 8, 12, 16 for p = 16, K = 4)."""
  if num_kernels < 1:
    raise ValueError(f"num_kernels must be >= 1, got {num_kernels}.")
  sizes = tuple(max(1, int(round(patch * (k + 1) / num_kernels))) for k in range(num_kernels))
  if len(set(sizes)) != len(sizes):
    raise ValueError(f"{num_kernels} kernels for patch {patch} give repeated base sizes {sizes}.")
  return sizes


def check_base_sizes(base_sizes: Sequence[int]) -> tuple[int, ...]:
  sizes = tuple(int(b) for b in base_sizes)
  if not sizes or min(sizes) < 1 or list(sizes) != sorted(set(sizes)):
    raise ValueError(f"MSPE base sizes must be distinct positive ints in ascending order, "
                     f"got {tuple(base_sizes)}.")
  return sizes


ROUTING_RULES = {  # what each routing rule picks, in words (for reports)
    "geometric": ("the kernel whose base size is nearest to sqrt(kh*kw) of the "
                  "effective kernel (h//N, w//N); ties to the smaller base"),
    "larger": "the kernel whose base size is nearest to max(kh, kw); ties to the smaller base",
    "smaller": ("the kernel whose base size is nearest to min(kh, kw) of the effective kernel "
                "(h//N, w//N) (paper Eq. 10 on square inputs); ties to the smaller base"),
    "range": ("the first kernel whose per-axis training range holds kh and kw, else the "
              "geometric rule"),
}
ROUTINGS = tuple(ROUTING_RULES)


def route(kernel_hw: Sequence[int], base_sizes: Sequence[int], rule: str = "smaller",
          kernel_ranges: Sequence[Sequence[int]] | None = None) -> int:
  """Paper Eq. 10 for any aspect ratio: the index of the kernel that serves ``kernel_hw``.

  ``"smaller"`` (the policy's default, measured best: see the module docstring): the base
  size nearest to ``min(kh, kw)``; ``"larger"``: to ``max(kh, kw)``; ``"geometric"``: to
  ``sqrt(kh * kw)``; ties go to the smaller base.
  ``"range"``: the first kernel whose per-axis training range ``kernel_ranges[k] = (lo, hi)``
  holds both ``kh`` and ``kw``, else (a shape no kernel trained on) ``"geometric"``.
  """
  kh, kw = kernel_hw
  if rule == "range":
    if kernel_ranges is None:
      raise ValueError("routing='range' needs kernel_ranges (one (lo, hi) per kernel).")
    for k, (lo, hi) in enumerate(kernel_ranges):
      if lo <= kh <= hi and lo <= kw <= hi:
        return k
    rule = "geometric"
  if rule == "geometric":
    s = math.sqrt(kh * kw)
  elif rule == "larger":
    s = max(kh, kw)
  elif rule == "smaller":
    s = min(kh, kw)
  else:
    raise ValueError(f"Unknown routing {rule!r}; expected one of {ROUTINGS}.")
  return int(np.argmin([abs(b - s) for b in base_sizes]))  # argmin keeps the first on ties


@dataclasses.dataclass(frozen=True)
class PatchEmbed:
  """A patch-embedding policy (see the module docstring).

  Attributes:
    mode: ``"vanilla" | "pi" | "resize" | "mspe" | "flexi"``.
    leftover: pixels past the fixed grid: ``"resize_up" | "resize" | "crop" | "pad"``
      (``mspe_jax.geometry``; ``"resize_up"`` measured best).
    resize_method, antialias: the image resize the PI matrices invert (and the leftover resize).
    kernel_resize_method: interpolation of the kernel in ``"resize"`` mode.
    base_sizes: MSPE base kernel sizes (None: ``p*(k+1)/4``, k < 4).
    freeze_native_kernel: ``"mspe"``: the pretrained kernel serves the native kernel size.
    kernel: ``"mspe"``: force this kernel instead of routing (``PRETRAINED_KERNEL``: the
      pretrained one); None routes.
    routing: ``"mspe"``: how a kernel is chosen (see ``route``).
    kernel_ranges: ``"mspe"``: each kernel's per-axis training range of effective kernel
      sizes ``(lo, hi)`` in px, for ``routing="range"``.
    patch: ``"flexi"``: the patch size ``(ph, pw)`` of this call (None: the stored kernel's).
    grid: ``"pi" | "resize"``: the fixed token grid (None: the model's own). Another model's
      grid puts a FlexiViT (stored kernel 32, position embedding 7x7) on a fixed ViT's grid.
  """
  mode: str = "vanilla"
  leftover: str = "resize_up"
  resize_method: str = "bilinear"
  antialias: bool = True
  kernel_resize_method: str = "bilinear"
  base_sizes: tuple[int, ...] | None = None
  freeze_native_kernel: bool = False
  kernel: int | None = None
  routing: str = "smaller"
  kernel_ranges: tuple[tuple[int, int], ...] | None = None
  patch: tuple[int, int] | None = None
  grid: tuple[int, int] | None = None

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"Unknown patch-embedding mode {self.mode!r}; expected one of {MODES}.")
    if self.leftover not in geometry.LEFTOVER_POLICIES:
      raise ValueError(f"Unknown leftover policy {self.leftover!r}; expected one of "
                       f"{geometry.LEFTOVER_POLICIES}.")
    geometry.canonical_method(self.resize_method)
    geometry.canonical_method(self.kernel_resize_method)
    if self.base_sizes is not None:  # lists (JSON, configs) become a hashable tuple
      object.__setattr__(self, "base_sizes", check_base_sizes(self.base_sizes))
    if self.routing not in ROUTINGS:
      raise ValueError(f"Unknown routing {self.routing!r}; expected one of {ROUTINGS}.")
    if self.kernel_ranges is not None:
      ranges = tuple(tuple(int(v) for v in r) for r in self.kernel_ranges)
      if any(len(r) != 2 or not 1 <= r[0] <= r[1] for r in ranges):
        raise ValueError(f"kernel_ranges must be (lo, hi) pairs with 1 <= lo <= hi, got "
                         f"{self.kernel_ranges}.")
      object.__setattr__(self, "kernel_ranges", ranges)
    if self.routing == "range" and self.kernel_ranges is None:
      raise ValueError("routing='range' needs kernel_ranges (one (lo, hi) per kernel).")
    if self.kernel is not None and self.mode != "mspe":
      raise ValueError(f"A forced kernel (kernel={self.kernel}) needs mode='mspe', "
                       f"not {self.mode!r}.")
    if self.patch is not None:
      if self.mode != "flexi":
        raise ValueError(f"A patch size (patch={self.patch}) needs mode='flexi', not "
                         f"{self.mode!r}.")
      object.__setattr__(self, "patch", geometry.as_hw(self.patch, "flexi patch"))
    if self.grid is not None:
      if self.mode not in ("pi", "resize"):
        raise ValueError(f"A fixed grid (grid={self.grid}) needs mode 'pi' or 'resize', not "
                         f"{self.mode!r}.")
      object.__setattr__(self, "grid", geometry.as_hw(self.grid, "fixed grid"))

  def replace(self, **changes) -> PatchEmbed:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["base_sizes"] = None if self.base_sizes is None else list(self.base_sizes)
    out["kernel_ranges"] = (None if self.kernel_ranges is None
                            else [list(r) for r in self.kernel_ranges])
    out["patch"] = None if self.patch is None else list(self.patch)
    out["grid"] = None if self.grid is None else list(self.grid)
    return out

  def kernel_sizes(self, patch: int) -> tuple[int, ...]:
    """The MSPE base sizes for a model of patch ``patch``."""
    return default_base_sizes(patch) if self.base_sizes is None else self.base_sizes

  # ------------------------------------------------------------------ the plan

  def plan(self, height: int, width: int, *, patch: Sequence[int],
           grid: Sequence[int]) -> Plan:
    """How an ``height x width`` input is embedded by a model of ``patch`` on ``grid``.

    Raises ValueError for inputs too small for the grid (or for one patch, ``"vanilla"``).
    """
    patch, grid = tuple(patch), tuple(grid)
    if self.mode in ("vanilla", "flexi"):
      if self.mode == "flexi" and self.patch is not None:
        patch = self.patch
      if height < patch[0] or width < patch[1]:
        raise ValueError(f"Input of {height}x{width} px is smaller than one {patch[0]}x"
                         f"{patch[1]} patch (mode {self.mode!r}).")
      g = (height // patch[0], width // patch[1])
      return Plan(patch, g, None, (g[0] * patch[0], g[1] * patch[1]))
    grid = self.grid or grid
    kernel_hw = geometry.fixed_grid_kernel((height, width), grid, self.leftover)
    input_hw = (grid[0] * kernel_hw[0], grid[1] * kernel_hw[1])
    if self.mode != "mspe":
      return Plan(kernel_hw, grid, None, input_hw)
    bases = self.kernel_sizes(patch[0])
    if self.kernel is not None:
      if not PRETRAINED_KERNEL <= self.kernel < len(bases):
        raise ValueError(f"Forced kernel {self.kernel} out of range for {len(bases)} MSPE "
                         f"kernels ({PRETRAINED_KERNEL}: the pretrained one).")
      index = int(self.kernel)
    elif self.freeze_native_kernel and kernel_hw == patch:
      index = PRETRAINED_KERNEL
    else:
      if self.kernel_ranges is not None and len(self.kernel_ranges) != len(bases):
        raise ValueError(f"{len(self.kernel_ranges)} kernel_ranges for {len(bases)} MSPE "
                         "kernels.")
      index = route(kernel_hw, bases, self.routing, self.kernel_ranges)
    return Plan(kernel_hw, grid, index, input_hw)

  def fit(self, images, plan: Plan):
    """The NHWC batch cropped, padded or resized to ``plan.input_hw``."""
    if self.mode in ("vanilla", "flexi"):
      return geometry.center_crop(images, plan.input_hw)
    return geometry.fit(images, plan.input_hw, self.leftover, self.resize_method, self.antialias)

  # ------------------------------------------------------------------ kernel resampling

  def kernel_matrix(self, stored_hw, kernel_hw) -> np.ndarray | None:
    """The map ``M`` (``kh*kw x sh*sw``, float64) from a kernel stored at ``stored_hw`` to one
    of ``kernel_hw``: PI-resize, or plain interpolation in ``"resize"`` mode; None if equal."""
    stored_hw, kernel_hw = tuple(stored_hw), tuple(kernel_hw)
    if stored_hw == kernel_hw:
      return None
    if self.mode == "resize":
      return pi_resize.resize_matrix(stored_hw, kernel_hw,
                                     geometry.canonical_method(self.kernel_resize_method),
                                     bool(self.antialias))
    if self.mode == "vanilla":
      raise ValueError(f"Mode 'vanilla' never resamples the kernel ({stored_hw} -> {kernel_hw}).")
    return pi_resize.pinv_matrix(stored_hw, kernel_hw, self.resize_method, self.antialias)

  def resample(self, kernel, kernel_hw):
    """An HWIO ``kernel`` resampled to ``kernel_hw`` (``M @ vec(kernel)``, one matmul)."""
    mat = self.kernel_matrix(kernel.shape[:2], kernel_hw)
    return kernel if mat is None else pi_resize.apply_matrix(mat, kernel, tuple(kernel_hw))

  def project(self, x, plan: Plan, stored_hw):
    """The patches of a fitted batch ``x`` mapped onto a kernel stored at ``stored_hw``.

    Returns ``Q`` of shape ``(B, gh, gw, sh*sw*C)`` with, for any stored kernel ``W``,
    ``patches(x) @ resample(W) == Q @ W`` in exact arithmetic (``<x, M W> = <M^T x, W>``).
    ``Q``'s shape does not depend on the input size, and ``W``'s gradient is ``Q^T dtokens``.
    """
    patches = geometry.extract_patches(x, plan.kernel_hw)
    mat = self.kernel_matrix(stored_hw, plan.kernel_hw)
    if mat is None:
      return patches
    b, gh, gw, _ = patches.shape
    c = x.shape[-1]
    patches = patches.reshape(b, gh, gw, plan.kernel_hw[0] * plan.kernel_hw[1], c)
    q = jnp.einsum("bijsc,st->bijtc", patches, jnp.asarray(mat, x.dtype),
                   precision=jax.lax.Precision.HIGHEST)
    return q.reshape(b, gh, gw, stored_hw[0] * stored_hw[1] * c)


def init_mspe_params(params, base_sizes: Sequence[int], method: str = "bilinear",
                     antialias: bool = True):
  """Returns ``params`` plus an ``mspe`` subtree initialised from ``params['embedding']``.

  Each kernel ``k`` is the PI-resize of the pretrained kernel to ``(b_k, b_k)``; the bias is
  copied. Works on numpy (float64 maths) and jax arrays; the input tree is not modified.
  """
  base_sizes = check_base_sizes(base_sizes)
  kernel = params["embedding"]["kernel"]
  bias = params["embedding"]["bias"]
  copy = np.array if isinstance(bias, np.ndarray) else jnp.array
  mspe = {f"embedding_{i}": {
      "kernel": copy(pi_resize.resample_kernel(kernel, (b, b), method, antialias)),
      "bias": copy(bias)}
          for i, b in enumerate(base_sizes)}
  return {**params, "mspe": mspe}
