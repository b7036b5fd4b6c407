"""Compiled programs and compile time of a first pass over the ViT-B config's training shapes.

  python -m bench.compile_ranges [--config_arg coarse] [--steps N]

Per-axis kernel ranges (``configs/vit_b_mspe.py``) square the shapes per kernel. This runs the
MSPE step of a random ViT-Ti/16 at 224 px (patch 16, 14x14 grid: the shapes are ViT-B's, the
encoder is smaller) with the config's base sizes and subsets, stepping so that every shape of
every subset is drawn (step ``s`` draws shape ``s mod |subset|`` of each kernel), in a fresh
process with an empty compilation cache. Prints one JSON line: shapes, programs by kind,
XLA compile seconds, wall seconds of the pass, and the steady step time.
"""

import argparse
import json
import os
import tempfile
import time

import jax

from bench import common
from configs import vit_b_mspe
from mspe_jax import jax_utils, terms
from mspe_jax.terms import Term


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--config_arg", default="")
  p.add_argument("--batch", type=int, default=2)
  a = p.parse_args()
  cfg = vit_b_mspe.get_config(a.config_arg or None)
  tmp = tempfile.mkdtemp()
  jax_utils.enable_compilation_cache(os.path.join(tmp, "cache"))
  jax_utils.CompileCounter.install()
  path = common.random_checkpoint("Ti/16", os.path.join(tmp, "ti16.npz"))
  step = common.OurStep(path, [224], a.batch, base_sizes=tuple(cfg.mspe.base_sizes),
                        freeze_native_kernel=cfg.mspe.freeze_native_kernel)
  subsets = terms.subsets_from_config(cfg.mspe, step.model)
  native = (step.model.image_size,) * 2
  native_k = step.model.plan(*native).kernel_index
  t0 = time.perf_counter()
  for s in range(max(len(x) for x in subsets)):
    w = {}
    for k, subset in enumerate(subsets):
      key = (k, subset[s % len(subset)])
      w[key] = w.get(key, 0.0) + 1.0
    w[(native_k, native)] = w.get((native_k, native), 0.0) + cfg.mspe.lam
    step.terms = [Term(k, hw, v) for (k, hw), v in sorted(w.items())]
    step()
  wall = time.perf_counter() - t0
  print(json.dumps({
      "config": f"configs/vit_b_mspe.py{':' + a.config_arg if a.config_arg else ''}",
      "base_sizes": list(cfg.mspe.base_sizes),
      "kernel_ranges": [list(r) for r in cfg.mspe.kernel_ranges],
      "range_step": cfg.mspe.range_step, "shapes": [len(x) for x in subsets],
      "programs_by_kind": step.step.compiled_programs(),
      "xla_compile_s": jax_utils.CompileCounter.seconds(),
      "first_pass_steps": max(len(x) for x in subsets), "first_pass_wall_s": wall,
      "steady_step_s": common.median_seconds(step, 3, warmup=1),
      "machine": f"{jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} cores",
      "batch": a.batch, "jax": jax.__version__}))


if __name__ == "__main__":
  main()
