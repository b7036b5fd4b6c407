"""The training state and the metrics every step returns (on device, no host sync)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
  """What a checkpoint holds: the step count, every parameter (trainable or frozen) and the
  optimizer state of the trainable ones."""
  step: Any
  params: Any
  opt_state: Any


def step_metrics(term_losses, weights, grads) -> dict[str, jax.Array]:
  """``loss`` (the weighted sum of the terms, Eq. 7), ``grad_norm`` and each term's loss."""
  term_losses = jnp.stack(term_losses)
  return {"loss": jnp.sum(jnp.asarray(weights, jnp.float32) * term_losses),
          "grad_norm": optax.global_norm(grads), "term_losses": term_losses}
