"""Time from a fresh process to the end of the first MSPE step (compiles included).

  python -m bench.first_step --cache DIR --npz FILE [--resolutions 56,112,168,224]

Run twice with the same ``--cache``: cold, then warm persistent compilation cache.
Prints one JSON line.
"""

import argparse
import json
import time

T0 = time.perf_counter()

import jax  # noqa: E402

from bench import common  # noqa: E402
from mspe_jax import jax_utils  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--cache", required=True)
  p.add_argument("--npz", required=True)
  p.add_argument("--resolutions", default="56,112,168,224")
  p.add_argument("--batch", type=int, default=8)
  a = p.parse_args()
  jax_utils.enable_compilation_cache(a.cache)
  jax_utils.CompileCounter.install()
  t_start = time.perf_counter()
  step = common.OurStep(a.npz, [int(r) for r in a.resolutions.split(",")], a.batch)
  step()
  t_end = time.perf_counter()
  print(json.dumps({"seconds_to_first_step": t_end - t_start,
                    "seconds_including_imports": t_end - T0,
                    **jax_utils.CompileCounter.snapshot(),
                    "phase_seconds": jax_utils.CompileCounter.seconds(),
                    "steady_step_seconds": common.median_seconds(step, 2, warmup=0),
                    "backend": jax.default_backend()}))


if __name__ == "__main__":
  main()
