"""Segmentation (issue 16): SETR-Naive on the same ViT, per-pixel losses, metrics from one
confusion matrix, the canvas testbed through the tf.data path, the ADE20K-layout reader."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from mspe_jax import data, losses, npz, offline_sources, scoring, seg_canvas, segmentation
from mspe_jax.patch_embed import PatchEmbed
from mspe_jax.sources import DatasetNotFoundError

CLASSES = 5


@pytest.fixture(scope="module")
def segmenter(augreg_file):
  """A tiny SETR-Naive segmenter on the AugReg-format classifier's encoder (28 px, 7x7 grid),
  its head randomised so that no output is trivially zero."""
  model, params = npz.load_pretrained(augreg_file, "mspe", task="segmentation",
                                      num_classes=CLASSES, freeze_native_kernel=True)
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(np.asarray, params)
  params["head"] = jax.tree_util.tree_map(
      lambda v: rng.normal(0, 0.3, v.shape).astype(np.float32), params["head"])
  return model, params


def test_native_size_with_the_pretrained_kernel_is_the_vanilla_model_bit_for_bit(segmenter,
                                                                                  images):
  model, params = segmenter
  x = jnp.asarray(images(2, 28, 28))
  mspe, _ = model.apply({"params": params}, x)
  vanilla, _ = model.apply({"params": params}, x, PatchEmbed("vanilla"))
  assert model.plan(28, 28).kernel_index == -1  # the pretrained kernel serves 28 px
  assert mspe.shape == (2, 28, 28, CLASSES)
  np.testing.assert_array_equal(np.asarray(mspe), np.asarray(vanilla))
  assert float(jnp.std(mspe)) > 0.01


def test_the_segmenter_is_the_classifier_encoder_with_another_head(segmenter, augreg_file, images):
  model, params = segmenter
  classifier, cparams = npz.load_pretrained(augreg_file, "vanilla")
  x = jnp.asarray(images(2, 28, 28, seed=3))
  _, seg_extras = model.apply({"params": params}, x, PatchEmbed("vanilla"))
  _, cls_extras = classifier.apply({"params": cparams}, x)
  np.testing.assert_array_equal(np.asarray(seg_extras["encoded"]),
                                np.asarray(cls_extras["encoded"]))
  assert set(params) - {"mspe"} == set(cparams)
  assert sorted(params["head"]) == ["Dense_0", "Dense_1", "LayerNorm_0"]


def test_logits_on_the_fixed_grid_are_upsampled_to_any_input_size(segmenter, images):
  model, params = segmenter
  for hw in ((14, 14), (21, 35), (56, 56)):
    x = jnp.asarray(images(1, *hw))
    logits, _ = model.apply({"params": params}, x)
    grid_logits, _ = model.apply({"params": params}, model.apply({"params": params}, x,
                                                                  method="embed"),
                                 method="encode")
    assert grid_logits.shape == (1, 7, 7, CLASSES), hw
    assert logits.shape == (1, *hw, CLASSES)
    np.testing.assert_allclose(np.asarray(logits),
                               np.asarray(segmentation.upsample(grid_logits, hw)), atol=1e-6)


def test_npz_round_trip_infers_the_segmenter(segmenter, tmp_path):
  model, params = segmenter
  path = npz.save_npz(tmp_path / "seg.npz", params)
  loaded, lparams = npz.load_pretrained(path, "mspe")
  assert (loaded.task, loaded.num_classes, loaded.head_hidden) == ("segmentation", CLASSES, 32)
  assert loaded.base_sizes == model.base_sizes
  for k, v in npz.flatten(params).items():
    np.testing.assert_array_equal(npz.flatten(lparams)[k], v)
  with pytest.raises(ValueError, match="segmentation head needs num_classes"):
    npz.load_pretrained(path, "vanilla", num_classes=0)
  flat = dict(np.load(path))
  flat["head/Dense_0/kernel"] = flat["head/Dense_0/kernel"][:, :7]
  np.savez(tmp_path / "bad.npz", **flat)
  with pytest.raises(ValueError, match=r"head/Dense_1/kernel: \(7, 5\) vs \(32, 5\)"):
    npz.load_pretrained(tmp_path / "bad.npz")


# ------------------------------------------------------------------------- metrics, losses

def reference_scores(pred, labels, keep, num_classes, ignore):
  """Per class from boolean masks (no confusion matrix), then NaN-skipping means."""
  valid = (labels != ignore) & keep[:, None, None]
  iou, acc, f1 = [], [], []
  for c in range(num_classes):
    p, t = (pred == c) & valid, (labels == c) & valid
    inter, union = np.sum(p & t), np.sum(p | t)
    iou.append(inter / union if union else np.nan)
    acc.append(inter / t.sum() if t.sum() else np.nan)
    f1.append(2 * inter / (p.sum() + t.sum()) if p.sum() + t.sum() else np.nan)
  return {"miou": np.nanmean(iou), "macc": np.nanmean(acc), "f1": np.nanmean(f1)}


def test_metrics_match_a_numpy_reference_with_absent_classes_and_ignored_pixels():
  rng = np.random.default_rng(0)
  num_classes, ignore = 6, 255
  labels = rng.integers(0, 4, (3, 9, 11))          # classes 4 and 5 never in the labels
  labels[rng.random(labels.shape) < 0.2] = ignore  # ignored pixels
  pred = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 5, labels.shape))
  pred[pred == ignore] = 0                         # class 4 predicted, 5 never: skipped
  keep = np.array([1.0, 1.0, 0.0])                 # the third example is padding
  scorer = scoring.SegmentationScores(num_classes, ignore)
  logits = jax.nn.one_hot(pred, num_classes) * 5.0
  sums = jax.jit(scorer.sums, static_argnames="input_hw")(
      logits, jnp.asarray(labels), jnp.asarray(keep), input_hw=(9, 11))
  got = scorer.summarize(jax.device_get(sums), 2)
  want = reference_scores(pred, labels, keep > 0, num_classes, ignore)
  for k, v in want.items():
    assert got[k] == pytest.approx(v, abs=1e-12), k
  assert got["iou_per_class"][4] == 0.0 and got["iou_per_class"][5] is None
  assert got["pixels"] == int(((labels != ignore) & (keep[:, None, None] > 0)).sum())
  perfect = scorer.summarize({"confusion": np.diag([5, 3, 0, 2, 0, 0])}, 1)
  assert perfect["miou"] == perfect["macc"] == perfect["f1"] == 1.0


def test_pixel_cross_entropy_skips_ignored_pixels_and_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  labels = rng.integers(0, 4, (2, 8, 8))
  labels[0, :3] = 255
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  valid = labels != 255
  want = -np.mean(np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
                  [valid])
  loss = losses.make_loss("ce", task="segmentation", label_hw=(8, 8))
  assert float(loss(jnp.asarray(logits), jnp.asarray(labels), None)) == pytest.approx(want, 1e-5)
  changed = logits.copy()
  changed[0, :3] = 100.0  # logits at ignored pixels do not matter
  assert float(loss(jnp.asarray(changed), jnp.asarray(labels), None)) == pytest.approx(want, 1e-5)
  coarse = jnp.asarray(logits[:, ::2, ::2])  # grid logits are upsampled to the label map
  assert np.isfinite(float(loss(coarse, jnp.asarray(labels), None)))


def test_pixel_distillation_is_zero_for_the_teacher_itself():
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(2, 7, 7, 5)).astype(np.float32))
  t = jnp.asarray(rng.normal(size=(2, 7, 7, 5)).astype(np.float32))
  loss = losses.make_loss("distill", task="segmentation", label_hw=(28, 28))
  assert float(loss(t, None, t)) == pytest.approx(0.0, abs=1e-6)
  assert float(loss(s, None, t)) > 0.1


# ------------------------------------------------------------------------------ the data

def test_testbed_batches_are_the_generators_canvases_through_tf_data():
  source = data.get_source("fashion_mnist_seg", "test[:40]")
  assert (source.num_examples, source.num_classes, source.has_labels) == (40, 11, True)
  batch = next(data.eval_batches(source, batch_size=16, image_size=56, crop_fraction=1.0))
  images, labels = offline_sources.fashion_mnist_arrays("test[:40]")
  want_x, want_y = seg_canvas.canvases(range(16), images, labels,
                                       offline_sources.canvas_seed("test[:40]"))
  np.testing.assert_array_equal(batch["label"], want_y)
  np.testing.assert_allclose((batch["image"] + 1) * 127.5, np.repeat(want_x[..., None], 3, -1),
                             atol=1e-3)


def test_training_flips_move_the_label_map_with_the_image():
  source = data.get_source("fashion_mnist_seg", "train[:64]")
  batch = next(data.train_iterator(source, global_batch=32, image_size=56, seed=0,
                                   augment=dict(crop_scale=None, flip=True, color_jitter=0.0)))
  pixels = (batch["image"][..., 0] + 1) * 127.5
  garment = batch["label"] > 0
  threshold = seg_canvas.CanvasSpec().threshold
  assert (pixels[garment] >= threshold - 1e-3).all()
  assert (pixels[~garment] < threshold).all()
  flipped = next(data.train_iterator(source, global_batch=32, image_size=56, seed=1,
                                     augment=dict(crop_scale=None, flip=True, color_jitter=0.0)))
  assert not np.array_equal(flipped["label"], batch["label"])  # other seeds, other flips


def test_testbed_without_the_debian_package_says_how_to_get_it(tmp_path):
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(offline_sources, "DEBIAN_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
      data.get_source("fashion_mnist_seg", "test")


def test_ade20k_layout_reader_pairs_images_with_label_maps(tmp_path):
  rng = np.random.default_rng(0)
  for split in ("training", "validation"):
    os.makedirs(tmp_path / "images" / split)
    os.makedirs(tmp_path / "annotations" / split)
    for i in range(3):
      hw = (20 + 4 * i, 30)
      Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(
          tmp_path / "images" / split / f"ADE_{i}.jpg")
      Image.fromarray(np.full(hw, i, np.uint8)).save(
          tmp_path / "annotations" / split / f"ADE_{i}.png")
  source = data.get_source(f"ade20k:{tmp_path}", "validation")
  assert source.num_examples == 3
  batch = next(data.eval_batches(source, batch_size=3, image_size=16, crop_fraction=1.0))
  assert batch["image"].shape == (3, 16, 16, 3) and batch["label"].shape == (3, 16, 16)
  # reduce_zero_label: 0 ("other") is ignored, the rest shift down by one
  assert [set(np.unique(m)) for m in batch["label"]] == [{255}, {0}, {1}]
  plain = data.get_source(f"seg_folder:{tmp_path}", "train")
  assert plain.num_examples == 3
  os.remove(tmp_path / "annotations" / "training" / "ADE_1.png")
  with pytest.raises(DatasetNotFoundError, match="no label map"):
    data.get_source(f"seg_folder:{tmp_path}", "training")


def test_ade20k_recipe_trains_and_evaluates_on_self_made_files(tmp_path):
  """configs/vit_l_setr_mspe.py and vit_l_setr_eval.py (smoke) on a tiny SETR-Naive ViT/16
  in our .npz format and self-made files in the ADE20K layout (150 classes, 0 = other)."""
  import json

  from tests import reference, runner
  rng = np.random.default_rng(0)
  root = tmp_path / "ADEChallengeData2016"
  for split in ("training", "validation"):
    os.makedirs(root / "images" / split)
    os.makedirs(root / "annotations" / split)
    for i in range(6):
      hw = tuple(int(v) for v in rng.integers(60, 120, 2))
      Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(
          root / "images" / split / f"ADE_{split}_{i}.jpg")
      Image.fromarray(rng.integers(0, 151, hw).astype(np.uint8)).save(
          root / "annotations" / split / f"ADE_{split}_{i}.png")
  classifier = tmp_path / "vit16.npz"
  np.savez(classifier, **reference.augreg_arrays(2, width=32, depth=1, heads=2, mlp=64,
                                                 patch=16, grid=4, classes=10))
  _, params = npz.load_pretrained(classifier, task="segmentation", num_classes=150)
  segmenter = npz.save_npz(tmp_path / "setr.npz", params)
  work = tmp_path / "run"
  data_name = f"ade20k:{root}"
  proc = runner.run_script("train.py", "configs/vit_l_setr_mspe.py:smoke", work,
                           {"init_file": segmenter, "data.name": data_name,
                            "progress_bar": False})
  out = runner.summary(proc)
  assert out["step"] == 3 and {"eval/miou_16x16", "eval/f1_64x64"} <= set(out)
  runner.run_script("eval.py", "configs/vit_l_setr_eval.py:smoke", work,
                    {"pretrained": segmenter, "data.name": data_name, "progress_bar": False})
  doc = json.loads((work / "eval" / "results.json").read_text())
  assert doc["protocol"]["metrics"] == ["miou", "macc", "f1"]
  assert "MMSegmentation" in doc["protocol"]["scoring"]
  scored = {(r["method"], r["height"]) for r in doc["rows"] if 0 <= r["miou"] <= 1}
  assert scored == {(m, s) for m in ("vanilla", "pi", "img_resize", "mspe") for s in (16, 64)}
  assert (work / "eval" / "masks.png").exists()


EIGHT_DEVICE_CHECK = r"""
import jax, jax.numpy as jnp, numpy as np
from mspe_jax import jax_utils, scoring
assert jax.device_count() == 8
rng = np.random.default_rng(0)
labels = rng.integers(0, 6, (16, 12, 12))
labels[rng.random(labels.shape) < 0.1] = 255
logits = rng.normal(size=(16, 4, 4, 6)).astype(np.float32)
mask = np.ones(16, np.float32)
mask[-3:] = 0
scorer = scoring.SegmentationScores(6)
score = jax.jit(scorer.sums, static_argnames="input_hw")
one = score(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), input_hw=(8, 8))
mesh = jax_utils.make_mesh()
batch = jax_utils.shard_batch({"logits": logits, "label": labels, "mask": mask}, mesh)
eight = score(batch["logits"], batch["label"], batch["mask"], input_hw=(8, 8))
assert len(batch["label"].sharding.device_set) == 8
np.testing.assert_array_equal(np.asarray(one["confusion"]), np.asarray(eight["confusion"]))
print("confusion", int(np.asarray(eight["confusion"]).sum()))
"""


def test_confusion_matrix_on_eight_devices_equals_one_device():
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", EIGHT_DEVICE_CHECK], capture_output=True,
                        text=True, timeout=300, env=env,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith("confusion ")
