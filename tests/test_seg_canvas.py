"""The segmentation testbed's canvases: deterministic, with labels exactly on garment pixels."""

import hashlib

import numpy as np
import pytest

from mspe_jax import offline_sources, seg_canvas
from mspe_jax.seg_canvas import CanvasSpec


@pytest.fixture(scope="module")
def garments():
  d = offline_sources.DEBIAN_FASHION_MNIST
  images = offline_sources.read_idx(f"{d}/t10k-images-idx3-ubyte.gz")[:500]
  labels = offline_sources.read_idx(f"{d}/t10k-labels-idx1-ubyte.gz")[:500]
  return images, labels


def test_canvases_are_a_pure_function_of_seed_and_index(garments):
  x, y = seg_canvas.canvases(range(20), *garments, seed=3)
  again = seg_canvas.canvases(range(20), *garments, seed=3)
  assert hashlib.sha256(x.tobytes() + y.tobytes()).digest() == hashlib.sha256(
      again[0].tobytes() + again[1].tobytes()).digest()
  alone = seg_canvas.canvas(17, *garments, seed=3)  # canvas 17 whatever comes with it
  np.testing.assert_array_equal(alone[0], x[17])
  np.testing.assert_array_equal(alone[1], y[17])
  other = seg_canvas.canvases(range(20), *garments, seed=4)
  assert not np.array_equal(other[0], x)


def test_labels_cover_exactly_the_garment_pixels(garments):
  spec = CanvasSpec()
  x, y = seg_canvas.canvases(range(50), *garments, seed=0, spec=spec)
  assert x.shape == y.shape == (50, 56, 56) and x.dtype == y.dtype == np.uint8
  np.testing.assert_array_equal(y > 0, x >= spec.threshold)
  assert y.max() < seg_canvas.NUM_CLASSES
  assert all((yi > 0).any() for yi in y)  # every canvas holds a garment
  background = x[y == 0]
  assert background.max() <= spec.background_max and background.std() > 3  # textured
  # a garment's label is its own class: paste one garment on an empty canvas
  one = CanvasSpec(min_items=1, max_items=1)
  img, lbl = seg_canvas.canvas(0, garments[0][:1], garments[1][:1], seed=0, spec=one)
  assert set(np.unique(lbl)) == {0, 1 + int(garments[1][0])}


def test_bad_specs_say_what_is_wrong():
  with pytest.raises(ValueError, match="min_items"):
    CanvasSpec(min_items=3, max_items=2)
  with pytest.raises(ValueError, match="background_max < threshold"):
    CanvasSpec(threshold=30, background_max=40)
  with pytest.raises(ValueError, match="too small"):
    CanvasSpec(size=8)
