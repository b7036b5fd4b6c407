"""Input pipelines: TFDS / tf.data (+ the offline Fashion-MNIST files), resumable exactly.

Every element is a dict ``{"image": uint8 HxWxC, "label": int64}`` (no ``label`` for
unlabelled sources) and goes through the same tf.data path:

    source (shuffled per epoch) -> per-host shard -> enumerate -> skip (resume)
      -> map(preprocess, seeded by (seed, epoch, index)) -> batch(drop_remainder) -> prefetch

All randomness is a pure function of ``(seed, epoch, index)`` (stateless TF ops), so a run
resumed at step ``s`` sees exactly the batches an uninterrupted run sees from step ``s``;
skipping happens before decoding, so it is cheap. Images leave the pipeline as float32 NHWC
in [-1, 1] with 3 channels (grey is tiled). TF is kept off the accelerators.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_FMNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def tf_without_accelerators():
  """Imports TensorFlow with every accelerator hidden from it (JAX owns them)."""
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):
    pass  # already initialised, or no such device type
  return tf


def _plain(fn):
  """Traces ``fn`` as plain TF ops, without AutoGraph (which re-reads source files: a file
  edited while a run is going would be mis-parsed, and there is no control flow to convert)."""
  return tf_without_accelerators().autograph.experimental.do_not_convert(fn)


class DatasetNotFoundError(FileNotFoundError):
  """A dataset that is not on this machine; the message says what was looked for."""


# --------------------------------------------------------------------------- sources

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


def read_idx(path: str) -> np.ndarray:
  """Reads a (gzipped) IDX file (the MNIST format) into a numpy array."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file.")
  ndim = data[3]
  dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
  offset = 4 + 4 * ndim
  count = int(np.prod(dims))
  if len(data) - offset != count:
    raise ValueError(f"{path}: expected {count} bytes of data for shape {dims}, "
                     f"found {len(data) - offset}.")
  return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _in_memory_source(name, split, images, labels, num_classes, description):
  """Source over numpy arrays; each epoch is a seeded permutation (a full shuffle)."""
  tf = tf_without_accelerators()
  if images.ndim == 3:
    images = images[..., None]
  processes, index = _num_processes(), _process_index()
  n = len(images) // processes

  def make(epoch_seed):
    order = (np.arange(len(images)) if epoch_seed is None
             else np.random.default_rng(epoch_seed).permutation(len(images)))
    order = order[index::processes][:n]  # this host's share
    features = {"image": images[order]}
    if labels is not None:
      features["label"] = labels[order].astype(np.int64)
    return tf.data.Dataset.from_tensor_slices(features)

  return Source(name, split, n, num_classes, labels is not None, make, description)


def fashion_mnist_files(split: str, directory: str = DEBIAN_FASHION_MNIST) -> Source:
  """Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files).

  ``split`` is a TFDS split spec over ``train`` / ``test``, slices included and parsed by
  TFDS itself: ``"train[:55000]"`` and ``"train[55000:]"`` (the demo's training and validation
  parts), ``"test[:50%]"``, ``"train+test"``.
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415  (TFDS parses the split spec)
  arrays = {}

  def read(name):
    if name not in arrays:
      img_file, lbl_file = (os.path.join(directory, f) for f in _FMNIST_FILES[name])
      images, labels = read_idx(img_file), read_idx(lbl_file)
      if len(images) != len(labels):
        raise ValueError(f"{img_file} has {len(images)} images but {lbl_file} "
                         f"{len(labels)} labels.")
      arrays[name] = images, labels
    return arrays[name]

  class _Info:  # what TFDS's ReadInstruction asks of a split: its size, read on demand
    def __init__(self, name):
      self.name = name

    @property
    def num_examples(self):
      return len(read(self.name)[0])

  try:
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(
        {name: _Info(name) for name in _FMNIST_FILES})
  except (ValueError, AssertionError) as e:
    raise ValueError(f"Fashion-MNIST split {split!r}: {e} (splits: {sorted(_FMNIST_FILES)}, "
                     "sliced as in TFDS, e.g. 'train[:55000]')") from None
  pieces = [tuple(a[p.from_:p.to] for a in read(p.splitname)) for p in parts]
  images, labels = (np.concatenate(a) for a in zip(*pieces))
  if not len(images):
    raise ValueError(f"Fashion-MNIST split {split!r} is empty.")
  return _in_memory_source("fashion_mnist", split, images, labels, 10,
                           f"Fashion-MNIST {split} from {directory} (Debian dataset-fashion-mnist)")


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
  tf_without_accelerators()
  import tensorflow_datasets as tfds
  prepared = _tfds_prepared_dir(name, data_dir)
  if prepared is None:
    raise DatasetNotFoundError(name)
  builder = tfds.builder_from_directory(prepared)
  info = builder.info
  label = info.features["label"] if "label" in info.features else None
  num_classes = getattr(label, "num_classes", None)
  processes = _num_processes()
  host_split = tfds.split_for_jax_process(split) if processes > 1 else split
  num_examples = info.splits[split].num_examples // processes  # the same on every host

  def make(epoch_seed):
    read = tfds.ReadConfig(shuffle_seed=epoch_seed, interleave_cycle_length=16)
    ds = builder.as_dataset(split=host_split, shuffle_files=epoch_seed is not None,
                            read_config=read, decoders=_skip_decoding(info))
    keys = ["image", "label"] if label is not None else ["image"]
    return ds.map(_plain(lambda ex: {k: ex[k] for k in keys})).take(num_examples)

  return Source(name, split, num_examples, num_classes, label is not None, make,
                f"TFDS {name} ({split}) from {prepared}")


def _skip_decoding(info):
  import tensorflow_datasets as tfds
  image = info.features["image"]
  if getattr(image, "encoding_format", None) in ("jpeg", "png"):
    return {"image": tfds.decode.SkipDecoding()}  # decode after skipping / cropping
  return None


def image_folder_source(directory: str, split: str = "train") -> Source:
  """Unlabelled images of any sizes from a folder (recursive): ``{"image": encoded bytes}``."""
  tf = tf_without_accelerators()
  files = sorted(f for f in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise DatasetNotFoundError(f"folder:{directory}")

  processes, index = _num_processes(), _process_index()
  n = len(files) // processes

  def make(epoch_seed):
    order = (np.arange(len(files)) if epoch_seed is None
             else np.random.default_rng(epoch_seed).permutation(len(files)))
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(files)[order[index::processes][:n]])
    return ds.map(_plain(lambda f: {"image": tf.io.read_file(f)}))

  return Source(f"folder:{directory}", split, n, None, False, make,
                f"{len(files)} image files under {directory} (no labels)")


def _num_processes() -> int:
  import jax
  return jax.process_count()


def get_source(name: str, split: str, data_dir: str | None = None) -> Source:
  """Finds a dataset split; raises DatasetNotFoundError saying where it looked and how to get it.

  ``name``: a TFDS name (``imagenet2012``, ``fashion_mnist``, ...) or ``folder:/path`` for a
  folder of unlabelled image files. ``fashion_mnist`` falls back to the Debian package files.
  """
  if name.startswith("folder:"):
    directory = name[len("folder:"):]
    try:
      return image_folder_source(directory, split)
    except DatasetNotFoundError:
      raise DatasetNotFoundError(
          f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found under {directory!r}.") from None
  looked = []
  try:
    return tfds_source(name, split, data_dir)
  except DatasetNotFoundError:
    looked.append(f"a prepared TFDS dataset {name!r} under "
                  f"{data_dir or os.path.expanduser('~/tensorflow_datasets')}")
  if name == "fashion_mnist":
    files = [os.path.join(DEBIAN_FASHION_MNIST, f) for fs in _FMNIST_FILES.values() for f in fs]
    if all(os.path.exists(f) for f in files):
      return fashion_mnist_files(split)
    looked.append(f"the Debian package files {files or DEBIAN_FASHION_MNIST}")
    how = ("install it with `sudo apt-get install dataset-fashion-mnist` (offline-friendly) or "
           "prepare it with `tfds build fashion_mnist` (needs the internet)")
  elif name == "imagenet2012":
    how = ("download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org "
           "into a folder and run `tfds build imagenet2012 --manual_dir=<that folder> "
           "--data_dir=<data_dir>`")
  else:
    how = f"prepare it with `tfds build {name} --data_dir=<data_dir>`"
  raise DatasetNotFoundError(f"Dataset {name!r} (split {split!r}) not found. Looked for "
                             + " and ".join(looked) + f". To get it, {how}.")


# --------------------------------------------------------------------------- preprocessing

def _decode(tf, image, channels=3):
  if image.dtype == tf.string:
    image = tf.io.decode_image(image, channels=channels, expand_animations=False)
  image.set_shape([None, None, None])
  if image.shape[-1] == 1 and channels == 3:
    image = tf.image.grayscale_to_rgb(image)
  return tf.cast(image, tf.float32) / 255.0


def _random_resized_crop(tf, image, size, scale, ratio, seed):
  shape = tf.shape(image)
  begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      area_range=scale, aspect_ratio_range=ratio, min_object_covered=0.0,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, crop)
  return tf.image.resize(image, [size, size], method="bilinear", antialias=True)


def _color_jitter(tf, image, strength, seeds):
  """Brightness, contrast, saturation (strength each) in a fixed order, on [0, 1] images."""
  image = tf.image.stateless_random_brightness(image, strength, seed=seeds[0])
  image = tf.image.stateless_random_contrast(image, 1 - strength, 1 + strength, seed=seeds[1])
  image = tf.image.stateless_random_saturation(image, 1 - strength, 1 + strength, seed=seeds[2])
  return tf.clip_by_value(image, 0.0, 1.0)


def train_preprocess(example, seed, *, image_size: int, crop_scale=(0.08, 1.0),
                     crop_ratio=(3 / 4, 4 / 3), flip: bool = True, color_jitter: float = 0.0):
  """Random resized crop to the native size, flip, colour jitter, values in [-1, 1]."""
  tf = tf_without_accelerators()
  seeds = tf.random.experimental.stateless_split(seed, num=5)
  image = _decode(tf, example["image"])
  if crop_scale is not None:
    image = _random_resized_crop(tf, image, image_size, tuple(crop_scale), tuple(crop_ratio),
                                 seeds[0])
  else:
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
  if color_jitter:
    image = _color_jitter(tf, image, color_jitter, seeds[2:])
  out = {"image": image * 2.0 - 1.0}
  if "label" in example:
    out["label"] = tf.cast(example["label"], tf.int32)
  return out


def eval_preprocess(example, *, image_size: int, crop_fraction: float = 0.875):
  """Resize the shorter side to ``image_size / crop_fraction``, central crop, [-1, 1]."""
  tf = tf_without_accelerators()
  image = _decode(tf, example["image"])
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  target = tf.cast(tf.math.ceil(image_size / crop_fraction), tf.float32)
  scale = target / tf.reduce_min(shape)
  new_hw = tf.cast(tf.math.round(shape * scale), tf.int32)
  new_hw = tf.maximum(new_hw, image_size)
  image = tf.image.resize(image, new_hw, method="bilinear", antialias=True)
  top = (new_hw[0] - image_size) // 2
  left = (new_hw[1] - image_size) // 2
  image = image[top:top + image_size, left:left + image_size]
  image = tf.ensure_shape(image, [image_size, image_size, 3])
  out = {"image": image * 2.0 - 1.0}
  if "label" in example:
    out["label"] = tf.cast(example["label"], tf.int32)
  return out


# --------------------------------------------------------------------------- iterators

def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.default_rng([seed, epoch]).integers(2 ** 31 - 1))


def steps_per_epoch(source: Source, global_batch: int) -> int:
  """Full batches per epoch (every host has the same count: the splits are even)."""
  local_batch = global_batch // _num_processes()
  steps = source.num_examples // local_batch
  if steps < 1:
    raise ValueError(f"{source.description}: {source.num_examples} examples do not fill one "
                     f"batch of {local_batch}.")
  return steps


def train_iterator(source: Source, *, global_batch: int, image_size: int, seed: int,
                   start_step: int = 0, augment: dict | None = None,
                   drop_labels: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Endless iterator of this host's numpy batches, starting at global step ``start_step``.

  Batch ``s`` is the same whatever ``start_step`` was: epoch ``e`` is a seeded shuffle and
  example ``i`` of it is augmented with seed ``(seed_e, i)``.
  """
  tf = tf_without_accelerators()
  processes = _num_processes()
  if global_batch % processes:
    raise ValueError(f"Global batch {global_batch} is not divisible by {processes} processes.")
  local_batch = global_batch // processes
  per_epoch = steps_per_epoch(source, global_batch)
  augment = dict(augment or {})
  epoch, offset = divmod(start_step, per_epoch)
  while True:
    e_seed = _epoch_seed(seed, epoch)
    ds = source.make(e_seed)
    ds = ds.enumerate().skip(offset * local_batch)
    if drop_labels:
      ds = ds.map(_plain(lambda i, ex: (i, {"image": ex["image"]})))

    def prep(i, ex, e_seed=e_seed):
      seed_i = tf.stack([tf.constant(e_seed, tf.int64), i])
      return train_preprocess(ex, seed_i, image_size=image_size, **augment)

    ds = ds.map(_plain(prep), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).take(per_epoch - offset)
    ds = ds.prefetch(2)
    yield from ds.as_numpy_iterator()
    epoch, offset = epoch + 1, 0


def _process_index() -> int:
  import jax
  return jax.process_index()


def eval_batches(source: Source, *, batch_size: int, image_size: int, crop_fraction: float = 1.0,
                 max_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """The first ``max_examples`` of a split, eval-preprocessed, in order, last batch padded.

  Each batch has ``image``, ``label`` (if any) and ``mask`` (1 for real examples).
  """
  tf = tf_without_accelerators()
  n = source.num_examples if max_examples is None else min(max_examples, source.num_examples)
  ds = source.make(None).take(n)
  ds = ds.map(_plain(lambda ex: eval_preprocess(ex, image_size=image_size,
                                                crop_fraction=crop_fraction)),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size).prefetch(2)
  for batch in ds.as_numpy_iterator():
    b = len(batch["image"])
    mask = np.ones(batch_size, np.float32)
    if b < batch_size:
      mask[b:] = 0
      batch = {k: np.concatenate([v, np.zeros((batch_size - b, *v.shape[1:]), v.dtype)])
               for k, v in batch.items()}
    batch["mask"] = mask
    yield batch
