"""Every loss of the agent, as pure functions (no state, no config objects).

Shapes: T = unroll length, B = batch, H = heads, A = actions. Time-major.
Meta-parameters enter as ordinary arrays (`HyperParams`), so gradients flow
into them wherever the math lets them.
"""

from __future__ import annotations

import functools
from typing import Dict, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


class HyperParams(NamedTuple):
    """Per-head hyper-parameters, each of shape [H] (or scalars for one head).

    gamma: discount; lambda_: trace coefficient; g_v, g_p, g_e: value,
    policy-gradient and entropy weights; alpha: leaky V-trace mix (1 = V-trace).
    """

    gamma: Array
    lambda_: Array
    g_v: Array
    g_p: Array
    g_e: Array
    alpha: Array


def meta_hyperparams(meta_logits: Array, scale: Array) -> HyperParams:
    """STACX meta-parameters: `scale * sigmoid(logit)`.

    meta_logits: [H, 6] in `HyperParams` field order; scale: [6] outer values.
    """
    chex.assert_rank(meta_logits, 2)
    chex.assert_axis_dimension(meta_logits, 1, len(HyperParams._fields))
    values = jnp.asarray(scale, meta_logits.dtype) * jax.nn.sigmoid(meta_logits)
    return HyperParams(*[values[:, i] for i in range(values.shape[1])])


def fixed_hyperparams(values, num_heads: int = 1, dtype=None) -> HyperParams:
    """Constant hyper-parameters (IMPALA, the outer loss): `values` [6] -> [H] each."""
    v = jnp.asarray(values, dtype=dtype or jnp.result_type(float))
    return HyperParams(*[jnp.full((num_heads,), v[i]) for i in range(v.shape[0])])


def leaky_vtrace(
    v_tm1: Array,
    v_t: Array,
    r_t: Array,
    discount_t: Array,
    rho_tm1: Array,
    alpha: Array,
    lambda_: Array,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> Tuple[Array, Array]:
    """Leaky V-trace targets and policy-gradient advantages for one trajectory.

    Args (all [T] except the scalars):
      v_tm1: V(x_s), s = 0..T-1.  v_t: V(x_{s+1}).  r_t: rewards.
      discount_t: gamma * (1 - episode end), per step.
      rho_tm1: importance weights pi(a_s|x_s) / mu(a_s|x_s).
      alpha: leak in [0, 1]; 1 gives plain V-trace (fully truncated weights).
      lambda_: trace coefficient multiplying the c's.
    Returns:
      vs: [T] value targets, pg_advantages: [T].

    Truncated weights mix clipped and raw ratios (Zahavy et al. 2020):
      rho~ = alpha * min(rho_bar, rho) + (1 - alpha) * rho
      c~   = lambda * (alpha * min(c_bar, rho) + (1 - alpha) * rho)
      vs_s - V(x_s) = rho~_s delta_s + discount_s c~_s (vs_{s+1} - V(x_{s+1}))
      adv_s = rho~_s (r_s + discount_s q_{s+1} - V(x_s)),
      q_{s+1} = lambda vs_{s+1} + (1 - lambda) V(x_{s+1})  (rlax's form; = vs_{s+1}
      for lambda = 1, and vs_T := V(x_T))
    No gradient is stopped here: callers stop it on values and ratios, which
    leaves the targets differentiable in the hyper-parameters only.
    """
    chex.assert_rank([v_tm1, v_t, r_t, discount_t, rho_tm1], 1)
    chex.assert_equal_shape([v_tm1, v_t, r_t, discount_t, rho_tm1])
    clipped_rho = alpha * jnp.minimum(rho_bar, rho_tm1) + (1.0 - alpha) * rho_tm1
    cs = lambda_ * (alpha * jnp.minimum(c_bar, rho_tm1) + (1.0 - alpha) * rho_tm1)
    deltas = clipped_rho * (r_t + discount_t * v_t - v_tm1)

    def backward(acc, xs):
        delta, discount, c = xs
        acc = delta + discount * c * acc
        return acc, acc

    _, corrections = jax.lax.scan(
        backward, jnp.zeros_like(v_t[-1]), (deltas, discount_t, cs), reverse=True
    )
    vs = v_tm1 + corrections
    vs_tp1 = jnp.concatenate([vs[1:], v_t[-1:]])
    q_tp1 = lambda_ * vs_tp1 + (1.0 - lambda_) * v_t
    pg_advantages = clipped_rho * (r_t + discount_t * q_tp1 - v_tm1)
    return vs, pg_advantages


def categorical_kl(p_logits: Array, q_logits: Array) -> Array:
    """KL(p || q) over the last axis, from logits. [..., A] -> [...]."""
    log_p = jax.nn.log_softmax(p_logits)
    log_q = jax.nn.log_softmax(q_logits)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def entropy(logits: Array) -> Array:
    """Entropy (nats) over the last axis. [..., A] -> [...]."""
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


class ACBatch(NamedTuple):
    """The parts of a trajectory batch the loss needs (time-major)."""

    actions: Array  # [T, B] int
    rewards: Array  # [T, B], already clipped
    discounts: Array  # [T, B], 0 where the episode ended after the action
    behaviour_logits: Array  # [T, B, A]


def _log_prob(logits: Array, actions: Array) -> Array:
    """log softmax(logits)[a]: [..., A], [...] -> [...]."""
    log_p = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_p, actions[..., None], axis=-1)[..., 0]


def actor_critic_loss(
    logits: Array,
    values: Array,
    batch: ACBatch,
    hp: HyperParams,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    target_logits: Optional[Array] = None,
    target_values: Optional[Array] = None,
) -> Tuple[Array, Dict[str, Array]]:
    """Leaky V-trace actor-critic loss of one head, summed over time and batch.

    logits: [T, B, A] of the learner policy at x_0..x_{T-1};
    values: [T + 1, B] at x_0..x_T; hp: scalars for this head.

      loss = g_p * pg + g_v * value - g_e * ent,
      pg = -sum_{t,b} log pi(a_t|x_t) * adv_t,  value = 0.5 * sum_{t,b} (vs_t - V(x_t))^2,
      ent = sum_{t,b} H(pi(.|x_t)).

    Sums, not means: IMPALA's reference implementation (scalable_agent
    `experiment.py`: `tf.reduce_sum` in every loss term) and cleanba's JAX
    IMPALA (`cleanba_impala.py`: "rlax.policy_gradient_loss, but with
    sum(loss)", `0.5 * jnp.sum(errors**2)`). Their RMSProp epsilon (0.01) and
    gradient clip (40) are set for gradients of this size. The returned terms
    (for logs) are per-state means, `loss` included: unlike the sums they do
    not depend on how the batch is split over devices.

    The V-trace targets and importance ratios are computed from
    `target_logits` / `target_values` (same shapes). Left out, they are
    `stop_gradient(logits / values)`: the usual semi-gradient. The inner update
    passes the same outputs explicitly and differentiates only w.r.t. the first
    copy, so the targets stay exact functions of x and of the meta-parameters
    for the meta-gradient (see `agents.learning`). Gradients always reach `hp`.
    """
    T, B = batch.actions.shape
    chex.assert_shape(values, (T + 1, B))
    chex.assert_shape(logits, (T, B, None))
    chex.assert_equal_shape([logits, batch.behaviour_logits])
    target_logits = jax.lax.stop_gradient(logits) if target_logits is None else target_logits
    v = jax.lax.stop_gradient(values) if target_values is None else target_values
    chex.assert_equal_shape([logits, target_logits])
    chex.assert_equal_shape([values, v])
    log_pi_a = _log_prob(logits, batch.actions)
    rho = jnp.exp(
        _log_prob(target_logits, batch.actions) - _log_prob(batch.behaviour_logits, batch.actions)
    )
    vtrace = jax.vmap(leaky_vtrace, in_axes=(1, 1, 1, 1, 1, None, None, None, None), out_axes=1)
    vs, adv = vtrace(
        v[:-1],
        v[1:],
        batch.rewards,
        hp.gamma * batch.discounts,
        rho,
        hp.alpha,
        hp.lambda_,
        rho_bar,
        c_bar,
    )
    pg = -jnp.sum(log_pi_a * adv)
    value = 0.5 * jnp.sum(jnp.square(vs - values[:-1]))
    ent = jnp.sum(entropy(logits))
    loss = hp.g_p * pg + hp.g_v * value - hp.g_e * ent
    n = T * B
    return loss, {"pg": pg / n, "value": value / n, "entropy": ent / n, "loss": loss / n}


def multihead_loss(
    logits: Array,
    values: Array,
    batch: ACBatch,
    hp: HyperParams,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    target_logits: Optional[Array] = None,
    target_values: Optional[Array] = None,
) -> Tuple[Array, Dict[str, Array]]:
    """Sum over heads of `actor_critic_loss`.

    logits: [T, B, H, A]; values: [T + 1, B, H]; hp fields [H]; targets as in
    `actor_critic_loss` (same shapes as logits / values, or None).
    Returns the total and per-head terms as [H] arrays.
    """
    chex.assert_rank([logits, values], [4, 3])
    target_logits = jax.lax.stop_gradient(logits) if target_logits is None else target_logits
    target_values = jax.lax.stop_gradient(values) if target_values is None else target_values
    per_head = jax.vmap(actor_critic_loss, in_axes=(2, 2, None, 0, None, None, 2, 2))
    losses, terms = per_head(
        logits, values, batch, hp, rho_bar, c_bar, target_logits, target_values
    )
    return jnp.sum(losses), terms


def outer_loss(
    logits: Array,
    values: Array,
    reference_logits: Array,
    batch: ACBatch,
    outer: HyperParams,
    kl_weight: float | Array,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    target_logits: Optional[Array] = None,
    target_values: Optional[Array] = None,
    updated_first: bool = True,
) -> Tuple[Array, Dict[str, Array]]:
    """Meta-objective f: main head's V-trace loss with fixed values + KL term.

    logits: [T, B, A], values: [T + 1, B] of the updated learner (main head);
    reference_logits: [T, B, A] of the reference (pre-update) policy, treated
    as constant; outer: one-head fixed hyper-parameters (scalars).

      f = actor_critic_loss + kl_weight * sum_{t,b} KL(pi(.|x_t) || pi_ref(.|x_t))

    STAC (Zahavy et al. 2020, eq. 2) writes the KL term as
    D_KL(pi_theta~(eta), pi_theta): the updated policy first. `updated_first`
    False swaps the arguments, KL(pi_ref || pi). Summed like the inner loss;
    the terms returned are per-state means.
    """
    chex.assert_rank([logits, values, reference_logits], [3, 2, 3])
    chex.assert_equal_shape([logits, reference_logits])
    ac, terms = actor_critic_loss(
        logits, values, batch, outer, rho_bar, c_bar, target_logits, target_values
    )
    reference = jax.lax.stop_gradient(reference_logits)
    kl = jnp.sum(
        categorical_kl(logits, reference) if updated_first else categorical_kl(reference, logits)
    )
    total = ac + kl_weight * kl
    n = batch.actions.size
    return total, {**terms, "kl": kl / n, "loss": total / n}


def l2_matching(target, params) -> Array:
    """0.5 * ||target - params||^2 summed over every leaf (target is constant)."""
    target = jax.lax.stop_gradient(target)
    sq = jax.tree_util.tree_map(lambda t, p: jnp.sum(jnp.square(t - p)), target, params)
    return 0.5 * functools.reduce(jnp.add, jax.tree_util.tree_leaves(sq))


def kl_matching(target_logits: Array, logits: Array) -> Array:
    """sum over states of KL(pi_target || pi): [..., A] each -> scalar.

    BMG's KL matching (Flennerhag et al. 2022, section 3): the target policy
    comes first, mu = KL(pi_x~ || pi_x(w)); the target is constant."""
    chex.assert_equal_shape([target_logits, logits])
    return jnp.sum(categorical_kl(jax.lax.stop_gradient(target_logits), logits))


def greedy_kl_matching(target_logits: Array, logits: Array) -> Array:
    """sum over states of KL(greedy(pi_target) || pi): [..., A] each -> scalar.

    The target is the one-hot policy on argmax_a target_logits (BMG's greedy
    target for an epsilon-greedy Q-learner, Flennerhag et al. 2022, section
    5.1), so the KL is the cross-entropy -log pi(argmax_a target_logits | s)."""
    chex.assert_equal_shape([target_logits, logits])
    greedy = jnp.argmax(jax.lax.stop_gradient(target_logits), axis=-1)
    log_pi = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.take_along_axis(log_pi, greedy[..., None], axis=-1))


def kl_v_matching(
    target_logits: Array,
    logits: Array,
    target_values: Array,
    values: Array,
    value_weight: float | Array = 1.0,
) -> Array:
    """`kl_matching` plus value_weight * 0.5 * sum over states (v_target - v)^2.

    target_logits, logits: [..., A]; target_values, values: [...]."""
    chex.assert_equal_shape([target_values, values])
    v_term = 0.5 * jnp.sum(jnp.square(jax.lax.stop_gradient(target_values) - values))
    return kl_matching(target_logits, logits) + value_weight * v_term
