"""Optimizers and learning-rate schedules from a config."""

from __future__ import annotations

import optax


def schedule(cfg, total_steps: int):
  """Warm-up (linear from 0) then ``cosine`` / ``linear`` decay to 0, or ``constant``."""
  lr = float(cfg.lr)
  warmup = int(cfg.get("warmup_steps", 0))
  decay = cfg.get("decay", "cosine")
  rest = max(1, total_steps - warmup)
  if decay == "cosine":
    main = optax.cosine_decay_schedule(lr, rest)
  elif decay == "linear":
    main = optax.linear_schedule(lr, 0.0, rest)
  elif decay == "constant":
    main = optax.constant_schedule(lr)
  else:
    raise ValueError(f"Unknown lr decay {decay!r}; expected cosine, linear or constant.")
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg, total_steps: int):
  """``(optax transform, lr schedule)``.

  ``sgd``: PyTorch-style SGD (weight decay added to the gradient before momentum), as the
  paper trains MSPE. ``adamw``: decoupled weight decay. Optional ``grad_clip`` (global norm).
  """
  lr = schedule(cfg, total_steps)
  name = cfg.get("name", "sgd")
  wd = float(cfg.get("weight_decay", 0.0))
  if name == "sgd":
    parts = [optax.add_decayed_weights(wd)] if wd else []
    parts.append(optax.sgd(lr, momentum=cfg.get("momentum", 0.9) or None,
                           nesterov=bool(cfg.get("nesterov", False))))
  elif name == "adamw":
    parts = [optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), weight_decay=wd)]
  else:
    raise ValueError(f"Unknown optimizer {name!r}; expected sgd or adamw.")
  clip = cfg.get("grad_clip", None)
  if clip:
    parts.insert(0, optax.clip_by_global_norm(float(clip)))
  return optax.chain(*parts), lr
