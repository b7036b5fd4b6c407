"""Analytic FLOPs of a ViT forward pass (multiply-add = 2 FLOPs), per image."""

from __future__ import annotations


def patch_embed_flops(kernel_hw, grid, in_channels: int, width: int) -> float:
  """The strided patch convolution: one (kh*kw*C) x D product per token."""
  return 2.0 * grid[0] * grid[1] * kernel_hw[0] * kernel_hw[1] * in_channels * width


def encoder_flops(tokens: int, width: int, depth: int, mlp_dim: int) -> float:
  """``depth`` pre-LN blocks on ``tokens`` tokens: QKV, scores, weighted sum, out, MLP."""
  t, d = tokens, width
  per_block = (2 * t * d * 3 * d      # q, k, v projections
               + 2 * t * t * d * 2    # q k^T and attention-weighted values
               + 2 * t * d * d        # output projection
               + 2 * t * d * mlp_dim * 2)  # two MLP layers
  return float(depth * per_block)


def vit_flops(model, plan) -> dict[str, float]:
  """``{"patch_gflops", "gflops"}`` of ``model`` on one image embedded as ``plan`` says
  (``model.plan(h, w, policy)``); a segmenter's head counted per token (its upsampling,
  not a matrix product, is not)."""
  grid = plan.grid
  patch = patch_embed_flops(plan.kernel_hw, grid, model.in_channels, model.width)
  tokens = grid[0] * grid[1] + (1 if model.pool_type == "tok" else 0)
  total = patch + encoder_flops(tokens, model.width, model.depth, model.mlp_dim or 4 * model.width)
  if getattr(model, "task", "classification") == "segmentation":  # SETR-Naive, per token
    hidden = model.head_hidden or model.width
    total += 2.0 * grid[0] * grid[1] * hidden * (model.width + model.num_classes)
  elif model.num_classes:
    total += 2.0 * model.width * model.num_classes
  return {"patch_gflops": patch / 1e9, "gflops": total / 1e9}
