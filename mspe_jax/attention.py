"""Multi-head self-attention with Flax's parameter layout, computed with one QKV matmul.

The parameters are exactly those of ``flax.linen.MultiHeadDotProductAttention`` (and so of
big_vision / AugReg checkpoints): ``{query,key,value}/kernel`` ``(D, H, D/H)``,
``{query,key,value}/bias`` ``(H, D/H)``, ``out/kernel`` ``(H, D/H, D)``, ``out/bias`` ``(D,)``,
initialised with the same random streams. Only the computation differs: the three projections
are one ``(B*N, D) @ (D, 3D)`` matmul and the heads are laid out ``(B, H, N, D/H)`` before the
two batched matmuls, which XLA runs about twice as fast on CPUs as Flax's per-projection
``DenseGeneral`` + einsum (forward of one ViT-S/16 block at batch 8; BENCHMARKS.md).
Self-attention only, no dropout, no mask: what a ViT encoder needs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class _Projection(nn.Module):
  """Declares a DenseGeneral's ``kernel`` and ``bias`` (same names, shapes and init)."""

  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  kernel_init: Any = nn.initializers.xavier_uniform()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self):
    flat = (int(np.prod(self.in_shape)), int(np.prod(self.out_shape)))
    shape = self.in_shape + self.out_shape

    def init(key, shape, dtype=jnp.float32):  # fan-in/out of the flattened matrix, as Flax
      return jnp.reshape(self.kernel_init(key, flat, dtype), shape)

    kernel = self.param("kernel", init, shape)
    bias = self.param("bias", self.bias_init, self.out_shape)
    return kernel, bias


class MultiHeadDotProductAttention(nn.Module):
  """Self-attention over ``x`` of shape ``(B, N, D)``."""

  num_heads: int
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x, num_queries: int | None = None):
    """``num_queries``: attend from the first ``num_queries`` tokens only (keys and values
    from all of them); the output is then ``(B, num_queries, D)``."""
    b, n, d = x.shape
    h = self.num_heads
    if d % h:
      raise ValueError(f"Width {d} is not divisible by num_heads={h}.")
    hd = d // h
    proj = {name: _Projection((d,), (h, hd), self.kernel_init, name=name)()
            for name in ("query", "key", "value")}
    out_kernel, out_bias = _Projection((h, hd), (d,), self.kernel_init, name="out")()
    scale = 1.0 / np.sqrt(hd)  # folded into the query projection
    w = jnp.concatenate([proj["query"][0].reshape(d, d) * scale,
                         proj["key"][0].reshape(d, d), proj["value"][0].reshape(d, d)], axis=1)
    bias = jnp.concatenate([proj["query"][1].reshape(d) * scale,
                            proj["key"][1].reshape(d), proj["value"][1].reshape(d)])
    x = x.astype(self.dtype)
    w, bias = w.astype(self.dtype), bias.astype(self.dtype)
    heads = lambda t, m: t.reshape(b, m, -1, h, hd).transpose(2, 0, 3, 1, 4)  # noqa: E731
    if num_queries is None or num_queries >= n:
      nq = n
      q, k, v = heads(x.reshape(b * n, d) @ w + bias, n)  # (3, B, H, N, hd)
    else:
      nq = num_queries
      q = heads(x[:, :nq].reshape(b * nq, d) @ w[:, :d] + bias[:d], nq)[0]
      k, v = heads(x.reshape(b * n, d) @ w[:, d:] + bias[d:], n)
    weights = jax.nn.softmax(q @ k.swapaxes(-1, -2), axis=-1)
    y = (weights @ v).transpose(0, 2, 1, 3).reshape(b * nq, d)
    y = y @ out_kernel.reshape(d, d).astype(self.dtype) + out_bias.astype(self.dtype)
    return y.reshape(b, nq, d)
