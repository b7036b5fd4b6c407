"""Semantic segmentation on the ViT: the SETR-Naive head, per-pixel losses and the metrics.

SETR-Naive (Zheng et al. 2021, "SETR-Naive" in MMSegmentation): the encoder's patch tokens
(the class token, if any, is dropped) on their ``gh x gw`` grid go through a per-token head,
``LayerNorm -> 1x1 projection -> ReLU -> 1x1 to the classes``, and the logits are upsampled
bilinearly. Parameters (big_vision style, Linen numbering), under ``head``:

    head/LayerNorm_0/{scale,bias}   (D,)
    head/Dense_0/{kernel,bias}      (D, hidden), (hidden,)
    head/Dense_1/{kernel,bias}      (hidden, classes), (classes,)

The encoder (``ViT.encode``) returns the logits on the token grid; ``ViT.__call__`` upsamples
them to the input size. Where they are scored the protocol is MMSegmentation's:

* training: the grid logits are upsampled straight to the label map's size (the native
  resolution: the batch is native, each term resizes the images only) and the loss is the
  mean per-pixel cross-entropy over pixels whose label is not ``ignore_label`` (paper Eq. 7
  per pixel); distillation is the per-pixel KL to the native model's upsampled logits;
* evaluation: logits upsampled to the input size (the model's output), then to the label
  map's own size, argmax; one confusion matrix per (method, resolution), accumulated on
  device; ``mIoU``, ``mAcc`` and the mean ``F1`` from it as MMSegmentation computes them
  (per class over the whole set, classes absent from both labels and predictions excluded
  from the means; a class predicted but absent from the labels counts IoU 0; see ``scores``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IGNORE_LABEL = 255  # MMSegmentation's: pixels with this label are neither trained nor scored
METRICS = ("miou", "macc", "f1")


class SegHead(nn.Module):
  """The SETR-Naive head on patch tokens ``(B, gh, gw, D)`` -> logits ``(B, gh, gw, C)``."""
  num_classes: int
  hidden: int
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=nn.initializers.lecun_normal())(x)
    x = nn.relu(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros)(x)


def upsample(logits, hw):
  """Bilinear resize of ``(B, h, w, C)`` logits to ``hw`` (no antialias: an upsampling);
  the identity when the size already matches."""
  hw = tuple(int(v) for v in hw)
  if tuple(logits.shape[1:3]) == hw:
    return logits
  return jax.image.resize(logits, (logits.shape[0], *hw, logits.shape[-1]), "bilinear",
                          antialias=False)


def valid_pixels(labels, ignore_label: int = IGNORE_LABEL):
  return (labels != ignore_label).astype(jnp.float32)


def pixel_cross_entropy(logits, labels, ignore_label: int = IGNORE_LABEL):
  """Mean cross-entropy over the pixels of ``labels`` ``(B, H, W)`` that are not ignored;
  ``logits`` are upsampled to ``(H, W)`` first."""
  logp = jax.nn.log_softmax(upsample(logits, labels.shape[1:3]).astype(jnp.float32))
  valid = valid_pixels(labels, ignore_label)
  safe = jnp.where(labels == ignore_label, 0, labels).astype(jnp.int32)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def pixel_distillation(student, teacher, hw, temperature: float = 1.0):
  """Mean per-pixel ``KL(softmax(t/T) || softmax(s/T)) * T^2`` after upsampling both to
  ``hw`` (labels are not read: the label-free variant)."""
  t = jax.lax.stop_gradient(upsample(teacher, hw).astype(jnp.float32)) / temperature
  s = upsample(student, hw).astype(jnp.float32) / temperature
  kl = jnp.sum(jax.nn.softmax(t) * (jax.nn.log_softmax(t) - jax.nn.log_softmax(s)), axis=-1)
  return jnp.mean(kl) * temperature ** 2


def predict(logits, input_hw, label_hw):
  """Class per pixel at the label map's size: logits -> input size -> label size -> argmax."""
  return jnp.argmax(upsample(upsample(logits, input_hw), label_hw), axis=-1)


def confusion_matrix(pred, labels, mask, num_classes: int, ignore_label: int = IGNORE_LABEL):
  """``(C, C)`` counts, rows the true class, columns the predicted one, over the pixels of the
  examples with ``mask`` 1 whose label is not ignored (labels outside ``[0, C)`` are ignored
  too)."""
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
  valid = valid & (mask.reshape(-1, *([1] * (labels.ndim - 1))) > 0)
  index = jnp.where(valid, labels * num_classes + pred.astype(jnp.int32), 0)
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index.reshape(-1)].add(
      valid.reshape(-1).astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def scores(confusion) -> dict[str, float]:
  """``{"miou", "macc", "f1", "aacc"}`` (fractions) and per-class IoU from a confusion matrix,
  as MMSegmentation: per class ``IoU = TP / (TP + FP + FN)``, ``Acc = TP / (TP + FN)``,
  ``F1 = 2 TP / (2 TP + FP + FN)`` (= ``2 P R / (P + R)``); means over the classes where they
  are defined (NaN skipped). F1 differs from MMSegmentation's ``mFscore`` only for a class
  with no true positive but some pixels: MMSegmentation gets 0 / 0 and skips it, we count 0."""
  cm = np.asarray(confusion, np.float64)
  tp = np.diag(cm)
  label_area, pred_area = cm.sum(1), cm.sum(0)
  with np.errstate(divide="ignore", invalid="ignore"):
    iou = tp / (label_area + pred_area - tp)
    acc = tp / label_area
    f1 = 2 * tp / (label_area + pred_area)
  mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")  # noqa: E731
  return {"miou": mean(iou), "macc": mean(acc), "f1": mean(f1),
          "aacc": float(tp.sum() / max(cm.sum(), 1.0)),
          "iou_per_class": [None if not np.isfinite(v) else float(v) for v in iou]}
