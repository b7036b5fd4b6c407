"""AugReg / big_vision ``.npz`` files in and out: ``load_pretrained`` and ``save_npz``.

Two layouts are read:

* AugReg (google-research/vision_transformer): pre-Linen numbering
  (``MultiHeadDotProductAttention_1``, ``LayerNorm_2``, ``MlpBlock_3``) and
  ``Transformer/posembed_input/pos_embedding`` of shape ``(1, 1 + N*N, D)`` whose first slot
  belongs to the cls token. It is folded into ``cls`` (``cls + pos[:, :1]``: the cls token's
  position embedding is a constant), which is exact.
* big_vision: Linen numbering, top-level ``pos_embedding (1, N*N, D)``, optionally nested
  under ``params/``.

Both become the big_vision tree of ``mspe_jax.vit.ViT``. :func:`save_npz` writes that tree
with big_vision names (``mspe/...`` included when present).
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mspe_jax import geometry, pi_resize
from mspe_jax import vit as vit_lib
from mspe_jax.patch_embed import PatchEmbed, init_mspe_params

log = logging.getLogger(__name__)

_AUGREG_RENAMES = (
    ("/MultiHeadDotProductAttention_1/", "/MultiHeadDotProductAttention_0/"),
    ("/LayerNorm_2/", "/LayerNorm_1/"),
    ("/MlpBlock_3/", "/MlpBlock_0/"),
)
_AUGREG_POSEMB = "Transformer/posembed_input/pos_embedding"


# ---------------------------------------------------------------- flat <-> nested trees

def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dict -> ``{"a/b/c": leaf}``."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(flatten(v, key + "/"))
    else:
      out[key] = v
  return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """``{"a/b/c": leaf}`` -> nested dict."""
  tree: dict[str, Any] = {}
  for key, v in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


# ---------------------------------------------------------------- reading

def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads every array of an ``.npz``; ValueError naming the file if it is unreadable."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ValueError(f"Checkpoint {path} does not exist.")
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: np.asarray(f[k]) for k in f.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
    raise ValueError(f"Checkpoint {path} is not a readable .npz file ({type(e).__name__}: {e}).") \
        from None


def to_big_vision(flat: Mapping[str, np.ndarray], path: str = "<arrays>") -> dict[str, np.ndarray]:
  """Converts a flat AugReg or big_vision dict to big_vision names (``params/`` stripped)."""
  if any(k.startswith("params/") for k in flat):
    dropped = sorted(k for k in flat if not k.startswith("params/"))
    if dropped:
      log.info("%s: ignoring %d entries outside params/ (e.g. %s).", path, len(dropped), dropped[0])
    flat = {k[len("params/"):]: v for k, v in flat.items() if k.startswith("params/")}
  out = {}
  for k, v in flat.items():
    for old, new in _AUGREG_RENAMES:
      k = k.replace(old, new)
    out[k] = v
  if _AUGREG_POSEMB in out:
    posemb = out.pop(_AUGREG_POSEMB)
    if posemb.ndim != 3:
      raise ValueError(f"Checkpoint {path}: {_AUGREG_POSEMB} has shape {posemb.shape}, "
                       "expected (1, tokens, width).")
    n = posemb.shape[1]
    if "cls" in out and int(round((n - 1) ** 0.5)) ** 2 == n - 1:
      out["cls"] = (out["cls"] + posemb[:, :1]).astype(out["cls"].dtype)
      posemb = posemb[:, 1:]
    out["pos_embedding"] = posemb
  return out


def _size(h: int, w: int):
  """An int for square sizes (the usual case), else the (h, w) pair."""
  return h if h == w else (h, w)


SEG_HEAD_KEY = "head/Dense_1/kernel"  # the SETR-Naive head's last layer


def seg_head_params(width: int, num_classes: int, hidden: int | None = None, seed: int = 0):
  """A freshly initialised SETR-Naive head (flat ``head/...`` arrays; last layer zeros)."""
  from mspe_jax import segmentation
  head = segmentation.SegHead(num_classes, hidden or width)
  params = head.init(jax.random.key(seed), jnp.zeros((1, 1, 1, width), jnp.float32))["params"]
  return {f"head/{k}": np.asarray(v) for k, v in flatten(params).items()}


def infer_architecture(flat: Mapping[str, np.ndarray], path: str = "<arrays>") -> dict[str, Any]:
  """ViT constructor arguments read off big_vision-named arrays."""
  need = ["embedding/kernel", "pos_embedding",
          "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
          "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"]
  missing = [k for k in need if k not in flat]
  if missing:
    raise ValueError(f"Checkpoint {path} is missing keys needed to infer the architecture: "
                     f"{missing}. Keys found: {_listing(sorted(flat), 20)}")
  kernel = flat["embedding/kernel"]
  if kernel.ndim != 4:
    raise ValueError(f"Checkpoint {path}: embedding/kernel has shape {kernel.shape}, "
                     "expected (p, p, channels, width).")
  depth = 1 + max(int(m.group(1)) for k in flat
                  if (m := re.match(r"Transformer/encoderblock_(\d+)/", k)))
  query = flat["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"]
  grid = pi_resize.posemb_grid(flat["pos_embedding"])
  arch = dict(
      patch_size=tuple(int(s) for s in kernel.shape[:2]),
      in_channels=int(kernel.shape[2]),
      width=int(kernel.shape[3]),
      depth=depth,
      num_heads=int(query.shape[1]) if query.ndim == 3 else 1,
      mlp_dim=int(flat["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[-1]),
      image_size=_size(grid[0] * int(kernel.shape[0]), grid[1] * int(kernel.shape[1])),
      pool_type="tok" if "cls" in flat else "gap",
      num_classes=int(flat["head/kernel"].shape[-1]) if "head/kernel" in flat else 0,
  )
  if SEG_HEAD_KEY in flat:  # a SETR-Naive segmenter (mspe_jax.segmentation)
    arch.update(task="segmentation", num_classes=int(flat[SEG_HEAD_KEY].shape[-1]),
                head_hidden=int(flat["head/Dense_0/kernel"].shape[-1]))
  mspe_kernels = sorted((int(m.group(1)), v.shape[0]) for k, v in flat.items()
                        if (m := re.fullmatch(r"mspe/embedding_(\d+)/kernel", k)))
  if mspe_kernels:
    arch["mspe_base_sizes"] = tuple(int(s) for _, s in mspe_kernels)
  return arch


def expected_shapes(model: vit_lib.ViT) -> dict[str, tuple[int, ...]]:
  """Flat ``{name: shape}`` of the parameters ``model`` declares (nothing is allocated)."""
  h, w = geometry.as_hw(model.image_size)
  dummy = jax.ShapeDtypeStruct((1, h, w, model.in_channels), np.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), dummy)["params"]
  return {k: tuple(v.shape) for k, v in flatten(shapes).items()}


def _listing(items: list, limit: int = 25) -> str:
  shown = ", ".join(map(str, items[:limit]))
  return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"


def validate(flat: Mapping[str, np.ndarray], expected: Mapping[str, tuple], path: str) -> None:
  """One ValueError listing missing/unexpected keys, wrong shapes and non-finite arrays."""
  problems = []
  order = lambda k: (k.startswith("Transformer/"), k)  # noqa: E731  (embedding, head, ... first)
  missing = sorted(set(expected) - set(flat), key=order)
  unexpected = sorted(set(flat) - set(expected), key=order)
  if missing:
    problems.append(f"missing keys: {_listing(missing)}")
  if unexpected:
    problems.append(f"unexpected keys: {_listing(unexpected)}")
  wrong = [f"{k}: {tuple(expected[k])} vs {tuple(flat[k].shape)}"
           for k in sorted(set(flat) & set(expected), key=order)
           if tuple(flat[k].shape) != tuple(expected[k])]
  if wrong:
    problems.append(f"shape mismatches (key: expected vs found): {_listing(wrong)}")
  bad = sorted(k for k, v in flat.items()
               if np.issubdtype(v.dtype, np.number) and not np.isfinite(v).all())
  if bad:
    problems.append(f"non-finite values (NaN or inf) in: {_listing(bad)}")
  if problems:
    raise ValueError(f"Checkpoint {path} does not fit the model:\n  " + "\n  ".join(problems))


def load_pretrained(path: str | os.PathLike, policy: PatchEmbed | str = "vanilla", *,
                    variant: str | None = None, num_classes: int | None = None,
                    image_size: int | None = None, task: str | None = None,
                    **policy_fields):
  """Loads an AugReg or big_vision ``.npz`` and returns ``(model, params)``.

  Args:
    path: the ``.npz`` file.
    policy: the model's patch-embedding policy (``mspe_jax.patch_embed.PatchEmbed``), or just
      its mode (``"vanilla" | "pi" | "resize" | "mspe" | "flexi"``) with ``**policy_fields`` for the
      rest (``leftover``, ``base_sizes``, ``freeze_native_kernel``, ...). An MSPE policy uses
      the file's MSPE kernels when it has them (their base sizes unless given) and otherwise
      initialises them from the pretrained kernel by PI-resize (bias copied).
    variant: e.g. ``"B/16"``; None infers width, depth, heads, MLP size, patch and grid from
      the arrays. When given, every array is checked against it.
    num_classes: None keeps the stored head; a different count re-initialises the head
      (zeros, logged).
    image_size: native resolution; when its token grid differs from the stored one the
      position embedding is resampled (bilinear, logged).
    task: None keeps the file's (a classifier, or a SETR-Naive segmenter when the file has
      its head); ``"segmentation"`` on a classifier keeps the encoder and initialises a
      SETR-Naive head (``num_classes`` needed); ``"classification"`` on a segmenter, the
      reverse.

  Raises:
    ValueError naming the file: unreadable, missing or unexpected keys, wrong shapes,
    non-finite values, MSPE base sizes that differ from the stored kernels.
  """
  path = os.fspath(path)
  if isinstance(policy, str):
    policy = PatchEmbed(policy, **policy_fields)
  elif policy_fields:
    policy = policy.replace(**policy_fields)
  flat = to_big_vision(read_npz(path), path)
  arch = infer_architecture(flat, path)
  stored_mspe = arch.pop("mspe_base_sizes", None)
  stored_classes = arch["num_classes"]
  if variant is not None:
    declared = vit_lib.decode_variant(variant)
    arch.update(declared)
    arch["image_size"] = _size(*(g * p for g, p in zip(
        pi_resize.posemb_grid(flat["pos_embedding"]), declared["patch_size"])))

  # Validate the stored arrays against the architecture they claim (with their MSPE kernels).
  stored = vit_lib.ViT(**arch)
  if stored_mspe is not None:
    stored = stored.clone(policy=PatchEmbed("mspe", base_sizes=stored_mspe))
  validate(flat, expected_shapes(stored), path)

  # Adapt to what the caller asked for.
  if image_size is not None:
    new_grid = tuple(s // p for s, p in zip(geometry.as_hw(image_size, "image_size"),
                                             arch["patch_size"]))
    old_grid = pi_resize.posemb_grid(flat["pos_embedding"])
    if new_grid != old_grid:
      log.info("%s: resampling the position embedding from grid %s to %s.", path, old_grid,
               new_grid)
      flat["pos_embedding"] = np.asarray(pi_resize.resample_posemb(flat["pos_embedding"],
                                                                   new_grid))
    arch["image_size"] = _size(*geometry.as_hw(image_size, "image_size"))
  stored_task = arch.get("task", "classification")
  task = task or stored_task
  if task not in vit_lib.TASKS:
    raise ValueError(f"Unknown task {task!r}; expected one of {vit_lib.TASKS}.")
  if (num_classes is not None and num_classes != stored_classes) or task != stored_task:
    classes = stored_classes if num_classes is None else num_classes
    log.warning("%s: a %s head of %d classes, a %s head of %d requested: re-initialising "
                "the head.", path, stored_task, stored_classes, task, classes)
    for k in [k for k in flat if k.startswith("head/")]:
      del flat[k]
    arch.pop("head_hidden", None)
    if task == "segmentation":
      if not classes:
        raise ValueError(f"{path}: a segmentation head needs num_classes > 0.")
      flat.update(seg_head_params(arch["width"], classes))
    elif classes:
      flat["head/kernel"] = np.zeros((arch["width"], classes), np.float32)
      flat["head/bias"] = np.zeros((classes,), np.float32)
    arch["num_classes"], arch["task"] = classes, task

  if policy.mode == "mspe" and stored_mspe is not None:
    if policy.base_sizes is None:
      policy = policy.replace(base_sizes=stored_mspe)
    if policy.base_sizes != stored_mspe:
      raise ValueError(f"Checkpoint {path} holds MSPE kernels of base sizes {stored_mspe}, "
                       f"but base_sizes={policy.base_sizes} was asked.")
  model = vit_lib.ViT(**arch, policy=policy)
  params = unflatten({k: np.asarray(v) for k, v in flat.items()})
  if model.base_sizes and stored_mspe is None:
    params = init_mspe_params(params, model.base_sizes, policy.resize_method, policy.antialias)
  return model, params


# ---------------------------------------------------------------- writing

def save_npz(path: str | os.PathLike, params: Mapping[str, Any]) -> str:
  """Writes ``params`` as a big_vision ``.npz`` (flat ``/`` names), atomically.

  Returns the path written (``.npz`` appended if missing).
  """
  path = os.fspath(path)
  if not path.endswith(".npz"):
    path += ".npz"
  flat = {k: np.asarray(jax.device_get(v)) for k, v in flatten(params).items()}
  tmp = f"{path}.tmp-{os.getpid()}.npz"
  try:
    np.savez(tmp, **flat)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
