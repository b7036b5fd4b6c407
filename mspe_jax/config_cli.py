"""Command-line config parsing with errors that name the offending field."""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import flags


def _load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_cli_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None) if arg else module.get_config()


def unknown_override(config, dotted: str) -> str | None:
  """A message if ``dotted`` (e.g. ``optim.lr``) is not a field of ``config``, else None."""
  node, walked = config, []
  for part in dotted.split("."):
    keys = list(node.keys()) if hasattr(node, "keys") else []
    if part not in keys:
      where = ".".join(walked) or "the config"
      return (f"Unknown config field {dotted!r}: {where} has no field {part!r}. "
              f"Its fields are: {', '.join(sorted(keys))}.")
    node, walked = node[part], walked + [part]
  return None


def parse_flags(argv):
  """absl flag parsing; a bad ``--config.x=y`` exits with a one-line error naming ``x``."""
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # noqa: BLE001  (flags.Error, AttributeError, KeyError, ...)
    spec = None
    for i, a in enumerate(argv):
      if a.startswith("--config="):
        spec = a.split("=", 1)[1]
      elif a == "--config" and i + 1 < len(argv):
        spec = argv[i + 1]
    message = None
    if spec:
      try:
        config = _load_config(spec)
      except Exception as e:  # noqa: BLE001
        message = f"Could not load the config {spec!r}: {type(e).__name__}: {e}"
      else:
        for a in argv:
          if a.startswith("--config."):
            message = unknown_override(config, a[len("--config."):].split("=", 1)[0])
            if message:
              break
    sys.stderr.write(f"{os.path.basename(argv[0])}: error: "
                     f"{message or f'{type(error).__name__}: {error}'}\n")
    sys.exit(2)
