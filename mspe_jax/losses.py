"""Losses: cross-entropy (paper Eq. 7) and distillation from the native-resolution teacher,
per image (classification) or per pixel (segmentation, ``mspe_jax.segmentation``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mspe_jax import segmentation

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
              label_smoothing: float = 0.0, task: str = "classification", label_hw=None,
              ignore_label: int = segmentation.IGNORE_LABEL):
  """``loss(logits, labels, teacher_logits) -> scalar`` for ``ce | distill | ce+distill``.

  ``distill`` never reads ``labels`` (they may be None). ``task="segmentation"``: logits are
  ``(B, h, w, C)`` maps, labels ``(B, H, W)`` label maps at ``label_hw`` (the native
  resolution); cross-entropy skips ``ignore_label`` pixels, distillation is per pixel at
  ``label_hw`` (``mspe_jax.segmentation``).
  """
  if kind not in LOSSES:
    raise ValueError(f"Unknown loss {kind!r}; expected one of {LOSSES}.")
  if task == "segmentation":
    if label_hw is None:
      raise ValueError("A segmentation loss needs label_hw (the label maps' size).")
    if label_smoothing:
      raise ValueError("label_smoothing is for classification only.")
    ce = lambda logits, labels: segmentation.pixel_cross_entropy(  # noqa: E731
        logits, labels, ignore_label)
    kl = lambda logits, teacher: segmentation.pixel_distillation(  # noqa: E731
        logits, teacher, label_hw, temperature)
  else:
    ce = lambda logits, labels: cross_entropy(logits, labels, label_smoothing)  # noqa: E731
    kl = lambda logits, teacher: distillation(logits, teacher, temperature)  # noqa: E731

  def loss(logits, labels, teacher_logits):
    total = 0.0
    if kind in ("ce", "ce+distill"):
      total = ce(logits, labels)
    if kind in ("distill", "ce+distill"):
      total = total + distill_weight * kl(logits, teacher_logits)
    return total

  return loss


def needs_labels(kind: str) -> bool:
  return kind in ("ce", "ce+distill")


def needs_teacher(kind: str) -> bool:
  return kind in ("distill", "ce+distill")
