"""The non-finite guard: no NaN/inf state is ever saved, without a host sync every step.

Each step's loss and gradient norm stay on device; the loop calls ``check`` before it logs
or saves a checkpoint, which fetches every step's values since the last check in one
transfer and raises ``NonFiniteError`` naming the first step whose loss or gradient was not
finite. The state in memory may then hold NaNs (later steps ran on), but it is never saved:
the latest checkpoint is from before that step, and a rerun resumes from it.
"""

from __future__ import annotations

import math

import jax


class NonFiniteError(FloatingPointError):
  """Training produced a NaN/inf loss or gradient."""


class NonFiniteGuard:
  """Collects ``(step, loss, grad_norm)`` device scalars; ``check`` syncs and raises."""

  def __init__(self):
    self._pending: list[tuple[int, jax.Array, jax.Array]] = []

  def watch(self, step: int, metrics) -> None:
    self._pending.append((step, metrics["loss"], metrics["grad_norm"]))

  def check(self, checkpointer=None) -> list[tuple[int, float, float]]:
    """The host values ``(step, loss, grad_norm)`` since the last check, in step order.

    Raises NonFiniteError for the first non-finite one; the message names the latest
    checkpoint of ``checkpointer`` (whose save in flight is finished first: it holds the last
    good state).
    """
    pending, self._pending = jax.device_get(self._pending), []
    values = [(step, float(loss), float(norm)) for step, loss, norm in pending]
    for step, loss, norm in values:
      if math.isfinite(loss) and math.isfinite(norm):
        continue
      where = ""
      if checkpointer is not None:
        checkpointer.wait()
        good = checkpointer.steps()
        where = (f" the latest checkpoint is step {good[-1] if good else 'none'} in "
                 f"{checkpointer.directory}.")
      raise NonFiniteError(
          f"Non-finite {'loss' if not math.isfinite(loss) else 'gradient'} at step {step} "
          f"(loss={loss}, grad_norm={norm}): stopping. Nothing from this step was saved;"
          + where)
    return values
