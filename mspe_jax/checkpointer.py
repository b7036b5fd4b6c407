"""Orbax train-state checkpoints: save every N steps, keep the last few, resume safely.

* Saves are atomic (orbax writes a temporary directory and renames it when complete) and
  asynchronous; a failed save (disk full, ...) raises ``CheckpointSaveError`` at the next
  save or at the end, and the previous checkpoints stay as they were.
* Restoring walks the steps from the newest down. A step that cannot be read (missing or
  truncated files, no commit marker) is skipped with a warning naming its directory and
  moved aside to ``<step>.damaged-<n>`` once a good step is found -- nothing is deleted. If
  no step is readable, ``NoGoodCheckpointError`` lists them and touches nothing.
* Arrays are restored onto the current mesh (a GPU checkpoint restores on CPU).
"""

from __future__ import annotations

import logging
import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

COMMIT_MARKER = "commit_success.txt"


class CheckpointSaveError(RuntimeError):
  """Writing a checkpoint failed; earlier checkpoints are intact."""


class NoGoodCheckpointError(RuntimeError):
  """Checkpoints exist but none can be restored; nothing was deleted."""


def _step_dirs(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if re.fullmatch(r"\d+", d) and os.path.isdir(os.path.join(directory, d)))


def _problem(step_dir: str) -> str | None:
  """A reason why ``step_dir`` is not a complete checkpoint, or None if it looks complete."""
  for root in (step_dir, os.path.join(step_dir, "default")):
    if not os.path.exists(os.path.join(root, COMMIT_MARKER)):
      return f"no {COMMIT_MARKER} in {root}"
  for root, _, files in os.walk(step_dir):
    for f in files:
      if os.path.getsize(os.path.join(root, f)) == 0 and f != COMMIT_MARKER:
        return f"zero-length file {os.path.join(root, f)}"
  return None


class Checkpointer:
  """Train-state checkpoints in ``directory`` (one sub-directory per step)."""

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._keep = keep
    self._async = async_save
    self._manager = None
    self._pending_step = None

  def _mngr(self) -> ocp.CheckpointManager:
    if self._manager is None:
      opts = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                          enable_async_checkpointing=self._async)
      self._manager = ocp.CheckpointManager(self.directory, options=opts,
                                            item_handlers=ocp.StandardCheckpointHandler())
    return self._manager

  # ------------------------------------------------------------------ save

  def save(self, step: int, state) -> None:
    """Starts saving ``state`` as ``step`` (returns before the write ends when async)."""
    self.wait()
    path = os.path.join(self.directory, str(step))
    if os.path.exists(path):
      self._move_aside(step, "an earlier run left it")
    try:
      self._mngr().save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as e:  # noqa: BLE001
      self._raise_save_error(step, e)
    self._pending_step = step
    if not self._async:
      self.wait()

  def wait(self) -> None:
    """Blocks until the pending save is on disk; raises CheckpointSaveError if it failed."""
    if self._manager is None or self._pending_step is None:
      return
    step, self._pending_step = self._pending_step, None
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:  # noqa: BLE001
      self._raise_save_error(step, e)

  def _raise_save_error(self, step, error):
    good = [s for s in _step_dirs(self.directory) if s != step]
    raise CheckpointSaveError(
        f"Saving checkpoint step {step} to {self.directory} failed: {type(error).__name__}: "
        f"{error}. Earlier checkpoints are intact (latest: "
        f"{good[-1] if good else 'none'}).") from error

  def close(self) -> None:
    try:
      self.wait()
    finally:
      if self._manager is not None:
        self._manager.close()
        self._manager = None

  # ------------------------------------------------------------------ restore

  def steps(self) -> list[int]:
    return _step_dirs(self.directory)

  def restore_latest(self, abstract_state):
    """``(step, state)`` from the newest readable step, or None when there is no checkpoint.

    ``abstract_state``: a tree of ``jax.ShapeDtypeStruct`` (with shardings) to restore into.
    """
    steps = self.steps()
    if not steps:
      return None
    skipped = []
    for step in reversed(steps):
      path = os.path.join(self.directory, str(step))
      reason = _problem(path)
      state = None
      if reason is None:
        try:
          state = self._mngr().restore(step, args=ocp.args.StandardRestore(abstract_state))
          _check_restored(state, abstract_state)
        except Exception as e:  # noqa: BLE001
          reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
          state = None
      if state is not None:
        for bad in skipped:
          self._move_aside(bad, "it could not be restored")
        if skipped:
          self._reset_manager()
        return step, state
      log.warning("Skipping damaged checkpoint %s (%s).", path, reason)
      skipped.append(step)
    raise NoGoodCheckpointError(
        f"No checkpoint in {self.directory} can be restored: steps {steps} are all damaged "
        "(see the warnings above). Nothing was deleted; move the directory away to start "
        "afresh.")

  def restore_as_saved(self, step: int | None = None):
    """``(state, step)``: the newest readable step (or ``step``) with the tree it was saved
    with, onto this process's first device (a GPU or TPU checkpoint restores on a CPU)."""
    steps = self.steps() if step is None else [step]
    if not steps:
      raise ValueError(f"No checkpoint steps in {self.directory}.")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    errors = []
    for s in reversed(steps):
      try:
        meta = self._mngr().item_metadata(s).tree
        abstract = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), meta)
        return self._mngr().restore(s, args=ocp.args.StandardRestore(abstract)), s
      except Exception as e:  # noqa: BLE001
        log.warning("Could not restore step %d from %s: %s", s, self.directory, e)
        errors.append(f"{s}: {type(e).__name__}")
    raise ValueError(f"No readable checkpoint in {self.directory} ({errors}).")

  def _move_aside(self, step: int, why: str) -> None:
    src = os.path.join(self.directory, str(step))
    n = 0
    while os.path.exists(dst := f"{src}.damaged-{n}"):
      n += 1
    os.rename(src, dst)
    log.warning("Moved checkpoint %s aside to %s (%s).", src, dst, why)
    self._reset_manager()

  def _reset_manager(self) -> None:
    if self._manager is not None:
      self._manager.close()
      self._manager = None


def _check_restored(state, abstract_state) -> None:
  """Raises if a restored tree does not have the requested structure and shapes."""
  got = jax.tree_util.tree_structure(state)
  want = jax.tree_util.tree_structure(abstract_state)
  if got != want:
    raise ValueError(f"restored tree {got} differs from the expected {want}")
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(abstract_state)):
    if np.shape(a) != tuple(b.shape):
      raise ValueError(f"restored shape {np.shape(a)} differs from the expected {b.shape}")
