"""The offline segmentation testbed: canvases of Fashion-MNIST garments with per-pixel labels.

Each canvas (``size x size`` px, grey, uint8) holds 2 to 4 garments, each a Fashion-MNIST
image rescaled to a random side (``scale`` of the canvas side) and pasted at a random
position over a textured background; a later garment occludes an earlier one. A garment's
pixels are those of its own rescaled image at or above ``threshold`` (the rest of its
28x28 square is background, and stays the background's texture). The label map holds 0 for
background and ``1 + class`` for a garment of class ``class`` (11 classes).

The background is smooth noise (a random 4x4 grid upsampled bilinearly) plus fine noise,
kept in ``[0, threshold)``: a pixel is a garment pixel exactly when its value is at least
``threshold``, so the labels are exact, not drawn by hand.

Everything is a pure function of ``(seed, index)``: canvas ``i`` is the same whichever
canvases are generated with it (a split can be generated in shards), and the same seed gives
the same bytes on every machine (numpy's PCG64 and Pillow's bilinear resize).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

NUM_CLASSES = 11  # background + the 10 Fashion-MNIST classes
BACKGROUND = 0


@dataclasses.dataclass(frozen=True)
class CanvasSpec:
  """How canvases are drawn (the defaults are the testbed's)."""
  size: int = 56
  min_items: int = 2
  max_items: int = 4
  scale: tuple[float, float] = (0.35, 0.6)   # a garment's side as a fraction of the canvas
  threshold: int = 48                         # garment pixels: value >= threshold
  background_max: int = 40                    # background values lie in [0, background_max]

  def __post_init__(self):
    if not 1 <= self.min_items <= self.max_items:
      raise ValueError(f"Need 1 <= min_items <= max_items, got {self.min_items}, "
                       f"{self.max_items}.")
    if not 0 < self.scale[0] <= self.scale[1] <= 1:
      raise ValueError(f"scale must be 0 < lo <= hi <= 1 (of the canvas side), got {self.scale}.")
    if not 0 <= self.background_max < self.threshold <= 255:
      raise ValueError(f"Need background_max < threshold <= 255, got {self.background_max}, "
                       f"{self.threshold}.")
    if round(self.scale[0] * self.size) < 4:
      raise ValueError(f"Garments of {self.scale[0]} x {self.size} px are too small.")


def _background(rng: np.random.Generator, spec: CanvasSpec) -> np.ndarray:
  coarse = rng.uniform(0.0, 1.0, (4, 4)).astype(np.float32)
  smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((spec.size, spec.size),
                                                                Image.BILINEAR))
  fine = rng.uniform(0.0, 1.0, (spec.size, spec.size))
  value = (0.7 * smooth + 0.3 * fine) * spec.background_max
  return np.clip(np.floor(value), 0, spec.background_max).astype(np.uint8)


def canvas(index: int, images: np.ndarray, labels: np.ndarray, seed: int,
           spec: CanvasSpec = CanvasSpec()) -> tuple[np.ndarray, np.ndarray]:
  """Canvas ``index`` of the set ``(images, labels, seed)``: ``(image, label_map)``, both
  ``uint8`` of shape ``(size, size)``."""
  rng = np.random.default_rng([seed, index])
  out = _background(rng, spec)
  label_map = np.full((spec.size, spec.size), BACKGROUND, np.uint8)
  for _ in range(int(rng.integers(spec.min_items, spec.max_items + 1))):
    source = int(rng.integers(len(images)))
    side = int(round(rng.uniform(*spec.scale) * spec.size))
    top, left = (int(v) for v in rng.integers(0, spec.size - side + 1, size=2))
    garment = np.asarray(Image.fromarray(images[source]).resize((side, side), Image.BILINEAR))
    mask = garment >= spec.threshold
    region = (slice(top, top + side), slice(left, left + side))
    out[region] = np.where(mask, garment, out[region])
    label_map[region] = np.where(mask, 1 + int(labels[source]), label_map[region])
  return out, label_map


def canvases(indices, images: np.ndarray, labels: np.ndarray, seed: int,
             spec: CanvasSpec = CanvasSpec()) -> tuple[np.ndarray, np.ndarray]:
  """The canvases of ``indices`` stacked: ``(N, size, size)`` images and label maps."""
  pairs = [canvas(int(i), images, labels, seed, spec) for i in indices]
  return (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
