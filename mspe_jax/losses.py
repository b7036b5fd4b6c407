"""Losses: cross-entropy (paper Eq. 7) and distillation from the native-resolution teacher."""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("ce", "distill", "ce+distill")


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy with integer labels."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logp.dtype)
  if label_smoothing:
    onehot = onehot * (1 - label_smoothing) + label_smoothing / logits.shape[-1]
  return -jnp.mean(jnp.sum(onehot * logp, axis=-1))


def distillation(student_logits, teacher_logits, temperature: float = 1.0):
  """Mean ``KL(softmax(t/T) || softmax(s/T)) * T^2`` (Hinton et al.); zero iff s == t + c."""
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  p_t = jax.nn.softmax(t)
  kl = jnp.sum(p_t * (jax.nn.log_softmax(t) - jax.nn.log_softmax(s)), axis=-1)
  return jnp.mean(kl) * temperature ** 2


def make_loss(kind: str = "ce", *, temperature: float = 1.0, distill_weight: float = 1.0,
              label_smoothing: float = 0.0):
  """``loss(logits, labels, teacher_logits) -> scalar`` for ``ce | distill | ce+distill``.

  ``distill`` never reads ``labels`` (they may be None).
  """
  if kind not in LOSSES:
    raise ValueError(f"Unknown loss {kind!r}; expected one of {LOSSES}.")

  def loss(logits, labels, teacher_logits):
    total = 0.0
    if kind in ("ce", "ce+distill"):
      total = cross_entropy(logits, labels, label_smoothing)
    if kind in ("distill", "ce+distill"):
      total = total + distill_weight * distillation(logits, teacher_logits, temperature)
    return total

  return loss


def needs_labels(kind: str) -> bool:
  return kind in ("ce", "ce+distill")


def needs_teacher(kind: str) -> bool:
  return kind in ("distill", "ce+distill")
