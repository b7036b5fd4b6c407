"""Defaults shared by every config: each experiment overrides what it needs.

Every field a run can read exists here, so the configs stay locked: a misspelt
``--config.x=y`` is an error that names the field. Optional fields are typed placeholders
(``None`` until set: ``--config.init_file=path.npz`` still type-checks).
"""

import ml_collections
from ml_collections.config_dict import placeholder


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.mode = "mspe"             # "mspe": only the MSPE kernels train; "full": everything trains;
                              # "flexi": everything trains, one random patch size per step
  c.init_file = placeholder(str)  # AugReg / big_vision .npz to start from (None: scratch)

  c.model = ml_collections.ConfigDict()
  c.model.variant = placeholder(str)  # e.g. "B/16"; None: read off init_file, or the fields below
  c.model.patch_size = 16
  c.model.width = 768
  c.model.depth = 12
  c.model.num_heads = 12
  c.model.mlp_dim = 3072
  c.model.image_size = 224    # native resolution R; token grid N = R // patch
  c.model.num_classes = placeholder(int)  # None: keep the file's head; else re-init if different
  c.model.pool_type = "tok"
  c.model.task = placeholder(str)  # "classification" | "segmentation" (SETR-Naive head);
                                   # None: the init file's (scratch: classification)
  c.model.leftover = "resize_up"  # pixels past the fixed grid: "resize_up" (next multiple of
                                 # the grid) | "resize" (nearest) | "crop" | "pad"
  c.model.resize_method = "bilinear"
  c.model.antialias = True

  c.mspe = ml_collections.ConfigDict()
  c.mspe.base_sizes = ()      # (): p * (k+1) / 4, k < 4
  c.mspe.resolutions = ()     # one tuple of sizes (px) per kernel; (): routing-derived
  c.mspe.kernel_ranges = ()   # per kernel (lo, hi) effective kernel px per axis; overrides
                              # resolutions: every (N*ph, N*pw), ph, pw in lo..hi
  c.mspe.aspect = "independent"  # kernel_ranges: "independent" axes | "square" only
  c.mspe.range_step = 1       # kernel_ranges: a coarser grid of shapes (fewer programs)
  c.mspe.square_fraction = 0.0  # probability a kernel's draw comes from its square shapes only
                                # (demo, 0.5: within 0.2 points of 0 at every held-out square)
  c.mspe.routing = "smaller"  # "smaller" | "geometric" | "larger" | "range" (see patch_embed)
  c.mspe.lam = 1.0            # weight of the native-resolution term (paper Eq. 7)
  c.mspe.freeze_native_kernel = False

  c.flexi = ml_collections.ConfigDict()  # mode "flexi" (FlexiViT)
  c.flexi.patch_sizes = ()    # the patch sizes drawn (px; the image stays model.image_size)
  c.flexi.weights = ()        # their relative probabilities; (): uniform
  c.flexi.kernel_size = placeholder(int)  # the stored kernel (big_vision: 32); None: the file's
  c.flexi.posemb_size = placeholder(int)  # the stored position-embedding grid (big_vision: 7)

  c.loss = ml_collections.ConfigDict()
  c.loss.kind = "ce"          # "ce" (Eq. 7) | "distill" (no labels) | "ce+distill"; the
                              # teacher: mspe, the native model; flexi, the init_file model
  c.loss.temperature = 1.0
  c.loss.distill_weight = 1.0
  c.loss.label_smoothing = 0.0
  c.loss.ignore_label = 255   # segmentation: pixels with this label are not trained or scored

  c.data = ml_collections.ConfigDict()
  c.data.name = "imagenet2012"  # TFDS name, or "folder:/path" (unlabelled images)
  c.data.data_dir = placeholder(str)  # TFDS data_dir (None: ~/tensorflow_datasets)
  c.data.train_split = "train"
  c.data.eval_split = "validation"

  c.input = ml_collections.ConfigDict()
  c.input.batch_size = 512       # global batch
  c.input.per_device_batch = placeholder(int)  # overrides batch_size: per_device * devices
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
  c.total_steps = placeholder(int)  # overrides num_epochs
  c.log_every = 50
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.eval_every = placeholder(int)  # None: no periodic evaluation
  c.eval_resolutions = ()     # (): native only
  c.eval_examples = placeholder(int)  # None: the whole split
  c.eval_batch_size = 256
  c.compilation_cache_dir = placeholder(str)  # None: <workdir>/jax_cache
  c.multihost = False
  c.progress_bar = True
  return c


def eval_config() -> ml_collections.ConfigDict:
  """Every field ``eval.py`` reads (see ``mspe_jax.eval_lib``)."""
  c = ml_collections.ConfigDict()
  c.pretrained = placeholder(str)  # the pretrained .npz the baselines run on
  c.model_name = "mspe"     # the --workdir run's name in the tables (None: baselines only)
  c.per_kernel = True       # the --workdir model also kernel by kernel (for the oracle row)
  c.routings = ()           # the --workdir model also under each of these routing rules
  c.compare = ml_collections.ConfigDict()  # more models to compare: name -> workdir or .npz
  c.methods = ("vanilla", "pi", "img_resize", "kernel_resize_bilinear", "kernel_resize_bicubic",
               "kernel_resize_nearest")
  c.resolutions = ()        # the square sweep (px)
  c.fixed_heights = ()      # aspect sweeps: at each of these heights, every width of widths
  c.widths = ()
  c.fixed_widths = ()       # ... and at each of these widths, every height of heights
  c.heights = ()
  c.grid_sizes = ()         # every (h, w) pair of these sizes: MSPE minus image-resize heatmap
  c.grid_baselines = ("img_resize",)  # the baselines that also run the grid (MSPE models do)
  c.flexivit = placeholder(str)  # a FlexiViT (mode "flexi" workdir or .npz): method "flexivit"
  c.patch_sizes = ()        # FlexiViT's sweep: these patch sizes at the native resolution
  c.leftover = placeholder(str)       # None: each model's own ("resize_up" by default)
  c.resize_method = placeholder(str)  # None: the pretrained model's ("bilinear")
  c.antialias = True
  c.data = ml_collections.ConfigDict()
  c.data.name = "imagenet2012"
  c.data.split = "validation"
  c.data.data_dir = placeholder(str)  # TFDS data_dir (None: ~/tensorflow_datasets)
  c.crop_fraction = 0.875
  c.ignore_label = 255      # segmentation: pixels with this label are not scored
  c.masks = ()              # segmentation: a picture of predicted masks at these sizes (px)
  c.mask_examples = 4       # ... for the first this many evaluation images
  c.eval_examples = placeholder(int)  # None: the whole split
  c.batch_size = 250
  c.progress_bar = True
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
  c.input.per_device_batch = None
  c.input.batch_size = batch
  c.optim.warmup_steps = min(c.optim.warmup_steps, steps // 2)
  c.log_every = 1 if steps < 4 else 2
  c.checkpoint_every = checkpoint_every
  c.eval_every = steps
  c.eval_examples = eval_examples
  c.eval_batch_size = min(32, eval_examples)
  return c
