"""Runs the entry points as a user does (subprocess), with a shared compilation cache."""

import ast
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, config, workdir, overrides=(), *, devices=1, timeout=600, check=True,
               flags=()):
  """``python <script> --config <config> --workdir <workdir> --config.k=v ... <flags>``."""
  env = dict(os.environ)
  env["PYTHONUNBUFFERED"] = "1"
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  cmd = [sys.executable, os.path.join(REPO, script), f"--config={config}",
         f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in dict(overrides).items()]
  cmd += list(flags)
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-6000:]}")
  return proc


def summary(proc):
  """The dict train.py prints last."""
  for line in reversed(proc.stdout.strip().splitlines()):
    if line.startswith("{"):
      return ast.literal_eval(line)
  raise AssertionError(f"no summary in output:\n{proc.stdout[-2000:]}")


def npz(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}
