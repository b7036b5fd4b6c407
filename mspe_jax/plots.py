"""Sweep results as PNGs: accuracy curves (square and aspect-ratio sweeps) and heatmaps of
MSPE minus image resize over every ``(height, width)`` pair of the grid sweep."""

from __future__ import annotations

import os

from mspe_jax import report

CURVES = (("square", "resolution (px)", "accuracy_vs_resolution"),
          ("fixed_height", "width (px)", "aspect_fixed_height"),
          ("fixed_width", "height (px)", "aspect_fixed_width"))


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker  # noqa: F401  (matplotlib.ticker.ScalarFormatter)
  return matplotlib, plt


def write(out_dir: str, rows: list[dict], protocol: dict) -> dict[str, str]:
  """Every plot the rows allow; returns ``{name: path}`` (``square``, ``fixed_height`` or
  ``fixed_height_<h>`` when there are several heights, ..., ``grid_<model>``)."""
  out = {}
  metric = report.metrics_of(protocol)[0]
  for sweep, xlabel, name in CURVES:
    values = report.fixed_values(rows, sweep)
    if metric != "top1":
      name = name.replace("accuracy", metric)
    for fixed in values:
      key, file = (sweep, name) if len(values) == 1 else (f"{sweep}_{fixed}", f"{name}_{fixed}")
      path = curve(os.path.join(out_dir, file + ".png"), report.select(rows, sweep, fixed),
                   sweep, xlabel, protocol, metric)
      if path:
        out[key] = path
  path = patch_curves(os.path.join(out_dir, "accuracy_vs_patch_size.png"), rows, protocol)
  if path:
    out["patch"] = path
  for m in report.mspe_methods(rows, protocol):
    path = heatmap(os.path.join(out_dir, f"grid_{m}_minus_img_resize.png"), rows, m, protocol)
    if path:
      out[f"grid_{m}"] = path
  return out


def patch_curves(path: str, rows: list[dict], protocol: dict) -> str | None:
  """FlexiViT's plot: top-1 against the patch size and against GFLOPs per image, one line per
  series (the fixed ViT PI-resized, the FlexiViT)."""
  series = report.patch_series(rows)
  if not series:
    return None
  matplotlib, plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for name, rs in series.items():
    top1 = [100 * r["top1"] for r in rs]
    label = report.SERIES_LABELS.get(name, name)
    axes[0].plot([r["patch"] for r in rs], top1, marker="o", ms=4, label=label)
    axes[1].plot([r["gflops"] for r in rs], top1, marker="o", ms=4, label=label)
  axes[0].set_xlabel("patch size (px)")
  axes[0].set_xticks(sorted({r["patch"] for rs in series.values() for r in rs}))
  axes[1].set_xscale("log")
  axes[1].set_xlabel("GFLOPs per image")
  for ax in axes:
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, loc="lower left")
  fig.suptitle(f"{protocol.get('dataset')}, {protocol.get('num_images')} images at "
               f"{protocol.get('native_resolution')} px: accuracy vs patch size and compute",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def curve(path: str, rows: list[dict], sweep: str, xlabel: str, protocol: dict,
          metric: str = "top1") -> str | None:
  """``metric`` against the varying side, one line per method (log-2 x axis)."""
  sel = [r for r in rows if r.get(metric) is not None and not report.is_detail(r["method"])
         and not report.is_route(r["method"])]
  if not sel:
    return None
  matplotlib, plt = _pyplot()
  fig, ax = plt.subplots(figsize=(9, 4.5))
  xs = set()
  for m in dict.fromkeys(r["method"] for r in sel):
    pts = sorted(((r["width"] if sweep == "fixed_height" else r["height"]), 100 * r[metric])
                 for r in sel if r["method"] == m)
    xs.update(p[0] for p in pts)
    style = "--" if m.endswith("_oracle") else ("-" if m.startswith("mspe") else ":")
    ax.plot(*zip(*pts), style, marker="o", ms=3, label=m, lw=2.2 if m == "mspe" else 1.2)
  native = protocol.get("native_resolution")
  if native and sweep == "square":
    ax.axvline(native, color="grey", lw=0.8)
  ax.set_xscale("log", base=2)
  ax.set_xticks(sorted(xs))
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.minorticks_off()
  ax.set_xlabel(xlabel)
  ax.set_ylabel(report.METRIC_LABELS.get(metric, metric))
  fixed = (f" (height {sel[0]['height']})" if sweep == "fixed_height" else
           f" (width {sel[0]['width']})" if sweep == "fixed_width" else "")
  ax.set_title(f"{protocol.get('dataset')}, {protocol.get('num_images')} images: "
               f"{report.sweep_title(sweep, metric)}{fixed}", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def heatmap(path: str, rows: list[dict], method: str, protocol: dict) -> str | None:
  """``method`` minus image resize (top-1 points) at every (height, width) of the grid sweep:
  blue where MSPE is ahead, red where resizing the image is."""
  heights, widths, diff = report.grid_difference(rows, method)
  values = [v for v in diff.values() if v is not None]
  if not values:
    return None
  _, plt = _pyplot()
  import numpy as np
  grid = np.array([[np.nan if diff[(h, w)] is None else diff[(h, w)] for w in widths]
                   for h in heights])
  span = max(1.0, float(np.nanmax(np.abs(grid))))
  fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.75 * len(widths)),
                                  max(3.5, 0.9 + 0.6 * len(heights))))
  image = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span, origin="lower")
  for i, h in enumerate(heights):
    for j, w in enumerate(widths):
      if diff[(h, w)] is not None:
        ax.text(j, i, f"{diff[(h, w)]:+.1f}", ha="center", va="center", fontsize=7,
                color="white" if abs(diff[(h, w)]) > 0.6 * span else "black")
  ax.set_xticks(range(len(widths)), [str(w) for w in widths])
  ax.set_yticks(range(len(heights)), [str(h) for h in heights])
  ax.set_xlabel("width (px)")
  ax.set_ylabel("height (px)")
  native = protocol.get("native_resolution")
  ax.set_title(f"{method} minus image resize to {native} px (top-1 points)\n"
               f"{protocol.get('dataset')}, {protocol.get('num_images')} images", fontsize=9)
  fig.colorbar(image, ax=ax, shrink=0.8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def masks(path: str, inputs: dict, labels, predictions: dict, methods: list[str],
          protocol: dict) -> str:
  """Segmentation examples side by side: for each example a block of columns, one per input
  size and the ground truth last; the first row shows the inputs, then one row per method
  with its predicted mask (upsampled to the label map).

  ``inputs``: ``{size: (N, size, size, C) images in [-1, 1]}``; ``labels``: ``(N, H, W)``;
  ``predictions``: ``{(method, size): (N, H, W) classes}`` (missing: the method cannot take
  that size).
  """
  matplotlib, plt = _pyplot()
  import numpy as np
  sizes = list(inputs)
  count = len(labels)
  classes = max(int(np.max(labels)) + 1, *(int(np.max(p)) + 1 for p in predictions.values()))
  colours = matplotlib.colormaps["tab20"](np.linspace(0, 1, 20))[:max(classes - 1, 1)]
  cmap = matplotlib.colors.ListedColormap([(0, 0, 0, 1), *colours])
  show = dict(cmap=cmap, vmin=-0.5, vmax=len(cmap.colors) - 0.5, interpolation="nearest")
  block = len(sizes) + 1
  cols, rows = count * block, 1 + len(methods)
  fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.25 * rows + 0.5), squeeze=False)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  for i in range(count):
    for j, size in enumerate(sizes):
      image = (np.asarray(inputs[size][i]) + 1) / 2
      axes[0, i * block + j].imshow(np.clip(image, 0, 1), interpolation="nearest")
      axes[0, i * block + j].set_title(f"{size} px", fontsize=8)
      for r, method in enumerate(methods, start=1):
        if (method, size) in predictions:
          axes[r, i * block + j].imshow(predictions[(method, size)][i], **show)
        else:
          axes[r, i * block + j].set_axis_off()
    for r in range(rows):
      axes[r, i * block + block - 1].imshow(labels[i], **show)
    axes[0, i * block + block - 1].set_title("truth", fontsize=8)
  axes[0, 0].set_ylabel("input", fontsize=8)
  for r, method in enumerate(methods, start=1):
    axes[r, 0].set_ylabel(method, fontsize=8)
  fig.suptitle(f"{protocol.get('dataset')} {protocol.get('split')}: predicted masks at each "
               "input size (rows: methods; last column of each block: ground truth)",
               fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 0.96))
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
