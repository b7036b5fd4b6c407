"""The MSPE train step written in PyTorch the way the authors' code does it (benchmark only).

Frozen ViT (``requires_grad=False``), K kernels PI-resized on the fly from a cached
``pinv(B^T)``, one forward per kernel at its resolution plus the native term (a fifth
forward), the losses summed, one backward, SGD on the kernels and biases only. Weights come
from the same ``.npz`` as the JAX model. torch is a benchmark-only dependency.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mspe_jax import npz, pi_resize


class TorchViT(torch.nn.Module):
  """A pre-LN ViT (tok pooling) on big_vision-named arrays; the patch kernel is an argument."""

  def __init__(self, flat: dict[str, np.ndarray], num_heads: int):
    super().__init__()
    t = lambda k: torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(flat[k])),
                                     requires_grad=False)
    self.heads = num_heads
    self.cls = t("cls")
    self.pos = t("pos_embedding")
    self.blocks = []
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in flat:
      b = f"Transformer/encoderblock_{i}/"
      a = b + "MultiHeadDotProductAttention_0/"
      d = flat[a + "query/kernel"].shape[0]
      qkv_w = np.concatenate([flat[a + f"{n}/kernel"].reshape(d, -1) for n in
                              ("query", "key", "value")], axis=1).T
      qkv_b = np.concatenate([flat[a + f"{n}/bias"].reshape(-1) for n in
                              ("query", "key", "value")])
      block = {
          "ln0_w": t(b + "LayerNorm_0/scale"), "ln0_b": t(b + "LayerNorm_0/bias"),
          "qkv_w": torch.nn.Parameter(torch.from_numpy(qkv_w.copy()), requires_grad=False),
          "qkv_b": torch.nn.Parameter(torch.from_numpy(qkv_b.copy()), requires_grad=False),
          "out_w": torch.nn.Parameter(torch.from_numpy(
              flat[a + "out/kernel"].reshape(-1, d).T.copy()), requires_grad=False),
          "out_b": t(a + "out/bias"),
          "ln1_w": t(b + "LayerNorm_1/scale"), "ln1_b": t(b + "LayerNorm_1/bias"),
          "fc1_w": torch.nn.Parameter(torch.from_numpy(
              flat[b + "MlpBlock_0/Dense_0/kernel"].T.copy()), requires_grad=False),
          "fc1_b": t(b + "MlpBlock_0/Dense_0/bias"),
          "fc2_w": torch.nn.Parameter(torch.from_numpy(
              flat[b + "MlpBlock_0/Dense_1/kernel"].T.copy()), requires_grad=False),
          "fc2_b": t(b + "MlpBlock_0/Dense_1/bias"),
      }
      self.blocks.append(torch.nn.ParameterDict(block))
      i += 1
    self.blocks = torch.nn.ModuleList(self.blocks)
    self.norm_w = t("Transformer/encoder_norm/scale")
    self.norm_b = t("Transformer/encoder_norm/bias")
    self.head_w = torch.nn.Parameter(torch.from_numpy(flat["head/kernel"].T.copy()),
                                     requires_grad=False)
    self.head_b = t("head/bias")

  def forward(self, x, kernel_oihw, bias):
    z = F.conv2d(x, kernel_oihw, bias, stride=kernel_oihw.shape[-2:])
    n, d = z.shape[0], z.shape[1]
    z = z.flatten(2).transpose(1, 2) + self.pos
    z = torch.cat([self.cls.expand(n, -1, -1), z], dim=1)
    for blk in self.blocks:
      y = F.layer_norm(z, (d,), blk["ln0_w"], blk["ln0_b"], eps=1e-6)
      qkv = F.linear(y, blk["qkv_w"], blk["qkv_b"]).view(n, -1, 3, self.heads, d // self.heads)
      q, k, v = qkv.permute(2, 0, 3, 1, 4)
      y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, -1, d)
      z = z + F.linear(y, blk["out_w"], blk["out_b"])
      y = F.layer_norm(z, (d,), blk["ln1_w"], blk["ln1_b"], eps=1e-6)
      y = F.gelu(F.linear(y, blk["fc1_w"], blk["fc1_b"]), approximate="tanh")
      z = z + F.linear(y, blk["fc2_w"], blk["fc2_b"])
    z = F.layer_norm(z, (d,), self.norm_w, self.norm_b, eps=1e-6)
    return F.linear(z[:, 0], self.head_w, self.head_b)


class TorchMSPE:
  """K trainable kernels (HWIO, at their base sizes) + the authors' training step."""

  def __init__(self, npz_path: str, base_sizes, num_heads: int, device: str = "cpu",
               lr: float = 1e-3):
    flat = npz.to_big_vision(npz.read_npz(npz_path))
    self.device = device
    self.vit = TorchViT(flat, num_heads).to(device)
    self.grid = int(round(math.sqrt(flat["pos_embedding"].shape[1])))
    kernel = flat["embedding/kernel"].astype(np.float64)
    self.kernels = [torch.nn.Parameter(torch.from_numpy(
        pi_resize.resample_kernel(kernel, (b, b)).astype(np.float32)).to(device))
        for b in base_sizes]
    self.biases = [torch.nn.Parameter(torch.from_numpy(flat["embedding/bias"].copy()).to(device))
                   for _ in base_sizes]
    self.opt = torch.optim.SGD(self.kernels + self.biases, lr=lr, momentum=0.9,
                               weight_decay=5e-4)
    self._pinv = {}

  def _kernel(self, k: int, size: int):
    """PI-resize of kernel k to (size, size) with a cached pinv, as OIHW."""
    w = self.kernels[k]
    b = w.shape[0]
    if (b, size) not in self._pinv:
      self._pinv[(b, size)] = torch.from_numpy(
          pi_resize.pinv_matrix((b, b), (size, size)).astype(np.float32)).to(self.device)
    m = self._pinv[(b, size)]
    new = (m @ w.reshape(b * b, -1)).reshape(size, size, *w.shape[2:])
    return new.permute(3, 2, 0, 1)

  def step(self, images_nchw, labels, resolutions, native: int, lam: float = 1.0):
    """One optimisation step: K terms at ``resolutions`` + lambda x the native term."""
    loss = 0.0
    for k, r in enumerate(resolutions):
      x = images_nchw if r == native else F.interpolate(
          images_nchw, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
      logits = self.vit(x, self._kernel(k, r // self.grid), self.biases[k])
      loss = loss + F.cross_entropy(logits, labels)
    native_k = len(self.kernels) - 1
    logits = self.vit(images_nchw, self._kernel(native_k, native // self.grid),
                      self.biases[native_k])
    loss = loss + lam * F.cross_entropy(logits, labels)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss.detach()
