"""Loss properties, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mspe_jax
from mspe_jax import cpu_tuning, jax_utils, losses
from mspe_jax.mspe_step import MSPEStep


def test_distill_loss_is_zero_when_student_is_the_teachers_native_path(augreg_file, images):
  model, params = mspe_jax.load_pretrained(augreg_file, "mspe")
  with jax.enable_x64(True):
    p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    x = jnp.asarray(images(8, 28, 28), jnp.float64)
    fns = MSPEStep(model.clone(dtype=jnp.float64), None, jax_utils.make_mesh(),
                   losses.make_loss("distill"), distill=True)
    teacher = fns._teacher(p64, x)  # noqa: SLF001
    # the student's logits as training computes them (the tokens, then the encoder in
    # fns.chains chains with the class token only in the last block)
    m64 = model.clone(dtype=jnp.float64)
    tokens = m64.apply({"params": p64}, x, method="embed_projected")[0]
    student = cpu_tuning.encode_logits(m64, p64, tokens, fns.chains)
    assert student.dtype == jnp.float64
    np.testing.assert_array_equal(student, teacher)  # the same computation, bit for bit
    for t in (1.0, 2.0, 4.0):
      assert float(losses.distillation(student, teacher, t)) == 0.0
    low = model.clone(dtype=jnp.float64).apply(
        {"params": p64}, jax.image.resize(x, (8, 14, 14, 3), "bilinear"))[0]
    assert float(losses.distillation(low, teacher)) > 1e-3


def test_distillation_matches_kl_definition():
  rng = np.random.default_rng(0)
  s, t = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
  with jax.enable_x64(True):
    got = float(losses.distillation(jnp.asarray(s), jnp.asarray(t), temperature=2.0))
  ps = np.exp(s / 2) / np.exp(s / 2).sum(-1, keepdims=True)
  pt = np.exp(t / 2) / np.exp(t / 2).sum(-1, keepdims=True)
  want = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), -1)) * 4
  assert got == pytest.approx(want, rel=1e-6)


def test_distill_never_reads_labels():
  loss = losses.make_loss("distill")
  logits = jnp.zeros((2, 3))
  assert float(loss(logits, None, logits)) == 0.0
  with pytest.raises(ValueError, match="Unknown loss"):
    losses.make_loss("kl")
  ce = losses.make_loss("ce+distill", distill_weight=0.5)
  labels = jnp.array([0, 2])
  np.testing.assert_allclose(ce(logits, labels, logits), np.log(3), rtol=1e-6)
