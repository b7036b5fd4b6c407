"""Defaults shared by every config: each experiment overrides what it needs.

Every field a run can read exists here, so the configs stay locked: a misspelt
``--config.x=y`` is an error that names the field.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.mode = "mspe"             # "mspe": only the MSPE kernels train; "full": everything trains
  c.init_file = ""            # AugReg / big_vision .npz to start from ("" = from scratch)

  c.model = ml_collections.ConfigDict()
  c.model.variant = ""        # e.g. "B/16"; "" = read off init_file, or the fields below
  c.model.patch_size = 16
  c.model.width = 768
  c.model.depth = 12
  c.model.num_heads = 12
  c.model.mlp_dim = 3072
  c.model.image_size = 224    # native resolution R; token grid N = R // patch
  c.model.num_classes = -1    # -1 = keep the file's head; else re-initialise if different
  c.model.pool_type = "tok"
  c.model.leftover = "resize"  # pixels past the fixed grid: "resize" | "crop" | "pad"
  c.model.resize_method = "bilinear"
  c.model.antialias = True

  c.mspe = ml_collections.ConfigDict()
  c.mspe.base_sizes = ()      # () = p * (k+1) / 4, k < 4
  c.mspe.resolutions = ()     # one tuple of sizes (px) per kernel; () = routing-derived
  c.mspe.lam = 1.0            # weight of the native-resolution term (paper Eq. 7)
  c.mspe.freeze_native_kernel = False

  c.loss = ml_collections.ConfigDict()
  c.loss.kind = "ce"          # "ce" (Eq. 7) | "distill" (no labels) | "ce+distill"
  c.loss.temperature = 1.0
  c.loss.distill_weight = 1.0
  c.loss.label_smoothing = 0.0

  c.data = ml_collections.ConfigDict()
  c.data.name = "imagenet2012"  # TFDS name, or "folder:/path" (unlabelled images)
  c.data.data_dir = ""          # TFDS data_dir ("" = ~/tensorflow_datasets)
  c.data.train_split = "train"
  c.data.eval_split = "validation"

  c.input = ml_collections.ConfigDict()
  c.input.batch_size = 512       # global batch
  c.input.per_device_batch = 0   # > 0 overrides batch_size: per_device_batch * devices
  c.input.eval_crop_fraction = 0.875
  c.input.augment = ml_collections.ConfigDict()
  c.input.augment.crop_scale = (0.08, 1.0)  # random resized crop area range
  c.input.augment.crop_ratio = (3 / 4, 4 / 3)
  c.input.augment.flip = True
  c.input.augment.color_jitter = 0.4

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"
  c.optim.lr = 1e-3
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 5e-4
  c.optim.warmup_steps = 0
  c.optim.decay = "cosine"
  c.optim.grad_clip = 0.0

  c.num_epochs = 5.0
  c.total_steps = 0           # > 0 overrides num_epochs
  c.log_every = 50
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.eval_every = 1000         # 0 = no periodic eval
  c.eval_resolutions = ()     # () = native only
  c.eval_examples = 10000
  c.eval_batch_size = 256
  c.compilation_cache_dir = ""  # "" = <workdir>/jax_cache
  c.multihost = False
  c.progress_bar = True
  # Fault injection for the reliability tests (-1 = off): NaN pixels in this step's batch
  # (a non-finite loss); a NaN gradient at this step; SIGKILL this process when this step
  # starts; SIGKILL it while this step's checkpoint is being written.
  c.debug_nonfinite_loss_at_step = -1
  c.debug_nonfinite_grad_at_step = -1
  c.debug_kill_at_step = -1
  c.debug_kill_during_save_at_step = -1
  return c


def parse_arg(arg: str | None) -> bool:
  """``get_config``'s argument: ``"smoke"`` (True) or nothing (False)."""
  if arg and arg != "smoke":
    raise ValueError(f"Unknown config argument {arg!r}; expected 'smoke' or nothing.")
  return arg == "smoke"


def smoke(c: ml_collections.ConfigDict, *, steps: int, batch: int, checkpoint_every: int,
          eval_examples: int) -> ml_collections.ConfigDict:
  """A handful of steps on tiny batches (what the tests run): every part of the loop runs."""
  c.total_steps = steps
  c.input.per_device_batch = 0
  c.input.batch_size = batch
  c.optim.warmup_steps = min(c.optim.warmup_steps, steps // 2)
  c.log_every = 1 if steps < 4 else 2
  c.checkpoint_every = checkpoint_every
  c.eval_every = steps
  c.eval_examples = eval_examples
  c.eval_batch_size = min(32, eval_examples)
  return c
