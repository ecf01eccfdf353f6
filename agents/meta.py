"""Meta-objectives over one inner update: MG, mixed and BMG, written once.

A learner supplies two functions and gets every meta-objective of the BMG
paper (Flennerhag et al. 2022) and of Bonnet et al. 2021 from them:

  inner_update(x, s, w, batch) -> (x', s', terms)   one step of the update
      rule with meta-parameters w (optimiser state s); differentiable in w, x
  outer_loss(x, batch) -> (f, terms)                 the objective the
      meta-parameters serve (its gradient in x is taken as a semi-gradient
      by the caller's own stop-gradients)

With x_k = the k-th inner iterate from x_0 = params (w-dependent):

  MG (K steps):  f(x_K(w), val)                                     `mg`
  mixed:         sum_k c_k f(x_k(w), val_k)                         `mixed`
  BMG:           mu(x~, x_K(w)),                                    `bmg`
                 x~ = sg(x_{K+L-1} - a G(grad f(x_{K+L-1})))        `bootstrap_target`
                 x_{K+L-1}: L - 1 more steps of the rule from sg(x_K), w held fixed

G is the identity (an SGD grounded step) or a preconditioner the learner
passes in (the inner optimiser's own RMSProp transform and state, so the
target's last step is preconditioned by the statistics the rule has built).
`match(target, x, val) -> mu` is the matching function (`matching`).

Both the Atari learner (`agents.learning`) and the two-colors agents
(`experiments/two_colors`) are built on these.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import optax

from agents import losses

Array = jax.Array
sg = jax.lax.stop_gradient
InnerUpdate = Callable[[Any, Any, Any, Any], Tuple[Any, Any, Dict[str, Array]]]
OuterLoss = Callable[[Any, Any], Tuple[Array, Dict[str, Array]]]
MATCHINGS = ("l2", "kl", "kl_v", "greedy")


class MetaAux(NamedTuple):
    """What a meta-objective leaves besides its value: the last inner iterate
    x_K and its optimiser state (the learner's next parameters), the terms of
    the last inner step and of the outer loss (or target)."""

    params: Any
    opt_state: Any
    inner_terms: Dict[str, Array]
    outer_terms: Dict[str, Array]


def unroll(
    inner_update: InnerUpdate, meta_params, params, opt_state, batches: Sequence
) -> List[Tuple[Any, Any, Dict[str, Array]]]:
    """[(x_k, s_k, terms_k) for k = 1..len(batches)], differentiable in w.

    A Python loop (K is small and static), not lax.scan: XLA:CPU runs
    convolutions inside loops many times slower (measured 20x)."""
    out, p, o = [], params, opt_state
    for batch in batches:
        p, o, terms = inner_update(p, o, meta_params, batch)
        out.append((p, o, terms))
    return out


def mg(
    inner_update: InnerUpdate,
    outer_loss: OuterLoss,
    meta_params,
    params,
    opt_state,
    batches: Sequence,
    val,
) -> Tuple[Array, MetaAux]:
    """f(x_K(w), val), K = len(batches); its w-gradient is (dx_K/dw)^T grad f(x_K)."""
    p_k, o_k, inner_terms = unroll(inner_update, meta_params, params, opt_state, batches)[-1]
    f, outer_terms = outer_loss(p_k, val)
    return f, MetaAux(p_k, o_k, inner_terms, outer_terms)


def mixed(
    inner_update: InnerUpdate,
    outer_loss: OuterLoss,
    meta_params,
    params,
    opt_state,
    batches: Sequence,
    vals: Sequence,
    coefficients: Sequence[float],
) -> Tuple[Array, MetaAux]:
    """sum_k c_k f(x_k(w), vals[k - 1]): the c-weighted mixture of the 1..K-step
    MG meta-gradients (Bonnet et al. 2021). Terms with c_k = 0 are not built,
    so one-hot weights give exactly the k-step `mg`."""
    steps = unroll(inner_update, meta_params, params, opt_state, batches)
    total: Any = 0.0
    outer_terms: Dict[str, Array] = {}
    for (x, _, _), val, c in zip(steps, vals, coefficients):
        if c != 0.0:
            f, outer_terms = outer_loss(x, val)
            total = total + c * f
    p_k, o_k, inner_terms = steps[-1]
    return total, MetaAux(p_k, o_k, inner_terms, outer_terms)


def grounded_step(
    outer_loss: OuterLoss,
    step_size: float,
    params,
    val,
    opt_state=None,
    precondition: Optional[optax.GradientTransformation] = None,
    reduce: Callable = lambda g: g,
) -> Tuple[Any, Dict[str, Array]]:
    """sg(x - a G(grad f(x, val))) and f's terms plus the step's norm.

    G: the identity, or `precondition.update(g, opt_state)` (its state is not
    advanced). `reduce` combines the gradient over devices (psum)."""
    (_, terms), g = jax.value_and_grad(outer_loss, has_aux=True)(params, val)
    g = reduce(g)
    if precondition is not None:
        g, _ = precondition.update(g, opt_state, params)
    updates = jax.tree_util.tree_map(lambda gx: -step_size * gx, g)
    target = sg(optax.apply_updates(params, updates))
    return target, dict(terms, grounded_step_norm=optax.global_norm(updates))


def bootstrap_target(
    inner_update: InnerUpdate,
    grounded: Callable,
    meta_params,
    params_k,
    opt_state_k,
    batches: Sequence,
    val,
) -> Tuple[Any, Dict[str, Array]]:
    """x~: L - 1 = len(batches) steps of the rule from sg(x_K), w held fixed,
    then `grounded(x_{K+L-1}, val, s_{K+L-1})` (a `grounded_step`)."""
    p, o, w = sg(params_k), sg(opt_state_k), sg(meta_params)
    for batch in batches:
        p, o, _ = inner_update(p, o, w, batch)
    return grounded(p, val, o)


def bmg(
    inner_update: InnerUpdate,
    match: Callable,
    meta_params,
    params,
    opt_state,
    batches: Sequence,
    val,
    target=None,
    grounded: Optional[Callable] = None,
    target_batches: Sequence = (),
) -> Tuple[Array, MetaAux]:
    """mu(x~, x_K(w)) with the target x~ held constant.

    `target`: a given x~; else it is bootstrapped from x_K (`bootstrap_target`
    with `grounded` and the L - 1 `target_batches`). `outer_terms` holds the
    target's terms and its distance ||x~ - x_K||."""
    p_k, o_k, inner_terms = unroll(inner_update, meta_params, params, opt_state, batches)[-1]
    terms: Dict[str, Array] = {}
    if target is None:
        if grounded is None:
            raise ValueError("bmg needs a given `target` or a `grounded` step to bootstrap one")
        target, terms = bootstrap_target(
            inner_update, grounded, meta_params, p_k, o_k, target_batches, val
        )
    target = sg(target)
    distance = optax.global_norm(jax.tree_util.tree_map(lambda t, x: t - sg(x), target, p_k))
    mu = match(target, p_k, val)
    return mu, MetaAux(p_k, o_k, inner_terms, dict(terms, target_distance=distance))


def matching(
    kind: str,
    heads: Optional[Callable] = None,
    value_weight: float = 1.0,
    num_shards: Callable[[], Any] = lambda: 1,
) -> Callable:
    """mu(target, x, val) of `kind`:

      l2:   0.5 ||x~ - x||^2 (divided by `num_shards()`: every device holds it
            whole, so that psum of the per-device gradients is its gradient)
      kl:   KL(pi_x~ || pi_x) on the validation states
      kl_v: kl plus `value_weight` * 0.5 (v_x~ - v_x)^2 (BMG's "KL & V")
      greedy: KL(one-hot argmax pi_x~ || pi_x), i.e. -log pi_x(greedy action of x~)

    `heads(params, val) -> (logits [..., A], values [...])` gives the policy
    (and value) on the states the matching is measured on."""
    if kind not in MATCHINGS:
        raise ValueError(f"matching={kind!r} is not allowed: must be one of {list(MATCHINGS)}")

    def match(target, params, val):
        if kind == "l2":
            return losses.l2_matching(target, params) / num_shards()
        t_logits, t_values = heads(target, val)
        logits, values = heads(params, val)
        if kind == "kl":
            return losses.kl_matching(t_logits, logits)
        if kind == "greedy":
            return losses.greedy_kl_matching(t_logits, logits)
        return losses.kl_v_matching(t_logits, logits, t_values, values, value_weight)

    return match
