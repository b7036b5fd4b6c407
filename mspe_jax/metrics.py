"""Metrics a user can read: TensorBoard event files and a JSON-lines file (one writer)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping


class MetricWriter:
  """Writes scalars to ``<workdir>/tensorboard`` and appends them to ``metrics.jsonl``.

  Only process 0 writes. On resume, lines for steps after the restored step (written by the
  killed run after its last checkpoint) are dropped so the file never holds a step twice.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      self._truncate_after(resume_step or 0)
    from mspe_jax.data import _tf  # TF without accelerators
    tf = _tf()
    self._tf = tf
    self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def _truncate_after(self, step: int) -> None:
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          if json.loads(line).get("step", 0) <= step:
            kept.append(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), "time": time.time(),
                          **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}})
              + "\n")
    with self._tb.as_default(step=int(step)):
      for k, v in clean.items():
        self._tf.summary.scalar(k, v)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
