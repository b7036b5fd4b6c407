"""PI-resize: the invariance it promises, in float64, and its cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mspe_jax import geometry, pi_resize
from tests import reference as ref

UPSAMPLE = [((4, 4), (8, 8)), ((16, 16), (32, 32)), ((2, 2), (5, 7)), ((16, 16), (18, 20)),
            ((1, 1), (3, 3))]
DOWNSAMPLE = [((16, 16), (4, 4)), ((8, 8), (3, 3)), ((16, 16), (9, 12)), ((4, 4), (1, 1))]
METHODS = ["bilinear", "bicubic", "nearest"]


def _tokens(patches, kernel):
  """<x, w> for every patch x (n, h, w, c) and output channel of kernel (h, w, c, d)."""
  return np.einsum("nhwc,hwcd->nd", patches, kernel)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("old,new", UPSAMPLE)
def test_upsampling_preserves_every_token_exactly(old, new, method):
  rng = np.random.default_rng(0)
  w_old = rng.standard_normal((*old, 3, 5))
  x = rng.standard_normal((64, *old, 3))
  w_new = pi_resize.resample_kernel(w_old, new, method)
  assert w_new.dtype == np.float64 and w_new.shape == (*new, 3, 5)
  b = pi_resize.resize_matrix(old, new, method)
  bx = np.einsum("pq,nqc->npc", b, x.reshape(64, -1, 3)).reshape(64, *new, 3)
  np.testing.assert_allclose(_tokens(bx, w_new), _tokens(x, w_old), rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("old,new", DOWNSAMPLE)
def test_downsampling_is_the_gaussian_least_squares_solution(old, new, method):
  # E_x[(<Bx, v> - <x, w>)^2] = ||B^T v - w||^2 for x ~ N(0, I): solve it with lstsq.
  rng = np.random.default_rng(1)
  w_old = rng.standard_normal((*old, 2, 3))
  b = pi_resize.resize_matrix(old, new, method)
  target = w_old.reshape(old[0] * old[1], -1)
  solution, *_ = np.linalg.lstsq(b.T, target, rcond=None)
  got = pi_resize.resample_kernel(w_old, new, method).reshape(new[0] * new[1], -1)
  np.testing.assert_allclose(got, solution, rtol=0, atol=1e-10)
  # ... and it is a stationary point of the expected squared token error.
  np.testing.assert_allclose(b @ (b.T @ got - target), 0, atol=1e-10)
  # Monte Carlo check of the objective: PI beats plain interpolation on Gaussian patches.
  x = rng.standard_normal((4000, *old, 2))
  bx = np.einsum("pq,nqc->npc", b, x.reshape(4000, -1, 2)).reshape(4000, *new, 2)
  err_pi = np.mean((_tokens(bx, got.reshape(*new, 2, 3)) - _tokens(x, w_old)) ** 2)
  err_plain = np.mean((_tokens(bx, pi_resize.resize_kernel(w_old, new, method)) -
                       _tokens(x, w_old)) ** 2)
  assert err_pi <= err_plain


def test_resize_matrix_is_the_image_resize():
  # B is jax.image.resize itself, and agrees with an independent numpy resampler.
  rng = np.random.default_rng(2)
  for method in METHODS + ["lanczos3"]:
    for old, new in UPSAMPLE[:3] + DOWNSAMPLE[:3]:
      img = rng.standard_normal(old)
      b = pi_resize.resize_matrix(old, new, method, antialias=True)
      with jax.enable_x64(True):
        want = np.asarray(jax.image.resize(jnp.asarray(img), new, method, antialias=True))
      np.testing.assert_allclose(b @ img.reshape(-1), want.reshape(-1), atol=1e-12)
      if method != "lanczos3":
        np.testing.assert_allclose(b, ref.resize_matrix_2d(old, new, method), atol=1e-12)


def test_pi_resize_matches_definition_with_independent_resampler():
  rng = np.random.default_rng(3)
  w = rng.standard_normal((16, 16, 3, 4))
  for new in [(4, 4), (9, 18), (32, 32)]:
    np.testing.assert_allclose(pi_resize.resample_kernel(w, new),
                               ref.pi_resize_kernel(w, new), atol=1e-9)


def test_same_size_returns_kernel_unchanged():
  w = np.random.default_rng(4).standard_normal((16, 16, 3, 8))
  assert pi_resize.resample_kernel(w, (16, 16)) is w
  assert pi_resize.resample_kernel(w, 16) is w
  wj = jnp.asarray(w, jnp.float32)
  assert pi_resize.resample_kernel(wj, (16, 16)) is wj


def test_pinv_is_computed_once_per_key_also_under_jit():
  pi_resize.clear_cache()
  w = np.random.default_rng(5).standard_normal((8, 8, 3, 4)).astype(np.float32)
  for _ in range(3):
    pi_resize.resample_kernel(w, (3, 3))
  f = jax.jit(lambda k: pi_resize.resample_kernel(k, (3, 3)))
  out = f(jnp.asarray(w))
  f(jnp.asarray(w) * 2)
  pi_resize.resample_kernel(w, (3, 3), method="bicubic")
  info = pi_resize.pinv_cache_info()
  assert info.misses == 2, info  # (8->3, bilinear) and (8->3, bicubic)
  assert info.hits >= 3
  np.testing.assert_allclose(out, pi_resize.resample_kernel(w.astype(np.float64), (3, 3)),
                             rtol=1e-5, atol=1e-6)


def test_errors_name_the_shape():
  with pytest.raises(ValueError, match=r"rank 4.*\(16, 16, 3\)"):
    pi_resize.resample_kernel(np.zeros((16, 16, 3)), (8, 8))
  for bad in [(0, 8), (8, -1), 0, (4, 4, 4)]:
    with pytest.raises(ValueError, match="size"):
      pi_resize.resample_kernel(np.zeros((16, 16, 3, 2)), bad)
  with pytest.raises(ValueError, match="rank 4"):
    pi_resize.resize_kernel(np.zeros((2, 3)), (8, 8))
  with pytest.raises(ValueError, match="resize method"):
    pi_resize.resample_kernel(np.zeros((4, 4, 3, 2)), (8, 8), method="area")
  with pytest.raises(ValueError, match=r"\(1, 10, 4\)"):
    pi_resize.resample_posemb(np.zeros((1, 10, 4)), (2, 2))
  with pytest.raises(ValueError, match="shape"):
    pi_resize.resample_posemb(np.zeros((10, 4)), (2, 2))


def test_resize_kernel_is_plain_interpolation():
  w = np.random.default_rng(6).standard_normal((4, 4, 3, 2))
  got = pi_resize.resize_kernel(w, (8, 8), "bicubic")
  want = ref.resize_image(w.transpose(2, 3, 0, 1)[..., None], (8, 8), "bicubic")[..., 0]
  np.testing.assert_allclose(got, want.transpose(2, 3, 0, 1), atol=1e-12)


def test_resample_posemb_bilinear():
  rng = np.random.default_rng(7)
  pos = rng.standard_normal((1, 7 * 7, 6))
  assert pi_resize.resample_posemb(pos, (7, 7)) is pos
  assert isinstance(pi_resize.resample_posemb(pos, (3, 3)), jax.Array)  # safe under jit
  for new in [(3, 3), (14, 14), (2, 9)]:
    got = pi_resize.resample_posemb(pos, new)
    want = ref.resize_image(pos.reshape(1, 7, 7, 6), new).reshape(1, -1, 6)
    assert got.shape == (1, new[0] * new[1], 6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # non-square source grid
  pos = rng.standard_normal((1, 3 * 5, 2))
  got = pi_resize.resample_posemb(pos, (6, 10), old_grid=(3, 5))
  want = ref.resize_image(pos.reshape(1, 3, 5, 2), (6, 10)).reshape(1, -1, 2)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["pi", "resize"])
@pytest.mark.parametrize("stored,kernel_hw", [((4, 4), (8, 8)), ((16, 16), (3, 5)),
                                               ((2, 2), (2, 2)), ((3, 3), (1, 4))])
def test_projected_patches_give_the_resampled_kernel_tokens(stored, kernel_hw, how):
  """patches(x) @ M w == Q @ w with Q = M^T patches, and its kernel gradient is Q^T dtokens
  (the factored form training uses), in float64 to rounding."""
  from mspe_jax.patch_embed import PatchEmbed, Plan
  policy = PatchEmbed(how)
  plan = Plan(kernel_hw, (4, 3), None, (4 * kernel_hw[0], 3 * kernel_hw[1]))
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 4 * kernel_hw[0], 3 * kernel_hw[1], 3))
  w = rng.standard_normal((*stored, 3, 5))
  bias = rng.standard_normal(5)
  with jax.enable_x64(True):
    x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)
    q = policy.project(x64, plan, stored)
    assert q.shape == (2, 4, 3, stored[0] * stored[1] * 3)
    patches = geometry.extract_patches(x64, kernel_hw)
    direct = lambda w: patches @ policy.resample(w, kernel_hw).reshape(-1, 5) + bias
    np.testing.assert_allclose(q @ w64.reshape(-1, 5) + bias, direct(w64), rtol=0, atol=1e-10)
    dtokens = jnp.asarray(rng.standard_normal((2, 4, 3, 5)))
    grad = jax.vjp(direct, w64)[1](dtokens)[0]
    np.testing.assert_allclose((q.reshape(-1, q.shape[-1]).T @ dtokens.reshape(-1, 5))
                               .reshape(w.shape), grad, rtol=0, atol=1e-10)
