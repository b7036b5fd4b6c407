"""What an evaluation counts, per task: sums accumulated on device over batches, then metrics.

A scorer has ``sums(outputs, labels, mask, input_hw)`` (jitted by the sweep: a pytree of
sums over one batch, padded examples masked out), ``summarize(sums, total)`` (the metrics
of one (method, resolution), fractions in [0, 1]) and ``metrics`` (their names, the first
the headline one the tables and plots show).

* ``Accuracy`` (classification): top-1 from the count of correct predictions.
* ``SegmentationScores``: one confusion matrix per (method, resolution); mIoU, mAcc and F1
  as ``mspe_jax.segmentation.scores`` computes them. The model's logits are upsampled to
  the input size, then to the label map's size, before the argmax (MMSegmentation's
  protocol).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mspe_jax import segmentation


class Accuracy:
  metrics = ("top1",)
  needs_input_hw = False

  def sums(self, logits, labels, mask, input_hw=None):
    return {"correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask)}

  def summarize(self, sums, total: float) -> dict:
    correct = int(np.asarray(sums["correct"]))
    return {"top1": correct / max(total, 1.0), "correct": correct, "count": int(total)}


class SegmentationScores:
  metrics = segmentation.METRICS
  needs_input_hw = True

  def __init__(self, num_classes: int, ignore_label: int = segmentation.IGNORE_LABEL):
    self.num_classes, self.ignore_label = int(num_classes), int(ignore_label)

  def sums(self, logits, labels, mask, input_hw=None):
    pred = segmentation.predict(logits, input_hw, labels.shape[1:3])
    return {"confusion": segmentation.confusion_matrix(pred, labels, mask, self.num_classes,
                                                       self.ignore_label)}

  def summarize(self, sums, total: float) -> dict:
    confusion = np.asarray(sums["confusion"])
    return {**segmentation.scores(confusion), "count": int(total),
            "pixels": int(confusion.sum()), "confusion": confusion.tolist()}


def for_model(model, ignore_label: int = segmentation.IGNORE_LABEL):
  """The scorer of a model's task."""
  if getattr(model, "task", "classification") == "segmentation":
    return SegmentationScores(model.num_classes, ignore_label)
  return Accuracy()
