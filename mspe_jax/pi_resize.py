"""PI-resize and the other pure resampling functions (no Flax, no state but a cache).

PI-resize (FlexiViT, Beyer et al. 2023). Let ``B`` (``new_h*new_w x old_h*old_w``) be the
linear map of the image resize that takes an ``old`` patch to a ``new`` patch. The kernel
that sees the resized patch the way the old kernel saw the original is

    w_new = pinv(B^T) @ vec(w_old)          (per input/output channel pair)

For upsampling ``B^T`` has full row rank, so ``<B x, w_new> == <x, w_old>`` exactly for every
patch ``x``. For downsampling it is the least-squares answer
``argmin_w E_x[(<B x, w> - <x, w_old>)^2]`` for ``x ~ N(0, I)``.

``B`` is built by pushing the basis images through ``jax.image.resize`` in float64 -- the
same function the training and evaluation code uses to make low-resolution images -- so
PI-resize inverts exactly the resize the images go through. ``pinv(B^T)`` depends only on
``(old_hw, new_hw, method, antialias)``: it is computed once with numpy in float64, cached,
and applied as a single matmul over ``(old_h*old_w, C*D)``. It is a compile-time constant
under ``jax.jit``.

Never chain resizes of stored weights (``32 -> 8 -> 32`` is lossy): keep each learned kernel
at its base size and resample on the fly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mspe_jax.geometry import as_hw, canonical_method


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _resized_eye(n_old: int, n_new: int, method: str, antialias: bool):
  eye = jnp.eye(n_old, dtype=jnp.float64)
  return jax.image.resize(eye, (n_old, n_new), method=method, antialias=antialias)


@functools.cache
def _resize_matrix_1d(n_old: int, n_new: int, method: str, antialias: bool) -> np.ndarray:
  """``(n_new, n_old)``: column ``i`` is ``jax.image.resize`` of the i-th basis vector.

  One compiled program per key, not one per primitive of the resize; compiled ahead of time
  and called directly, so it runs now even when called while tracing.
  """
  with jax.enable_x64(True):
    out = _resized_eye.lower(n_old, n_new, method, antialias).compile()()
    return np.asarray(out, np.float64).T


@functools.cache
def resize_matrix(old_hw: tuple[int, int], new_hw: tuple[int, int],
                  method: str = "bilinear", antialias: bool = True) -> np.ndarray:
  """The matrix ``B`` with ``vec(resize(x, new_hw)) == B @ vec(x)`` (row-major vec).

  Shape ``(new_h*new_w, old_h*old_w)``, float64, read-only. ``jax.image.resize`` is
  separable (it resamples one axis after the other), so ``B = kron(B_h, B_w)`` with the 1-D
  matrices obtained by resizing basis vectors with ``jax.image.resize`` itself, in float64
  and at compile time: safe to call while tracing.
  """
  old_hw, new_hw = as_hw(old_hw, "old size"), as_hw(new_hw, "new size")
  method = canonical_method(method)
  b_h, b_w = (_resize_matrix_1d(o, n, method, bool(antialias)) for o, n in zip(old_hw, new_hw))
  mat = np.kron(b_h, b_w)
  mat.setflags(write=False)
  return mat


@functools.cache
def _pinv_matrix(old_hw, new_hw, method, antialias) -> np.ndarray:
  b = resize_matrix(old_hw, new_hw, method, antialias)
  m = np.linalg.pinv(b.T)  # (new_hw, old_hw), float64
  m.setflags(write=False)
  return m


def pinv_matrix(old_hw, new_hw, method: str = "bilinear", antialias: bool = True) -> np.ndarray:
  """``pinv(B^T)``, shape ``(new_h*new_w, old_h*old_w)``, float64, cached per key.

  ``pinv_cache_info()`` reports how often it was really computed.
  """
  return _pinv_matrix(as_hw(old_hw, "old size"), as_hw(new_hw, "new size"),
                      canonical_method(method), bool(antialias))


def pinv_cache_info():
  """``functools`` cache statistics of :func:`pinv_matrix` (``misses`` = pinv computed)."""
  return _pinv_matrix.cache_info()


def clear_cache() -> None:
  """Drops all cached resize and pseudo-inverse matrices."""
  _pinv_matrix.cache_clear()
  resize_matrix.cache_clear()
  _resize_matrix_1d.cache_clear()


def _check_kernel(kernel) -> tuple[int, int]:
  if getattr(kernel, "ndim", None) != 4:
    raise ValueError(
        "Expected a patch-embedding kernel of rank 4 (height, width, in_channels, "
        f"out_channels), got shape {tuple(getattr(kernel, 'shape', ()))}.")
  return int(kernel.shape[0]), int(kernel.shape[1])


def apply_matrix(mat: np.ndarray, kernel, new_hw):
  """``mat @ kernel.reshape(old_hw, -1)`` reshaped to ``(*new_hw, C, D)``; numpy or jax."""
  h, w, c, d = kernel.shape
  if isinstance(kernel, np.ndarray):
    out = mat @ kernel.reshape(h * w, c * d).astype(np.float64)
    return out.reshape(*new_hw, c, d).astype(kernel.dtype)
  out = jnp.matmul(jnp.asarray(mat, kernel.dtype), kernel.reshape(h * w, c * d),
                   precision=jax.lax.Precision.HIGHEST)
  return out.reshape(*new_hw, c, d)


def resample_kernel(kernel, new_hw, method: str = "bilinear", antialias: bool = True):
  """PI-resizes an HWIO patch-embedding kernel to ``new_hw`` (one cached matmul).

  Works on numpy arrays (computed in float64, returned in the input dtype) and on jax
  arrays or tracers (the matrix is a constant under ``jax.jit``). Returns the kernel
  itself when the size is unchanged. Non-square sizes are fine.
  """
  old_hw = _check_kernel(kernel)
  new_hw = as_hw(new_hw, "new kernel size")
  if new_hw == old_hw:
    return kernel
  return apply_matrix(pinv_matrix(old_hw, new_hw, method, antialias), kernel, new_hw)


def resize_kernel(kernel, new_hw, method: str = "bilinear", antialias: bool = True):
  """Plain interpolation of an HWIO kernel (the paper's non-PI ablation, Fig. 8/10).

  The same linear map as the images go through: ``w_new = B @ vec(w_old)``.
  """
  old_hw = _check_kernel(kernel)
  new_hw = as_hw(new_hw, "new kernel size")
  if new_hw == old_hw:
    return kernel
  return apply_matrix(resize_matrix(old_hw, new_hw, canonical_method(method), bool(antialias)),
                       kernel, new_hw)


def posemb_grid(posemb, grid=None) -> tuple[int, int]:
  """The (gh, gw) grid of a ``(1, gh*gw, D)`` position embedding (square unless given)."""
  if getattr(posemb, "ndim", None) != 3 or posemb.shape[0] != 1:
    raise ValueError("Expected a position embedding of shape (1, tokens, width), got "
                     f"shape {tuple(getattr(posemb, 'shape', ()))}.")
  n = int(posemb.shape[1])
  if grid is not None:
    grid = as_hw(grid, "position-embedding grid")
    if grid[0] * grid[1] != n:
      raise ValueError(f"Position embedding of shape {tuple(posemb.shape)} does not fit "
                       f"grid {grid}.")
    return grid
  side = int(round(n ** 0.5))
  if side * side != n:
    raise ValueError(f"Position embedding of shape {tuple(posemb.shape)} is not a square "
                     "grid; pass its grid.")
  return side, side


def resample_posemb(posemb, new_grid, old_grid=None, method: str = "bilinear",
                    antialias: bool = True):
  """Resamples a ``(1, gh*gw, D)`` position embedding (no cls slot) to ``new_grid``.

  Bilinear by default, through ``jax.image.resize``. Returns a jax array whatever it is
  given (so it works on concrete numpy parameters closed over under ``jax.jit``); the input
  itself when the grid is unchanged.
  """
  gh, gw = posemb_grid(posemb, old_grid)
  new_grid = as_hw(new_grid, "new position-embedding grid")
  if new_grid == (gh, gw):
    return posemb
  d = posemb.shape[-1]
  grid = jnp.asarray(posemb).reshape(1, gh, gw, d)
  out = jax.image.resize(grid, (1, *new_grid, d), method=canonical_method(method),
                         antialias=antialias)
  return out.reshape(1, new_grid[0] * new_grid[1], d)
