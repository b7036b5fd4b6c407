"""Sweep results as files: results.json / .csv / .md (Table-1 style) and PNG plots."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable

SWEEP_TITLES = {
    "square": "Top-1 (%) at h x w = r x r",
    "fixed_height": "Top-1 (%) at fixed height, varying width (paper Fig. 4)",
    "fixed_width": "Top-1 (%) at fixed width, varying height (paper Fig. 9)",
}


def _is_detail(method: str) -> bool:
  """Per-kernel rows go to their own table; the main tables hold the methods."""
  return "_k" in method and method.rsplit("_k", 1)[-1].isdigit()


def _fmt(v) -> str:
  return "-" if v is None else f"{100 * v:.1f}"


def _columns(rows, sweep):
  cols = []
  for r in rows:
    if r["sweep"] == sweep and (r["height"], r["width"]) not in cols:
      cols.append((r["height"], r["width"]))
  return cols


def _label(sweep, hw):
  if sweep == "square":
    return str(hw[0])
  return str(hw[1]) if sweep == "fixed_height" else str(hw[0])


def table(rows: list[dict], sweep: str, methods: Iterable[str]) -> str:
  """Markdown table: methods as rows, the sweep's sizes as columns."""
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
    cells = [by.get((m, *c), {}).get("top1") for c in cols]
    if all(c is None for c in cells):
      continue
    lines.append(f"| {m} | " + " | ".join(_fmt(c) for c in cells) + " |")
  return "\n".join(lines)


def flops_table(rows: list[dict], methods: Iterable[str]) -> str:
  """Patch-embedding and total GFLOPs per image on the square sweep (paper Table 4)."""
  cols = _columns(rows, "square")
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
  methods = list(dict.fromkeys(r["method"] for r in rows))
  main = [m for m in methods if not _is_detail(m)]
  detail = [m for m in methods if _is_detail(m)]
  parts = ["# Resolution sweep", "", "Protocol: " + protocol_line(protocol), ""]
  for sweep, title in SWEEP_TITLES.items():
    t = table(rows, sweep, main)
    if t:
      parts += [f"## {title}", "", t, ""]
  if any(m.endswith("_oracle") for m in main):
    parts += ["`*_oracle` rows pick the best kernel per resolution on the evaluation set itself "
              "(how the authors' released scripts report): an upper bound, not a method.", ""]
  if detail:
    parts += ["## Per-kernel top-1 (%) (kernel forced, square sweep)", "",
              table(rows, "square", detail), ""]
  parts += ["## Compute", "", flops_table(rows, main), ""]
  return "\n".join(parts)


def protocol_line(p: dict) -> str:
  models = "; ".join(f"{k}: {v}" for k, v in (p.get("checkpoints") or {}).items())
  return (f"{p.get('dataset')} {p.get('split')}, {p.get('num_images')} images; each input is "
          f"the {p.get('native_resolution')} px central crop resized with "
          f"{p.get('resize_method')} (antialias={p.get('antialias')}); MSPE routing: "
          f"{p.get('routing')}; leftover pixels: {p.get('leftover')}. Models: {models}.")


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
  paths.update(plot(out_dir, rows, protocol))
  return paths


def plot(out_dir: str, rows: list[dict], protocol: dict) -> dict[str, str]:
  """Accuracy vs resolution (square) and the two aspect-ratio curves, one PNG each."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker  # noqa: F401
  out = {}
  native = protocol.get("native_resolution")
  for sweep, xlabel in (("square", "resolution (px)"), ("fixed_height", "width (px)"),
                        ("fixed_width", "height (px)")):
    sel = [r for r in rows if r["sweep"] == sweep and r.get("top1") is not None
           and not _is_detail(r["method"])]
    if not sel:
      continue
    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = set()
    for m in dict.fromkeys(r["method"] for r in sel):
      pts = sorted(((r["width"] if sweep == "fixed_height" else r["height"]), 100 * r["top1"])
                   for r in sel if r["method"] == m)
      xs.update(p[0] for p in pts)
      style = "--" if m.endswith("_oracle") else ("-" if m.startswith("mspe") else ":")
      ax.plot(*zip(*pts), style, marker="o", ms=3, label=m, lw=2.2 if m == "mspe" else 1.2)
    if native and sweep == "square":
      ax.axvline(native, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(xs))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 (%)")
    fixed = (f" (height {sel[0]['height']})" if sweep == "fixed_height" else
             f" (width {sel[0]['width']})" if sweep == "fixed_width" else "")
    ax.set_title(f"{protocol.get('dataset')}, {protocol.get('num_images')} images: "
                 f"{SWEEP_TITLES[sweep]}{fixed}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    name = {"square": "accuracy_vs_resolution.png", "fixed_height": "aspect_fixed_height.png",
            "fixed_width": "aspect_fixed_width.png"}[sweep]
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    out[sweep] = path
  return out
