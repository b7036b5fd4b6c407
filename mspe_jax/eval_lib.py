"""Evaluation: ``evaluate(config, workdir)`` sweeps every method and writes tables and plots.

The model evaluated is the workdir's own training run (``model_config.json`` and its newest
checkpoint; named ``config.model_name`` in the tables), next to the baselines on
``config.pretrained`` and any models in ``config.compare`` (``name: workdir or .npz``). The
output names the checkpoint of each (step and directory, or the file's sha256). The sweep
itself is ``mspe_jax.sweep``; tables and plots are ``mspe_jax.report``.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import os

import jax

from mspe_jax import (
  data,
  geometry,
  jax_utils,
  npz,
  plots,
  report,
  scoring,
  segmentation,
  sweep,
  workdir,
)
from mspe_jax.patch_embed import ROUTING_RULES

log = logging.getLogger(__name__)

SEGMENTATION_SCORING = (
    "logits upsampled (bilinear) to the input size, then to the {native} px label map "
    "(MMSegmentation's protocol), argmax; one confusion matrix per (method, size) over every "
    "pixel not labelled {ignore}; mIoU, mAcc, F1 per class over the whole set, averaged over "
    "the classes present in the labels or predictions")

def describe_routing(models: dict) -> str:
  """The routing rule of the MSPE models in words (once if they share it)."""
  rules = {name: m.policy.routing for name, m in models.items()}
  if not rules:
    return "none (no MSPE model evaluated)"
  if len(set(rules.values())) == 1:
    return ROUTING_RULES[next(iter(rules.values()))]
  return "; ".join(f"{name}: {ROUTING_RULES[rule]}" for name, rule in rules.items())


def _sha(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()[:16]


def load_model(path: str, overrides: dict, mode: str = "mspe"):
  """``(model, params, identity)`` from a training workdir (orbax) or an exported ``.npz``
  (read with policy ``mode``); ``overrides`` replace fields of its patch-embedding policy
  (leftover, resize method)."""
  if path.endswith(".npz"):
    model, params = npz.load_pretrained(path, mode, **overrides)
    return model, params, f"{path} (sha256 {_sha(path)})"
  if not workdir.is_workdir(path):
    raise ValueError(f"{path} is neither an .npz file nor a training workdir (no "
                     f"{workdir.MODEL_CONFIG}): train.py writes one, or give the exported "
                     "<workdir>/model.npz.")
  model, params, step = workdir.load_from_workdir(path)
  if overrides:
    model = model.clone(policy=model.policy.replace(**overrides))
  return model, params, f"orbax checkpoint step {step} in {os.path.abspath(path)}"


def evaluate(config, workdir_path: str, out_dir: str | None = None) -> dict:
  """Runs the sweep of ``config`` with the model trained in ``workdir_path``; writes
  ``results.{md,json,csv}`` and plots to ``out_dir`` (default ``<workdir>/eval``). Returns
  rows, protocol, paths and the markdown."""
  mesh = jax_utils.make_mesh()
  jax_utils.check_batch(config.batch_size, mesh)
  overrides = {k: v for k, v in (("leftover", config.leftover),
                                 ("resize_method", config.resize_method)) if v}
  base, base_params = npz.load_pretrained(config.pretrained, "vanilla", **overrides)
  identities = {"pretrained": f"{config.pretrained} (sha256 {_sha(config.pretrained)})"}
  mspe_paths = {}
  if config.model_name:
    mspe_paths[config.model_name] = workdir_path
  mspe_paths.update({k: v for k, v in config.compare.items() if v})
  mspe_models, params_by_key = {}, {"pretrained": base_params}
  for name, path in mspe_paths.items():
    model, params, identities[name] = load_model(path, overrides)
    mspe_models[name], params_by_key[name] = model, params
    log.info("Evaluating %s: %s", name, identities[name])
  models = {"pretrained": base, **mspe_models}
  if config.flexivit:  # a flexi-trained ViT: the real FlexiViT row and series
    models[sweep.FLEXIVIT], params_by_key[sweep.FLEXIVIT], identities[sweep.FLEXIVIT] = (
        load_model(config.flexivit, overrides, mode="vanilla"))
    log.info("Evaluating %s: %s", sweep.FLEXIVIT, identities[sweep.FLEXIVIT])
  names = (list(config.methods) + ([sweep.FLEXIVIT] if config.flexivit else [])
           + list(mspe_models))
  per_kernel = [config.model_name] if config.model_name and config.per_kernel else []
  routings = {config.model_name: config.routings} if config.model_name and config.routings else {}
  methods = sweep.make_methods(base.policy, names, mspe_models, per_kernel=per_kernel,
                               routings=routings, grid_baselines=config.grid_baselines,
                               fixed_grid=base.grid)
  methods += sweep.make_patch_methods(base.policy, config.patch_sizes, bool(config.flexivit))
  native = geometry.as_hw(base.image_size)
  shapes = sweep.make_shapes(config, native)
  resize_method = config.resize_method or base.policy.resize_method
  scorer = scoring.for_model(base, config.ignore_label)
  runner = sweep.Sweep(methods, shapes, models, native, mesh=mesh,
                       resize_method=resize_method, antialias=config.antialias, scorer=scorer)

  source = data.get_source(config.data.name, config.data.split, config.data.data_dir)
  n = min(config.eval_examples or source.num_examples, source.num_examples)
  batches = data.eval_batches(source, batch_size=config.batch_size, image_size=native[0],
                              crop_fraction=config.crop_fraction, max_examples=n)
  compiles = jax_utils.CompileCounter.start()
  sums, total = runner.run(params_by_key, batches, math.ceil(n / config.batch_size),
                           progress=config.progress_bar)
  rows = sweep.rows(runner, sums, total, mspe_models)
  protocol = {
      "dataset": config.data.name, "split": config.data.split, "num_images": int(total),
      "native_resolution": native[0],
      "eval_preprocess": (f"resize the shorter side to {native[0]}/{config.crop_fraction} px, "
                          f"central crop {native[0]} px (tf.image bilinear, antialias)"),
      "low_resolution_input": (f"the {native[0]} px crop resized to h x w on device with "
                               f"jax.image.resize({resize_method!r}, antialias="
                               f"{config.antialias})"),
      "resize_method": resize_method, "antialias": config.antialias,
      "routing": describe_routing(mspe_models), "leftover": base.policy.leftover,
      "checkpoints": identities,
      "metrics": list(scorer.metrics),
      **({"scoring": SEGMENTATION_SCORING.format(native=native[0], ignore=config.ignore_label)}
         if base.task == "segmentation" else {}),
      "compiled_eval_programs": runner.compiled_programs(),
      "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "jax": jax.__version__, "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
  }
  out_dir = out_dir or os.path.join(workdir_path, "eval")
  paths = report.write(out_dir, rows, protocol)
  if base.task == "segmentation" and config.masks:
    paths["masks"] = mask_picture(config, runner, params_by_key, source, native, out_dir,
                                  protocol)
  log.info("Eval compiled %s sweep programs (%d XLA programs in all).",
           runner.compiled_programs(), compiles()["programs"])
  with open(paths["md"]) as f:
    markdown = f.read()
  return {"rows": rows, "protocol": protocol, "paths": paths, "markdown": markdown}


def mask_picture(config, runner, params_by_key, source, native, out_dir: str,
                 protocol: dict) -> str:
  """``masks.png``: the first ``config.mask_examples`` evaluation images at each size of
  ``config.masks``, and every method's predicted mask there next to the ground truth."""
  batch = next(data.eval_batches(source, batch_size=config.batch_size, image_size=native[0],
                                 crop_fraction=config.crop_fraction,
                                 max_examples=config.mask_examples))
  count = min(config.mask_examples, int(batch["mask"].sum()))
  names = [m.name for m in runner.methods.values() if m.runs("square")]
  predictions = {}
  for name in names:
    for size in config.masks:
      hw = (size, size)
      if runner.runnable(runner.methods[name], hw):
        logits = runner.outputs(params_by_key, batch, name, hw)
        input_hw = runner.input_hw(runner.methods[name], hw)
        pred = segmentation.predict(logits, input_hw, batch["label"].shape[1:3])
        predictions[(name, size)] = jax.device_get(pred)[:count]
  inputs = {size: jax.device_get(geometry.resize_images(
      batch["image"][:count], (size, size), runner.resize_method, runner.antialias))
      for size in config.masks}
  return plots.masks(os.path.join(out_dir, "masks.png"), inputs, batch["label"][:count],
                     predictions, names, protocol)
