"""Patch embeddings: the pretrained kernel, PI-resize on a fixed grid, and MSPE.

Fixed token grid. For an input ``h x w`` and a model trained on an ``N x N`` token grid the
kernel is ``(h // N, w // N)`` with stride = kernel, so the encoder always sees ``N x N``
tokens and the position embedding is used as trained. Pixels that do not fit the grid are
handled by a *leftover policy*:

* ``"crop"``: centre-crop to ``(N * (h // N), N * (w // N))`` (throws image away);
* ``"pad"``: zero-pad (mid-grey in [-1, 1]) symmetrically to ``N * ceil(h / N)``;
* ``"resize"``: resize to the nearest multiple of ``N`` (``N * round(h / N)``, at least
  ``N``) with the model's resize method -- the default, measured best in the demo sweep.

MSPE (Multi-Scale Patch Embedding, NeurIPS 2024) holds K kernels with base sizes
``b_k`` (default ``p * (k+1) / K``). Routing (paper Eq. 10, one rule for any aspect
ratio): kernel ``k`` whose base size is nearest to ``sqrt(kh * kw)``, the geometric mean
of the effective kernel size, i.e. whose base resolution ``N * b_k`` is nearest to the
input's effective resolution; ties go to the smaller base (PI-upsampling is exact). The
routed kernel is PI-resized to ``(kh, kw)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mspe_jax import pi_resize

LEFTOVER_POLICIES = ("crop", "pad", "resize")
NATIVE_KERNEL = -1  # kernel index meaning "the pretrained `embedding` kernel"


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


def fixed_grid_kernel(hw: Sequence[int], grid: Sequence[int],
                      leftover: str = "resize") -> tuple[int, int]:
  """The kernel size ``(kh, kw)`` used for an ``h x w`` input on a fixed token grid."""
  h, w = (int(v) for v in hw)
  gh, gw = (int(v) for v in grid)
  if h < gh or w < gw:
    raise ValueError(f"Input of {h}x{w} px is smaller than the {gh}x{gw} token grid: the "
                     f"minimum input size is {gh}x{gw} px (one pixel per token).")
  if leftover == "crop":
    return h // gh, w // gw
  if leftover == "pad":
    return -(-h // gh), -(-w // gw)
  if leftover == "resize":
    # Round half up: 1.5 N -> 2, deterministic (Python's round() is banker's rounding).
    return max(1, math.floor(h / gh + 0.5)), max(1, math.floor(w / gw + 0.5))
  raise ValueError(f"Unknown leftover policy {leftover!r}; expected one of {LEFTOVER_POLICIES}.")


def fit_to_grid(x, grid, leftover="resize", method="bilinear", antialias=True):
  """Makes an NHWC batch exactly ``(N*kh, N*kw)`` by the leftover policy; returns (x, kh, kw)."""
  _, h, w, c = x.shape
  kh, kw = fixed_grid_kernel((h, w), grid, leftover)
  th, tw = grid[0] * kh, grid[1] * kw
  if (th, tw) == (h, w):
    return x, kh, kw
  if leftover == "crop":
    return center_crop(x, (th, tw)), kh, kw
  if leftover == "pad":
    ph, pw = th - h, tw - w
    pad = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
    return jnp.pad(x, pad), kh, kw
  x = jax.image.resize(x, (x.shape[0], th, tw, c), method=pi_resize.canonical_method(method),
                       antialias=antialias)
  return x, kh, kw


def center_crop(x, hw):
  """Centre crop of an NHWC batch to ``hw`` (static)."""
  _, h, w, _ = x.shape
  th, tw = hw
  top, left = (h - th) // 2, (w - tw) // 2
  return x[:, top:top + th, left:left + tw, :]


def route(kernel_hw: Sequence[int], base_sizes: Sequence[int]) -> int:
  """Paper Eq. 10: index of the base size nearest to ``sqrt(kh * kw)`` (ties: smaller)."""
  s = math.sqrt(kernel_hw[0] * kernel_hw[1])
  dists = [abs(b - s) for b in base_sizes]
  return int(np.argmin(dists))  # argmin keeps the first (smallest) on ties


def extract_patches(x, kernel_hw):
  """Non-overlapping ``kh x kw`` patches of an NHWC batch: ``(B, H/kh, W/kw, kh*kw*C)``.

  Flattened in the order of an HWIO kernel's ``reshape(kh*kw*C, D)``.
  """
  b, h, w, c = x.shape
  kh, kw = kernel_hw
  gh, gw = h // kh, w // kw
  if gh * kh != h or gw * kw != w:
    raise ValueError(f"Input {h}x{w} is not a multiple of the kernel {kh}x{kw}.")
  patches = x.reshape(b, gh, kh, gw, kw, c).transpose(0, 1, 3, 2, 4, 5)
  return patches.reshape(b, gh, gw, kh * kw * c)


def patchify(x, kernel, bias):
  """Non-overlapping patch embedding (stride = kernel size): ``(B, H/kh, W/kw, D)``.

  Written as a reshape and one matmul, which equals the strided convolution exactly in
  exact arithmetic and is faster than ``conv_general_dilated`` on CPU and GPU.
  """
  kh, kw, kc, d = kernel.shape
  if kc != x.shape[-1]:
    raise ValueError(f"Input has {x.shape[-1]} channels but the patch kernel expects {kc}.")
  tokens = extract_patches(x, (kh, kw)) @ kernel.reshape(kh * kw * kc, d).astype(x.dtype)
  return tokens + bias.astype(x.dtype)


def project_patches(x, kernel_hw, stored_hw, how: str, method: str, antialias: bool):
  """The ``kernel_hw`` patches of ``x`` mapped onto a kernel stored at ``stored_hw``.

  Returns ``Q`` of shape ``(B, H/kh, W/kw, sh*sw*C)`` with, for any stored kernel ``W``,

      patchify(x, resample(W, kernel_hw, how, ...), b) == Q @ W.reshape(sh*sw*C, D) + b

  in exact arithmetic: PI-resize (or plain resize) is the linear map ``M`` on the kernel's
  spatial positions, so ``<patch, M W> = <M^T patch, W>``. ``Q``'s shape depends on the
  stored kernel only, not on the input size, and the kernel's gradient is ``Q^T dtokens``:
  training uses it to keep every program that involves the kernel independent of the
  resolution. For ``kernel_hw == stored_hw`` it is the patches themselves.
  """
  kernel_hw, stored_hw = tuple(kernel_hw), tuple(stored_hw)
  patches = extract_patches(x, kernel_hw)
  if kernel_hw == stored_hw:
    return patches
  if how == "pi":
    mat = pi_resize.pinv_matrix(stored_hw, kernel_hw, method, antialias)
  elif how == "resize":
    mat = pi_resize.resize_matrix(stored_hw, kernel_hw, pi_resize.canonical_method(method),
                                  bool(antialias))
  else:
    raise ValueError(f"Unknown kernel resampling {how!r}; expected 'pi' or 'resize'.")
  b, gh, gw, _ = patches.shape
  c = x.shape[-1]
  patches = patches.reshape(b, gh, gw, kernel_hw[0] * kernel_hw[1], c)
  q = jnp.einsum("bijsc,st->bijtc", patches, jnp.asarray(mat, x.dtype),
                 precision=jax.lax.Precision.HIGHEST)
  return q.reshape(b, gh, gw, stored_hw[0] * stored_hw[1] * c)


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


def resample(kernel, new_hw, how: str, method: str, antialias: bool):
  """Resamples a kernel to ``new_hw`` by PI-resize (``"pi"``) or plain interpolation."""
  if how == "pi":
    return pi_resize.resample_kernel(kernel, new_hw, method, antialias)
  if how == "resize":
    return pi_resize.resize_kernel(kernel, new_hw, method, antialias)
  raise ValueError(f"Unknown kernel resampling {how!r}; expected 'pi' or 'resize'.")


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
  out = dict(params)
  out["mspe"] = mspe
  return out
