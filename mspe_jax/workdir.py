"""A training workdir as a model: ``model_config.json`` plus the newest orbax checkpoint.

    model, params, step = mspe_jax.load_from_workdir("runs/demo")

``model_config.json`` holds the ViT's architecture fields and its patch-embedding policy;
files written before the policy was a value (flat ``patch_embed``, ``leftover``,
``mspe_base_sizes``, ... fields) are read too.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax

from mspe_jax.checkpointer import Checkpointer
from mspe_jax.patch_embed import PatchEmbed

MODEL_CONFIG = "model_config.json"
CHECKPOINTS = "checkpoints"
_LEGACY_POLICY_FIELDS = {"patch_embed": "mode", "leftover": "leftover",
                         "resize_method": "resize_method", "antialias": "antialias",
                         "kernel_resize_method": "kernel_resize_method",
                         "mspe_base_sizes": "base_sizes",
                         "freeze_native_kernel": "freeze_native_kernel", "mspe_kernel": "kernel"}


def save_model_config(workdir: str, model) -> str:
  """Writes the ViT's constructor arguments to ``<workdir>/model_config.json`` (atomically)."""
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.name not in ("parent", "name", "dtype")}
  fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
  fields["policy"] = model.policy.to_dict()
  path = os.path.join(workdir, MODEL_CONFIG)
  with open(path + ".tmp", "w") as f:
    json.dump(fields, f, indent=1, sort_keys=True)
  os.replace(path + ".tmp", path)
  return path


def load_model_config(workdir: str):
  """The ``ViT`` a training run in ``workdir`` used."""
  from mspe_jax.vit import ViT
  path = os.path.join(workdir, MODEL_CONFIG)
  if not os.path.exists(path):
    raise ValueError(f"{path} not found: {workdir} is not a training workdir of this project "
                     "(train.py writes model_config.json and checkpoints/ there).")
  with open(path) as f:
    fields = json.load(f)
  policy = fields.pop("policy", None)
  if policy is None:  # the flat fields of earlier versions
    policy = {new: fields.pop(old) for old, new in _LEGACY_POLICY_FIELDS.items() if old in fields}
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  return ViT(**fields, policy=PatchEmbed(**policy))


def is_workdir(path: str) -> bool:
  return os.path.exists(os.path.join(path, MODEL_CONFIG))


def load_from_workdir(workdir: str, step: int | None = None):
  """``(model, params, step)`` of a training run: its ViT and its newest readable checkpoint
  (or ``step``), with arrays on this machine's first device (a GPU checkpoint restores on a
  CPU)."""
  model = load_model_config(workdir)
  ckpt = Checkpointer(os.path.join(workdir, CHECKPOINTS))
  try:
    state, step = ckpt.restore_as_saved(step)
  finally:
    ckpt.close()
  return model, jax.device_get(state["params"]), step
