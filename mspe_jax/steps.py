"""The jitted pieces of a training step, compiled once per (kernel, resolution) bucket.

Paper Eq. 7 sums K cross-entropies, term k at a resolution drawn from subset k, plus
``lambda`` times the CE at native resolution. The K kernels' parameters are disjoint, so the
gradient of the sum with respect to kernel k is the gradient of term k alone (plus the native
term for the kernel that serves the native size): each term is computed on its own and one
jitted update applies the sum. Programs are compiled per (kernel, resolution) bucket --
``sum_k |S_k|`` of them (+1 for the native term when it is not in its kernel's subset), not
``prod_k |S_k|`` -- and the native term is folded into the drawn term when they coincide.

Only the trainable subtree is differentiated: in ``mspe`` mode the encoder and head are
constants, so no weight gradient is computed for them, and since the token grid is fixed
the encoder's program is the same for every resolution (see ``StepFunctions``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

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


def encoder_params(params):
  """The parameters ``ViT.encode`` reads (the same structure for every model of a backbone)."""
  return {k: params[k] for k in ENCODER_KEYS if k in params}


ENCODER_KEYS = ("pos_embedding", "cls", "Transformer", "head")


def encoder_chains(mesh) -> int:
  """Into how many independent chains ``encode_logits`` splits the batch on this mesh.

  Elementwise fusions are about a quarter of a ViT step on XLA:CPU, and at these sizes some
  of them (the GELU, for one) run on one thread; XLA:CPU does run independent operations
  concurrently, so encoding a single CPU device's batch as a few independent chains keeps
  the cores busy: 9-16% off a ViT-Ti/S MSPE step on 2 cores, for a longer first compile
  (BENCHMARKS.md). Used for the programs compiled once per run (the frozen encoder's
  gradient and the teacher), not for evaluation (compiled per token grid). One chain
  elsewhere: accelerators want one batch.
  """
  if jax.default_backend() != "cpu" or mesh.devices.size != 1:
    return 1
  return min(4, 2 * (os.cpu_count() or 1))


def encode_logits(model, params, tokens, chains: int = 1):
  """``model.encode``'s logits (logits only), the batch encoded as up to ``chains``
  independent chains (the largest count that divides it).

  Every example is computed on its own either way; only the floating-point rounding of the
  matmuls can differ (they see a smaller batch), within 1e-5 (tested).
  """
  n = tokens.shape[0]
  chains = max(c for c in range(1, max(1, chains) + 1) if n % c == 0)

  @jax.jit  # traced once for all chains
  def encode(t):
    return model.apply({"params": params}, t, sequence=False, method="encode")[0]

  if chains == 1:
    return encode(tokens)
  return jnp.concatenate([encode(t) for t in jnp.split(tokens, chains)], axis=0)


@struct.dataclass
class KernelGrad:
  """A term's contribution to its MSPE kernel's gradient, kept factored.

  The kernel's gradient is ``Q^T dtokens`` and the bias's ``sum(dtokens)`` (see
  ``ViT.embed_projected``); ``Q`` has the same shape at every resolution, so the program
  that forms them (the update) does not depend on the resolution. ``kernel`` is the MSPE
  kernel index (``mspe_lib.NATIVE_KERNEL``: the frozen pretrained kernel, no gradient).
  """
  kernel: int = struct.field(pytree_node=False)
  projected: jax.Array
  dtokens: jax.Array


class StepFunctions:
  """The jitted pieces of a step.

  ``mspe`` mode (encoder frozen) computes a term with two programs: ``embed`` (per kernel and
  resolution: the resize, the patches projected onto the kernel's stored size ``Q`` and the
  tokens ``Q @ W + b``) and ``encoder_grad`` (loss and token cotangents through the frozen
  encoder: the token grid is fixed, so it is compiled once for every resolution). The
  ``update`` program forms each kernel's gradient ``Q^T dtokens`` and applies the optimizer;
  it depends only on which kernels the terms use (K or K+1 terms), so a run compiles
  ``sum_k |S_k|`` small bucket programs, the encoder once and the update once or twice.
  ``full`` mode differentiates everything with one program per term (``term_grad``).
  """

  def __init__(self, model, tx: optax.GradientTransformation, mesh,
               loss_fn: Callable[[Any, Any, Any], Any], mode: str = "mspe"):
    self.model = model
    self.tx = tx
    self.loss_fn = loss_fn
    self.mode = mode
    self.chains = encoder_chains(mesh)
    rep, data = jax_utils.replicated(mesh), jax_utils.batch_sharded(mesh)
    buckets = ("kernel", "hw")
    self.embed = jax.jit(self._embed, static_argnames=buckets, out_shardings=(data, data))
    self.encoder_grad = jax.jit(self._encoder_value_and_grad, out_shardings=(rep, data))
    self.term_grad = jax.jit(self._term_value_and_grad, static_argnames=buckets,
                             out_shardings=rep)
    self.update = jax.jit(self._update, out_shardings=rep)
    self.teacher = jax.jit(self._teacher, out_shardings=data)
    self.eval_correct = jax.jit(self._eval_correct, static_argnames=("hw",), out_shardings=rep)

  # -- one loss term: value and gradient with respect to the trainable parameters

  def value_and_grad(self, trainable, frozen, images, labels, teacher_logits, weight, term):
    """``(loss value, gradient)`` of ``weight * loss`` at ``term``'s kernel and resolution.

    The gradient is a tree like ``trainable`` in ``full`` mode and a ``KernelGrad`` in
    ``mspe`` mode; ``update`` and ``sum_grads`` take a list of either.
    """
    weight = jnp.float32(weight)
    if self.mode == "full":
      return self.term_grad(trainable, frozen, images, labels, teacher_logits, weight,
                            kernel=term.kernel, hw=term.hw)
    tokens, projected = self.embed(trainable, frozen, images, kernel=term.kernel, hw=term.hw)
    value, dtokens = self.encoder_grad(encoder_params(frozen), tokens, labels, teacher_logits,
                                       weight)
    index = self._model(term.kernel).plan(*term.hw)["kernel_index"]
    return value, KernelGrad(index, projected, dtokens)

  def sum_grads(self, trainable, grads_list: Sequence[Any]):
    """The gradient tree (like ``trainable``) of a step's terms."""
    if self.mode == "full":
      return jax.tree_util.tree_map(lambda *g: sum(g[1:], g[0]), *grads_list)
    grads = jax.tree_util.tree_map(jnp.zeros_like, dict(trainable[TRAINABLE_MSPE]))
    for g in grads_list:
      if g.kernel == mspe_lib.NATIVE_KERNEL:
        continue  # the frozen pretrained kernel
      name = f"embedding_{g.kernel}"
      q = g.projected.reshape(-1, g.projected.shape[-1])
      dt = g.dtokens.reshape(-1, g.dtokens.shape[-1])
      kernel, bias = grads[name]["kernel"], grads[name]["bias"]
      grads[name] = {"kernel": kernel + (q.T @ dt).reshape(kernel.shape),
                     "bias": bias + jnp.sum(dt, axis=0)}
    return {TRAINABLE_MSPE: grads}

  def _model(self, kernel):
    return self.model if kernel is None else self.model.clone(mspe_kernel=kernel)

  def _embed(self, trainable, frozen, images, *, kernel, hw):
    x = resize_batch(images, hw, self.model.resize_method, self.model.antialias)
    return self._model(kernel).apply({"params": merge_params(trainable, frozen)}, x,
                                     method="embed_projected")

  def _encoder_value_and_grad(self, enc_params, tokens, labels, teacher_logits, weight):
    def loss(t):
      logits = encode_logits(self.model, enc_params, t, self.chains)
      value = self.loss_fn(logits, labels, teacher_logits)
      return weight * value, value
    (_, value), dtokens = jax.value_and_grad(loss, has_aux=True)(tokens)
    return value, dtokens

  def _term_value_and_grad(self, trainable, frozen, images, labels, teacher_logits, weight, *,
                           kernel, hw):
    def loss(tr):
      x = resize_batch(images, hw, self.model.resize_method, self.model.antialias)
      logits = self._model(kernel).apply({"params": merge_params(tr, frozen)}, x,
                                         sequence=False)[0]
      value = self.loss_fn(logits, labels, teacher_logits)
      return weight * value, value
    (_, value), grads = jax.value_and_grad(loss, has_aux=True)(trainable)
    return value, grads

  # -- the rest of a step

  def _update(self, trainable, opt_state, grads_list: Sequence[Any]):
    grads = self.sum_grads(trainable, grads_list)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = self.tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, grad_norm

  def _teacher(self, params, images):
    """The frozen pretrained model (its own kernel) at native resolution."""
    model = self.model.clone(patch_embed="vanilla")
    tokens = model.apply({"params": params}, images, method="embed")
    return encode_logits(model, encoder_params(params), tokens, self.chains)

  def _eval_correct(self, params, images, labels, mask, *, hw):
    x = resize_batch(images, hw, self.model.resize_method, self.model.antialias)
    logits = self.model.apply({"params": params}, x, sequence=False)[0]
    return jnp.sum((jnp.argmax(logits, -1) == labels) * mask)

  def compiled_programs(self) -> dict[str, int]:
    """Programs compiled so far, by kind (``bucket``: one per kernel and resolution)."""
    size = lambda f: f._cache_size()  # noqa: E731, SLF001
    if self.mode == "full":
      return {"bucket": size(self.term_grad), "encoder": 0, "update": size(self.update)}
    return {"bucket": size(self.embed), "encoder": size(self.encoder_grad),
            "update": size(self.update)}
