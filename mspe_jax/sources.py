"""Where examples come from: a ``Source`` is one split of a dataset, read by this host
(its shard), shuffled per epoch by a seed; here the prepared TFDS datasets (ImageNet and the
rest). The offline sources (Debian Fashion-MNIST, image folders) are in ``offline_sources``;
``data.get_source`` finds either by name."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Callable
from typing import Any

from mspe_jax import tf_host


class DatasetNotFoundError(FileNotFoundError):
  """A dataset that is not on this machine; the message says what was looked for."""


@dataclasses.dataclass
class Source:
  """A split of a dataset.

  ``make(epoch_seed)`` builds this host's tf.data.Dataset of the split (shuffled by
  ``epoch_seed``, in order when it is None); ``num_examples`` counts this host's examples.
  """
  name: str
  split: str
  num_examples: int
  num_classes: int | None
  has_labels: bool
  make: Callable[[int | None], Any]
  description: str


def _tfds_prepared_dir(name: str, data_dir: str | None) -> str | None:
  """The prepared TFDS directory of ``name`` under ``data_dir``, without touching the network."""
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception:  # noqa: BLE001  (unknown name or no code for it: look for files instead)
    builder = None
  if builder is not None and os.path.exists(os.path.join(builder.data_dir, "dataset_info.json")):
    return builder.data_dir
  root = data_dir or os.path.expanduser("~/tensorflow_datasets")
  candidates = sorted(glob.glob(os.path.join(root, name.split(":")[0], "*", "dataset_info.json")))
  return os.path.dirname(candidates[-1]) if candidates else None


def tfds_source(name: str, split: str, data_dir: str | None = None) -> Source:
  """A prepared TFDS dataset, read with per-epoch file shuffling (deterministic)."""
  tf_host.tf_without_accelerators()
  import tensorflow_datasets as tfds
  prepared = _tfds_prepared_dir(name, data_dir)
  if prepared is None:
    raise DatasetNotFoundError(name)
  builder = tfds.builder_from_directory(prepared)
  info = builder.info
  label = info.features["label"] if "label" in info.features else None
  num_classes = getattr(label, "num_classes", None)
  processes = tf_host.num_processes()
  host_split = tfds.split_for_jax_process(split) if processes > 1 else split
  num_examples = info.splits[split].num_examples // processes  # the same on every host

  def make(epoch_seed):
    read = tfds.ReadConfig(shuffle_seed=epoch_seed, interleave_cycle_length=16)
    ds = builder.as_dataset(split=host_split, shuffle_files=epoch_seed is not None,
                            read_config=read, decoders=_skip_decoding(info))
    keys = ["image", "label"] if label is not None else ["image"]
    return ds.map(tf_host.plain(lambda ex: {k: ex[k] for k in keys})).take(num_examples)

  return Source(name, split, num_examples, num_classes, label is not None, make,
                f"TFDS {name} ({split}) from {prepared}")


def _skip_decoding(info):
  import tensorflow_datasets as tfds
  image = info.features["image"]
  if getattr(image, "encoding_format", None) in ("jpeg", "png"):
    return {"image": tfds.decode.SkipDecoding()}  # decode after skipping / cropping
  return None
