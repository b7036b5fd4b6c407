"""One step of ordinary training: every parameter trains (pretraining, full fine-tuning).

Each term (``mspe_jax.terms.Term``: a resolution, optionally a forced MSPE kernel, a weight)
is one program that differentiates the whole model (compiled once per kernel and
resolution); one update program applies the weighted sum. Pretraining at the native
resolution has a single term; the benchmarks run MSPE's terms with everything trainable (the
full fine-tuning MSPE is compared against).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mspe_jax import geometry, jax_utils, vit
from mspe_jax.train_state import TrainState, step_metrics


class FullStep:
  """``step(state, batch, terms) -> (state, metrics)``, everything left on device."""

  def __init__(self, model: vit.ViT, tx: optax.GradientTransformation, mesh, loss_fn):
    self.model, self.tx, self.loss_fn = model, tx, loss_fn
    rep = jax_utils.replicated(mesh)
    self.term_grad = jax.jit(self._term_grad, static_argnames=("kernel", "hw"),
                             out_shardings=rep)
    self.update = jax.jit(self._update, donate_argnums=(0, 1), out_shardings=rep)

  def init(self, params) -> TrainState:
    return TrainState(step=0, params=params, opt_state=self.tx.init(params))

  def __call__(self, state: TrainState, batch, terms):
    losses, grads = self.gradients(state.params, batch, terms)
    return self.apply_gradients(state, terms, losses, grads)

  def gradients(self, params, batch, terms):
    """Each term's loss and its gradient tree (like ``params``)."""
    losses, grads = [], []
    for term in terms:
      loss, g = self.term_grad(params, batch["image"], batch.get("label"),
                               jnp.float32(term.weight), kernel=term.kernel, hw=term.hw)
      losses.append(loss)
      grads.append(g)
    return losses, grads

  def apply_gradients(self, state: TrainState, terms, losses, grads):
    """One optimizer update of every parameter from a step's gradients."""
    weights = jnp.asarray([t.weight for t in terms], jnp.float32)
    params, opt_state, metrics = self.update(state.params, state.opt_state, grads, losses,
                                             weights)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def _term_grad(self, params, images, labels, weight, *, kernel, hw):
    policy = self.model.policy if kernel is None else self.model.policy.replace(kernel=kernel)

    def loss(p):
      x = geometry.resize_images(images, hw, policy.resize_method, policy.antialias)
      logits = self.model.apply({"params": p}, x, policy, sequence=False)[0]
      value = self.loss_fn(logits, labels, None)
      return weight * value, value
    (_, value), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return value, grads

  def _update(self, params, opt_state, grads_list, losses, weights):
    grads = jax.tree_util.tree_map(lambda *g: sum(g[1:], g[0]), *grads_list)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, step_metrics(losses, weights, grads)

  def compiled_programs(self) -> dict[str, int]:
    """Programs compiled so far, by kind (``bucket``: one per kernel and resolution)."""
    size = lambda f: f._cache_size()  # noqa: E731, SLF001
    return {"bucket": size(self.term_grad), "encoder": 0, "update": size(self.update)}
