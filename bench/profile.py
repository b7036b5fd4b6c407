"""Where the time of one MSPE train step goes on XLA:CPU, by kind of operation.

  python -m bench.profile [--variant Ti/16] [--batch 8]

Traces one step with ``jax.profiler`` (XLA's per-op trace events switched on) and sums the
op time of every thread by kind: YNNPACK matmul fusions, other dots, everything else
(elementwise, reduction and copy fusions). The BENCHMARKS.md profile table is its output.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_xprof_traceme=true").strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from bench import common  # noqa: E402

WRAPPERS = ("ThunkExecutor", "SlinkyThreadPool", "end: ", "$")


def kind(op: str) -> str:
  if op.startswith("ynn_fusion") or op.startswith("xnn_fusion"):
    return "matmuls in YNNPACK/XNNPACK fusions"
  if re.match(r"(dot|dot_general|convolution)([._]\d+)?$", op):
    return "other dots (XLA's own loops)"
  return "elementwise, reduction and copy fusions"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--variant", default="Ti/16")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--resolutions", default="56,112,168,224")
  args = p.parse_args(argv)
  jax.config.update("jax_default_matmul_precision", "highest")
  with tempfile.TemporaryDirectory() as tmp:
    npz = common.random_checkpoint(args.variant, os.path.join(tmp, "m.npz"))
    step = common.OurStep(npz, [int(r) for r in args.resolutions.split(",")], args.batch)
    step()
    step()
    with jax.profiler.trace(os.path.join(tmp, "trace")):
      t = time.perf_counter()
      step()
      wall = time.perf_counter() - t
    path = sorted(glob.glob(os.path.join(tmp, "trace", "**", "*.xplane.pb"), recursive=True))[-1]
    data = jax.profiler.ProfileData.from_file(path)
  by_kind, by_op = collections.Counter(), collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if line.name == "python":
        continue
      for ev in line.events:
        if not ev.name.startswith(WRAPPERS):
          by_kind[kind(ev.name)] += ev.duration_ns / 1e6
          by_op[re.sub(r"[._]\d+$", "", ev.name)] += ev.duration_ns / 1e6
  total = sum(by_kind.values())
  print(f"{args.variant}, batch {args.batch}: one MSPE step {wall:.2f} s (traced); "
        f"{total / 1e3:.2f} s of op time summed over {jax.devices()[0].platform} threads")
  print("| ops | thread-ms | share |\n|---|---|---|")
  for name, ms in by_kind.most_common():
    print(f"| {name} | {ms:,.0f} | {100 * ms / total:.0f}% |")
  print("\nlargest op kinds:", ", ".join(f"{k} {v:,.0f} ms" for k, v in by_op.most_common(12)))


if __name__ == "__main__":
  main()
