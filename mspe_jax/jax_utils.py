"""Devices, sharding, the persistent compilation cache, and counting compilations."""

from __future__ import annotations

import logging
import os
import threading

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

DATA_AXIS = "data"
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (global) devices with the batch axis ``data``."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch(global_batch: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(f"Global batch size {global_batch} is not divisible by the {n} devices "
                     f"({jax.devices()[0].platform}); use a multiple of {n}.")


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """This host's numpy batch -> global arrays sharded along ``data`` (multi-host safe)."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def replicate(tree, mesh: Mesh):
  """Puts every leaf of ``tree`` on all devices of ``mesh`` (replicated)."""
  sharding = replicated(mesh)
  return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), tree)


def abstract_like(tree, sharding):
  """``jax.ShapeDtypeStruct`` leaves with ``sharding`` (what orbax restores onto)."""
  def leaf(x):
    x = np.asarray(x) if not hasattr(x, "dtype") else x
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)
  return jax.tree_util.tree_map(leaf, tree)


def enable_compilation_cache(directory: str | None) -> None:
  """Turns on JAX's persistent compilation cache in ``directory`` (every program cached)."""
  if not directory:
    return
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  log.info("Persistent compilation cache: %s", directory)


class CompileCounter:
  """Counts XLA programs built in this process: ``compiled`` new, ``loaded`` from the cache.

  Listens to JAX's monitoring events, so it sees every program, ours and JAX's own.
  """
  _lock = threading.Lock()
  _requests = 0
  _hits = 0
  _seconds = {"trace": 0.0, "lower": 0.0, "backend_compile": 0.0}
  _installed = False

  @classmethod
  def install(cls) -> None:
    with cls._lock:
      if cls._installed:
        return
      cls._installed = True

    phases = {_TRACE: "trace", _LOWER: "lower", _BACKEND_COMPILE: "backend_compile"}

    def on_duration(event, duration, **kwargs):
      del kwargs
      if event in phases:
        with cls._lock:
          cls._seconds[phases[event]] += duration
          cls._requests += event == _BACKEND_COMPILE

    def on_event(event, **kwargs):
      del kwargs
      if event == _CACHE_HIT:
        with cls._lock:
          cls._hits += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)

  @classmethod
  def start(cls):
    """Installs the counter; returns ``counts()`` giving the programs built since this call."""
    cls.install()
    before = cls.snapshot()
    return lambda: {k: v - before[k] for k, v in cls.snapshot().items()}

  @classmethod
  def snapshot(cls) -> dict[str, int]:
    with cls._lock:
      return {"programs": cls._requests, "loaded_from_cache": cls._hits,
              "compiled": cls._requests - cls._hits}

  @classmethod
  def seconds(cls) -> dict[str, float]:
    """Seconds spent so far tracing to jaxprs, lowering to MLIR, and in the backend compile
    (which includes a persistent-cache lookup and load)."""
    with cls._lock:
      return dict(cls._seconds)
