"""AugReg / big_vision .npz loading: layouts, round trips and every promised error."""

import logging

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mspe_jax
from tests import reference as ref


def _assert_same_tree(a, b):
  chex.assert_trees_all_equal(a, b)  # same keys, shapes, dtypes and values


def test_augreg_and_big_vision_layouts_give_the_same_params(tmp_path, augreg_file, augreg_arrays):
  model_a, params_a = mspe_jax.load_pretrained(augreg_file)
  bv = tmp_path / "big_vision.npz"
  np.savez(bv, **ref.augreg_to_big_vision(augreg_arrays, prefix="params/"))
  model_b, params_b = mspe_jax.load_pretrained(bv)
  _assert_same_tree(params_a, params_b)
  assert model_a == model_b
  # Without the params/ prefix too.
  bv2 = tmp_path / "big_vision_flat.npz"
  np.savez(bv2, **ref.augreg_to_big_vision(augreg_arrays, prefix=""))
  _assert_same_tree(mspe_jax.load_pretrained(bv2)[1], params_a)


def test_architecture_is_inferred(augreg_file):
  model, params = mspe_jax.load_pretrained(augreg_file)
  assert (model.width, model.depth, model.num_heads, model.mlp_dim) == (32, 2, 4, 64)
  assert model.patch == (4, 4) and model.grid == (7, 7) and model.num_classes == 10
  assert model.pool_type == "tok"
  assert params["pos_embedding"].shape == (1, 49, 32)
  block = params["Transformer"]["encoderblock_1"]
  assert block["MlpBlock_0"]["Dense_1"]["kernel"].shape == (64, 32)


def test_save_npz_round_trip_with_mspe(tmp_path, augreg_file, images):
  model, params = mspe_jax.load_pretrained(augreg_file, "mspe")
  params["mspe"]["embedding_0"]["kernel"] = params["mspe"]["embedding_0"]["kernel"] + 0.5
  path = mspe_jax.save_npz(tmp_path / "trained", params)
  assert path.endswith("trained.npz")
  keys = set(np.load(path).files)
  assert "mspe/embedding_3/kernel" in keys and "pos_embedding" in keys
  assert "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel" in keys
  model2, params2 = mspe_jax.load_pretrained(path, "mspe")
  _assert_same_tree(params, params2)
  assert model2.base_sizes == model.base_sizes
  # The same file serves the other modes too (the mspe subtree is simply unused there).
  x = jnp.asarray(images(1, 28, 28))
  v1 = mspe_jax.load_pretrained(path)[0].apply({"params": params2}, x)[0]
  v2 = mspe_jax.load_pretrained(augreg_file)[0].apply(
      {"params": mspe_jax.load_pretrained(augreg_file)[1]}, x)[0]
  np.testing.assert_array_equal(v1, v2)
  with pytest.raises(ValueError, match=r"base sizes \(1, 2, 3, 4\)"):
    mspe_jax.load_pretrained(path, "mspe", base_sizes=(2, 4))


def test_variant_checks_shapes(tmp_path, augreg_file):
  with pytest.raises(ValueError, match=r"(?s)augreg_tiny.npz.*shape mismatches.*embedding/kernel: "
                                       r"\(16, 16, 3, 192\) vs \(4, 4, 3, 32\)") as e:
    mspe_jax.load_pretrained(augreg_file, variant="Ti/16")
  assert "missing keys: [Transformer/encoderblock_10/" in str(e.value)  # Ti: 12 blocks, file: 2
  assert "more)" in str(e.value)  # long lists are cut


def test_missing_and_unexpected_keys_are_listed(tmp_path, augreg_arrays):
  a = dict(augreg_arrays)
  del a["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
  a["Transformer/encoderblock_1/MlpBlock_3/Dense_9/kernel"] = np.zeros((2, 2), np.float32)
  path = tmp_path / "broken.npz"
  np.savez(path, **a)
  with pytest.raises(ValueError) as e:
    mspe_jax.load_pretrained(path)
  msg = str(e.value)
  assert "broken.npz" in msg
  assert "missing keys: [Transformer/encoderblock_1/MlpBlock_0/Dense_0/bias]" in msg
  assert "unexpected keys: [Transformer/encoderblock_1/MlpBlock_0/Dense_9/kernel]" in msg


def test_missing_core_key(tmp_path, augreg_arrays):
  a = {k: v for k, v in augreg_arrays.items() if k != "embedding/kernel"}
  np.savez(tmp_path / "nokernel.npz", **a)
  with pytest.raises(ValueError, match=r"nokernel.npz is missing keys.*embedding/kernel"):
    mspe_jax.load_pretrained(tmp_path / "nokernel.npz")


def test_wrong_shape(tmp_path, augreg_arrays):
  a = dict(augreg_arrays)
  a["Transformer/encoder_norm/scale"] = np.ones(31, np.float32)
  np.savez(tmp_path / "shape.npz", **a)
  with pytest.raises(ValueError,
                     match=r"(?s)shape.npz.*Transformer/encoder_norm/scale: \(32,\) vs \(31,\)"):
    mspe_jax.load_pretrained(tmp_path / "shape.npz")


def test_non_finite_values(tmp_path, augreg_arrays):
  a = dict(augreg_arrays)
  a["head/bias"] = a["head/bias"].copy()
  a["head/bias"][3] = np.inf
  np.savez(tmp_path / "nan.npz", **a)
  with pytest.raises(ValueError, match=r"(?s)nan.npz.*non-finite.*head/bias"):
    mspe_jax.load_pretrained(tmp_path / "nan.npz")


def test_unreadable_files(tmp_path):
  bad = tmp_path / "garbage.npz"
  bad.write_bytes(b"this is not a zip file")
  with pytest.raises(ValueError, match=r"garbage.npz is not a readable .npz"):
    mspe_jax.load_pretrained(bad)
  with pytest.raises(ValueError, match=r"nothere.npz does not exist"):
    mspe_jax.load_pretrained(tmp_path / "nothere.npz")
  truncated = tmp_path / "truncated.npz"
  np.savez(truncated, a=np.zeros(1000))
  truncated.write_bytes(truncated.read_bytes()[:300])
  with pytest.raises(ValueError, match="truncated.npz"):
    mspe_jax.load_pretrained(truncated)


def test_head_reinit_and_posemb_resampling(augreg_file, caplog, images):
  with caplog.at_level(logging.INFO):
    model, params = mspe_jax.load_pretrained(augreg_file, num_classes=3, image_size=56)
  assert "re-initialising the head" in caplog.text
  assert "resampling the position embedding from grid (7, 7) to (14, 14)" in caplog.text
  assert params["head"]["kernel"].shape == (32, 3) and not params["head"]["kernel"].any()
  assert params["pos_embedding"].shape == (1, 196, 32)
  assert model.grid == (14, 14)
  logits, _ = jax.jit(model.apply)({"params": params}, jnp.asarray(images(1, 56, 56)))
  assert logits.shape == (1, 3)
  # Same class count: the head is kept, nothing logged.
  caplog.clear()
  _, p = mspe_jax.load_pretrained(augreg_file, num_classes=10)
  assert "head" not in caplog.text and p["head"]["kernel"].any()


def test_loaded_params_are_numpy_and_jittable(augreg_file):
  model, params = mspe_jax.load_pretrained(augreg_file, "mspe")
  assert all(isinstance(v, np.ndarray) for v in jax.tree_util.tree_leaves(params))
  assert all(v.dtype == np.float32 for v in jax.tree_util.tree_leaves(params))
