"""Training: MSPE (paper Eq. 7, encoder frozen), full ViT training or FlexiViT (every
parameter, one random patch size per step), data-parallel, resumable.

``train_and_evaluate(config, workdir, hooks=())`` reads top to bottom:

1. devices: a ``Mesh`` over all accelerators (batch on ``data``, parameters replicated);
2. model and state: **resume** from ``workdir/checkpoints`` if a readable step exists, else
   **load** ``config.init_file`` (AugReg / big_vision ``.npz``), else **scratch**;
3. the loop: per step the loss terms are drawn from ``(seed, step)`` and the step
   (``mspe_step.MSPEStep``, or ``full_step.FullStep`` for full and FlexiViT training) runs
   on device with no host sync; the
   loop syncs only to log, to checkpoint (after the non-finite guard, ``guard.py``) and to
   evaluate (``sweep.Sweep``, the same code as ``eval.py``);
4. checkpoints every ``checkpoint_every`` steps and at the end, plus ``model.npz``.

Randomness is a pure function of ``(seed, step)`` (resolution and patch-size draws) and of
``(seed, epoch, index)`` (data order and augmentation), so a resumed run ends with the same
parameters as one that was never interrupted.
"""

from __future__ import annotations

import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from clu import periodic_actions

from mspe_jax import (
  data,
  geometry,
  jax_utils,
  losses,
  metrics,
  npz,
  optim,
  pi_resize,
  scoring,
  sweep,
  terms,
  vit,
)
from mspe_jax.checkpointer import Checkpointer
from mspe_jax.full_step import FullStep
from mspe_jax.guard import NonFiniteGuard
from mspe_jax.mspe_step import MSPEStep
from mspe_jax.patch_embed import PatchEmbed
from mspe_jax.workdir import CHECKPOINTS, save_model_config

log = logging.getLogger(__name__)

MODES = ("mspe", "full", "flexi")


# ---------------------------------------------------------------------------- config

def validate_config(config) -> None:
  """Semantic checks the ConfigDict's own field/type locking cannot do."""
  if config.mode not in MODES:
    raise ValueError(f"config.mode must be one of {MODES}, got {config.mode!r}.")
  if config.loss.kind not in losses.LOSSES:
    raise ValueError(f"config.loss.kind must be one of {losses.LOSSES}, got {config.loss.kind!r}.")
  if config.mode == "full" and config.loss.kind != "ce":
    raise ValueError("config.mode='full' trains with loss.kind='ce' only.")
  if config.mode == "mspe" and not config.init_file:
    raise ValueError("config.mode='mspe' needs a pretrained model: set config.init_file to an "
                     "AugReg / big_vision .npz.")
  if config.mode == "flexi":
    terms.check_patch_sizes(config.flexi.patch_sizes, config.flexi.weights)
    if losses.needs_teacher(config.loss.kind) and not config.init_file:
      raise ValueError(f"loss.kind={config.loss.kind!r} distils from the model in "
                       "config.init_file (FlexiViT's fixed-patch teacher): set it.")
  if config.model.task not in (None, *vit.TASKS):
    raise ValueError(f"config.model.task must be one of {vit.TASKS} (or None: the init file's), "
                     f"got {config.model.task!r}.")
  if config.mode == "flexi" and config.model.task == "segmentation":
    raise ValueError("FlexiViT training (mode 'flexi') is for classifiers; train a segmenter "
                     "with mode 'full', then MSPE.")
  if config.mspe.lam < 0:
    raise ValueError(f"config.mspe.lam must be >= 0, got {config.mspe.lam}.")


def global_batch_size(config, mesh) -> int:
  per_device = config.input.per_device_batch
  batch = per_device * mesh.devices.size if per_device else int(config.input.batch_size)
  jax_utils.check_batch(batch, mesh)
  return batch


def model_policy(config) -> PatchEmbed:
  """The patch-embedding policy the config trains: MSPE's, FlexiViT's (the patch size comes
  with each step), or vanilla for full training."""
  m = config.model
  fields = dict(leftover=m.leftover, resize_method=m.resize_method, antialias=m.antialias)
  if config.mode in ("full", "flexi"):
    return PatchEmbed("vanilla" if config.mode == "full" else "flexi", **fields)
  return PatchEmbed("mspe", base_sizes=tuple(config.mspe.base_sizes) or None,
                    freeze_native_kernel=config.mspe.freeze_native_kernel,
                    routing=config.mspe.routing,
                    kernel_ranges=tuple(config.mspe.kernel_ranges) or None, **fields)


def build_model(config):
  """``(model, params, origin)`` from ``config.init_file`` or from scratch."""
  m, policy = config.model, model_policy(config)
  if config.init_file:
    # A FlexiViT keeps the file's kernel and position-embedding sizes (big_vision's FlexiViT:
    # 32x32 and 7x7 whatever the image size); the patch size comes with each call.
    image_size = None if config.mode == "flexi" else m.image_size
    model, params = npz.load_pretrained(config.init_file, policy, variant=m.variant,
                                        num_classes=m.num_classes, image_size=image_size,
                                        task=m.task)
    if config.mode == "flexi":
      model, params = flexi_underlying(model, params, config.flexi)
    return model, params, f"the pretrained file {config.init_file}"
  arch = (vit.decode_variant(m.variant) if m.variant else
          dict(patch_size=(m.patch_size, m.patch_size), width=m.width, depth=m.depth,
               num_heads=m.num_heads, mlp_dim=m.mlp_dim))
  model = vit.ViT(num_classes=m.num_classes, image_size=m.image_size, pool_type=m.pool_type,
                  task=m.task or "classification", policy=policy, **arch)
  dummy = jnp.zeros((1, m.image_size, m.image_size, 3), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(config.seed), dummy)["params"]
  return model, jax.device_get(params), f"scratch (seed {config.seed})"


def flexi_underlying(model, params, flexi):
  """A FlexiViT's stored ("underlying") sizes, as big_vision's FlexiViT keeps them: the
  kernel PI-resized to ``flexi.kernel_size`` and the position embedding resampled
  (bilinear) to ``flexi.posemb_size`` (big_vision: 32 and 7, from any initialisation);
  unchanged where they are not set."""
  kernel_hw = geometry.as_hw(flexi.kernel_size) if flexi.kernel_size else model.patch
  grid = geometry.as_hw(flexi.posemb_size) if flexi.posemb_size else model.grid
  if (kernel_hw, grid) == (model.patch, model.grid):
    return model, params
  log.info("FlexiViT: underlying kernel %s -> %s (PI-resize), position embedding %s -> %s.",
           model.patch, kernel_hw, model.grid, grid)
  params = dict(params)
  params["embedding"] = {**params["embedding"], "kernel": pi_resize.resample_kernel(
      params["embedding"]["kernel"], kernel_hw)}
  params["pos_embedding"] = np.asarray(pi_resize.resample_posemb(params["pos_embedding"], grid))
  image_size = (grid[0] * kernel_hw[0], grid[1] * kernel_hw[1])
  model = model.clone(patch_size=kernel_hw,
                      image_size=image_size[0] if image_size[0] == image_size[1] else image_size)
  return model, params


def make_step(config, model, tx, mesh):
  """The step of ``config.mode``: ``step(state, batch, terms) -> (state, metrics)``; a
  distilling FlexiViT's teacher is the init file's model at its own patch size, frozen."""
  per_pixel = {}
  if model.task == "segmentation":  # label maps at the native resolution (the batch's size)
    per_pixel = dict(task=model.task, label_hw=geometry.as_hw(config.model.image_size),
                     ignore_label=config.loss.ignore_label)
  loss_fn = losses.make_loss(config.loss.kind, temperature=config.loss.temperature,
                             distill_weight=config.loss.distill_weight,
                             label_smoothing=config.loss.label_smoothing, **per_pixel)
  if config.mode == "mspe":
    return MSPEStep(model, tx, mesh, loss_fn, distill=losses.needs_teacher(config.loss.kind))
  teacher = None
  if config.mode == "flexi" and losses.needs_teacher(config.loss.kind):
    # FlexiViT's fixed-patch teacher: the init file's model as it is stored
    teacher = npz.load_pretrained(config.init_file, "vanilla", num_classes=config.model.num_classes)
  return FullStep(model, tx, mesh, loss_fn, teacher=teacher)


def term_sampler(config, model):
  """``draw(index) -> terms`` for the 0-based step ``index`` (a pure function of the seed)."""
  if config.mode == "full":
    native = [terms.Term(None, geometry.as_hw(model.image_size), 1.0)]
    return lambda index: native
  if config.mode == "flexi":
    patches, probabilities = terms.check_patch_sizes(config.flexi.patch_sizes,
                                                     config.flexi.weights)
    hw = geometry.as_hw(config.model.image_size)
    log.info("FlexiViT: patch sizes %s with probabilities %s at %s px (stored kernel %s, "
             "position embedding %s).", patches, probabilities.round(3).tolist(), hw,
             model.patch, model.grid)
    return lambda index: terms.draw_patch_term(index, config.seed, patches, probabilities, hw)
  subsets = terms.subsets_from_config(config.mspe, model)
  log.info("MSPE kernels %s, resolution subsets %s (%d shapes), square_fraction=%s, "
           "lambda=%s, freeze_native_kernel=%s, routing=%s.", model.base_sizes, subsets,
           sum(len(s) for s in subsets), config.mspe.square_fraction, config.mspe.lam,
           model.policy.freeze_native_kernel, model.policy.routing)
  return lambda index: terms.draw_terms(index, config.seed, subsets, model, config.mspe.lam,
                                       config.mspe.square_fraction)


def make_evaluator(config, model, mesh, has_labels: bool):
  """``evaluate(params) -> {"eval/top1_HxW": ...}`` (a segmenter: ``eval/miou_HxW``,
  ``macc``, ``f1``) on the eval split, or None if off."""
  if not config.eval_every or not has_labels:
    return None
  source = data.get_source(config.data.name, config.data.eval_split, config.data.data_dir)
  jax_utils.check_batch(config.eval_batch_size, mesh)
  if config.mode == "flexi":  # FlexiViT: every patch size it trains, at the image size
    native = geometry.as_hw(config.model.image_size)
    patches, _ = terms.check_patch_sizes(config.flexi.patch_sizes, config.flexi.weights)
    methods = [sweep.Method(f"p{p[0]}x{p[1]}", model.policy.replace(patch=p), "model")
               for p in patches]
    hws = [native]
  else:
    native = geometry.as_hw(model.image_size)
    methods = [sweep.Method("model", model.policy, "model")]
    hws = [geometry.as_hw(r, "eval resolution") for r in config.eval_resolutions] or [native]
  runner = sweep.Sweep(methods, [sweep.Shape("square" if h == w else "other", (h, w))
                                 for h, w in hws], {"model": model}, native, mesh=mesh,
                       scorer=scoring.for_model(model, config.loss.ignore_label))

  def key(metric, name, hw):
    where = name if config.mode == "flexi" else f"{hw[0]}x{hw[1]}"
    return f"eval/{metric}_{where}"

  def evaluate(params):
    batches = data.eval_batches(source, batch_size=config.eval_batch_size, image_size=native[0],
                                crop_fraction=config.input.eval_crop_fraction,
                                max_examples=config.eval_examples)
    sums, total = runner.run({"model": params}, batches, progress=False)
    out = {}
    for (name, hw), s in sums.items():
      scores = runner.scorer.summarize(s, total)
      out.update({key(m, name, hw): scores[m] for m in runner.scorer.metrics})
    return out
  return evaluate


def _setup_logging(workdir: str) -> logging.Handler:
  os.makedirs(workdir, exist_ok=True)
  handler = logging.FileHandler(os.path.join(workdir, "train.log"))
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  logging.getLogger("mspe_jax").addHandler(handler)
  logging.getLogger("mspe_jax").setLevel(logging.INFO)
  return handler


# ---------------------------------------------------------------------------- training

def train_and_evaluate(config, workdir: str, hooks=()) -> dict:
  """Trains as ``config`` says, checkpointing in ``workdir``; returns the final metrics.

  ``hooks``: ``mspe_jax.hooks.Hook`` objects called before and after every step.
  """
  validate_config(config)
  workdir = os.path.abspath(workdir)
  handler = _setup_logging(workdir)
  try:
    return _train(config, workdir, tuple(hooks))
  finally:
    logging.getLogger("mspe_jax").removeHandler(handler)
    handler.close()


def training_data(config, mesh):
  """``(source, global batch size, total steps)`` of the training split."""
  batch_size = global_batch_size(config, mesh)
  source = data.get_source(config.data.name, config.data.train_split, config.data.data_dir)
  if losses.needs_labels(config.loss.kind) and not source.has_labels:
    raise ValueError(f"{source.description} has no labels, but loss.kind={config.loss.kind!r} "
                     "needs them; use loss.kind='distill' to train from unlabelled images.")
  total_steps = config.total_steps or int(math.ceil(
      config.num_epochs * data.steps_per_epoch(source, batch_size)))
  return source, batch_size, total_steps


def training_batches(config, source, batch_size: int, start_step: int):
  """This host's augmented numpy batches from step ``start_step`` on (resumable exactly)."""
  return data.train_iterator(source, global_batch=batch_size,
                             image_size=config.model.image_size, seed=config.seed,
                             start_step=start_step, augment=config.input.augment.to_dict(),
                             drop_labels=not losses.needs_labels(config.loss.kind))


def restore_or_init(ckpt: Checkpointer, state, mesh, origin: str):
  """``(state, origin)``: the newest readable checkpoint (resume), else ``state`` replicated
  (the loaded or freshly initialised parameters)."""
  state = jax_utils.replicate(state, mesh)
  restored = ckpt.restore_latest(jax_utils.abstract_like(state, jax_utils.replicated(mesh)))
  if restored is not None:
    origin = f"checkpoint step {restored[0]} in {ckpt.directory}"
    state = restored[1]
  log.info("%s from %s.", "Resumed" if restored else "No checkpoint: initialised", origin)
  return state.replace(step=int(state.step)), origin


def window_scalars(window, seconds: float, images: int, lr: float, step_terms,
                   step_metrics) -> dict[str, float]:
  """What is logged at a logging step: loss and gradient norm averaged over the steps since
  the last one (``window``: the guard's ``(step, loss, grad_norm)``), the learning rate,
  images/s, and each term's loss at this step."""
  scalars = {"train/loss": float(np.mean([v[1] for v in window])),
             "train/grad_norm": float(np.mean([v[2] for v in window])),
             "train/lr": lr, "train/images_per_sec": images / max(seconds, 1e-9)}
  term_losses = jax.device_get(step_metrics["term_losses"])
  scalars.update({f"train/loss_{t.name}": float(v) for t, v in zip(step_terms, term_losses)})
  return scalars


def _train(config, workdir: str, hooks) -> dict:
  lead = jax.process_index() == 0
  jax_utils.enable_compilation_cache(config.compilation_cache_dir or
                                     os.path.join(workdir, "jax_cache"))
  compiles = jax_utils.CompileCounter.start()

  # -- devices, data, model, step and state: resume -> load -> scratch
  mesh = jax_utils.make_mesh()
  source, batch_size, total_steps = training_data(config, mesh)
  model, params, origin = build_model(config)
  tx, lr_schedule = optim.make_optimizer(config.optim, total_steps)
  step_fn = make_step(config, model, tx, mesh)
  ckpt = Checkpointer(os.path.join(workdir, CHECKPOINTS), keep=config.keep_checkpoints,
                      async_save=config.async_checkpoints)
  state, origin = restore_or_init(ckpt, step_fn.init(params), mesh, origin)
  if lead:
    save_model_config(workdir, model)
  draw_terms = term_sampler(config, model)
  evaluate = make_evaluator(config, model, mesh, source.has_labels)

  # -- the loop
  writer = metrics.create_writer(workdir, enabled=lead, resume_step=state.step)
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_steps=config.log_every, every_secs=None)
  guard = NonFiniteGuard()
  batches = training_batches(config, source, batch_size, state.step)
  bar = tqdm.tqdm(total=total_steps, initial=state.step, desc=f"{config.mode} training",
                  disable=not (lead and config.progress_bar), mininterval=2.0, unit="step")
  last_eval, window_start = {}, (state.step, time.time())
  try:
    for step in range(state.step + 1, total_steps + 1):
      batch = next(batches)
      for hook in hooks:
        batch = hook.before_step(step, batch)
      step_terms = draw_terms(step - 1)
      state, step_metrics = step_fn(state, jax_utils.shard_batch(batch, mesh), step_terms)
      guard.watch(step, step_metrics)
      bar.update(1)

      if step % config.log_every == 0 or step == total_steps:
        scalars = window_scalars(guard.check(ckpt), time.time() - window_start[1],  # syncs
                                 (step - window_start[0]) * batch_size,
                                 float(lr_schedule(step - 1)), step_terms, step_metrics)
        writer.write_scalars(step, scalars)
        bar.set_postfix(loss=f"{scalars['train/loss']:.4f}",
                        img_s=f"{scalars['train/images_per_sec']:.0f}",
                        **{k.split("/", 1)[1]: f"{v:.3f}" for k, v in last_eval.items()})
        window_start = (step, time.time())
      report(step)  # steps/s, uptime (after the sync above on logging steps)

      if step % config.checkpoint_every == 0 or step == total_steps:
        guard.check(ckpt)
        with report.timed("checkpoint", wait_jax_async_dispatch=False):
          ckpt.save(step, state)

      for hook in hooks:
        hook.after_step(step, state, step_metrics)

      if evaluate is not None and (step % config.eval_every == 0 or step == total_steps):
        with report.timed("eval", wait_jax_async_dispatch=False):
          last_eval = evaluate(state.params)
        writer.write_scalars(step, last_eval)
        log.info("step %d: %s", step, last_eval)
    ckpt.wait()
  finally:
    bar.close()
    writer.close()
    ckpt.close()

  if lead:
    npz.save_npz(os.path.join(workdir, "model.npz"), jax.device_get(state.params))
  summary = {"step": state.step, "origin": origin, **last_eval,
             **{f"programs/{k}": v for k, v in step_fn.compiled_programs().items()},
             **{f"compiles/{k}": v for k, v in compiles().items()}}
  log.info("Done: %s", summary)
  return summary
