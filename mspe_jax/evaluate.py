"""``run(config, workdir)``: load the models, sweep every method, write tables and plots."""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import os

import jax

from mspe_jax import checkpoints, ckpt_manager, data, eval_lib, jax_utils, report

log = logging.getLogger(__name__)

ROUTING = ("Eq. 10: the kernel whose base size is nearest to sqrt(kh*kw) of the effective "
           "kernel (h//N, w//N); ties to the smaller base")


def parse_models(spec: str) -> dict[str, str]:
  """``"mspe=runs/demo,mspe_distill=runs/d.npz"`` -> ``{"mspe": ..., "mspe_distill": ...}``."""
  out = {}
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, sep, path = part.partition("=")
    if not sep or not name or not path:
      raise ValueError(f"Bad MSPE model spec {part!r}: expected name=path.")
    out[name.strip()] = path.strip()
  return out


def _sha(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()[:16]


def load_mspe(path: str, overrides: dict):
  """``(model, params, identity)`` from a training workdir (orbax) or an exported ``.npz``."""
  if path.endswith(".npz"):
    model, params = checkpoints.load_pretrained(path, patch_embed="mspe", **overrides)
    return model, params, f"{path} (sha256 {_sha(path)})"
  model, params, step = ckpt_manager.load_from_workdir(path)
  if overrides:
    model = model.clone(**overrides)
  return model, params, f"orbax checkpoint step {step} in {os.path.abspath(path)}"


def run(config, workdir: str) -> dict:
  out_dir = os.path.join(workdir, "eval")
  mesh = jax_utils.make_mesh()
  jax_utils.check_batch(config.batch_size, mesh)
  overrides = {k: v for k, v in (("leftover", config.leftover),
                                 ("resize_method", config.resize_method)) if v}
  base, base_params = checkpoints.load_pretrained(config.pretrained, **overrides)
  identities = {"pretrained": f"{config.pretrained} (sha256 {_sha(config.pretrained)})"}
  mspe_models, params_by_key = {}, {"pretrained": base_params}
  for name, path in parse_models(config.mspe_models).items():
    model, params, identities[name] = load_mspe(path, overrides)
    mspe_models[name], params_by_key[name] = model, params
  names = list(config.methods) + list(mspe_models)
  per_kernel = [n.strip() for n in config.per_kernel.split(",") if n.strip()]
  methods = eval_lib.make_methods(base, names, mspe_models, per_kernel=per_kernel)
  shapes = eval_lib.make_shapes(config)
  native = base.image_size if isinstance(base.image_size, int) else base.image_size[0]
  resize_method = config.resize_method or base.resize_method
  sweep = eval_lib.Sweep(methods, shapes, (native, native), mesh=mesh,
                         resize_method=resize_method, antialias=config.antialias)

  source = data.get_source(config.data.name, config.data.split, config.data.data_dir or None)
  n = min(config.eval_examples or source.num_examples, source.num_examples)
  batches = data.eval_batches(source, batch_size=config.batch_size, image_size=native,
                              crop_fraction=config.crop_fraction, max_examples=n)
  compiles_before = jax_utils.CompileCounter.snapshot()
  jax_utils.CompileCounter.install()
  correct, total = sweep.run(params_by_key, batches, math.ceil(n / config.batch_size),
                             progress=config.progress_bar)
  rows = eval_lib.rows(sweep, correct, total, mspe_models)
  protocol = {
      "dataset": config.data.name, "split": config.data.split, "num_images": int(total),
      "native_resolution": native,
      "eval_preprocess": (f"resize the shorter side to {native}/{config.crop_fraction} px, "
                          f"central crop {native} px (tf.image bilinear, antialias)"),
      "low_resolution_input": (f"the {native} px crop resized to h x w on device with "
                               f"jax.image.resize({resize_method!r}, antialias="
                               f"{config.antialias})"),
      "resize_method": resize_method, "antialias": config.antialias,
      "routing": ROUTING, "leftover": base.leftover, "checkpoints": identities,
      "compiled_eval_programs": sweep.compiled_programs(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "jax": jax.__version__, "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
  }
  paths = report.write(out_dir, rows, protocol)
  after = jax_utils.CompileCounter.snapshot()
  log.info("Eval compiled %s sweep programs (%d XLA programs in all).",
           sweep.compiled_programs(), after["programs"] - compiles_before["programs"])
  return {"rows": rows, "protocol": protocol, "paths": paths, "markdown": open(paths["md"]).read()}
