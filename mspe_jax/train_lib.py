"""Training: MSPE (paper Eq. 7, encoder frozen) or full ViT training, data-parallel, resumable.

``train_and_evaluate(config, workdir)`` reads top to bottom:

1. devices: a ``Mesh`` over all accelerators (batch on ``data``, parameters replicated);
2. model and parameters: **resume** from ``workdir/checkpoints`` if a readable step exists,
   else **load** ``config.init_file`` (AugReg / big_vision ``.npz``), else **scratch**;
3. the loop: per step, the loss terms are drawn from ``(seed, step)``, each term's gradient
   comes from a program compiled once per (kernel, resolution), one update applies their
   sum; a non-finite loss or gradient stops the run before anything is saved;
4. checkpoints every ``checkpoint_every`` steps and at the end, plus ``model.npz``.

Randomness is a pure function of ``(seed, step)`` (resolution draws) and of
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

from mspe_jax import checkpoints, ckpt_manager, data, jax_utils, losses, optim, pi_resize, steps
from mspe_jax import vit as vit_lib
from mspe_jax.metrics import MetricWriter

log = logging.getLogger(__name__)

MODES = ("mspe", "full")


class NonFiniteError(FloatingPointError):
  """Training produced a NaN/inf loss or gradient."""


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
  if config.mspe.lam < 0:
    raise ValueError(f"config.mspe.lam must be >= 0, got {config.mspe.lam}.")


def global_batch_size(config, mesh) -> int:
  per_device = int(config.input.get("per_device_batch", 0) or 0)
  batch = per_device * mesh.devices.size if per_device else int(config.input.batch_size)
  jax_utils.check_batch(batch, mesh)
  return batch


def _model_kwargs(config) -> dict:
  m = config.model
  kw = dict(leftover=m.leftover, resize_method=m.resize_method, antialias=m.antialias)
  if config.mode == "mspe":
    kw.update(freeze_native_kernel=config.mspe.freeze_native_kernel)
    if config.mspe.base_sizes:
      kw["mspe_base_sizes"] = tuple(int(b) for b in config.mspe.base_sizes)
  return kw


def build_model(config):
  """``(model, params, origin)`` from ``config.init_file`` or from scratch."""
  patch_embed = "mspe" if config.mode == "mspe" else "vanilla"
  kw = _model_kwargs(config)
  m = config.model
  if config.init_file:
    model, params = checkpoints.load_pretrained(
        config.init_file, variant=m.variant or None,
        num_classes=m.num_classes if m.num_classes >= 0 else None,
        image_size=m.image_size or None, patch_embed=patch_embed, **kw)
    return model, params, f"the pretrained file {config.init_file}"
  arch = (vit_lib.decode_variant(m.variant) if m.variant else
          dict(patch_size=(m.patch_size, m.patch_size), width=m.width, depth=m.depth,
               num_heads=m.num_heads, mlp_dim=m.mlp_dim))
  model = vit_lib.ViT(num_classes=m.num_classes, image_size=m.image_size, pool_type=m.pool_type,
                      patch_embed=patch_embed, **arch, **kw)
  dummy = jnp.zeros((1, m.image_size, m.image_size, 3), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(config.seed), dummy)["params"]
  return model, jax.device_get(params), f"scratch (seed {config.seed})"


# ---------------------------------------------------------------------------- helpers

def _sigkill_self() -> None:
  """Fault injection: die like a pre-empted job (no cleanup, no flushing)."""
  import signal
  os.kill(os.getpid(), signal.SIGKILL)


def _setup_logging(workdir: str) -> logging.Handler:
  os.makedirs(workdir, exist_ok=True)
  handler = logging.FileHandler(os.path.join(workdir, "train.log"))
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  logging.getLogger("mspe_jax").addHandler(handler)
  logging.getLogger("mspe_jax").setLevel(logging.INFO)
  return handler


def evaluate(fns: steps.StepFunctions, params, source, config, mesh, hws) -> dict[str, float]:
  """Top-1 of the current model at each ``hw`` on the first ``eval_examples`` images."""
  correct = {hw: 0.0 for hw in hws}
  total = 0.0
  batch_size = int(config.eval_batch_size)
  jax_utils.check_batch(batch_size, mesh)
  for batch in data.eval_batches(source, batch_size=batch_size,
                                 image_size=config.model.image_size,
                                 crop_fraction=config.input.eval_crop_fraction,
                                 max_examples=config.eval_examples or None):
    gb = jax_utils.shard_batch(batch, mesh)
    for hw in hws:
      correct[hw] += fns.eval_correct(params, gb["image"], gb["label"], gb["mask"], hw=hw)
    total += float(batch["mask"].sum())
  return {f"eval/top1_{h}x{w}": float(c) / max(total, 1.0) for (h, w), c in correct.items()}


# ---------------------------------------------------------------------------- training

def train_and_evaluate(config, workdir: str) -> dict:
  """Trains as ``config`` says, checkpointing in ``workdir``; returns the final metrics."""
  validate_config(config)
  workdir = os.path.abspath(workdir)
  handler = _setup_logging(workdir)
  try:
    return _train(config, workdir)
  finally:
    logging.getLogger("mspe_jax").removeHandler(handler)
    handler.close()


def _train(config, workdir: str) -> dict:
  lead = jax.process_index() == 0
  jax_utils.enable_compilation_cache(config.compilation_cache_dir or
                                     os.path.join(workdir, "jax_cache"))
  jax_utils.CompileCounter.install()
  compiles_at_start = jax_utils.CompileCounter.snapshot()

  # -- devices and data
  mesh = jax_utils.make_mesh()
  batch = global_batch_size(config, mesh)
  source = data.get_source(config.data.name, config.data.train_split, config.data.data_dir or None)
  if losses.needs_labels(config.loss.kind) and not source.has_labels:
    raise ValueError(f"{source.description} has no labels, but loss.kind={config.loss.kind!r} "
                     "needs them; use loss.kind='distill' to train from unlabelled images.")
  total_steps = int(config.total_steps) or int(math.ceil(
      config.num_epochs * data.steps_per_epoch(source, batch)))

  # -- model, optimizer, state: resume -> load -> scratch
  model, params, origin = build_model(config)
  if lead:
    ckpt_manager.save_model_config(workdir, model)
  trainable, frozen = steps.split_params(params, config.mode)
  tx, lr_schedule = optim.make_optimizer(config.optim, total_steps)
  rep = jax_utils.replicated(mesh)
  opt_state = jax.jit(tx.init, out_shardings=rep)(jax_utils.replicate(trainable, mesh))
  state = {"params": params, "opt_state": opt_state, "step": 0}
  ckpt = ckpt_manager.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   keep=config.keep_checkpoints,
                                   async_save=config.async_checkpoints)
  restored = ckpt.restore_latest(ckpt_manager.abstract_like(state, rep))
  if restored is not None:
    origin = f"checkpoint step {restored[0]} in {ckpt.directory}"
    state = restored[1]
    log.info("Resumed from %s.", origin)
  else:
    log.info("No checkpoint in %s: initialised from %s.", ckpt.directory, origin)
    state = jax_utils.replicate(state, mesh)
  step = int(state["step"])
  trainable, frozen = steps.split_params(state["params"], config.mode)
  opt_state = state["opt_state"]

  subsets = (steps.validate_subsets(config.mspe.resolutions or None, model)
             if config.mode == "mspe" else None)
  if subsets is not None:
    log.info("MSPE kernels %s, resolution subsets %s, lambda=%s, freeze_native_kernel=%s.",
             model.base_sizes, subsets, config.mspe.lam, model.freeze_native_kernel)
  loss_fn = losses.make_loss(config.loss.kind, temperature=config.loss.temperature,
                             distill_weight=config.loss.distill_weight,
                             label_smoothing=config.loss.label_smoothing)
  fns = steps.StepFunctions(model, tx, mesh, loss_fn, mode=config.mode)
  eval_source = (data.get_source(config.data.name, config.data.eval_split,
                                 config.data.data_dir or None)
                 if config.eval_every and source.has_labels else None)
  native_hw = pi_resize.as_hw(model.image_size)
  eval_hws = [pi_resize.as_hw(r, "eval resolution") for r in config.eval_resolutions] or [native_hw]

  writer = MetricWriter(workdir, enabled=lead, resume_step=step)
  it = data.train_iterator(source, global_batch=batch, image_size=config.model.image_size,
                           seed=config.seed, start_step=step,
                           augment=config.input.augment.to_dict(),
                           drop_labels=not losses.needs_labels(config.loss.kind))
  bar = tqdm.tqdm(total=total_steps, initial=step, desc=f"{config.mode} training",
                  disable=not (lead and config.progress_bar), mininterval=2.0, unit="step")
  last_eval: dict[str, float] = {}
  t_window, n_window = time.time(), 0
  try:
    while step < total_steps:
      if step + 1 == config.debug_kill_at_step:
        _sigkill_self()
      batch_np = next(it)
      if step + 1 == config.debug_nonfinite_loss_at_step:  # fault injection (tests)
        batch_np = dict(batch_np, image=np.full_like(batch_np["image"], np.nan))
      gb = jax_utils.shard_batch(batch_np, mesh)
      if config.mode == "mspe":
        terms = steps.draw_terms(step, config.seed, subsets, model, config.mspe.lam)
      else:
        terms = [steps.Term(None, native_hw, 1.0)]
      teacher = (fns.teacher(steps.merge_params(trainable, frozen), gb["image"])
                 if losses.needs_teacher(config.loss.kind) else None)
      values, grads = [], []
      for term in terms:
        value, g = fns.value_and_grad(trainable, frozen, gb["image"], gb.get("label"), teacher,
                                      term.weight, term)
        values.append(value)
        grads.append(g)
      if step + 1 == config.debug_nonfinite_grad_at_step:  # fault injection (tests)
        grads[0] = jax.tree_util.tree_map(lambda g: g * jnp.nan, grads[0])
      new_trainable, new_opt_state, grad_norm = fns.update(trainable, opt_state, grads)
      values, grad_norm = jax.device_get((values, grad_norm))
      loss = float(sum(t.weight * v for t, v in zip(terms, values)))
      if not (math.isfinite(loss) and math.isfinite(float(grad_norm))):
        ckpt.wait()  # the save in flight holds the last good state: let it finish
        good = ckpt.steps()
        raise NonFiniteError(
            f"Non-finite {'loss' if not math.isfinite(loss) else 'gradient'} at step {step + 1} "
            f"(loss={loss}, grad_norm={float(grad_norm)}): stopping. Nothing from this step was "
            f"saved; the latest checkpoint is step {good[-1] if good else 'none'} in "
            f"{ckpt.directory}.")
      trainable, opt_state = new_trainable, new_opt_state
      step += 1
      n_window += batch
      bar.update(1)

      if step % config.log_every == 0 or step == total_steps:
        elapsed = time.time() - t_window
        scalars = {"train/loss": loss, "train/grad_norm": float(grad_norm),
                   "train/lr": float(lr_schedule(step - 1)),
                   "train/images_per_sec": n_window / max(elapsed, 1e-9)}
        scalars.update({f"train/loss_{t.name}": float(v) for t, v in zip(terms, values)})
        writer.write(step, scalars)
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{scalars['train/images_per_sec']:.0f}",
                        **{k.split("_", 1)[1]: f"{v:.3f}" for k, v in last_eval.items()})
        t_window, n_window = time.time(), 0

      if step % config.checkpoint_every == 0 or step == total_steps:
        state = {"params": steps.merge_params(trainable, frozen), "opt_state": opt_state,
                 "step": step}
        ckpt.save(step, state)
        if step == config.debug_kill_during_save_at_step:
          _sigkill_self()

      if eval_source is not None and (step % config.eval_every == 0 or step == total_steps):
        last_eval = evaluate(fns, steps.merge_params(trainable, frozen), eval_source, config,
                             mesh, eval_hws)
        writer.write(step, last_eval)
        log.info("step %d: %s", step, last_eval)
    ckpt.wait()
  finally:
    bar.close()
    writer.close()
    ckpt.close()

  params = jax.device_get(steps.merge_params(trainable, frozen))
  if lead:
    checkpoints.save_npz(os.path.join(workdir, "model.npz"), params)
  compiles = {k: v - compiles_at_start[k] for k, v in jax_utils.CompileCounter.snapshot().items()}
  summary = {"step": step, "origin": origin,
             **{f"programs/{k}": v for k, v in fns.compiled_programs().items()}, **last_eval,
             **{f"compiles/{k}": v for k, v in compiles.items()}}
  log.info("Done: %s", summary)
  return summary
