"""The ViT against an independent numpy forward pass, and the exactness of PI / MSPE."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mspe_jax
from mspe_jax import pi_resize, vit
from mspe_jax.patch_embed import PRETRAINED_KERNEL, PatchEmbed
from tests import reference as ref


def _apply(model, params, x):
  return jax.jit(lambda p, x: model.apply({"params": p}, x)[0])(params, jnp.asarray(x))


def test_native_parity_with_numpy_forward(augreg_file, augreg_arrays, images):
  model, params = mspe_jax.load_pretrained(augreg_file)
  x = images(4, 28, 28)
  want = ref.vit_forward(augreg_arrays, x)
  mparams = mspe_jax.init_mspe_params(params, (1, 2, 3, 4))
  for mode in ["vanilla", "pi", "resize", "mspe"]:
    got = _apply(model.clone(policy=PatchEmbed(mode)), mparams, x)
    assert ref.rel_err(got, want) < 1e-4, mode
  assert np.abs(want).max() > 1  # the random model gives non-trivial logits


@pytest.mark.parametrize("hw", [(14, 14), (8, 12), (56, 56), (20, 28)])
def test_vanilla_parity_at_other_sizes(augreg_file, augreg_arrays, images, hw):
  # vanilla: patch 4, the grid follows the input, position embedding resampled (bilinear).
  model, params = mspe_jax.load_pretrained(augreg_file, "vanilla")
  x = images(2, *hw, seed=1)
  got = _apply(model, params, x)
  want = ref.vit_forward(augreg_arrays, x)
  assert ref.rel_err(got, want) < 1e-4


@pytest.mark.parametrize("hw", [(14, 14), (7, 7), (21, 35), (56, 56), (35, 14)])
def test_pi_parity_at_other_sizes(augreg_file, augreg_arrays, images, hw):
  # pi: fixed 7x7 grid, kernel (h//7, w//7) = PI-resize from the definition.
  model, params = mspe_jax.load_pretrained(augreg_file, "pi")
  x = images(2, *hw, seed=2)
  got = _apply(model, params, x)
  kernel = ref.pi_resize_kernel(augreg_arrays["embedding/kernel"].astype(np.float64),
                                (hw[0] // 7, hw[1] // 7))
  want = ref.vit_forward(augreg_arrays, x, kernel=kernel)
  assert ref.rel_err(got, want) < 1e-4


def _upsample_patchwise(x, patch, factor, method):
  """Each p x p patch resized on its own: exactly the map B that PI-resize inverts."""
  n, h, w, c = x.shape
  g = h // patch
  p = x.reshape(n, g, patch, g, patch, c).transpose(0, 1, 3, 2, 4, 5)
  up = jax.image.resize(p, (n, g, g, patch * factor, patch * factor, c), method)
  return np.asarray(up.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * factor, w * factor, c))


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_pi_on_upsampled_image_gives_native_logits(augreg_file, images, method):
  model, params = mspe_jax.load_pretrained(augreg_file, "pi", resize_method=method)
  x = images(4, 28, 28, seed=3)
  native = _apply(model, params, x)
  for factor in (2, 3):
    up = _upsample_patchwise(x, 4, factor, method)
    assert ref.rel_err(_apply(model, params, up), native) < 1e-4
  # Vanilla at 2x is not invariant: the baseline really differs.
  vanilla = _apply(model.clone(policy=PatchEmbed("vanilla")), params,
                   _upsample_patchwise(x, 4, 2, method))
  assert ref.rel_err(vanilla, native) > 1e-2


def test_pi_nearest_whole_image_upsampling_is_exact(augreg_file, images):
  # Nearest-neighbour 2x of the whole image equals patchwise upsampling.
  model, params = mspe_jax.load_pretrained(augreg_file, "pi", resize_method="nearest")
  x = images(4, 28, 28, seed=4)
  up = np.asarray(jax.image.resize(x, (4, 56, 56, 3), "nearest"))
  assert ref.rel_err(_apply(model, params, up), _apply(model, params, x)) < 1e-4


def test_fresh_mspe_with_frozen_native_kernel_is_bit_identical(augreg_file, images):
  base, params = mspe_jax.load_pretrained(augreg_file)
  model, mparams = mspe_jax.load_pretrained(augreg_file, "mspe",
                                            freeze_native_kernel=True)
  assert model.plan(28, 28).kernel_index == PRETRAINED_KERNEL
  x = images(4, 28, 28, seed=5)
  want = _apply(base, params, x)
  np.testing.assert_array_equal(_apply(model, mparams, x), want)
  eager, _ = model.apply({"params": mparams}, jnp.asarray(x))
  np.testing.assert_array_equal(eager, base.apply({"params": params}, jnp.asarray(x))[0])
  # Even after the MSPE kernels change, native stays the pretrained model.
  changed = jax.tree_util.tree_map(lambda a: a, mparams)
  changed["mspe"] = jax.tree_util.tree_map(lambda a: a + 1.0, mparams["mspe"])
  np.testing.assert_array_equal(_apply(model, changed, x), want)
  # ... while a low resolution uses them.
  low = images(4, 14, 14, seed=6)
  assert not np.array_equal(_apply(model, changed, low), _apply(model, mparams, low))


def test_mspe_init_is_pi_resize_and_routing(augreg_file, images):
  model, params = mspe_jax.load_pretrained(augreg_file, "mspe")
  assert model.base_sizes == (1, 2, 3, 4)
  k0 = params["embedding"]["kernel"]
  for i, b in enumerate(model.base_sizes):
    np.testing.assert_allclose(params["mspe"][f"embedding_{i}"]["kernel"],
                               pi_resize.resample_kernel(k0.astype(np.float64), (b, b)),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(params["mspe"][f"embedding_{i}"]["bias"],
                                  params["embedding"]["bias"])
  # Eq. 10 on the effective kernel size: 7px -> base 1, 14 -> 2, 21 -> 3, 28.. -> 4,
  # 7x21 -> the smaller side, 1 -> base 1 (the default rule for non-square inputs); 8 and
  # 10 px are resized up to 14 (the default leftover "resize_up"), so base 2.
  expect = {(7, 7): 0, (14, 14): 1, (21, 21): 2, (28, 28): 3, (56, 56): 3, (7, 21): 0,
            (8, 8): 1, (10, 10): 1, (11, 11): 1}
  for hw, k in expect.items():
    assert model.plan(*hw).kernel_index == k, hw
  # A fresh MSPE model equals PI-resize where the routed base kernel upsamples exactly.
  x = images(2, 56, 56, seed=7)
  pi_model = model.clone(policy=PatchEmbed("pi"))
  np.testing.assert_allclose(_apply(model, params, x), _apply(pi_model, params, x),
                             rtol=1e-4, atol=1e-4)


def test_leftover_policies(augreg_file, images):
  model, params = mspe_jax.load_pretrained(augreg_file, "pi")
  x = images(2, 18, 18, seed=8)
  with_leftover = lambda how: model.clone(policy=model.policy.replace(leftover=how))  # noqa: E731
  assert with_leftover("crop").plan(18, 18).kernel_hw == (2, 2)
  assert with_leftover("pad").plan(18, 18).kernel_hw == (3, 3)
  assert with_leftover("resize").plan(18, 18) == mspe_jax.Plan((3, 3), (7, 7), None, (21, 21))
  crop = _apply(with_leftover("crop"), params, x)
  np.testing.assert_allclose(crop, _apply(model, params, x[:, 2:16, 2:16]), rtol=1e-5, atol=1e-5)
  resized = np.asarray(jax.image.resize(x, (2, 21, 21, 3), "bilinear"))
  np.testing.assert_allclose(_apply(with_leftover("resize"), params, x),
                             _apply(model, params, resized), rtol=1e-5, atol=1e-5)
  padded = np.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0)))
  np.testing.assert_allclose(_apply(with_leftover("pad"), params, x),
                             _apply(model, params, padded), rtol=1e-5, atol=1e-5)
  # resize_up: to the next multiple of the grid, per axis (10 x 18 -> 14 x 21, kernel 2 x 3)
  up = with_leftover("resize_up")
  assert up.plan(10, 18) == mspe_jax.Plan((2, 3), (7, 7), None, (14, 21))
  x = images(2, 10, 18, seed=9)
  np.testing.assert_allclose(_apply(up, params, x), _apply(
      model, params, np.asarray(jax.image.resize(x, (2, 14, 21, 3), "bilinear"))),
      rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_clear_errors(augreg_file):
  model, params = mspe_jax.load_pretrained(augreg_file, "mspe")
  apply = lambda x: model.apply({"params": params}, x)  # noqa: E731
  with pytest.raises(ValueError, match=r"6x9 px is smaller than the 7x7 token grid.*minimum"):
    apply(jnp.zeros((1, 6, 9, 3)))
  with pytest.raises(ValueError, match=r"3 channels.*\(1, 28, 28, 1\)"):
    apply(jnp.zeros((1, 28, 28, 1)))
  with pytest.raises(ValueError, match="floating point.*uint8"):
    apply(jnp.zeros((1, 28, 28, 3), jnp.uint8))
  with pytest.raises(ValueError, match="NaN or inf"):
    apply(jnp.full((1, 28, 28, 3), jnp.nan))
  with pytest.raises(ValueError, match="rank 4"):
    apply(jnp.zeros((28, 28, 3)))
  with pytest.raises(ValueError, match="smaller than one 4x4 patch"):
    model.apply({"params": params}, jnp.zeros((1, 3, 28, 3)), PatchEmbed("vanilla"))
  with pytest.raises(ValueError, match="Unknown patch-embedding mode 'flexible'"):
    PatchEmbed("flexible")
  with pytest.raises(ValueError, match="Unknown leftover policy 'trim'"):
    PatchEmbed("pi", leftover="trim")
  with pytest.raises(ValueError, match="Forced kernel 4 out of range for 4 MSPE kernels"):
    model.apply({"params": params}, jnp.zeros((1, 28, 28, 3)), model.policy.replace(kernel=4))
  with pytest.raises(ValueError, match="forced kernel .* needs mode='mspe'"):
    PatchEmbed("pi", kernel=1)
  base, base_params = mspe_jax.load_pretrained(augreg_file)
  with pytest.raises(ValueError, match=r"needs MSPE kernels of base sizes \(1, 2, 3, 4\), but "
                                       r"this model declares none"):
    base.apply({"params": base_params}, jnp.zeros((1, 28, 28, 3)), PatchEmbed("mspe"))


def test_variants_and_pooling():
  assert vit.decode_variant("B/16") == dict(width=768, depth=12, mlp_dim=3072, num_heads=12,
                                            patch_size=(16, 16))
  assert vit.decode_variant("Ti/8")["width"] == 192
  assert vit.decode_variant("L/32")["depth"] == 24
  for bad in ["X/16", "B16", "B/", "B/x"]:
    with pytest.raises(ValueError, match="variant"):
      vit.decode_variant(bad)
  m = vit.ViT(num_classes=5, **vit.decode_variant("Ti/16"), image_size=32, pool_type="gap")
  shapes = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  assert "cls" not in shapes and shapes["pos_embedding"].shape == (1, 4, 192)
  logits, extras = jax.eval_shape(m.apply, {"params": shapes}, jnp.zeros((2, 48, 64, 3)))
  chex.assert_shape([logits, extras["pre_logits"]], [(2, 5), (2, 192)])
  chex.assert_shape(extras["encoded"], (2, 12, 192))  # vanilla: the grid follows the input (3x4)
  _, extras = jax.eval_shape(lambda v, x: m.apply(v, x, PatchEmbed("pi")), {"params": shapes},
                             jnp.zeros((2, 48, 64, 3)))
  chex.assert_shape(extras["encoded"], (2, 4, 192))  # pi: fixed 2x2 grid


def test_fused_attention_is_flax_attention():
  # Same parameter names, shapes and initial values as flax.linen's attention (so a config
  # that trains from scratch gives the same model), same outputs to float32 rounding.
  import flax.linen as nn

  from mspe_jax import attention
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 17, 48)), jnp.float32)
  flax_mha = nn.MultiHeadDotProductAttention(
      num_heads=4, kernel_init=nn.initializers.xavier_uniform(), deterministic=True)
  want_params = flax_mha.init(jax.random.key(3), x, x)["params"]
  ours = attention.MultiHeadDotProductAttention(num_heads=4)
  got_params = ours.init(jax.random.key(3), x)["params"]
  chex.assert_trees_all_equal(got_params, want_params)  # structure, shapes and values
  want = flax_mha.apply({"params": want_params}, x, x)
  got = ours.apply({"params": want_params}, x)
  assert ref.rel_err(got, want) < 1e-5
  with pytest.raises(ValueError, match="not divisible by num_heads=5"):
    attention.MultiHeadDotProductAttention(num_heads=5).init(jax.random.key(0), x)


@pytest.mark.parametrize("mode,hw", [("mspe", (10, 21)), ("mspe", (28, 28)), ("pi", (35, 14)),
                                     ("resize", (21, 21)), ("vanilla", (20, 24))])
def test_embed_projected_equals_embed(augreg_file, mode, hw):
  model, params = mspe_jax.load_pretrained(augreg_file, mode)
  x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (2, *hw, 3)), jnp.float32)
  tokens = model.apply({"params": params}, x, method="embed")
  projected, q = model.apply({"params": params}, x, method="embed_projected")
  assert q.shape[:3] == tokens.shape[:3]
  np.testing.assert_allclose(projected, tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", ["tok", "gap"])
def test_logits_only_encode_skips_unused_work_exactly(pool):
  """``sequence=False`` (training, evaluation): same logits and input gradients; with the
  class token the last block runs for it alone."""
  model = vit.ViT(num_classes=5, image_size=16, pool_type=pool, head_zeroinit=False,
                  patch_size=(4, 4), width=64, depth=2, mlp_dim=128, num_heads=2)
  x = jnp.asarray(np.random.default_rng(5).uniform(-1, 1, (3, 16, 16, 3)), jnp.float32)
  params = model.init(jax.random.key(1), x)["params"]
  tokens = model.apply({"params": params}, x, method="embed")
  encode = jax.jit(lambda t, seq: model.apply({"params": params}, t, seq, method="encode"),
                   static_argnums=1)
  full, extras = encode(tokens, True)
  short, short_extras = encode(tokens, False)
  np.testing.assert_allclose(short, full, rtol=1e-5, atol=1e-5)
  n = 17 if pool == "tok" else 16
  assert extras["encoded"].shape == (3, n, 64)
  assert short_extras["encoded"].shape == (3, 1 if pool == "tok" else 16, 64)
  grad = jax.jit(jax.grad(lambda t, seq: encode(t, seq)[0][:, 1].sum()), static_argnums=1)
  np.testing.assert_allclose(grad(tokens, False), grad(tokens, True), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(model.apply({"params": params}, x, sequence=False)[0], full,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["vanilla", "pi", "resize", "mspe"])
def test_every_policy_works_with_parameters_closed_over_or_passed(augreg_file, mode):
  """Ordinary JAX: ``jit(lambda x: model.apply({"params": params}, x))`` with the loaded numpy
  parameters as constants, at sizes where the position embedding or the kernel is resampled,
  gives what passing them as arguments gives (and what eager calls give)."""
  model, params = mspe_jax.load_pretrained(augreg_file, mode)
  for hw in [(14, 14), (21, 35)]:
    x = jnp.asarray(np.random.default_rng(9).uniform(-1, 1, (2, *hw, 3)), jnp.float32)
    closed = jax.jit(lambda x: model.apply({"params": params}, x)[0])(x)
    passed = jax.jit(lambda p, x: model.apply({"params": p}, x)[0])(params, x)
    eager = model.apply({"params": params}, x)[0]
    np.testing.assert_allclose(closed, passed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(eager, passed, rtol=1e-5, atol=1e-5)
