"""Sweep results as files: results.json / .csv / .md (Table-1 style); the PNGs are ``plots``.

Sweeps (``sweep.make_shapes``): ``square``; ``fixed_height`` / ``fixed_width`` (one table and
one curve per fixed value, paper Fig. 4 / 9); ``grid`` (every ``(h, w)`` pair: shown as MSPE
minus image resize, a table here and a heatmap in ``plots``)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable

SWEEP_TITLES = {
    "square": "{metric} at h x w = r x r",
    "fixed_height": "{metric} at fixed height, varying width (paper Fig. 4)",
    "fixed_width": "{metric} at fixed width, varying height (paper Fig. 9)",
}
METRIC_LABELS = {"top1": "Top-1 (%)", "miou": "mIoU (%)", "macc": "mAcc (%)",
                 "f1": "mean F1 (%)"}
METRIC_NAMES = {"top1": "top-1", "miou": "mIoU", "macc": "mAcc", "f1": "F1"}  # in sentences


def metrics_of(protocol: dict) -> list[str]:
  """The metrics a sweep reports, the headline one first (``top1`` for classifiers)."""
  return list(protocol.get("metrics") or ["top1"])


def sweep_title(sweep: str, metric: str = "top1") -> str:
  return SWEEP_TITLES[sweep].format(metric=METRIC_LABELS.get(metric, metric))
GRID_BASELINE = "img_resize"
SERIES_LABELS = {  # the patch sweep's curves: never confuse the two
    "pi": "fixed ViT, kernel PI-resized (zero-shot; the MSPE paper's 'FlexiViT' rows)",
    "flexivit": "FlexiViT (trained with random patch sizes)",
}
FLEXIVIT_NOTE = ("`pi` is PI-resize of the fixed-patch ViT (what the MSPE paper labels "
                 "'FlexiViT'); `flexivit` is a ViT trained FlexiViT's way (random patch size every "
                 "step), its kernel PI-resized to the fixed grid.")
ROUTE_INFIX = "_route_"  # <model>_route_<rule>: a model under another routing rule


def is_detail(method: str) -> bool:
  """Per-kernel rows go to their own table; the main tables hold the methods."""
  return "_k" in method and method.rsplit("_k", 1)[-1].isdigit()


def is_route(method: str) -> bool:
  """Rows of a model under another routing rule (``config.routings``): their own table."""
  return ROUTE_INFIX in method


def routing_table(rows: list[dict], native: int, metric: str = "top1") -> str:
  """Mean ``metric`` of each routing rule over distinct shapes: all, below native (``h * w <
  native**2``) and non-square below native; and on how many shapes each rule is best."""
  routes = list(dict.fromkeys(r["method"] for r in rows if is_route(r["method"])))
  top1 = {}
  for r in rows:
    if is_route(r["method"]) and r.get(metric) is not None:
      top1.setdefault(r["method"], {})[(r["height"], r["width"])] = r[metric]
  shapes = sorted(set.intersection(*(set(v) for v in top1.values()))) if top1 else []
  if not shapes:
    return ""
  groups = {"every shape": shapes,
            "below native": [s for s in shapes if s[0] * s[1] < native * native],
            "non-square, below native": [s for s in shapes
                                         if s[0] * s[1] < native * native and s[0] != s[1]]}
  best = {s: max(top1[m][s] for m in routes) for s in shapes}
  head = " | ".join(f"{k} ({len(v)})" for k, v in groups.items())
  lines = [f"| routing rule | {head} | best or tied on |", "|---" * (len(groups) + 2) + "|"]
  for m in routes:
    means = [sum(top1[m][s] for s in v) / len(v) if v else None for v in groups.values()]
    wins = sum(top1[m][s] >= best[s] for s in shapes)
    lines.append(f"| {m.split(ROUTE_INFIX)[1]} | " + " | ".join(_fmt(v) for v in means)
                 + f" | {wins} of {len(shapes)} |")
  return "\n".join(lines)


def _fmt(v) -> str:
  return "-" if v is None else f"{100 * v:.1f}"


def _columns(rows, sweep):
  cols = []
  for r in rows:
    if r["sweep"] == sweep and (r["height"], r["width"]) not in cols:
      cols.append((r["height"], r["width"]))
  return cols


def fixed_values(rows, sweep) -> list:
  """The fixed heights (``fixed_height``) or widths (``fixed_width``) of a sweep, in order."""
  key = {"fixed_height": "height", "fixed_width": "width"}.get(sweep)
  if key is None:
    return [None]
  return list(dict.fromkeys(r[key] for r in rows if r["sweep"] == sweep))


def select(rows, sweep, fixed=None) -> list[dict]:
  """The rows of one sweep (of one fixed height or width)."""
  key = {"fixed_height": "height", "fixed_width": "width"}.get(sweep)
  return [r for r in rows if r["sweep"] == sweep and (fixed is None or r[key] == fixed)]


def _label(sweep, hw):
  if sweep == "square":
    return str(hw[0])
  return str(hw[1]) if sweep == "fixed_height" else str(hw[0])


def table(rows: list[dict], sweep: str, methods: Iterable[str], metric: str = "top1") -> str:
  """Markdown table: methods as rows, the sweep's sizes as columns (rows of one fixed value)."""
  cols = _columns(rows, sweep)
  if not cols:
    return ""
  by = {(r["method"], r["height"], r["width"]): r for r in rows if r["sweep"] == sweep}
  if sweep == "fixed_height":
    head = f"method \\ width (height {cols[0][0]})"
  elif sweep == "fixed_width":
    head = f"method \\ height (width {cols[0][1]})"
  else:
    head = "method \\ resolution"
  lines = ["| " + head + " | " + " | ".join(_label(sweep, c) for c in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
  for m in methods:
    cells = [by.get((m, *c), {}).get(metric) for c in cols]
    if all(c is None for c in cells):
      continue
    lines.append(f"| {m} | " + " | ".join(_fmt(c) for c in cells) + " |")
  return "\n".join(lines)


def grid_difference(rows: list[dict], method: str, baseline: str = GRID_BASELINE,
                    metric: str = "top1"):
  """``(heights, widths, {(h, w): points})``: ``metric`` of ``method`` minus ``baseline`` on
  the grid sweep (None where either is missing)."""
  sel = select(rows, "grid")
  top1 = {(r["method"], r["height"], r["width"]): r.get(metric) for r in sel}
  heights = sorted({r["height"] for r in sel})
  widths = sorted({r["width"] for r in sel})
  diff = {}
  for h in heights:
    for w in widths:
      a, b = top1.get((method, h, w)), top1.get((baseline, h, w))
      diff[(h, w)] = None if a is None or b is None else 100 * (a - b)
  return heights, widths, diff


def grid_table(rows: list[dict], method: str, baseline: str = GRID_BASELINE,
               metric: str = "top1") -> str:
  heights, widths, diff = grid_difference(rows, method, baseline, metric)
  if not heights or all(v is None for v in diff.values()):
    return ""
  lines = ["| height \\ width | " + " | ".join(map(str, widths)) + " |",
           "|---" * (len(widths) + 1) + "|"]
  for h in heights:
    lines.append(f"| {h} | " + " | ".join(
        "-" if diff[(h, w)] is None else f"{diff[(h, w)]:+.1f}" for w in widths) + " |")
  return "\n".join(lines)


def patch_series(rows: list[dict]) -> dict[str, list[dict]]:
  """The patch sweep's rows by series, in patch-size order."""
  out = {}
  for r in sorted(select(rows, "patch"), key=lambda r: r.get("patch") or 0):
    if r.get("top1") is not None:
      out.setdefault(r["series"], []).append(r)
  return out


def patch_table(rows: list[dict]) -> str:
  """FlexiViT's sweep as a table: top-1 per patch size at the native resolution, with the
  sequence length and GFLOPs per image of each patch size."""
  series = patch_series(rows)
  if not series:
    return ""
  patches = sorted({r["patch"] for rs in series.values() for r in rs})
  any_row = {r["patch"]: r for rs in series.values() for r in rs}
  lines = ["| patch (px) | " + " | ".join(map(str, patches)) + " |",
           "|---" * (len(patches) + 1) + "|",
           "| tokens | " + " | ".join("x".join(map(str, any_row[p]["grid"])) for p in patches)
           + " |",
           "| GFLOPs / image | " + " | ".join(f"{any_row[p]['gflops']:.3g}" for p in patches)
           + " |"]
  for name, rs in series.items():
    top1 = {r["patch"]: r["top1"] for r in rs}
    lines.append(f"| {name}: {SERIES_LABELS.get(name, name)} | "
                 + " | ".join(_fmt(top1.get(p)) for p in patches) + " |")
  return "\n".join(lines)


def mspe_methods(rows: list[dict], protocol: dict) -> list[str]:
  """The routed MSPE models of a sweep (not per-kernel, not oracle rows)."""
  models = [k for k in (protocol.get("checkpoints") or {}) if k not in ("pretrained", "flexivit")]
  return [m for m in models if any(r["method"] == m for r in rows)]


def flops_table(rows: list[dict], methods: Iterable[str]) -> str:
  """Patch-embedding and total GFLOPs per image on the square sweep (paper Table 4)."""
  cols = _columns(rows, "square")
  if not cols:
    return ""
  by = {(r["method"], r["height"]): r for r in rows if r["sweep"] == "square"}
  lines = ["| GFLOPs per image (patch embedding / total) | " +
           " | ".join(str(c[0]) for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
  for m in methods:
    cells = [by.get((m, c[0]), {}) for c in cols]
    if not any("gflops" in c for c in cells):
      continue
    lines.append(f"| {m} | " + " | ".join(
        f"{c['patch_gflops']:.3g} / {c['gflops']:.3g}" if "gflops" in c else "-"
        for c in cells) + " |")
  return "\n".join(lines)


def markdown(rows: list[dict], protocol: dict) -> str:
  methods = list(dict.fromkeys(r["method"] for r in rows if r["sweep"] != "patch"))
  main = [m for m in methods if not is_detail(m) and not is_route(m)]
  detail = [m for m in methods if is_detail(m) and not is_route(m)]
  metrics = metrics_of(protocol)
  metric = metrics[0]
  parts = ["# Resolution sweep", "", "Protocol: " + protocol_line(protocol), ""]
  for sweep in SWEEP_TITLES:
    values = fixed_values(rows, sweep)
    for fixed in values:
      for m in metrics:
        t = table(select(rows, sweep, fixed), sweep, main, m)
        if t:
          suffix = f" ({sweep.split('_')[1]} {fixed})" if len(values) > 1 else ""
          parts += [f"## {sweep_title(sweep, m)}{suffix}", "", t, ""]
  label = METRIC_NAMES.get(metric, metric)
  for m in mspe_methods(rows, protocol):
    t = grid_table(rows, m, metric=metric)
    if t:
      parts += [f"## {m} minus image resize, {label} points, every (height, width) pair", "",
                t, ""]
  if "flexivit" in main:
    parts += [FLEXIVIT_NOTE, ""]
  patches = patch_table(rows)
  if patches:
    parts += [f"## Top-1 (%) by patch size at {protocol.get('native_resolution')} px "
              "(FlexiViT's sweep: sequence length and compute vary)", "", patches, ""]
  if any(m.endswith("_oracle") for m in main):
    parts += ["`*_oracle` rows pick the best kernel per resolution on the evaluation set itself "
              "(how the authors' released scripts report): an upper bound, not a method.", ""]
  routes = routing_table(rows, protocol.get("native_resolution") or 0, metric)
  if routes:
    parts += [f"## Routing rules (mean {label} %, over the distinct shapes of every sweep)",
              "", routes, ""]
  detail_table = table(rows, "square", detail, metric) if detail else ""
  if detail_table:
    parts += [f"## Per-kernel {label} (%) (kernel forced, square sweep)", "", detail_table, ""]
  compute = flops_table(rows, main)
  if compute:
    parts += ["## Compute", "", compute, ""]
  return "\n".join(parts)


def protocol_line(p: dict) -> str:
  models = "; ".join(f"{k}: {v}" for k, v in (p.get("checkpoints") or {}).items())
  scoring = f" Scoring: {p['scoring']}." if p.get("scoring") else ""
  return (f"{p.get('dataset')} {p.get('split')}, {p.get('num_images')} images; each input is "
          f"the {p.get('native_resolution')} px central crop resized with "
          f"{p.get('resize_method')} (antialias={p.get('antialias')}); MSPE routing: "
          f"{p.get('routing')}; leftover pixels: {p.get('leftover')}.{scoring} "
          f"Models: {models}.")


def write(out_dir: str, rows: list[dict], protocol: dict) -> dict[str, str]:
  """Writes results.{json,csv,md} and the plots; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f"results.{k}") for k in ("json", "csv", "md")}
  with open(paths["json"], "w") as f:
    json.dump({"protocol": protocol, "rows": rows}, f, indent=1)
  keys = list(dict.fromkeys(k for r in rows for k in r))
  with open(paths["csv"], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    for r in rows:
      w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
  with open(paths["md"], "w") as f:
    f.write(markdown(rows, protocol))
  from mspe_jax import plots
  paths.update(plots.write(out_dir, rows, protocol))
  return paths
