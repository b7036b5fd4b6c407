"""Shared pieces of the benchmarks: timing, random checkpoints, the MSPE step under test."""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from mspe_jax import jax_utils, losses, npz, optim, terms, vit
from mspe_jax.full_step import FullStep
from mspe_jax.mspe_step import MSPEStep


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
  """Median wall time of ``fn()`` (which must block until its work is done)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def interleaved_medians(fns: dict, repeats: int, warmup: int = 1) -> dict:
  """Median wall time of each ``fns[name]()``, timed round-robin (one call of each per round).

  On a shared machine the background load drifts over minutes; interleaving makes every
  ratio between two of these medians a comparison under the same conditions.
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return {name: statistics.median(ts) for name, ts in times.items()}


def random_checkpoint(variant: str, path: str, image_size: int = 224, classes: int = 1000,
                      seed: int = 0) -> str:
  """A big_vision ``.npz`` of ``variant`` with random weights (head random too)."""
  if os.path.exists(path):
    return path
  model = vit.ViT(num_classes=classes, image_size=image_size, head_zeroinit=False,
                  **vit.decode_variant(variant))
  params = jax.jit(model.init)(jax.random.key(seed),
                               jnp.zeros((1, image_size, image_size, 3)))["params"]
  return npz.save_npz(path, jax.device_get(params))


class OurStep:
  """The training step of ``train_lib`` (``MSPEStep`` or ``FullStep``) on one fixed batch with
  fixed resolutions (one per kernel) + the native term.

  ``mode="mspe"`` trains the kernels only; ``mode="full"`` differentiates every parameter
  (the fine-tuning comparison); ``loss="distill"`` adds the teacher forward. ``chains``:
  ``mspe_jax.cpu_tuning`` (None: as it decides).
  """

  def __init__(self, path: str, resolutions, batch: int, mode: str = "mspe", loss: str = "ce",
               seed: int = 0, chains: int | None = None, **policy_fields):
    self.model, params = npz.load_pretrained(path, "mspe", **policy_fields)
    mesh = jax_utils.make_mesh()
    self.tx, _ = optim.make_optimizer(_optim_cfg(), 1000)
    loss_fn = losses.make_loss(loss)
    self.step = (MSPEStep(self.model, self.tx, mesh, loss_fn,
                          distill=losses.needs_teacher(loss), chains=chains) if mode == "mspe"
                 else FullStep(self.model, self.tx, mesh, loss_fn))
    self.state = jax_utils.replicate(self.step.init(params), mesh)
    subsets = tuple(((r, r),) for r in resolutions)
    self.terms = terms.draw_terms(0, seed, subsets, self.model, lam=1.0)
    native = self.model.image_size
    rng = np.random.default_rng(seed)
    self.batch = jax_utils.shard_batch(
        {"image": rng.uniform(-1, 1, (batch, native, native, 3)).astype(np.float32),
         "label": rng.integers(0, self.model.num_classes, batch).astype(np.int32)}, mesh)

  def __call__(self):
    self.state, metrics = self.step(self.state, self.batch, self.terms)
    jax.block_until_ready((self.state.params, metrics))

  def flops(self) -> float:
    """XLA's FLOP count of one step (all term programs + teacher + update)."""
    step, params, images = self.step, self.state.params, self.batch["image"]
    labels = self.batch["label"]
    if isinstance(step, FullStep):
      total = sum(_cost(step.term_grad, params, images, labels, jnp.float32(t.weight),
                        kernel=t.kernel, hw=t.hw) for t in self.terms)
      losses_, grads = step.gradients(params, self.batch, self.terms)
      return total + _cost(step.update, params, self.state.opt_state, grads, losses_,
                           jnp.ones(len(self.terms)))
    teacher, total = None, 0.0
    if step.distill:
      total += _cost(step.teacher, params, images)
      teacher = step.teacher(params, images)
    encoder = vit.encoder_params(params)
    for t in self.terms:
      b = dict(kernel=step._kernel_index(t), hw=t.hw)  # noqa: SLF001
      tokens, _ = step.embed(params, images, **b)
      total += (_cost(step.embed, params, images, **b)
                + _cost(step.encoder_grad, encoder, tokens, labels, teacher,
                        jnp.float32(t.weight)))
    losses_, grads = step.gradients(params, self.batch, self.terms)
    return total + _cost(step.update, {"mspe": params["mspe"]}, self.state.opt_state, grads,
                         losses_, jnp.ones(len(self.terms)))


def _optim_cfg():
  import ml_collections
  return ml_collections.ConfigDict(dict(name="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4,
                                        decay="constant", warmup_steps=0))


def _cost(jitted, *args, **kwargs) -> float:
  """FLOPs of the program as lowered (before XLA turns dots into library calls, which the
  compiled module's cost analysis does not count on GPUs)."""
  analysis = jitted.lower(*args, **kwargs).cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  if not analysis:  # jax 0.11.2's GPU client gives none for a lowered program
    raise NoCostAnalysis(f"{jax.default_backend()} gives no cost analysis of lowered programs")
  return float(analysis.get("flops", 0.0))


class NoCostAnalysis(RuntimeError):
  """The backend cannot count a lowered program's FLOPs (they do not depend on the device:
  count them with the same command on CPU)."""


def matmul_ceiling(n: int, repeats: int = 5) -> float:
  """Measured float32 matmul FLOP/s of this machine (JAX, n x n x n)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  t = median_seconds(lambda: f(a).block_until_ready(), repeats, warmup=2)
  return 2.0 * n ** 3 / t
