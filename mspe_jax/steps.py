"""The jitted pieces of a training step, compiled once per (kernel, resolution) bucket.

Paper Eq. 7 sums K cross-entropies, term k at a resolution drawn from subset k, plus
``lambda`` times the CE at native resolution. The K kernels' parameters are disjoint, so the
gradient of the sum with respect to kernel k is the gradient of term k alone (plus the native
term for the kernel that serves the native size). One jitted value-and-grad per
(kernel, resolution) and one jitted update therefore compile ``sum_k |S_k|`` (+1 for the
native term if it is not in its kernel's subset) + 1 programs -- additive, not
``prod_k |S_k|`` -- and the native term is folded into the drawn term when they coincide.

Only the trainable subtree is differentiated: in ``mspe`` mode the encoder and head are
closed-over constants, so no weight gradient is computed for them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mspe_jax import jax_utils, pi_resize
from mspe_jax import mspe as mspe_lib

TRAINABLE_MSPE = "mspe"


@dataclasses.dataclass(frozen=True)
class Term:
  """One loss term: MSPE kernel ``kernel`` (None: as the model routes) at ``hw``, weighted."""
  kernel: int | None
  hw: tuple[int, int]
  weight: float

  @property
  def name(self) -> str:
    who = "native" if self.kernel is None else f"k{self.kernel}"
    return f"{who}_{self.hw[0]}x{self.hw[1]}"


# ------------------------------------------------------------------------ resolution subsets

def as_hw_list(subset) -> tuple[tuple[int, int], ...]:
  """``(7, 14, (10, 20))`` -> ``((7, 7), (14, 14), (10, 20))``."""
  return tuple(pi_resize.as_hw(r, "resolution") for r in subset)


def default_subsets(model, max_scale: float = 2.0) -> tuple[tuple[tuple[int, int], ...], ...]:
  """Every multiple of the grid from N to ``max_scale * R``, grouped by the routing rule."""
  n = model.grid[0]
  subsets = [[] for _ in model.base_sizes]
  for s in range(1, int(math.floor(max_scale * model.patch[0])) + 1):
    subsets[mspe_lib.route((s, s), model.base_sizes)].append((n * s, n * s))
  return tuple(tuple(s) for s in subsets)


def validate_subsets(subsets, model) -> tuple[tuple[tuple[int, int], ...], ...]:
  """One non-empty subset per MSPE kernel, every resolution at least the token grid."""
  if subsets is None:
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


def draw_terms(step: int, seed: int, subsets, model, lam: float) -> list[Term]:
  """The loss terms of one MSPE step (a pure function of ``(seed, step)``)."""
  rng = np.random.default_rng([seed, step, 0x5EED])
  weights: dict[tuple[int, tuple[int, int]], float] = {}
  for k, subset in enumerate(subsets):
    hw = subset[int(rng.integers(len(subset)))]
    weights[(k, hw)] = weights.get((k, hw), 0.0) + 1.0
  native_hw = pi_resize.as_hw(model.image_size)
  native_k = model.plan(*native_hw)["kernel_index"]
  if lam and native_k != mspe_lib.NATIVE_KERNEL:  # a frozen native kernel has nothing to learn
    weights[(native_k, native_hw)] = weights.get((native_k, native_hw), 0.0) + float(lam)
  return [Term(k, hw, w) for (k, hw), w in sorted(weights.items())]


# ------------------------------------------------------------------------ trainable split

def split_params(params, mode: str):
  """``(trainable, frozen)``: the MSPE kernels in ``mspe`` mode, everything in ``full`` mode."""
  if mode == "full":
    return dict(params), {}
  if TRAINABLE_MSPE not in params:
    raise ValueError("mode='mspe' needs MSPE parameters (params['mspe']); load the model with "
                     "patch_embed='mspe'.")
  frozen = {k: v for k, v in params.items() if k != TRAINABLE_MSPE}
  return {TRAINABLE_MSPE: params[TRAINABLE_MSPE]}, frozen


def merge_params(trainable, frozen):
  return {**frozen, **trainable}


# ------------------------------------------------------------------------ jitted functions

def resize_batch(images, hw, method: str, antialias: bool):
  """Resizes an NHWC batch on device (the resize PI-resize inverts)."""
  if tuple(images.shape[1:3]) == tuple(hw):
    return images
  return jax.image.resize(images, (images.shape[0], *hw, images.shape[3]),
                          method=pi_resize.canonical_method(method), antialias=antialias)


class StepFunctions:
  """Jitted term gradients (cached per kernel and resolution), update, teacher and eval."""

  def __init__(self, model, tx: optax.GradientTransformation, mesh,
               loss_fn: Callable[[Any, Any, Any], Any]):
    self.model = model
    self.tx = tx
    self.loss_fn = loss_fn
    rep = jax_utils.replicated(mesh)
    self.term_grad = jax.jit(self._term_value_and_grad, static_argnames=("kernel", "hw"),
                             out_shardings=rep)
    self.update = jax.jit(self._update, out_shardings=rep)
    self.teacher = jax.jit(self._teacher, out_shardings=jax_utils.batch_sharded(mesh))
    self.eval_correct = jax.jit(self._eval_correct, static_argnames=("hw",), out_shardings=rep)

  def _logits(self, params, images, kernel, hw):
    x = resize_batch(images, hw, self.model.resize_method, self.model.antialias)
    model = self.model if kernel is None else self.model.clone(mspe_kernel=kernel)
    return model.apply({"params": params}, x)[0]

  def _term_value_and_grad(self, trainable, frozen, images, labels, teacher_logits, weight, *,
                           kernel, hw):
    def loss(tr):
      logits = self._logits(merge_params(tr, frozen), images, kernel, hw)
      value = self.loss_fn(logits, labels, teacher_logits)
      return weight * value, value
    (_, value), grads = jax.value_and_grad(loss, has_aux=True)(trainable)
    return value, grads

  def _update(self, trainable, opt_state, grads_list: Sequence[Any]):
    grads = jax.tree_util.tree_map(lambda *g: sum(g[1:], g[0]), *grads_list)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = self.tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, grad_norm

  def _teacher(self, params, images):
    """The frozen pretrained model (its own kernel) at native resolution."""
    return self.model.clone(patch_embed="vanilla").apply({"params": params}, images)[0]

  def _eval_correct(self, params, images, labels, mask, *, hw):
    logits = self._logits(params, images, None, hw)
    return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)

  def compiled_term_programs(self) -> int:
    """How many (kernel, resolution) gradient programs have been compiled."""
    return self.term_grad._cache_size()  # noqa: SLF001
