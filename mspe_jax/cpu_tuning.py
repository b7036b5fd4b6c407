"""CPU-only scheduling of the frozen encoder: independent chains keep both cores busy.

Elementwise fusions are about a quarter of a ViT step on XLA:CPU, and at these sizes some
of them (the GELU, for one) run on one thread; XLA:CPU does run independent operations
concurrently, so encoding a single CPU device's batch as a few independent chains keeps
the cores busy (BENCHMARKS.md has the A/B measurements and the longer first compile it
costs). Used for the programs compiled once per run (the frozen encoder's gradient and the
teacher), not for evaluation (compiled per token grid). One chain elsewhere: accelerators
and multi-device meshes want one batch.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp


def encoder_chains(mesh) -> int:
  """Into how many independent chains ``encode_logits`` splits the batch on this mesh."""
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
