"""Sizes, crops and resizes of NHWC image batches and their patches (no parameters).

The fixed token grid. For an ``h x w`` input and a model trained on an ``N x N`` token grid
the kernel is ``(h // N, w // N)`` with stride = kernel, so the encoder always sees ``N x N``
tokens. Pixels that do not fit the grid are handled by a *leftover policy*:

* ``"crop"``: centre-crop to ``(N * (h // N), N * (w // N))`` (throws image away);
* ``"pad"``: zero-pad (mid-grey in [-1, 1]) symmetrically to ``N * ceil(h / N)``;
* ``"resize"``: resize to the nearest multiple of ``N`` (``N * round(h / N)``, at least
  ``N``) with the model's resize method (10 -> 7 px on a 7x7 grid: a third of the pixels go);
* ``"resize_up"``: resize up to the next multiple, ``N * ceil(h / N)`` (no pixel dropped) --
  the default, chosen by measurement (``configs/fashion_mnist_leftover.py``: the demo's MSPE
  model on the 5,000 held-out training images ``train[55000:]``, 33 shapes where the two
  differ, squares of 8-30 px and every pair of 10, 17, 24, 28, 42 px). ``resize_up`` was at
  or above ``resize`` at 28 of 33 shapes, +2.1 points on average; over the 25 below native
  81.5% against 78.9% (image resize 78.9%), at or above image resize at 24 of them (``resize``
  at 9). Largest gains where one side is 10 px (10 x 28: 72.2 -> 80.5%, 28 x 10: 72.3 ->
  78.4%); losses at squares just past a multiple (8 px: 72.3 -> 70.7%, 9 px: 72.7 -> 70.5%,
  22 px: 85.3 -> 84.5%, 23 px: 85.6 -> 85.0%, 16 px: 81.7 -> 81.5%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import einops
import jax
import jax.numpy as jnp
import numpy as np

LEFTOVER_POLICIES = ("crop", "pad", "resize", "resize_up")
# Names accepted by jax.image.resize that make sense for kernels and images.
RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5")
_ALIASES = {"linear": "bilinear", "cubic": "bicubic"}


def canonical_method(method: str) -> str:
  """Returns the canonical resize method name, or raises ValueError naming it."""
  m = _ALIASES.get(method, method)
  if m not in RESIZE_METHODS:
    raise ValueError(f"Unknown resize method {method!r}; expected one of {RESIZE_METHODS}.")
  return m


def as_hw(hw: int | Sequence[int], what: str = "size") -> tuple[int, int]:
  """Normalises ``hw`` to a pair of positive Python ints; ValueError otherwise."""
  if isinstance(hw, (int, np.integer)):
    hw = (int(hw), int(hw))
  try:
    pair = tuple(int(v) for v in hw)
  except TypeError:
    raise ValueError(f"{what} must be an int or a (height, width) pair, got {hw!r}.") from None
  if len(pair) != 2 or any(v != orig for v, orig in zip(pair, hw)):
    raise ValueError(f"{what} must be a (height, width) pair of ints, got {hw!r}.")
  if min(pair) <= 0:
    raise ValueError(f"{what} must be positive, got {pair}.")
  return pair


def fixed_grid_kernel(hw: Sequence[int], grid: Sequence[int],
                      leftover: str = "resize_up") -> tuple[int, int]:
  """The kernel size ``(kh, kw)`` used for an ``h x w`` input on a fixed token grid."""
  h, w = (int(v) for v in hw)
  gh, gw = (int(v) for v in grid)
  if h < gh or w < gw:
    raise ValueError(f"Input of {h}x{w} px is smaller than the {gh}x{gw} token grid: the "
                     f"minimum input size is {gh}x{gw} px (one pixel per token).")
  if leftover == "crop":
    return h // gh, w // gw
  if leftover in ("pad", "resize_up"):
    return -(-h // gh), -(-w // gw)
  if leftover == "resize":
    # Round half up: 1.5 N -> 2, deterministic (Python's round() is banker's rounding).
    return max(1, math.floor(h / gh + 0.5)), max(1, math.floor(w / gw + 0.5))
  raise ValueError(f"Unknown leftover policy {leftover!r}; expected one of {LEFTOVER_POLICIES}.")


def resize_images(images, hw, method: str = "bilinear", antialias: bool = True):
  """Resizes an NHWC batch to ``hw`` with ``jax.image.resize`` (the resize PI-resize inverts)."""
  hw = tuple(int(v) for v in hw)
  if tuple(images.shape[1:3]) == hw:
    return images
  return jax.image.resize(images, (images.shape[0], *hw, images.shape[3]),
                          method=canonical_method(method), antialias=antialias)


def center_crop(x, hw):
  """Centre crop of an NHWC batch to ``hw`` (static)."""
  _, h, w, _ = x.shape
  th, tw = hw
  top, left = (h - th) // 2, (w - tw) // 2
  return x[:, top:top + th, left:left + tw, :]


def fit(x, target_hw, leftover: str, method: str = "bilinear", antialias: bool = True):
  """Makes an NHWC batch exactly ``target_hw`` by the leftover policy (crop, pad, resize)."""
  _, h, w, _ = x.shape
  th, tw = target_hw
  if (th, tw) == (h, w):
    return x
  if leftover == "crop":
    return center_crop(x, (th, tw))
  if leftover == "pad":
    ph, pw = th - h, tw - w
    return jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
  if leftover in ("resize", "resize_up"):
    return resize_images(x, (th, tw), method, antialias)
  raise ValueError(f"Unknown leftover policy {leftover!r}; expected one of {LEFTOVER_POLICIES}.")


def extract_patches(x, kernel_hw):
  """Non-overlapping ``kh x kw`` patches of an NHWC batch: ``(B, H/kh, W/kw, kh*kw*C)``.

  Flattened in the order of an HWIO kernel's ``reshape(kh*kw*C, D)``.
  """
  _, h, w, _ = x.shape
  kh, kw = kernel_hw
  gh, gw = h // kh, w // kw
  if gh * kh != h or gw * kw != w:
    raise ValueError(f"Input {h}x{w} is not a multiple of the kernel {kh}x{kw}.")
  return einops.rearrange(x, "b (gh kh) (gw kw) c -> b gh gw (kh kw c)", kh=kh, kw=kw)
