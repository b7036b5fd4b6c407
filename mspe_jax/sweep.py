"""Resolution and aspect-ratio sweeps: every method on the same images (also training's eval).

Protocol: each evaluation image is the native-resolution central crop (``eval_preprocess``);
the ``h x w`` input is that crop resized on device with ``jax.image.resize`` (the config's
method and antialias, the same resize PI-resize inverts). Methods:

* ``vanilla``: the pretrained kernel at patch ``p``, grid follows the input, position
  embedding resampled;
* ``pi``: the pretrained kernel PI-resized on the fixed grid (the paper's "FlexiViT" row:
  no FlexiViT training);
* ``img_resize``: the input resized back to the native resolution, unchanged model;
* ``kernel_resize_{bilinear,bicubic,nearest}``: plain interpolation of the kernel (Fig. 8/10);
* ``mspe`` (and any other MSPE model, e.g. ``mspe_distill``): routed by its own rule (Eq. 10;
  ``patch_embed``);
* ``<mspe>_route_{rule}``: the same kernels under another routing rule (``config.routings``:
  the measurement that chose the default rule, see ``patch_embed``);
* ``<mspe>_k{i}``: kernel ``i`` forced; ``<mspe>_oracle``: per resolution, the best of the
  routed and per-kernel accuracies *chosen on the evaluation set itself* -- how the authors'
  released scripts report. It is an upper bound, not a method, and is labelled so;
* ``flexivit``: a FlexiViT (every parameter trained with random patch sizes,
  ``configs/fashion_mnist_flexi.py``), its kernel PI-resized on the fixed grid: the real
  FlexiViT row, next to ``pi`` (PI-resize of the fixed ViT, which the MSPE paper calls
  "FlexiViT").

The ``patch`` sweep is FlexiViT's own plot: at the native resolution, the patch size (and so
the sequence length and compute) varies; series ``pi_p{p}`` (the fixed ViT's kernel
PI-resized to ``p``: FlexiViT's "zero-shot" baseline) and ``flexivit_p{p}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import tqdm

from mspe_jax import flops, geometry, jax_utils, scoring, vit
from mspe_jax.patch_embed import PatchEmbed
from mspe_jax.report import ROUTE_INFIX

BASELINES = ("vanilla", "pi", "img_resize", "kernel_resize_bilinear", "kernel_resize_bicubic",
             "kernel_resize_nearest")
ORACLE_SUFFIX = "_oracle"
SWEEPS = ("square", "fixed_height", "fixed_width", "grid")  # a method's sweeps by default
SQUARE = ("square",)
PATCH = ("patch",)  # the patch-size sweep at the native resolution: series methods only
FLEXIVIT = "flexivit"  # the FlexiViT model's key and method name


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  policy: PatchEmbed     # how its patch embedding treats each input size
  model_key: str         # which model and parameters it runs ("pretrained" or an MSPE model)
  to_native: bool = False  # img_resize: resize the input back to the native resolution
  sweeps: tuple[str, ...] | None = None  # the sweeps it runs (None: SWEEPS; ablations: square)
  series: str | None = None  # patch sweep: the curve it belongs to ("pi", "flexivit")

  def runs(self, sweep: str) -> bool:
    return sweep in (SWEEPS if self.sweeps is None else self.sweeps)


@dataclasses.dataclass(frozen=True)
class Shape:
  sweep: str             # "square" | "fixed_height" | "fixed_width" | "grid"
  hw: tuple[int, int]


def make_methods(base_policy: PatchEmbed, names: Iterable[str], mspe_models: dict,
                 per_kernel: Iterable[str] = (),
                 routings: dict[str, Iterable[str]] | None = None,
                 grid_baselines: Iterable[str] | None = None,
                 fixed_grid: tuple[int, int] | None = None) -> list[Method]:
  """Baselines on the pretrained model (``base_policy`` gives the leftover policy and resize
  method) plus each MSPE model (``{name: ViT}``); for the MSPE models named in ``per_kernel``
  also every kernel forced (``<name>_k{i}``), which the oracle row needs; for those in
  ``routings`` (``{name: rules}``) the model under each rule (``<name>_route_{rule}``).
  ``grid_baselines``: the baselines that also run the grid sweep (None: all of them).
  ``fixed_grid``: the pretrained model's token grid, which ``flexivit`` runs on."""
  routings = routings or {}
  no_grid = tuple(w for w in SWEEPS if w != "grid")
  base_sweeps = lambda n: (None if grid_baselines is None or n in grid_baselines  # noqa: E731
                           else no_grid)
  unknown = (set(per_kernel) | set(routings)) - set(mspe_models)
  if unknown:
    raise ValueError(f"per_kernel / routings name {sorted(unknown)}: not MSPE models "
                     f"({sorted(mspe_models)}).")
  methods = []
  for name in names:
    if name in mspe_models:
      model = mspe_models[name]
      methods.append(Method(name, model.policy, name))
      for rule in routings.get(name, ()):
        if rule == "range" and model.policy.kernel_ranges is None:
          raise ValueError(f"Routing 'range' for {name!r} needs the kernel ranges it trained "
                           "on; its policy has none (trained without mspe.kernel_ranges).")
        methods.append(Method(f"{name}{ROUTE_INFIX}{rule}", model.policy.replace(routing=rule),
                              name))
      if name in per_kernel:
        methods += [Method(f"{name}_k{i}", model.policy.replace(kernel=i), name,
                           sweeps=SQUARE)
                    for i in range(len(model.base_sizes))]
    elif name == FLEXIVIT:
      methods.append(Method(name, base_policy.replace(mode="pi", grid=fixed_grid), FLEXIVIT,
                            sweeps=base_sweeps(name)))
    elif name in ("vanilla", "pi"):
      methods.append(Method(name, base_policy.replace(mode=name), "pretrained",
                            sweeps=base_sweeps(name)))
    elif name == "img_resize":
      methods.append(Method(name, base_policy.replace(mode="vanilla"), "pretrained", True,
                            base_sweeps(name)))
    elif name.startswith("kernel_resize_"):
      method = geometry.canonical_method(name[len("kernel_resize_"):])
      methods.append(Method(name, base_policy.replace(mode="resize", kernel_resize_method=method),
                            "pretrained", sweeps=SQUARE))
    else:
      raise ValueError(f"Unknown method {name!r}: expected one of {BASELINES} or an MSPE model "
                       f"name ({sorted(mspe_models)}).")
  return methods


def make_patch_methods(base_policy: PatchEmbed, patch_sizes: Iterable[int],
                       flexivit: bool) -> list[Method]:
  """The patch sweep's series: ``pi_p{p}`` (the fixed ViT, kernel PI-resized to ``p``) and,
  with a FlexiViT model, ``flexivit_p{p}``."""
  series = [("pi", "pretrained")] + ([(FLEXIVIT, FLEXIVIT)] if flexivit else [])
  return [Method(f"{name}_p{p}", base_policy.replace(mode="flexi", patch=(p, p)), key,
                 sweeps=PATCH, series=name)
          for name, key in series for p in patch_sizes]


def make_shapes(config, native_hw=None) -> list[Shape]:
  """Square sweep; for each fixed height the widths, for each fixed width the heights (paper
  Fig. 4 and 9); the grid: every ``(h, w)`` pair of ``grid_sizes``; with ``patch_sizes``, the
  native resolution once more for the patch sweep."""
  shapes = [Shape("square", (r, r)) for r in config.resolutions]
  shapes += [Shape("fixed_height", (h, w)) for h in config.fixed_heights for w in config.widths]
  shapes += [Shape("fixed_width", (h, w)) for w in config.fixed_widths for h in config.heights]
  shapes += [Shape("grid", (h, w)) for h in config.grid_sizes for w in config.grid_sizes]
  if config.patch_sizes:
    shapes.append(Shape("patch", tuple(native_hw)))
  return shapes


class Sweep:
  """Scores every (method, shape): the sums of ``scorer`` (``mspe_jax.scoring``; by default
  the models' task's: correct predictions, or a confusion matrix), accumulated on device.

  ``models``: ``{model_key: ViT}``. Three programs per evaluation: the method's patch
  embedding, compiled per (method, shape); the encoder, compiled per model and token grid
  (once for every fixed-grid method and size of a model); and the scoring, per input size
  for segmentation (the logits are upsampled to it), once for classification.
  """

  def __init__(self, methods: list[Method], shapes: list[Shape], models: dict, native_hw, *,
               mesh, resize_method: str = "bilinear", antialias: bool = True, scorer=None):
    self.methods = {m.name: m for m in methods}
    self.shapes = shapes
    self.models = models
    self.native_hw = tuple(native_hw)
    self.mesh = mesh
    self.resize_method, self.antialias = resize_method, antialias
    self.scorer = scorer or scoring.for_model(next(iter(models.values())))
    self._embed = jax.jit(self._embed_tokens, static_argnames=("method", "hw"),
                          out_shardings=jax_utils.batch_sharded(mesh))
    self._encode = jax.jit(self._encode_outputs, static_argnames=("encoder",),
                           out_shardings=jax_utils.batch_sharded(mesh))
    self._score = jax.jit(self.scorer.sums, static_argnames=("input_hw",),
                          out_shardings=jax_utils.replicated(mesh))
    # The encoder part of each model (its policy dropped): models of one architecture share
    # the compiled encoder; a FlexiViT's own position-embedding grid gets its own.
    self._encoders = {k: m.clone(policy=PatchEmbed()) for k, m in models.items()}
    self.skipped: dict[tuple[str, tuple[int, int]], str] = {}

  def input_hw(self, method: Method, hw):
    """The size the method's model sees: ``hw``, or the native size for ``img_resize``."""
    return self.native_hw if method.to_native else tuple(hw)

  def plan(self, method: Method, hw):
    """The method's ``Plan`` for an ``hw`` input."""
    return self.models[method.model_key].plan(*self.input_hw(method, hw), method.policy)

  def _embed_tokens(self, params, images, *, method, hw):
    m = self.methods[method]
    x = geometry.resize_images(images, hw, self.resize_method, self.antialias)
    if m.to_native:
      x = geometry.resize_images(x, self.native_hw, self.resize_method, self.antialias)
    return self.models[m.model_key].apply({"params": params}, x, m.policy, method="embed")

  def _encode_outputs(self, enc_params, tokens, *, encoder):
    return encoder.apply({"params": enc_params}, tokens, sequence=False, method="encode")[0]

  def runnable(self, method: Method, hw) -> bool:
    """False (and remembered why) when a method cannot take an input, e.g. below one patch."""
    key = (method.name, tuple(hw))
    if key in self.skipped:
      return False
    try:
      self.plan(method, hw)
      return True
    except ValueError as e:
      self.skipped[key] = str(e)
      return False

  def run(self, params_by_key: dict, batches, num_batches: int | None = None,
          progress: bool = True) -> tuple[dict, float]:
    """``({(method, hw): sums}, examples)`` over ``batches`` (dicts with image/label/mask);
    ``sums`` as the scorer's (numpy), ``self.scorer.summarize(sums, examples)`` the metrics."""
    pairs = [(m, s.hw) for s in self.shapes for m in self.methods.values()
             if m.runs(s.sweep) and self.runnable(m, s.hw)]
    pairs = list(dict.fromkeys((m.name, hw) for m, hw in pairs))
    # Pairs that are the same computation (e.g. two routing rules that pick the same kernel,
    # or a rule and the forced kernel it picks) run once.
    same = {p: self._computation(self.methods[p[0]], p[1]) for p in pairs}
    unique = list(dict.fromkeys(same.values()))
    first = {c: next(p for p in pairs if same[p] == c) for c in unique}
    sums = {}  # per computation, on device
    total = 0.0
    bar = tqdm.tqdm(total=None if num_batches is None else num_batches * len(unique),
                    desc="eval sweep", unit="eval", disable=not progress, mininterval=2.0)
    for batch in batches:
      gb = jax_utils.shard_batch(batch, self.mesh)
      for c in unique:
        name, hw = first[c]
        outputs = self._outputs(params_by_key, gb, name, hw)
        input_hw = self.input_hw(self.methods[name], hw) if self.scorer.needs_input_hw else None
        batch_sums = self._score(outputs, gb["label"], gb["mask"], input_hw=input_hw)
        sums[c] = (batch_sums if c not in sums
                   else jax.tree_util.tree_map(jnp.add, sums[c], batch_sums))
        bar.update(1)
      total += float(batch["mask"].sum())
    bar.close()
    fetched = dict(zip(unique, jax.device_get([sums[c] for c in unique if c in sums])))
    return {p: fetched[same[p]] for p in pairs if same[p] in fetched}, total

  def outputs(self, params_by_key: dict, batch, name: str, hw):
    """One method's model outputs (logits) on one host batch at ``hw``, with the sweep's
    programs."""
    return self._outputs(params_by_key, jax_utils.shard_batch(batch, self.mesh), name, hw)

  def _outputs(self, params_by_key: dict, gb, name: str, hw):
    key = self.methods[name].model_key
    tokens = self._embed(params_by_key[key], gb["image"], method=name, hw=tuple(hw))
    return self._encode(vit.encoder_params(params_by_key[key]), tokens,
                        encoder=self._encoders[key])

  def _computation(self, method: Method, hw):
    """What determines a pair's result: the model, the input and its plan, and the policy
    less the fields that only choose the kernel (the plan holds the choice)."""
    default = PatchEmbed.routing  # any one value: the plan holds the choice
    policy = method.policy.replace(kernel=None, routing=default, kernel_ranges=None)
    return (method.model_key, method.to_native, tuple(hw), self.plan(method, hw), policy)

  def compiled_programs(self) -> dict[str, int]:
    """``{"embed": per (method, shape), "encoder": per token grid, "score": per input size
    (segmentation) or one}``."""
    return {"embed": self._embed._cache_size(),  # noqa: SLF001
            "encoder": self._encode._cache_size(),  # noqa: SLF001
            "score": self._score._cache_size()}  # noqa: SLF001


def rows(sweep: Sweep, sums: dict, total: float, mspe_names: Iterable[str]) -> list[dict]:
  """One row per (method, shape) with the scorer's metrics (top-1, or mIoU / mAcc / F1) and
  FLOPs; adds the labelled oracle rows (best kernel by the headline metric)."""
  metric = sweep.scorer.metrics[0]
  out = []
  for shape in sweep.shapes:
    for name, m in sweep.methods.items():
      row = {"method": name, "sweep": shape.sweep, "height": shape.hw[0], "width": shape.hw[1]}
      if not m.runs(shape.sweep):
        continue
      if (name, shape.hw) not in sums:
        out.append({**row, metric: None, "note": sweep.skipped.get((name, shape.hw), "")})
        continue
      plan = sweep.plan(m, shape.hw)
      fl = flops.vit_flops(sweep.models[m.model_key], plan)
      if m.series:
        row.update(series=m.series, patch=plan.kernel_hw[0])
      out.append({**row, **sweep.scorer.summarize(sums[(name, shape.hw)], total), **fl,
                  "kernel_hw": list(plan.kernel_hw), "grid": list(plan.grid),
                  "kernel_index": plan.kernel_index})
  for name in mspe_names:
    if not any(m.startswith(f"{name}_k") for m in sweep.methods):
      continue  # no per-kernel rows: no oracle to report
    for shape in sweep.shapes:
      same = [r for r in out if r["height"] == shape.hw[0] and r["width"] == shape.hw[1]
              and r["sweep"] == shape.sweep and r.get(metric) is not None
              and (r["method"] == name or r["method"].startswith(f"{name}_k"))]
      if not any(r["method"] != name for r in same):
        continue  # no per-kernel rows at this shape (they are square-sweep only)
      best = max(same, key=lambda r: r[metric])
      out.append({**best, "method": name + ORACLE_SUFFIX,
                  "note": "oracle: best kernel chosen on the evaluation set itself"})
  return out
