"""Benchmarks, as ratios measured in one run: ``make bench`` (or ``python -m bench.run``).

  python -m bench.run                                  # 2 CPU cores: a few minutes
  python -m bench.run --variants Ti/16,S/16,B/16 --batch 64 --repeats 10   # an accelerator

Prints a table, writes bench/results.json and rewrites the generated part of
BENCHMARKS.md. Every timing is a median over ``--repeats`` after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from bench import common
from mspe_jax import flops, geometry, jax_utils, npz, pi_resize, terms
from mspe_jax.patch_embed import PatchEmbed

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
SECTION_KEYS = {"train": "train", "pi": "pi_resize", "compile": "compile",
                "inference": "inference"}


def train_steps(args, variant, ckpt_path, res):
  """Ours vs the PyTorch reference, fine-tuning and distillation steps, FLOP utilisation.

  All steps are built first and then timed round-robin, so the ratios compare like with like.
  """
  out = {"variant": variant, "batch": args.batch, "resolutions": res}
  ours = common.OurStep(ckpt_path, res, args.batch)
  out["ours_terms"] = [t.name for t in ours.terms]
  try:
    out["flops_per_step"] = ours.flops()
  except common.NoCostAnalysis as e:
    print(f"FLOPs not counted: {e}")
    out["flops_per_step"] = None
  timed = {"ours": ours, "full": common.OurStep(ckpt_path, res, args.batch, mode="full")}
  if args.distill:
    timed["distill"] = common.OurStep(ckpt_path, res, args.batch, loss="distill")
  n = 2048 if jax.default_backend() == "cpu" else 8192  # the matmul ceiling, timed alongside
  a = jax.numpy.asarray(np.random.default_rng(0).standard_normal((n, n)), jax.numpy.float32)
  matmul = jax.jit(lambda x: x @ x)
  timed["matmul"] = lambda: matmul(a).block_until_ready()
  torch_step = _torch_step(args, ckpt_path, res)
  if torch_step is not None:
    timed["torch"] = torch_step
  medians = common.interleaved_medians(timed, args.repeats, warmup=2)
  out.update({f"{name}_s": seconds for name, seconds in medians.items()})
  out["matmul_ceiling_flops"] = 2.0 * n ** 3 / out.pop("matmul_s")
  out.setdefault("torch_s", None)
  out["torch_device"] = getattr(torch_step, "device", None)
  return out


def _torch_step(args, ckpt_path, res):
  """The reference step as a callable (``None`` when torch is not installed)."""
  try:
    import torch
  except ImportError:
    return None
  from bench.torch_reference import TorchMSPE
  torch.set_num_threads(os.cpu_count())
  torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
  torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
  device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
  model = npz.load_pretrained(ckpt_path, "mspe")[0]
  ref = TorchMSPE(ckpt_path, model.base_sizes, model.num_heads, device=device)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.uniform(-1, 1, (args.batch, 3, 224, 224)).astype(np.float32)).to(device)
  y = torch.from_numpy(rng.integers(0, 1000, args.batch)).to(device)

  def step():
    ref.step(x, y, res, native=224)
    if device == "cuda":
      torch.cuda.synchronize()
  step.device = device
  return step


def pi_resize_section(args, ckpt_path, res, step_seconds):
  """Cached PI-resize vs recomputing the pseudo-inverse per call, and its share of a step."""
  kernel = np.random.default_rng(0).standard_normal((16, 16, 3, 768))
  rows = []
  for new in [(4, 4), (32, 32), (9, 18)]:
    pi_resize.resample_kernel(kernel, new)  # fill the cache

    def naive(new=new):  # what a naive port does: build B and its pinv on every call
      b = np.kron(*(np.asarray(jax.image.resize(np.eye(o), (o, n), "bilinear")).T
                    for o, n in zip((16, 16), new)))
      np.linalg.pinv(b.T) @ kernel.reshape(256, -1)
    cached = common.median_seconds(lambda new=new: pi_resize.resample_kernel(kernel, new),
                                   args.repeats)
    uncached = common.median_seconds(naive, args.repeats)
    rows.append({"to": list(new), "cached_ms": 1e3 * cached, "naive_ms": 1e3 * uncached,
                 "speedup": uncached / cached})
  model = npz.load_pretrained(ckpt_path, "mspe")[0]
  k = jax.numpy.asarray(kernel[..., :model.width], jax.numpy.float32)
  sizes = [(r // model.grid[0],) * 2 for r in res]
  base = model.base_sizes
  f = jax.jit(lambda k: [pi_resize.resample_kernel(k[:b, :b], s) for b, s in zip(base, sizes)])
  in_step = common.median_seconds(lambda: jax.block_until_ready(f(k)), args.repeats, warmup=2)
  return {"rows": rows, "share_of_step": in_step / step_seconds}


def compile_section(args, tmp):
  """Programs compiled in a 200-step run with random draws; cold vs warm first step."""
  from configs.vit_b_mspe import PAPER_SUBSETS as SUBSETS
  ckpt_path = common.random_checkpoint("Ti/16", os.path.join(tmp, "tiny.npz"))
  step = common.OurStep(ckpt_path, [56, 112, 168, 224], 2)
  subsets = terms.validate_subsets(SUBSETS, step.model)
  before = jax_utils.CompileCounter.snapshot()["programs"]
  for s in range(args.compile_steps):
    step.terms = terms.draw_terms(s, 0, subsets, step.model, lam=1.0)
    step()
  programs = jax_utils.CompileCounter.snapshot()["programs"] - before
  cache = os.path.join(tmp, "cache")
  runs = []
  for _ in range(2):
    proc = subprocess.run([sys.executable, "-m", "bench.first_step", "--cache", cache,
                           "--npz", ckpt_path], capture_output=True, text=True,
                          cwd=os.path.dirname(HERE), check=True)
    runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  return {"steps": args.compile_steps, "programs_by_kind": step.step.compiled_programs(),
          "programs_during_run": programs, "subset_sizes": [len(s) for s in subsets],
          "target": sum(len(s) for s in subsets) + 3,
          "cold_first_step_s": runs[0]["seconds_to_first_step"],
          "warm_first_step_s": runs[1]["seconds_to_first_step"],
          "warm_compiled": runs[1]["compiled"],
          "cold_phase_seconds": runs[0]["phase_seconds"],
          "warm_phase_seconds": runs[1]["phase_seconds"],
          "steady_step_s": runs[1]["steady_step_seconds"]}


def inference_section(args, ckpt_path, sizes):
  """Images/s of routed MSPE at each size vs image resize (upsampling to native)."""
  model, params = npz.load_pretrained(ckpt_path, "mspe")
  rows = []
  x_native = np.random.default_rng(0).uniform(-1, 1, (args.batch, 224, 224, 3)).astype(np.float32)
  f_mspe = jax.jit(lambda p, x: model.apply({"params": p}, x)[0])
  f_img = jax.jit(lambda p, x: model.apply({"params": p}, geometry.resize_images(
      x, (224, 224), "bilinear", True), PatchEmbed("vanilla"))[0])
  params = jax.device_put(params)
  for r in sizes:
    x = jax.numpy.asarray(x_native[:, :r, :r])
    t = common.interleaved_medians(
        {"mspe": lambda x=x: f_mspe(params, x).block_until_ready(),
         "img": lambda x=x: f_img(params, x).block_until_ready()}, args.repeats, 2)
    t_m, t_i = t["mspe"], t["img"]
    fl = flops.vit_flops(model, model.plan(r, r))
    rows.append({"resolution": r, "mspe_img_s": args.batch / t_m, "img_resize_img_s":
                 args.batch / t_i, "patch_gflops": fl["patch_gflops"], "gflops": fl["gflops"]})
  return rows


def render(results) -> str:
  lines = [f"Machine: {results['machine']}. Command: `{results['command']}`. "
           f"Date: {results['date']}. float32 ({results['precision']}).", ""]
  lines += ["| MSPE train step | batch | ours img/s | PyTorch ref img/s | ours / ref | MSPE / "
            "full fine-tune time | distill / CE time | FLOP utilisation |",
            "|---|---|---|---|---|---|---|---|"]
  for t in results.get("train", []):
    ours = t["batch"] / t["ours_s"]
    ref = t["batch"] / t["torch_s"] if t.get("torch_s") else None
    ceiling = t.get("matmul_ceiling_flops", results["matmul_ceiling_flops"])
    util = t["flops_per_step"] / t["ours_s"] / ceiling if t.get("flops_per_step") else None
    distill = f"{t['distill_s'] / t['ours_s']:.2f}" if "distill_s" in t else "-"
    lines.append(f"| {t['variant']} @224, res {'/'.join(map(str, t['resolutions']))} + native | "
                 f"{t['batch']} | {ours:.2f} | {'-' if ref is None else f'{ref:.2f}'} | "
                 f"{'-' if ref is None else f'{ours / ref:.2f}x'} | "
                 f"{t['ours_s'] / t['full_s']:.2f} | {distill} | "
                 + ("not counted |" if util is None else
                    f"{100 * util:.0f}% of {ceiling / 1e12:.2f} TFLOP/s |"))
  if "compile" in results:
    lines += _compile_lines(results["compile"])
  if "pi_resize" in results:
    lines += _pi_lines(results["pi_resize"])
  if "inference" in results:
    lines += _inference_lines(results["inference"])
  return "\n".join(lines)


def _compile_lines(c):
  return ["", f"Compilation in a {c['steps']}-step run: {c['programs_by_kind']} "
            f"with random draws over subsets of sizes {c['subset_sizes']} (target <= "
            f"{c['target']}); first step {c['cold_first_step_s']:.1f} s with a cold cache, "
            f"{c['warm_first_step_s']:.1f} s warm (ratio "
            f"{c['warm_first_step_s'] / c['cold_first_step_s']:.2f}, {c['warm_compiled']} "
            f"programs compiled when warm)."] + _phase_lines(c)


def _phase_lines(c):
  if "cold_phase_seconds" not in c:
    return [""]
  row = lambda name, p, first: (f"| {name} | {first:.1f} | {p['trace']:.1f} | {p['lower']:.1f} | "
                                f"{p['backend_compile']:.1f} | {c['steady_step_s']:.1f} |")
  return ["", "| first step | total s | tracing s | lowering s | XLA compile or cache load s | "
          "one step, steady state s |", "|---|---|---|---|---|---|",
          row("cold cache", c["cold_phase_seconds"], c["cold_first_step_s"]),
          row("warm cache", c["warm_phase_seconds"], c["warm_first_step_s"]), ""]


def _pi_lines(p):
  lines = ["", "| PI-resize 16 -> (numpy, float64) | cached ms | recomputed pinv ms | speed-up |",
           "|---|---|---|---|"]
  lines += [f"| {r['to'][0]}x{r['to'][1]} | {r['cached_ms']:.3f} | {r['naive_ms']:.1f} | "
            f"{r['speedup']:.1f}x |" for r in p["rows"]]
  return lines + ["", f"PI-resize share of an MSPE step (the K kernel matmuls, jitted): "
                  f"{100 * p['share_of_step']:.2f}%.", ""]


def _inference_lines(rows):
  lines = ["", "| inference res | MSPE img/s | image resize img/s | MSPE / resize | patch GFLOPs | "
           "total GFLOPs |", "|---|---|---|---|---|---|"]
  return lines + [f"| {r['resolution']} | {r['mspe_img_s']:.1f} | {r['img_resize_img_s']:.1f} | "
                  f"{r['mspe_img_s'] / r['img_resize_img_s']:.2f} | {r['patch_gflops']:.3f} | "
                  f"{r['gflops']:.2f} |" for r in rows]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--variants", default="Ti/16,S/16")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--resolutions", default="56,112,168,224")
  p.add_argument("--compile-steps", type=int, default=200)
  p.add_argument("--precision", choices=["float32", "tf32"], default="float32")
  p.add_argument("--sections", default="train,pi,compile,inference")
  p.add_argument("--no-distill", dest="distill", action="store_false")
  p.add_argument("--update", action="store_true",
                 help="keep the other sections of an existing --out file, rerun --sections")
  p.add_argument("--out", default=os.path.join(HERE, "results.json"))
  p.add_argument("--markdown", default=os.path.join(os.path.dirname(HERE), "BENCHMARKS.md"))
  args = p.parse_args(argv)
  if args.precision == "float32":
    jax.config.update("jax_default_matmul_precision", "highest")
  jax_utils.CompileCounter.install()
  sections = set(args.sections.split(","))
  res = [int(r) for r in args.resolutions.split(",")]
  given = argv if argv is not None else sys.argv[1:]
  results = {"command": " ".join(["python -m bench.run", *given]),
             "date": time.strftime("%Y-%m-%d"), "precision": args.precision,
             "machine": f"{jax.device_count()} x {jax.devices()[0].device_kind} "
                        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
             "jax": jax.__version__, "train": []}
  if args.update and os.path.exists(args.out):
    with open(args.out) as f:
      previous = json.load(f)
    rerun = {SECTION_KEYS[name] for name in sections}
    results = {**{k: v for k, v in previous.items() if k not in rerun},
               "command": f"{previous['command']}; then {results['command']}",
               "train": [] if "train" in sections else previous.get("train", [])}
  ceiling_n = 8192 if jax.default_backend() == "gpu" else 1024
  results["matmul_ceiling_flops"] = common.matmul_ceiling(ceiling_n)
  def save():
    with open(args.out, "w") as f:
      json.dump(results, f, indent=1)

  with tempfile.TemporaryDirectory() as tmp:
    jax_utils.enable_compilation_cache(os.path.join(tmp, "jax_cache"))
    first = common.random_checkpoint(args.variants.split(",")[0],
                                     os.path.join(tmp, "first.npz"))
    if "train" in sections:
      for variant in args.variants.split(","):
        name = variant.replace("/", "_") + ".npz"
        ckpt_path = common.random_checkpoint(variant, os.path.join(tmp, name))
        print(f"train step {variant} ...", flush=True)
        results["train"].append(train_steps(args, variant, ckpt_path, res))
        save()
    if "pi" in sections:
      print("pi-resize ...", flush=True)
      step_s = (results["train"][0]["ours_s"] if results["train"] else
                common.median_seconds(common.OurStep(first, res, args.batch), args.repeats, 2))
      results["pi_resize"] = pi_resize_section(args, first, res, step_s)
      save()
    if "compile" in sections:
      print("compilation ...", flush=True)
      results["compile"] = compile_section(args, tmp)
      save()
    if "inference" in sections:
      print("inference ...", flush=True)
      results["inference"] = inference_section(args, first, [28, 56, 112, 168, 224])
      save()
  text = render(results)
  print(text)
  if args.markdown and os.path.exists(args.markdown):
    doc = open(args.markdown).read()
    if BEGIN in doc and END in doc:
      doc = doc[:doc.index(BEGIN) + len(BEGIN)] + "\n" + text + "\n" + doc[doc.index(END):]
      with open(args.markdown, "w") as f:
        f.write(doc)


if __name__ == "__main__":
  main()
