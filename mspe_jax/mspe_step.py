"""One MSPE training step (paper Eq. 7): only the K kernels train, the encoder is frozen.

Eq. 7 sums K cross-entropies, term k at a resolution drawn from subset k (``mspe_jax.terms``),
plus ``lambda`` times the native-resolution term. The K kernels' parameters are disjoint, so
the gradient of the sum with respect to kernel k is the gradient of its own terms: each term
is computed on its own and one update applies the sum. A term takes two programs:

* ``embed`` (per kernel and resolution): resize the native batch to the term's size, project
  its patches onto the kernel's stored size (``Q = M^T patches``, ``M`` the PI-resize map)
  and form the tokens ``Q @ W + b``;
* ``encoder_grad``: the loss and the tokens' cotangent through the frozen encoder. The token
  grid is fixed, so this largest program is compiled once for every resolution, and no
  weight gradient is computed for the encoder.

``update`` forms each kernel's gradient ``Q^T dtokens`` (``Q`` has the same shape at every
resolution) and applies the optimizer; it depends only on how many terms a step has (K or
K+1). A run therefore compiles ``sum_k |S_k|`` small bucket programs, the encoder once and
the update once or twice -- additive in the subsets, never ``prod_k |S_k|``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mspe_jax import cpu_tuning, geometry, jax_utils, vit
from mspe_jax.patch_embed import PRETRAINED_KERNEL, PatchEmbed
from mspe_jax.train_state import TrainState, step_metrics

TRAINABLE = "mspe"  # the parameter subtree MSPE trains


@struct.dataclass
class KernelGrad:
  """A term's contribution to its kernel's gradient, kept factored: ``Q^T dtokens`` for the
  kernel, ``sum(dtokens)`` for the bias (``kernel``: the MSPE kernel index; the pretrained
  kernel, ``PRETRAINED_KERNEL``, is frozen and gets none)."""
  kernel: int = struct.field(pytree_node=False)
  projected: jax.Array
  dtokens: jax.Array


def kernel_gradients(trainable, kernel_grads):
  """The gradient tree of ``trainable`` (``{"mspe": ...}``) from a step's ``KernelGrad``s."""
  grads = jax.tree_util.tree_map(jnp.zeros_like, dict(trainable[TRAINABLE]))
  for g in kernel_grads:
    if g.kernel == PRETRAINED_KERNEL:
      continue
    name = f"embedding_{g.kernel}"
    q = g.projected.reshape(-1, g.projected.shape[-1])
    dt = g.dtokens.reshape(-1, g.dtokens.shape[-1])
    kernel, bias = grads[name]["kernel"], grads[name]["bias"]
    grads[name] = {"kernel": kernel + (q.T @ dt).reshape(kernel.shape),
                   "bias": bias + jnp.sum(dt, axis=0)}
  return {TRAINABLE: grads}


class MSPEStep:
  """``step(state, batch, terms) -> (state, metrics)``, everything left on device.

  ``loss_fn(logits, labels, teacher_logits)``; with ``distill`` the teacher is the frozen
  pretrained model (its own kernel) at native resolution on the same batch. ``chains``:
  see ``mspe_jax.cpu_tuning`` (None: as it decides for ``mesh``).
  """

  def __init__(self, model: vit.ViT, tx: optax.GradientTransformation, mesh, loss_fn, *,
               distill: bool = False, chains: int | None = None):
    if not model.base_sizes:
      raise ValueError("MSPE training needs a model with MSPE kernels: load it with the "
                       "'mspe' policy (load_pretrained(path, 'mspe')).")
    self.model, self.tx, self.loss_fn, self.distill = model, tx, loss_fn, distill
    self.chains = cpu_tuning.encoder_chains(mesh) if chains is None else chains
    rep, data = jax_utils.replicated(mesh), jax_utils.batch_sharded(mesh)
    self.embed = jax.jit(self._embed, static_argnames=("kernel", "hw"),
                         out_shardings=(data, data))
    self.encoder_grad = jax.jit(self._encoder_grad, out_shardings=(rep, data))
    self.update = jax.jit(self._update, donate_argnums=(0, 1), out_shardings=rep)
    self.teacher = jax.jit(self._teacher, out_shardings=data)

  def init(self, params) -> TrainState:
    if TRAINABLE not in params:
      raise ValueError("MSPE training needs MSPE parameters (params['mspe']); load the model "
                       "with the 'mspe' policy.")
    return TrainState(step=0, params=params, opt_state=self.tx.init({TRAINABLE: params[TRAINABLE]}))

  def __call__(self, state: TrainState, batch, terms):
    losses, grads = self.gradients(state.params, batch, terms)
    return self.apply_gradients(state, terms, losses, grads)

  def gradients(self, params, batch, terms):
    """Each term's loss and its ``KernelGrad`` (the patches projected onto the kernel's stored
    size and the tokens' cotangent through the frozen encoder)."""
    images, labels = batch["image"], batch.get("label")
    teacher = self.teacher(params, images) if self.distill else None
    encoder = vit.encoder_params(params)
    losses, grads = [], []
    for term in terms:
      kernel = self._kernel_index(term)
      tokens, projected = self.embed(params, images, kernel=kernel, hw=term.hw)
      loss, dtokens = self.encoder_grad(encoder, tokens, labels, teacher,
                                        jnp.float32(term.weight))
      losses.append(loss)
      grads.append(KernelGrad(kernel, projected, dtokens))
    return losses, grads

  def apply_gradients(self, state: TrainState, terms, losses, grads):
    """One optimizer update of the MSPE kernels from a step's gradients."""
    weights = jnp.asarray([t.weight for t in terms], jnp.float32)
    trainable, opt_state, metrics = self.update({TRAINABLE: state.params[TRAINABLE]},
                                                state.opt_state, grads, losses, weights)
    return state.replace(step=state.step + 1, params={**state.params, **trainable},
                         opt_state=opt_state), metrics

  # -- the jitted pieces

  def _kernel_index(self, term) -> int:
    if term.kernel is not None:
      return int(term.kernel)
    return self.model.plan(*term.hw).kernel_index

  def _embed(self, params, images, *, kernel, hw):
    x = geometry.resize_images(images, hw, self.model.policy.resize_method,
                               self.model.policy.antialias)
    return self.model.apply({"params": params}, x, self.model.policy.replace(kernel=kernel),
                            method="embed_projected")

  def _encoder_grad(self, encoder, tokens, labels, teacher_logits, weight):
    def loss(t):
      logits = cpu_tuning.encode_logits(self.model, encoder, t, self.chains)
      value = self.loss_fn(logits, labels, teacher_logits)
      return weight * value, value
    (_, value), dtokens = jax.value_and_grad(loss, has_aux=True)(tokens)
    return value, dtokens

  def _update(self, trainable, opt_state, kernel_grads, losses, weights):
    grads = kernel_gradients(trainable, kernel_grads)
    updates, opt_state = self.tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, step_metrics(losses, weights, grads)

  def _teacher(self, params, images):
    """The frozen pretrained model (its own kernel) at native resolution."""
    tokens = self.model.apply({"params": params}, images, PatchEmbed("vanilla"), method="embed")
    return cpu_tuning.encode_logits(self.model, vit.encoder_params(params), tokens, self.chains)

  def compiled_programs(self) -> dict[str, int]:
    """Programs compiled so far, by kind (``bucket``: one per kernel and resolution)."""
    size = lambda f: f._cache_size()  # noqa: E731, SLF001
    return {"bucket": size(self.embed), "encoder": size(self.encoder_grad),
            "update": size(self.update)}
