"""One step of ordinary training: every parameter trains (pretraining, full fine-tuning,
FlexiViT).

Each term (``mspe_jax.terms.Term``: a resolution, optionally a forced MSPE kernel or a
FlexiViT patch size, a weight) is one program that differentiates the whole model (compiled
once per kernel, patch size and resolution); one update program applies the weighted sum.
Pretraining at the native resolution has a single term, FlexiViT one per step at the drawn
patch size; the benchmarks run MSPE's terms with everything trainable (the full fine-tuning
MSPE is compared against). With a teacher (distillation) its logits come from fixed
parameters at the native resolution and patch size, on the same batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mspe_jax import geometry, jax_utils, vit
from mspe_jax.train_state import TrainState, step_metrics


class FullStep:
  """``step(state, batch, terms) -> (state, metrics)``, everything left on device."""

  def __init__(self, model: vit.ViT, tx: optax.GradientTransformation, mesh, loss_fn, *,
               teacher=None):
    """``teacher``: ``(ViT, params)`` to distil from (its own policy, native resolution)."""
    self.model, self.tx, self.loss_fn = model, tx, loss_fn
    rep = jax_utils.replicated(mesh)
    self.term_grad = jax.jit(self._term_grad, static_argnames=("kernel", "hw", "patch"),
                             out_shardings=rep)
    self.update = jax.jit(self._update, donate_argnums=(0, 1), out_shardings=rep)
    self.teacher = None
    if teacher is not None:
      teacher_model, teacher_params = teacher
      self.teacher_params = jax_utils.replicate(teacher_params, mesh)
      self.teacher = jax.jit(
          lambda p, x: teacher_model.apply({"params": p}, x, sequence=False)[0],
          out_shardings=jax_utils.batch_sharded(mesh))

  def init(self, params) -> TrainState:
    return TrainState(step=0, params=params, opt_state=self.tx.init(params))

  def __call__(self, state: TrainState, batch, terms):
    losses, grads = self.gradients(state.params, batch, terms)
    return self.apply_gradients(state, terms, losses, grads)

  def gradients(self, params, batch, terms):
    """Each term's loss and its gradient tree (like ``params``)."""
    teacher = (None if self.teacher is None
               else self.teacher(self.teacher_params, batch["image"]))
    losses, grads = [], []
    for term in terms:
      loss, g = self.term_grad(params, batch["image"], batch.get("label"), teacher,
                               jnp.float32(term.weight), kernel=term.kernel, hw=term.hw,
                               patch=term.patch)
      losses.append(loss)
      grads.append(g)
    return losses, grads

  def apply_gradients(self, state: TrainState, terms, losses, grads):
    """One optimizer update of every parameter from a step's gradients."""
    weights = jnp.asarray([t.weight for t in terms], jnp.float32)
    params, opt_state, metrics = self.update(state.params, state.opt_state, grads, losses,
                                             weights)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def _term_grad(self, params, images, labels, teacher_logits, weight, *, kernel, hw, patch):
    policy = self.model.policy
    if kernel is not None:
      policy = policy.replace(kernel=kernel)
    if patch is not None:
      policy = policy.replace(patch=patch)

    def loss(p):
      x = geometry.resize_images(images, hw, policy.resize_method, policy.antialias)
      logits = self.model.apply({"params": p}, x, policy, sequence=False)[0]
      value = self.loss_fn(logits, labels, teacher_logits)
      return weight * value, value
    (_, value), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return value, grads

  def _update(self, params, opt_state, grads_list, losses, weights):
    grads = jax.tree_util.tree_map(lambda *g: sum(g[1:], g[0]), *grads_list)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, step_metrics(losses, weights, grads)

  def compiled_programs(self) -> dict[str, int]:
    """Programs compiled so far, by kind (``bucket``: one per kernel, patch size and
    resolution)."""
    size = lambda f: f._cache_size()  # noqa: E731, SLF001
    return {"bucket": size(self.term_grad), "encoder": 0, "update": size(self.update),
            "teacher": 0 if self.teacher is None else size(self.teacher)}
