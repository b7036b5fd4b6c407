"""Where training metrics go: TensorBoard (clu's ``SummaryWriter``) and ``metrics.jsonl``.

``create_writer`` returns one clu ``MetricWriter`` for both; the loop also hands it to clu's
``ReportProgress`` (steps/s, uptime). clu has no JSON-lines writer, so ``JsonlWriter`` is one
(scalars only; a line per ``write_scalars`` call with its ``step`` and wall ``time``). On
resume it drops the lines of steps after the restored one (written by a killed run after its
last checkpoint), so the file never holds a step twice. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

from clu import metric_writers
from clu.metric_writers import interface


class JsonlWriter(interface.MetricWriter):
  """Appends scalars to a JSON-lines file; other summary kinds are not recorded."""

  def __init__(self, path: str, resume_step: int = 0):
    self.path = path
    if os.path.exists(path):
      self._truncate_after(resume_step)

  def _truncate_after(self, step: int) -> None:
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          if json.loads(line).get("step", 0) <= step:
            kept.append(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill
    with open(self.path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(self.path + ".tmp", self.path)

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    clean = {k: float(v) for k, v in scalars.items()}
    line = {"step": int(step), "time": time.time(),
            **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(line) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def create_writer(workdir: str, *, enabled: bool = True, resume_step: int = 0):
  """TensorBoard events in ``<workdir>/tensorboard`` plus ``<workdir>/metrics.jsonl``; a writer
  that drops everything when not ``enabled`` (processes other than 0)."""
  if not enabled:
    return metric_writers.MultiWriter([])
  os.makedirs(workdir, exist_ok=True)
  from mspe_jax.tf_host import tf_without_accelerators
  tf_without_accelerators()  # clu's SummaryWriter uses TF: keep it off the accelerators
  return metric_writers.MultiWriter([
      metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard")),
      JsonlWriter(os.path.join(workdir, "metrics.jsonl"), resume_step)])
