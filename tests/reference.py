"""Independent numpy reference: AugReg files and a ViT forward pass (no Flax, no jax.image).

Everything here is written from the definitions (AugReg layout, half-pixel-centre
resampling as in TF/PIL, pre-LN Transformer) and shares no code with ``mspe_jax``; tests
compare the package against it.
"""

import math

import numpy as np

# ------------------------------------------------------------------- AugReg files

def augreg_arrays(seed=0, *, width=32, depth=2, heads=4, mlp=64, patch=4, grid=7, classes=10,
                  scale=0.2):
  """Random weights with AugReg names and shapes (pre-Linen numbering, cls posemb slot)."""
  rng = np.random.default_rng(seed)

  def r(*shape, s=scale):
    return (rng.standard_normal(shape) * s).astype(np.float32)

  hd = width // heads
  a = {
      "embedding/kernel": r(patch, patch, 3, width),
      "embedding/bias": r(width, s=0.05),
      "cls": r(1, 1, width),
      "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, width),
      "Transformer/encoder_norm/scale": 1 + r(width, s=0.1),
      "Transformer/encoder_norm/bias": r(width, s=0.1),
      "head/kernel": r(width, classes, s=0.5),
      "head/bias": r(classes, s=0.1),
  }
  for i in range(depth):
    b = f"Transformer/encoderblock_{i}/"
    for ln in ("LayerNorm_0", "LayerNorm_2"):
      a[b + ln + "/scale"] = 1 + r(width, s=0.1)
      a[b + ln + "/bias"] = r(width, s=0.1)
    for n in ("query", "key", "value"):
      a[b + f"MultiHeadDotProductAttention_1/{n}/kernel"] = r(width, heads, hd)
      a[b + f"MultiHeadDotProductAttention_1/{n}/bias"] = r(heads, hd, s=0.05)
    a[b + "MultiHeadDotProductAttention_1/out/kernel"] = r(heads, hd, width)
    a[b + "MultiHeadDotProductAttention_1/out/bias"] = r(width, s=0.05)
    a[b + "MlpBlock_3/Dense_0/kernel"] = r(width, mlp)
    a[b + "MlpBlock_3/Dense_0/bias"] = r(mlp, s=0.05)
    a[b + "MlpBlock_3/Dense_1/kernel"] = r(mlp, width)
    a[b + "MlpBlock_3/Dense_1/bias"] = r(width, s=0.05)
  return a


def augreg_to_big_vision(a, prefix="params/"):
  """The big_vision file of the same model: Linen numbering, cls slot folded into cls."""
  out = {}
  for k, v in a.items():
    if k == "Transformer/posembed_input/pos_embedding":
      out[prefix + "pos_embedding"] = v[:, 1:]
      continue
    k = (k.replace("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
         .replace("LayerNorm_2", "LayerNorm_1").replace("MlpBlock_3", "MlpBlock_0"))
    out[prefix + k] = v
  out[prefix + "cls"] = a["cls"] + a["Transformer/posembed_input/pos_embedding"][:, :1]
  return out


# ------------------------------------------------------------------- resampling

def _tri(x):
  return np.maximum(0.0, 1.0 - np.abs(x))


def _keys_cubic(x, a=-0.5):
  x = np.abs(x)
  return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def resize_matrix_1d(n_in, n_out, method="bilinear", antialias=True):
  """(n_out, n_in) half-pixel-centre resampling; antialias widens the kernel on downsampling."""
  if method == "nearest":
    m = np.zeros((n_out, n_in))
    src = np.minimum(np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(int), n_in - 1)
    m[np.arange(n_out), src] = 1.0
    return m
  kern = {"bilinear": _tri, "bicubic": _keys_cubic}[method]
  scale = n_out / n_in
  widen = max(1.0 / scale, 1.0) if antialias else 1.0
  centre = (np.arange(n_out) + 0.5) / scale - 0.5
  w = kern((np.arange(n_in)[None, :] - centre[:, None]) / widen)
  w = w / w.sum(axis=1, keepdims=True)
  return w


def resize_matrix_2d(old_hw, new_hw, method="bilinear", antialias=True):
  return np.kron(resize_matrix_1d(old_hw[0], new_hw[0], method, antialias),
                 resize_matrix_1d(old_hw[1], new_hw[1], method, antialias))


def resize_image(x, new_hw, method="bilinear", antialias=True):
  """Resizes (..., H, W, C) with the separable reference matrices."""
  mh = resize_matrix_1d(x.shape[-3], new_hw[0], method, antialias)
  mw = resize_matrix_1d(x.shape[-2], new_hw[1], method, antialias)
  return np.einsum("ih,jw,...hwc->...ijc", mh, mw, x)


def pi_resize_kernel(w, new_hw, method="bilinear", antialias=True):
  """PI-resize from the definition: w_new = pinv(B^T) vec(w), per channel pair."""
  h, wd, c, d = w.shape
  b = resize_matrix_2d((h, wd), new_hw, method, antialias)
  return (np.linalg.pinv(b.T) @ w.reshape(h * wd, c * d)).reshape(*new_hw, c, d)


# ------------------------------------------------------------------- ViT forward

def _layernorm(x, scale, bias, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def vit_forward(a, images, *, kernel=None):
  """Logits of an AugReg-named model (float64). ``kernel`` overrides the patch kernel
  (stride = kernel); when the token grid differs from the stored one, the patch position
  embeddings are resampled (bilinear, antialiased)."""
  a = {k: v.astype(np.float64) for k, v in a.items()}
  x = images.astype(np.float64)
  k = a["embedding/kernel"] if kernel is None else kernel
  kh, kw = k.shape[:2]
  n, h, w, c = x.shape
  gh, gw = h // kh, w // kw
  top, left = (h - gh * kh) // 2, (w - gw * kw) // 2  # centre crop to whole patches
  x = x[:, top:top + gh * kh, left:left + gw * kw]
  patches = x.reshape(n, gh, kh, gw, kw, c)
  tok = np.einsum("nyhxwc,hwcd->nyxd", patches, k).reshape(n, gh * gw, -1)
  tok = tok + a["embedding/bias"]
  pos = a["Transformer/posembed_input/pos_embedding"]
  pos_cls, pos_patch = pos[:, :1], pos[:, 1:]
  g = int(round(pos_patch.shape[1] ** 0.5))
  if (gh, gw) != (g, g):
    pos_patch = resize_image(pos_patch.reshape(1, g, g, -1), (gh, gw)).reshape(1, gh * gw, -1)
  cls = np.repeat(a["cls"], n, axis=0)
  x = np.concatenate([cls, tok], axis=1) + np.concatenate([pos_cls, pos_patch], axis=1)
  i = 0
  while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in a:
    b = f"Transformer/encoderblock_{i}/"
    y = _layernorm(x, a[b + "LayerNorm_0/scale"], a[b + "LayerNorm_0/bias"])
    att = b + "MultiHeadDotProductAttention_1/"
    q, kk, v = (np.einsum("ntd,dhe->nthe", y, a[att + f"{m}/kernel"]) + a[att + f"{m}/bias"]
                for m in ("query", "key", "value"))
    logits = np.einsum("nqhe,nkhe->nhqk", q, kk) / math.sqrt(q.shape[-1])
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("nhqk,nkhe->nqhe", p, v)
    x = x + np.einsum("nqhe,hed->nqd", o, a[att + "out/kernel"]) + a[att + "out/bias"]
    y = _layernorm(x, a[b + "LayerNorm_2/scale"], a[b + "LayerNorm_2/bias"])
    y = _gelu_tanh(y @ a[b + "MlpBlock_3/Dense_0/kernel"] + a[b + "MlpBlock_3/Dense_0/bias"])
    x = x + y @ a[b + "MlpBlock_3/Dense_1/kernel"] + a[b + "MlpBlock_3/Dense_1/bias"]
    i += 1
  x = _layernorm(x, a["Transformer/encoder_norm/scale"], a["Transformer/encoder_norm/bias"])
  return x[:, 0] @ a["head/kernel"] + a["head/bias"]


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))
