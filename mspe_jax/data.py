"""Input pipelines: a source found by name, then tf.data preprocessing, resumable exactly.

Every element is a dict ``{"image": uint8 HxWxC, "label": int64}`` (no ``label`` for
unlabelled sources; for segmentation the label is an ``HxW`` map that every geometric
transform of the image also transforms) and goes through the same tf.data path:

    source (shuffled per epoch) -> per-host shard -> enumerate -> skip (resume)
      -> map(preprocess, seeded by (seed, epoch, index)) -> batch(drop_remainder) -> prefetch

All randomness is a pure function of ``(seed, epoch, index)`` (stateless TF ops), so a run
resumed at step ``s`` sees exactly the batches an uninterrupted run sees from step ``s``;
skipping happens before decoding, so it is cheap. Images leave the pipeline as float32 NHWC
in [-1, 1] with 3 channels (grey is tiled). TF is kept off the accelerators.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from mspe_jax import offline_sources, tf_host
from mspe_jax.sources import DatasetNotFoundError, Source, tfds_source


def get_source(name: str, split: str, data_dir: str | None = None) -> Source:
  """Finds a dataset split; raises DatasetNotFoundError saying where it looked and how to get it.

  ``name``: a TFDS name (``imagenet2012``, ``fashion_mnist``, ...), ``folder:/path`` for a
  folder of unlabelled image files, ``fashion_mnist_seg`` for the offline segmentation
  testbed (``mspe_jax.seg_canvas``, from the Debian package) or ``seg_folder:/path`` /
  ``ade20k:/path`` for images with label maps in the ADE20K layout (``ade20k:`` reduces
  the zero label as MMSegmentation does for ADE20K). ``fashion_mnist`` falls back to the
  Debian package files.
  """
  for prefix, reduce_zero in (("seg_folder:", False), ("ade20k:", True)):
    if name.startswith(prefix):
      return offline_sources.segmentation_folder_source(name[len(prefix):], split,
                                                        reduce_zero_label=reduce_zero)
  if name.startswith("folder:"):
    directory = name[len("folder:"):]
    try:
      return offline_sources.image_folder_source(directory, split)
    except DatasetNotFoundError:
      raise DatasetNotFoundError(f"No image files ({', '.join(offline_sources.IMAGE_EXTENSIONS)}) "
                                 f"found under {directory!r}.") from None
  looked = []
  if name != "fashion_mnist_seg":  # the testbed is built from the Debian files, not TFDS
    try:
      return tfds_source(name, split, data_dir)
    except DatasetNotFoundError:
      looked.append(f"a prepared TFDS dataset {name!r} under "
                    f"{data_dir or os.path.expanduser('~/tensorflow_datasets')}")
  if name in ("fashion_mnist", "fashion_mnist_seg"):
    directory = offline_sources.DEBIAN_FASHION_MNIST
    files = offline_sources.fashion_mnist_file_paths(directory)
    if all(os.path.exists(f) for f in files):
      if name == "fashion_mnist_seg":
        return offline_sources.fashion_mnist_seg(split, directory)
      return offline_sources.fashion_mnist_files(split, directory)
    looked.append(f"the Debian package files {files}")
    how = "install it with `sudo apt-get install dataset-fashion-mnist` (offline-friendly)"
    if name == "fashion_mnist":
      how += " or prepare it with `tfds build fashion_mnist` (needs the internet)"
    else:
      how += ": the segmentation canvases are built from its files"
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


def _random_resized_crop(tf, image, label_map, size, scale, ratio, seed):
  """``(image, label_map)`` cropped by one random box and resized to ``size`` (the label map,
  if any, by nearest neighbour)."""
  shape = tf.shape(image)
  begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      area_range=scale, aspect_ratio_range=ratio, min_object_covered=0.0,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  image = tf.image.resize(tf.slice(image, begin, crop), [size, size], method="bilinear",
                          antialias=True)
  if label_map is not None:
    label_map = tf.image.resize(tf.slice(label_map, tf.concat([begin[:2], [0]], 0),
                                         tf.concat([crop[:2], [1]], 0)),
                                [size, size], method="nearest")
  return image, label_map


def _color_jitter(tf, image, strength, seeds):
  """Brightness, contrast, saturation (strength each) in a fixed order, on [0, 1] images."""
  image = tf.image.stateless_random_brightness(image, strength, seed=seeds[0])
  image = tf.image.stateless_random_contrast(image, 1 - strength, 1 + strength, seed=seeds[1])
  image = tf.image.stateless_random_saturation(image, 1 - strength, 1 + strength, seed=seeds[2])
  return tf.clip_by_value(image, 0.0, 1.0)


def _label_map(tf, example):
  """A segmentation label map as ``(H, W, 1)`` int32, or None for a class label (or none)."""
  label = example.get("label")
  if label is None or label.shape.rank != 2:
    return None
  return tf.cast(label, tf.int32)[..., None]


def train_preprocess(example, seed, *, image_size: int, crop_scale=(0.08, 1.0),
                     crop_ratio=(3 / 4, 4 / 3), flip: bool = True, color_jitter: float = 0.0):
  """Random resized crop to the native size, flip, colour jitter, values in [-1, 1].

  A label map (segmentation) takes the same crop and flip, resized by nearest neighbour.
  """
  tf = tf_host.tf_without_accelerators()
  seeds = tf.random.experimental.stateless_split(seed, num=5)
  image = _decode(tf, example["image"])
  label_map = _label_map(tf, example)
  size = [image_size, image_size]
  if crop_scale is not None:
    image, label_map = _random_resized_crop(tf, image, label_map, image_size, tuple(crop_scale),
                                            tuple(crop_ratio), seeds[0])
  else:
    image = tf.image.resize(image, size, antialias=True)
    if label_map is not None:
      label_map = tf.image.resize(label_map, size, method="nearest")
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    if label_map is not None:  # the same seed: the same flip
      label_map = tf.image.stateless_random_flip_left_right(label_map, seed=seeds[1])
  if color_jitter:
    image = _color_jitter(tf, image, color_jitter, seeds[2:])
  out = {"image": image * 2.0 - 1.0}
  if label_map is not None:
    out["label"] = tf.ensure_shape(label_map[..., 0], size)
  elif "label" in example:
    out["label"] = tf.cast(example["label"], tf.int32)
  return out


def eval_preprocess(example, *, image_size: int, crop_fraction: float = 0.875):
  """Resize the shorter side to ``image_size / crop_fraction``, central crop, [-1, 1]; a
  label map takes the same resize (nearest neighbour) and crop."""
  tf = tf_host.tf_without_accelerators()
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
  label_map = _label_map(tf, example)
  if label_map is not None:  # the same resize (nearest neighbour) and crop as the image
    label_map = tf.image.resize(label_map, new_hw, method="nearest")
    label_map = label_map[top:top + image_size, left:left + image_size, 0]
    out["label"] = tf.ensure_shape(label_map, [image_size, image_size])
  elif "label" in example:
    out["label"] = tf.cast(example["label"], tf.int32)
  return out


# --------------------------------------------------------------------------- iterators

def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.default_rng([seed, epoch]).integers(2 ** 31 - 1))


def steps_per_epoch(source: Source, global_batch: int) -> int:
  """Full batches per epoch (every host has the same count: the splits are even)."""
  local_batch = global_batch // tf_host.num_processes()
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
  tf = tf_host.tf_without_accelerators()
  processes = tf_host.num_processes()
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
      ds = ds.map(tf_host.plain(lambda i, ex: (i, {"image": ex["image"]})))

    def prep(i, ex, e_seed=e_seed):
      seed_i = tf.stack([tf.constant(e_seed, tf.int64), i])
      return train_preprocess(ex, seed_i, image_size=image_size, **augment)

    ds = ds.map(tf_host.plain(prep), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).take(per_epoch - offset)
    ds = ds.prefetch(2)
    yield from ds.as_numpy_iterator()
    epoch, offset = epoch + 1, 0


def eval_batches(source: Source, *, batch_size: int, image_size: int, crop_fraction: float = 1.0,
                 max_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """The first ``max_examples`` of a split, eval-preprocessed, in order, last batch padded.

  Each batch has ``image``, ``label`` (if any) and ``mask`` (1 for real examples).
  """
  tf = tf_host.tf_without_accelerators()
  n = source.num_examples if max_examples is None else min(max_examples, source.num_examples)
  ds = source.make(None).take(n)
  ds = ds.map(tf_host.plain(lambda ex: eval_preprocess(ex, image_size=image_size,
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
