"""Loss terms: paper Eq. 7 (one resolution per MSPE kernel per step, plus the native term), and
FlexiViT's one patch size per step.

Each kernel ``k`` has a subset ``S_k`` of resolutions; a step draws one from each (a pure
function of ``(seed, step)``, so a resumed run draws what an uninterrupted one draws) and adds
``lambda`` times the native-resolution term for the kernel that serves the native size (unless
that is the frozen pretrained kernel). A term that coincides with another is folded into it
(weights add), so every (kernel, resolution) is computed once.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mspe_jax import geometry, patch_embed


@dataclasses.dataclass(frozen=True)
class Term:
  """One loss term: MSPE kernel ``kernel`` (None: as the model routes) at ``hw``, weighted;
  ``patch``: the FlexiViT patch size of the term (None: the model's policy decides)."""
  kernel: int | None
  hw: tuple[int, int]
  weight: float
  patch: tuple[int, int] | None = None

  @property
  def name(self) -> str:
    if self.patch is not None:
      return f"p{self.patch[0]}x{self.patch[1]}_{self.hw[0]}x{self.hw[1]}"
    who = "native" if self.kernel is None else f"k{self.kernel}"
    return f"{who}_{self.hw[0]}x{self.hw[1]}"


def as_hw_list(subset) -> tuple[tuple[int, int], ...]:
  """``(7, 14, (10, 20))`` -> ``((7, 7), (14, 14), (10, 20))``."""
  return tuple(geometry.as_hw(r, "resolution") for r in subset)


def default_subsets(model, max_scale: float = 2.0) -> tuple[tuple[tuple[int, int], ...], ...]:
  """Every multiple of the grid from N to ``max_scale * R``, grouped by the routing rule."""
  n = model.grid[0]
  subsets = [[] for _ in model.base_sizes]
  for s in range(1, int(math.floor(max_scale * model.patch[0])) + 1):
    subsets[patch_embed.route((s, s), model.base_sizes)].append((n * s, n * s))
  return tuple(tuple(s) for s in subsets)


ASPECTS = ("independent", "square")


def range_subsets(model, kernel_ranges, aspect: str = "independent",
                  step: int = 1) -> tuple[tuple[tuple[int, int], ...], ...]:
  """Subsets from each kernel's per-axis range ``(lo, hi)`` of effective kernel sizes (px).

  ``"independent"`` (the authors' released recipe): every ``(gh * ph, gw * pw)`` with ``ph``
  and ``pw`` in ``lo, lo + step, ..., hi`` (``hi`` always included), so a uniform draw from
  the subset draws height and width independently and each kernel sees many aspect ratios;
  ``"square"``: ``ph == pw`` only (the ablation). ``step > 1`` is the coarser grid that
  bounds the number of shapes, and so of compiled programs (one per shape).
  """
  if aspect not in ASPECTS:
    raise ValueError(f"Unknown aspect {aspect!r}; expected one of {ASPECTS}.")
  if step < 1:
    raise ValueError(f"range step must be >= 1, got {step}.")
  if len(kernel_ranges) != len(model.base_sizes):
    raise ValueError(f"Expected one kernel range per MSPE kernel ({len(model.base_sizes)}), "
                     f"got {len(kernel_ranges)}: {kernel_ranges}.")
  gh, gw = model.grid
  subsets = []
  for k, r in enumerate(kernel_ranges):
    lo, hi = (int(v) for v in r)
    if not 1 <= lo <= hi:
      raise ValueError(f"Kernel range {k} must be (lo, hi) with 1 <= lo <= hi, got {tuple(r)}.")
    sizes = sorted(set(range(lo, hi + 1, step)) | {hi})
    pairs = ([(p, p) for p in sizes] if aspect == "square"
             else [(ph, pw) for ph in sizes for pw in sizes])
    subsets.append(tuple((gh * ph, gw * pw) for ph, pw in pairs))
  return tuple(subsets)


def subsets_from_config(mspe_config, model) -> tuple[tuple[tuple[int, int], ...], ...]:
  """``kernel_ranges`` (per-axis ranges) when given, else ``resolutions`` (explicit sizes),
  else every multiple of the grid grouped by the routing rule."""
  if mspe_config.kernel_ranges:
    return range_subsets(model, mspe_config.kernel_ranges, mspe_config.aspect,
                         mspe_config.range_step)
  return validate_subsets(mspe_config.resolutions, model)


def validate_subsets(subsets, model) -> tuple[tuple[tuple[int, int], ...], ...]:
  """One non-empty subset per MSPE kernel, every resolution at least the token grid."""
  if not subsets:
    return default_subsets(model)
  k = len(model.base_sizes)
  if len(subsets) != k:
    raise ValueError(f"Expected one resolution subset per MSPE kernel ({k}), got "
                     f"{len(subsets)}: {subsets}.")
  out = []
  gh, gw = model.grid
  for i, subset in enumerate(subsets):
    hws = as_hw_list(subset)
    if not hws:
      raise ValueError(f"Resolution subset {i} (kernel base size {model.base_sizes[i]}) is empty.")
    small = [hw for hw in hws if hw[0] < gh or hw[1] < gw]
    if small:
      raise ValueError(f"Resolution subset {i} has sizes {small} below the {gh}x{gw} token grid "
                       f"(minimum {gh}x{gw} px).")
    out.append(hws)
  return tuple(out)


def draw_terms(step: int, seed: int, subsets, model, lam: float,
               square_fraction: float = 0.0) -> list[Term]:
  """The loss terms of one MSPE step (a pure function of ``(seed, step)``).

  ``square_fraction``: the probability that a kernel's draw is taken from the square shapes
  of its subset only (uniform over the whole subset otherwise); 0 draws uniformly.
  """
  if not 0.0 <= square_fraction <= 1.0:
    raise ValueError(f"square_fraction must be in [0, 1], got {square_fraction}.")
  rng = np.random.default_rng([seed, step, 0x5EED])
  weights: dict[tuple[int, tuple[int, int]], float] = {}
  for k, subset in enumerate(subsets):
    squares = [hw for hw in subset if hw[0] == hw[1]]
    if square_fraction and squares and rng.random() < square_fraction:
      subset = squares
    hw = subset[int(rng.integers(len(subset)))]
    weights[(k, hw)] = weights.get((k, hw), 0.0) + 1.0
  native_hw = geometry.as_hw(model.image_size)
  native_k = model.plan(*native_hw).kernel_index
  if lam and native_k != patch_embed.PRETRAINED_KERNEL:  # a frozen kernel has nothing to learn
    weights[(native_k, native_hw)] = weights.get((native_k, native_hw), 0.0) + float(lam)
  return [Term(k, hw, w) for (k, hw), w in sorted(weights.items())]


def check_patch_sizes(patch_sizes, weights=()) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
  """``(patches, probabilities)`` of a FlexiViT patch-size distribution (uniform without
  ``weights``), with errors that name the problem."""
  patches = tuple(geometry.as_hw(p, "flexi patch size") for p in patch_sizes)
  if not patches:
    raise ValueError("FlexiViT training needs at least one patch size (config.flexi.patch_sizes).")
  if len(set(patches)) != len(patches):
    raise ValueError(f"Repeated FlexiViT patch sizes: {patch_sizes}.")
  w = np.ones(len(patches)) if not len(weights) else np.asarray(weights, np.float64)
  if w.shape != (len(patches),) or (w < 0).any() or not w.sum() > 0:
    raise ValueError(f"config.flexi.weights must be {len(patches)} non-negative numbers, not all "
                     f"zero (one per patch size), got {tuple(weights)}.")
  return patches, w / w.sum()


def draw_patch_term(step: int, seed: int, patches, probabilities, hw) -> list[Term]:
  """FlexiViT's step: one patch size drawn from the distribution (a pure function of
  ``(seed, step)``, the same on every host), the image at its native size ``hw``."""
  rng = np.random.default_rng([seed, step, 0xF1E7])
  patch = patches[int(rng.choice(len(patches), p=probabilities))]
  return [Term(None, tuple(hw), 1.0, patch)]
