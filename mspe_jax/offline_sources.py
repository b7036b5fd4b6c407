"""Offline sources: Fashion-MNIST from the Debian package's IDX files (split specs as in
TFDS) and folders of unlabelled image files of any size. Each epoch is a seeded permutation;
every host takes an equal, disjoint share."""

from __future__ import annotations

import glob
import gzip
import os
import zlib

import numpy as np

from mspe_jax import seg_canvas, tf_host
from mspe_jax.sources import DatasetNotFoundError, Source

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FMNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


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
  tf = tf_host.tf_without_accelerators()
  if images.ndim == 3:
    images = images[..., None]
  processes, index = tf_host.num_processes(), tf_host.process_index()
  n = len(images) // processes

  def make(epoch_seed):
    order = (np.arange(len(images)) if epoch_seed is None
             else np.random.default_rng(epoch_seed).permutation(len(images)))
    order = order[index::processes][:n]  # this host's share
    features = {"image": images[order]}
    if labels is not None:  # class ids (int64), or label maps as they are (uint8)
      features["label"] = labels[order] if labels.ndim > 1 else labels[order].astype(np.int64)
    return tf.data.Dataset.from_tensor_slices(features)

  return Source(name, split, n, num_classes, labels is not None, make, description)


def fashion_mnist_files(split: str, directory: str = DEBIAN_FASHION_MNIST) -> Source:
  """Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files).

  ``split`` is a TFDS split spec over ``train`` / ``test``, slices included and parsed by
  TFDS itself: ``"train[:55000]"`` and ``"train[55000:]"`` (the demo's training and validation
  parts), ``"test[:50%]"``, ``"train+test"``.
  """
  images, labels = fashion_mnist_arrays(split, directory)
  return _in_memory_source("fashion_mnist", split, images, labels, 10,
                           f"Fashion-MNIST {split} from {directory} (Debian dataset-fashion-mnist)")


def canvas_seed(split: str) -> int:
  """The segmentation testbed's seed of a split: CRC-32 of the split spec (``"train"``:
  1550247075), so every split has its own layouts."""
  return zlib.crc32(split.encode())


def fashion_mnist_seg(split: str, directory: str = DEBIAN_FASHION_MNIST,
                      spec: seg_canvas.CanvasSpec | None = None) -> Source:
  """The offline segmentation testbed (``mspe_jax.seg_canvas``): one canvas per
  Fashion-MNIST image of ``split`` (a split spec as in ``fashion_mnist_files``), garments from
  that split's images only, canvas ``i`` = ``seg_canvas.canvas(i, images, labels,
  canvas_seed(split), spec)``. Elements: ``{"image": (56, 56, 1) uint8, "label": (56, 56)
  uint8}`` (0 background, 1 + class)."""
  spec = spec or seg_canvas.CanvasSpec()
  images, labels = fashion_mnist_arrays(split, directory)
  seed = canvas_seed(split)
  pictures, maps = seg_canvas.canvases(range(len(images)), images, labels, seed, spec)
  return _in_memory_source("fashion_mnist_seg", split, pictures, maps, seg_canvas.NUM_CLASSES,
                           f"Fashion-MNIST segmentation canvases of {split} ({len(images)}, "
                           f"{spec.size} px, seed {seed}) from {directory}")


def fashion_mnist_arrays(split: str, directory: str = DEBIAN_FASHION_MNIST):
  """``(images, labels)`` of a Fashion-MNIST split spec from the Debian package's files."""
  import tensorflow_datasets as tfds  # noqa: PLC0415  (TFDS parses the split spec)
  arrays = {}

  def read(name):
    if name not in arrays:
      img_file, lbl_file = (os.path.join(directory, f) for f in FMNIST_FILES[name])
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
        {name: _Info(name) for name in FMNIST_FILES})
  except (ValueError, AssertionError) as e:
    raise ValueError(f"Fashion-MNIST split {split!r}: {e} (splits: {sorted(FMNIST_FILES)}, "
                     "sliced as in TFDS, e.g. 'train[:55000]')") from None
  pieces = [tuple(a[p.from_:p.to] for a in read(p.splitname)) for p in parts]
  images, labels = (np.concatenate(a) for a in zip(*pieces))
  if not len(images):
    raise ValueError(f"Fashion-MNIST split {split!r} is empty.")
  return images, labels


def fashion_mnist_file_paths(directory: str = DEBIAN_FASHION_MNIST) -> list[str]:
  """The four IDX files the Debian package installs under ``directory``."""
  return [os.path.join(directory, f) for fs in FMNIST_FILES.values() for f in fs]


def image_folder_source(directory: str, split: str = "train") -> Source:
  """Unlabelled images of any sizes from a folder (recursive): ``{"image": encoded bytes}``."""
  tf = tf_host.tf_without_accelerators()
  files = sorted(f for f in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise DatasetNotFoundError(f"folder:{directory}")

  processes, index = tf_host.num_processes(), tf_host.process_index()
  n = len(files) // processes

  def make(epoch_seed):
    order = (np.arange(len(files)) if epoch_seed is None
             else np.random.default_rng(epoch_seed).permutation(len(files)))
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(files)[order[index::processes][:n]])
    return ds.map(tf_host.plain(lambda f: {"image": tf.io.read_file(f)}))

  return Source(f"folder:{directory}", split, n, None, False, make,
                f"{len(files)} image files under {directory} (no labels)")


SEG_SPLIT_ALIASES = {"train": "training", "validation": "validation", "val": "validation",
                     "test": "validation"}


def segmentation_folder_source(directory: str, split: str = "training", *,
                               reduce_zero_label: bool = False) -> Source:
  """A segmentation dataset in the ADE20K / MMSegmentation layout:
  ``<directory>/images/<split>/<name>.{jpg,png}`` with label maps
  ``<directory>/annotations/<split>/<name>.png`` (one channel, a class id per pixel), e.g.
  ``ADEChallengeData2016`` as distributed. ``split``: the folder name (``training``,
  ``validation``; ``train`` / ``validation`` / ``val`` are accepted). ``reduce_zero_label``
  (ADE20K): label 0 ("other") becomes ``segmentation.IGNORE_LABEL`` and the rest shift down
  by one, as MMSegmentation does. Elements: ``{"image": encoded bytes, "label": (H, W) uint8}``.
  """
  tf = tf_host.tf_without_accelerators()
  from mspe_jax.segmentation import IGNORE_LABEL
  folder = SEG_SPLIT_ALIASES.get(split, split)
  image_dir = os.path.join(directory, "images", folder)
  label_dir = os.path.join(directory, "annotations", folder)
  images = {os.path.splitext(os.path.basename(f))[0]: f
            for f in glob.glob(os.path.join(image_dir, "*"))
            if f.lower().endswith((".jpg", ".jpeg", ".png"))}
  if not images:
    raise DatasetNotFoundError(f"No images (.jpg, .jpeg, .png) in {image_dir} (expected the "
                               "ADE20K layout <dir>/images/<split>/, <dir>/annotations/<split>/).")
  missing = sorted(n for n in images if not os.path.exists(os.path.join(label_dir, n + ".png")))
  if missing:
    raise DatasetNotFoundError(f"{len(missing)} images in {image_dir} have no label map "
                               f"{label_dir}/<name>.png, e.g. {missing[:3]}.")
  names = sorted(images)
  pairs = np.asarray([[images[n], os.path.join(label_dir, n + ".png")] for n in names])
  processes, index = tf_host.num_processes(), tf_host.process_index()
  n = len(pairs) // processes

  def decode_label(path):
    label = tf.io.decode_png(tf.io.read_file(path), channels=1, dtype=tf.uint8)[..., 0]
    if reduce_zero_label:
      label = tf.where(label == 0, tf.constant(IGNORE_LABEL, tf.uint8), label - 1)
    return label

  def make(epoch_seed):
    order = (np.arange(len(pairs)) if epoch_seed is None
             else np.random.default_rng(epoch_seed).permutation(len(pairs)))
    ds = tf.data.Dataset.from_tensor_slices(pairs[order[index::processes][:n]])
    return ds.map(tf_host.plain(lambda p: {"image": tf.io.read_file(p[0]),
                                           "label": decode_label(p[1])}))

  return Source(f"seg_folder:{directory}", split, n, None, True, make,
                f"{len(pairs)} images with label maps under {directory} ({folder})")
