"""TensorFlow on the host for input pipelines: kept off the accelerators (JAX owns them),
graph functions traced as plain TF ops, and this process's place among the hosts."""

from __future__ import annotations


def tf_without_accelerators():
  """Imports TensorFlow with every accelerator hidden from it (JAX owns them)."""
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):
    pass  # already initialised, or no such device type
  return tf


def plain(fn):
  """Traces ``fn`` as plain TF ops, without AutoGraph (which re-reads source files: a file
  edited while a run is going would be mis-parsed, and there is no control flow to convert)."""
  return tf_without_accelerators().autograph.experimental.do_not_convert(fn)


def num_processes() -> int:
  import jax
  return jax.process_count()


def process_index() -> int:
  import jax
  return jax.process_index()
