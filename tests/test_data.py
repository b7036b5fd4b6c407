"""Input pipelines on real Fashion-MNIST files and on self-made files of the real formats."""

import gzip
import os

import numpy as np
import pytest

from configs import fashion_mnist_mspe
from mspe_jax import data, offline_sources, sources, train_lib


def _write_idx(path, array):
  """The IDX format: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, raw bytes."""
  header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip_and_errors(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
  _write_idx(tmp_path / "x.gz", images)
  np.testing.assert_array_equal(offline_sources.read_idx(str(tmp_path / "x.gz")), images)
  (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
  with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
    offline_sources.read_idx(str(tmp_path / "bad.gz"))
  with gzip.open(tmp_path / "short.gz", "wb") as f:
    f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01\x02")
  with pytest.raises(ValueError, match="expected 10 bytes"):
    offline_sources.read_idx(str(tmp_path / "short.gz"))


def test_fashion_mnist_from_debian_files():
  src = data.get_source("fashion_mnist", "test")
  assert src.num_examples == 10000 and src.num_classes == 10 and src.has_labels
  batch = next(data.eval_batches(src, batch_size=16, image_size=28, max_examples=16))
  assert batch["image"].shape == (16, 28, 28, 3) and batch["image"].dtype == np.float32
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])  # grey tiled
  raw = offline_sources.read_idx(
      os.path.join(offline_sources.DEBIAN_FASHION_MNIST, "t10k-images-idx3-ubyte.gz"))
  np.testing.assert_allclose(batch["image"][0, ..., 0], raw[0] / 127.5 - 1, atol=1e-6)


def test_debian_splits_slice_as_in_tfds(tmp_path):
  """The demo trains on train[:55000] and picks its routing rule on train[55000:]: disjoint,
  together the whole split, in file order; TFDS's split grammar, clear errors."""
  rng = np.random.default_rng(0)
  for name, n in (("train", 12), ("test", 4)):
    img, lbl = offline_sources.FMNIST_FILES[name]
    _write_idx(tmp_path / img, rng.integers(0, 256, (n, 3, 3)))
    _write_idx(tmp_path / lbl, np.arange(n) % 10)
  labels = lambda split: np.array(  # noqa: E731
      [e["label"] for e in offline_sources.fashion_mnist_files(split, str(tmp_path)).make(None)])
  np.testing.assert_array_equal(labels("train[:9]"), np.arange(9))
  np.testing.assert_array_equal(labels("train[9:]"), [9, 0, 1])
  np.testing.assert_array_equal(labels("train[:25%]+test[-1:]"), [0, 1, 2, 3])
  assert offline_sources.fashion_mnist_files("test[1:3]", str(tmp_path)).num_examples == 2
  with pytest.raises(ValueError, match="Unknown split 'validation'"):
    offline_sources.fashion_mnist_files("validation", str(tmp_path))
  with pytest.raises(ValueError, match="is empty"):
    offline_sources.fashion_mnist_files("train[5:5]", str(tmp_path))


def test_train_iterator_resumes_exactly_and_drops_labels():
  src = data.get_source("fashion_mnist", "train")
  aug = dict(crop_scale=(0.5, 1.0), flip=True, color_jitter=0.2)
  full = data.train_iterator(src, global_batch=32, image_size=28, seed=3, augment=aug)
  first = [next(full) for _ in range(4)]
  resumed = next(data.train_iterator(src, global_batch=32, image_size=28, seed=3, augment=aug,
                                     start_step=3))
  np.testing.assert_array_equal(resumed["image"], first[3]["image"])
  np.testing.assert_array_equal(resumed["label"], first[3]["label"])
  assert not np.array_equal(first[0]["image"], first[1]["image"])
  other_seed = next(data.train_iterator(src, global_batch=32, image_size=28, seed=4, augment=aug))
  assert not np.array_equal(other_seed["image"], first[0]["image"])
  # An epoch boundary (1875 steps of 32) resumes into the next, reshuffled epoch.
  per_epoch = data.steps_per_epoch(src, 32)
  a = next(data.train_iterator(src, global_batch=32, image_size=28, seed=3, augment=aug,
                               start_step=per_epoch))
  assert a["image"].shape == (32, 28, 28, 3)
  unlabelled = next(data.train_iterator(src, global_batch=8, image_size=28, seed=0,
                                        augment=aug, drop_labels=True))
  assert sorted(unlabelled) == ["image"]


def test_eval_batches_pad_the_last_batch():
  src = data.get_source("fashion_mnist", "test")
  batches = list(data.eval_batches(src, batch_size=40, image_size=28, max_examples=100))
  assert len(batches) == 3
  assert [b["mask"].sum() for b in batches] == [40, 40, 20]
  assert batches[-1]["image"].shape == (40, 28, 28, 3)


def test_missing_datasets_say_what_was_looked_for(tmp_path):
  with pytest.raises(sources.DatasetNotFoundError) as e:
    data.get_source("imagenet2012", "train", str(tmp_path))
  assert f"prepared TFDS dataset 'imagenet2012' under {tmp_path}" in str(e.value)
  assert "tfds build imagenet2012 --manual_dir=" in str(e.value)
  with pytest.MonkeyPatch.context() as mp:  # the Debian package not installed
    mp.setattr(offline_sources, "DEBIAN_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(sources.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
      data.get_source("fashion_mnist", "train", str(tmp_path))
  with pytest.raises(ValueError, match="Unknown split 'validation'"):  # installed: no such split
    data.get_source("fashion_mnist", "validation", str(tmp_path))
  with pytest.raises(sources.DatasetNotFoundError, match="No image files"):
    data.get_source(f"folder:{tmp_path}", "train")


def _png_folder(tmp_path, n=12):
  import tensorflow as tf
  rng = np.random.default_rng(0)
  for i in range(n):
    h, w = rng.integers(20, 60, 2)
    img = rng.integers(0, 256, (h, w, 3 if i % 2 else 1), dtype=np.uint8)
    sub = tmp_path / ("a" if i % 3 else "b")
    sub.mkdir(parents=True, exist_ok=True)
    (sub / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
  return tmp_path


def test_folder_of_images_any_size_without_labels(tmp_path):
  folder = _png_folder(tmp_path)
  src = data.get_source(f"folder:{folder}", "train")
  assert src.num_examples == 12 and not src.has_labels
  batch = next(data.train_iterator(src, global_batch=4, image_size=28, seed=0,
                                   augment=dict(crop_scale=(0.5, 1.0))))
  assert sorted(batch) == ["image"] and batch["image"].shape == (4, 28, 28, 3)


def test_ce_training_refuses_unlabelled_data(tmp_path):
  cfg = fashion_mnist_mspe.get_config("smoke")
  cfg.data.name = f"folder:{_png_folder(tmp_path / 'imgs')}"
  cfg.init_file = "does-not-matter.npz"
  with pytest.raises(ValueError, match=r"has no labels, but loss.kind='ce' needs them; use "
                                       r"loss.kind='distill'"):
    train_lib.train_and_evaluate(cfg, str(tmp_path / "w"))


def _unlabelled_tfds(root):
  import tensorflow_datasets as tfds
  rng = np.random.default_rng(1)
  examples = [(f"k{i}", {"image": rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)})
              for i, (h, w) in enumerate(rng.integers(20, 50, (10, 2)))]
  tfds.dataset_builders.store_as_tfds_dataset(
      name="my_camera_frames", version="1.0.0", data_dir=str(root),
      features=tfds.features.FeaturesDict({"image": tfds.features.Image(encoding_format="png")}),
      split_datasets={"train": examples})
  return root


def test_distill_trains_on_unlabelled_data(tmp_path, augreg_file):
  """Label-free MSPE on a folder of images and on a TFDS dataset without a label feature."""
  from configs import fashion_mnist_mspe_distill
  tfds_root = _unlabelled_tfds(tmp_path / "tfds")
  src = data.get_source("my_camera_frames", "train", str(tfds_root))
  assert not src.has_labels and src.num_examples == 10
  for name, data_dir in ((f"folder:{_png_folder(tmp_path / 'imgs')}", ""),
                         ("my_camera_frames", str(tfds_root))):
    cfg = fashion_mnist_mspe_distill.get_config("smoke")
    cfg.init_file = str(augreg_file)
    cfg.data.name, cfg.data.data_dir = name, data_dir
    cfg.data.train_split = "train"  # the demo's train[:55000] is Fashion-MNIST's
    cfg.input.batch_size = 4
    cfg.eval_every = 0
    cfg.progress_bar = False
    out = train_lib.train_and_evaluate(cfg, str(tmp_path / name.split("/")[-1]))
    assert out["step"] == 4
