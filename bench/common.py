"""Shared pieces of the benchmarks: timing, random checkpoints, the MSPE step under test."""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from mspe_jax import checkpoints, jax_utils, losses, optim, steps, vit


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
  return checkpoints.save_npz(path, jax.device_get(params))


class OurStep:
  """The MSPE step of ``train_lib`` with fixed resolutions (one per kernel) + native term.

  ``mode="mspe"`` trains the kernels only; ``mode="full"`` differentiates every parameter
  (the fine-tuning comparison); ``loss="distill"`` adds the teacher forward.
  """

  def __init__(self, npz: str, resolutions, batch: int, mode: str = "mspe", loss: str = "ce",
               seed: int = 0):
    self.model, params = checkpoints.load_pretrained(npz, patch_embed="mspe")
    mesh = jax_utils.make_mesh()
    cfg = _optim_cfg()
    self.tx, _ = optim.make_optimizer(cfg, 1000)
    self.loss = loss
    self.fns = steps.StepFunctions(self.model, self.tx, mesh, losses.make_loss(loss), mode=mode)
    trainable, frozen = steps.split_params(params, mode)
    self.trainable, self.frozen = jax_utils.replicate((trainable, frozen), mesh)
    self.opt_state = jax_utils.replicate(self.tx.init(self.trainable), mesh)
    native = self.model.image_size
    subsets = tuple(((r, r),) for r in resolutions)
    self.terms = steps.draw_terms(0, seed, subsets, self.model, lam=1.0)
    rng = np.random.default_rng(seed)
    self.images = jax_utils.shard_batch(
        {"image": rng.uniform(-1, 1, (batch, native, native, 3)).astype(np.float32),
         "label": rng.integers(0, self.model.num_classes, batch).astype(np.int32)}, mesh)

  def __call__(self):
    merged = steps.merge_params(self.trainable, self.frozen)
    teacher = (self.fns.teacher(merged, self.images["image"])
               if losses.needs_teacher(self.loss) else None)
    grads = [self.fns.value_and_grad(self.trainable, self.frozen, self.images["image"],
                                     self.images["label"], teacher, t.weight, t)[1]
             for t in self.terms]
    self.trainable, self.opt_state, norm = self.fns.update(self.trainable, self.opt_state, grads)
    jax.block_until_ready((self.trainable, norm))

  def flops(self) -> float:
    """XLA's FLOP count of one step (all term programs + teacher + update)."""
    total = 0.0
    merged = steps.merge_params(self.trainable, self.frozen)
    teacher = None
    if losses.needs_teacher(self.loss):
      total += _cost(self.fns.teacher, merged, self.images["image"])
      teacher = self.fns.teacher(merged, self.images["image"])
    images, labels = self.images["image"], self.images["label"]
    grads = []
    for t in self.terms:
      w, b = jnp.float32(t.weight), dict(kernel=t.kernel, hw=t.hw)
      if self.fns.mode == "full":
        total += _cost(self.fns.term_grad, self.trainable, self.frozen, images, labels, teacher,
                       w, **b)
        continue
      tokens, _ = self.fns.embed(self.trainable, self.frozen, images, **b)
      enc = steps.encoder_params(self.frozen)
      total += (_cost(self.fns.embed, self.trainable, self.frozen, images, **b)
                + _cost(self.fns.encoder_grad, enc, tokens, labels, teacher, w))
      grads.append(self.fns.value_and_grad(self.trainable, self.frozen, images, labels, teacher,
                                           t.weight, t)[1])
    if grads:
      total += _cost(self.fns.update, self.trainable, self.opt_state, grads)
    return total


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
  return float(analysis.get("flops", 0.0))


def matmul_ceiling(n: int, repeats: int = 5) -> float:
  """Measured float32 matmul FLOP/s of this machine (JAX, n x n x n)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  t = median_seconds(lambda: f(a).block_until_ready(), repeats, warmup=2)
  return 2.0 * n ** 3 / t
