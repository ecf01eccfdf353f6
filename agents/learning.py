"""The learner update: IMPALA, STACX with meta-gradients (MG), and BMG.

One inner update rule serves all three: an optax chain (global-norm clip,
RMSProp statistics, step) on the multi-head leaky V-trace loss, whose
hyper-parameters come from the meta-parameters. MG and BMG differ only in the
meta-objective they differentiate w.r.t. the meta-parameters:

  MG:    f(x_K(w))                      f = outer loss on the validation batch
  mixed: sum_k c_k f_k(x_k(w))          f_k on batch k, the one after x_k
  BMG:   mu(x~, x_K(w)),  x~ = sg(x_{K+L-1} - a * G(grad f(x_{K+L-1})))

`update(state, batches) -> (state, metrics)` is pure. `batches` is a
`Trajectory` whose fields have a leading axis of `num_batches` (1 without
meta-learning; with it the K inner batches, then, with `meta.outer_sample =
next`, the validation batch), then time T + 1, then batch B. With `same` the
validation batch is the last inner batch itself. pmap wraps `update`, it is
not inside it.

Devices: every loss is a sum over the batch (`agents.losses`), so a device's
loss is its shard's part of the global loss, and under `jax.pmap` (pass
`axis_name`) gradients and meta-gradients are summed over devices with
`lax.psum`: the update on D shards is the update on the whole batch, for any D.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from agents import losses
from agents import meta as meta_lib
from agents.networks import Networks, meta_conditioning
from agents.types import Trajectory
from configs import HYPER_NAMES, AgentConfig, MetaConfig

Array = jax.Array
sg = jax.lax.stop_gradient


class MetaState(NamedTuple):
    logits: Array  # [H, 6] meta-parameter logits, `HYPER_NAMES` order
    opt_state: Any  # meta-optimiser (Adam) state


class TrainingState(NamedTuple):
    params: Any  # network parameters x
    opt_state: Any  # inner optimiser (clip + RMSProp) state
    meta: MetaState
    step: Array  # int32: update calls so far (skipped ones included)
    skipped: Array  # int32: updates skipped because something was not finite


class Learner(NamedTuple):
    init: Callable[[Array], TrainingState]
    update: Callable[[TrainingState, Trajectory], Tuple[TrainingState, Dict[str, Array]]]
    num_batches: int  # leading axis of `batches`
    window_overlap: int  # batches an update shares with the one before
    # The pieces, exposed for tests and benchmarks:
    inner_step: Callable
    meta_objective: Optional[Callable]  # (meta_logits, eta_outer, params, opt_state, batches)
    bootstrap_target: Optional[Callable]
    hyperparams: Callable  # meta_logits -> HyperParams
    eta: Callable  # meta_logits -> network conditioning vector


def learning_rate_schedule(cfg: AgentConfig, decay_steps: Optional[int]) -> optax.Schedule:
    """`cfg.learning_rate`, constant or decayed linearly to 0 over `decay_steps`
    inner steps (IMPALA; cleanba's `linear_schedule`)."""
    if cfg.lr_schedule == "constant":
        return optax.constant_schedule(cfg.learning_rate)
    if not isinstance(decay_steps, int) or decay_steps < 1:
        raise ValueError(
            f"decay_steps={decay_steps!r} is not allowed with "
            f"AgentConfig.lr_schedule='linear': it must be the number of inner "
            f"steps (>= 1) over which the learning rate decays to 0 "
            f"(RunConfig.inner_steps_budget)"
        )
    return optax.linear_schedule(cfg.learning_rate, 0.0, decay_steps)


def rms_preconditioner(cfg: AgentConfig) -> optax.GradientTransformation:
    """clip -> RMSProp: the inner optimiser without its step (`_rmsprop`).
    BMG's RMS grounded step uses it with the inner optimiser's own state."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.scale_by_rms(decay=cfg.rms_decay, eps=cfg.rms_eps, initial_scale=1.0),
    )


def _rmsprop(cfg: AgentConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """clip -> RMSProp -> step, with `schedule(count)` as the step size; its
    state is (preconditioner state, step state).

    IMPALA's optimiser as its reference implementation runs it (scalable_agent
    `experiment.py`: `tf.train.RMSPropOptimizer(learning_rate, decay,
    momentum=0, epsilon)` with the learning rate decayed linearly to 0), which
    is TensorFlow's RMSProp (`tensorflow/python/training/rmsprop.py`):

      ms <- decay * ms + (1 - decay) * g^2,   ms_0 = 1
      x  <- x - lr * g / sqrt(ms + eps)

    eps inside the square root and the mean square starting at 1, i.e.
    optax's `scale_by_rms(initial_scale=1)`. Starting at 1 makes the first
    few hundred steps SGD-like while ms forgets its start (0.99^500 = 0.7 %);
    starting at 0 (PyTorch's RMSProp, used by cleanba) makes every coordinate's
    first steps about lr / sqrt(1 - decay) = 10 lr regardless of its gradient,
    which killed most ReLU units of the debug network on Pong (docs/design.md).
    Global-norm clipping first (40, as cleanba's IMPALA `max_grad_norm`)."""
    return optax.chain(
        rms_preconditioner(cfg), optax.scale_by_schedule(lambda count: -schedule(count))
    )


def make_meta_optimizer(cfg: MetaConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.meta_max_grad_norm),
        optax.adam(cfg.meta_learning_rate, eps=cfg.meta_adam_eps),
    )


def _is_finite(tree) -> Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _index(batches: Trajectory, i) -> Trajectory:
    return jax.tree_util.tree_map(lambda x: x[i], batches)


class _Setting(NamedTuple):
    """What the learner's pieces share, fixed when it is built."""

    networks: Networks
    agent: AgentConfig
    meta: MetaConfig
    schedule: optax.Schedule  # inner learning rate by step
    inner_opt: optax.GradientTransformation
    meta_opt: optax.GradientTransformation
    psum: Callable  # sum over the devices holding the batch's shards (identity on one)
    pmean: Callable
    num_shards: Callable[[], Any]
    hyperparams: Callable  # meta_logits -> HyperParams
    eta: Callable  # meta_logits -> network conditioning vector
    ac_batch: Callable  # Trajectory -> ACBatch (clipped rewards, float fields)


def _setting(networks, agent, meta, reward_clip, axis_name, decay_steps) -> _Setting:
    schedule = learning_rate_schedule(agent, decay_steps)
    psum = (lambda t: jax.lax.psum(t, axis_name)) if axis_name else (lambda t: t)
    pmean = (lambda t: jax.lax.pmean(t, axis_name)) if axis_name else (lambda t: t)
    # Devices holding shards of the batch: a quantity every device computes
    # identically (the L2 distance) enters each device's objective as 1/D of
    # itself, so that psum of the per-device meta-gradients is its gradient.
    num_shards = (lambda: jax.lax.psum(1, axis_name)) if axis_name else (lambda: 1)
    stacx = agent.kind == "stacx"

    def hyperparams(meta_logits) -> losses.HyperParams:
        if stacx:
            return losses.meta_hyperparams(meta_logits, jnp.asarray(agent.hyper_values))
        return losses.fixed_hyperparams(agent.hyper_values, 1, meta_logits.dtype)

    def eta(meta_logits) -> Array:
        return meta_conditioning(meta_logits, networks.meta_dim)

    def ac_batch(traj: Trajectory) -> losses.ACBatch:
        f = jnp.result_type(float)
        return losses.ACBatch(
            actions=traj.action[:-1],
            rewards=jnp.clip(traj.reward[:-1].astype(f), -reward_clip, reward_clip),
            discounts=traj.discount[:-1].astype(f),
            behaviour_logits=traj.behaviour_logits[:-1].astype(f),
        )

    return _Setting(
        networks,
        agent,
        meta,
        schedule,
        _rmsprop(agent, schedule),
        make_meta_optimizer(meta),
        psum,
        pmean,
        num_shards,
        hyperparams,
        eta,
        ac_batch,
    )


def _make_inner_step(s: _Setting) -> Callable:
    """x' = x + phi(x, traj, w), the update rule every agent and meta-objective uses."""
    networks, agent, hyperparams, eta = s.networks, s.agent, s.hyperparams, s.eta

    def inner_grads(params, meta_logits, traj: Trajectory):
        """Semi-gradient of the inner loss w.r.t. x.

        The V-trace targets and ratios are held constant for this gradient
        (differentiated only through the first copy of the network outputs),
        yet stay exact functions of x and w, so the meta-gradient through
        this update is the true derivative of the update (finite differences
        agree)."""
        batch, hp = s.ac_batch(traj), hyperparams(meta_logits)
        (logits, values), pullback = jax.vjp(
            lambda p: networks.apply(p, traj.observation, eta(meta_logits)), params
        )

        def loss_of_outputs(lg, v):
            return losses.multihead_loss(
                lg[:-1],
                v,
                batch,
                hp,
                agent.rho_bar,
                agent.c_bar,
                target_logits=logits[:-1],
                target_values=values,
            )

        (g_logits, g_values), terms = jax.grad(loss_of_outputs, argnums=(0, 1), has_aux=True)(
            logits, values
        )
        (grads,) = pullback((g_logits, g_values))
        return grads, terms

    def inner_step(params, opt_state, meta_logits, traj: Trajectory):
        """x' = x + phi(x, traj, w): one clipped RMSProp step on the inner loss
        (gradients summed over devices: the global batch's gradient)."""
        grads, terms = inner_grads(params, meta_logits, traj)
        grads = s.psum(grads)
        learning_rate = s.schedule(opt_state[-1].count)
        updates, opt_state = s.inner_opt.update(grads, opt_state, params)
        terms = dict(terms, grad_norm=optax.global_norm(grads), learning_rate=learning_rate)
        return optax.apply_updates(params, updates), opt_state, terms

    return inner_step


class _Outer(NamedTuple):
    main_head: Callable  # (params, traj, eta) -> (logits [..., A], values [...]) of head 0
    objective: Callable  # (params, eta, reference_logits, traj, target_params) -> (f, terms)
    reference_logits: Callable  # (params, eta, traj) -> sg(logits of head 0) on traj[:-1]
    at: Callable  # (params0, eta, target_params) -> f(x, val) with x_0's KL reference


def _make_outer(s: _Setting) -> _Outer:
    """The outer objective f: main head, fixed outer values, KL to a reference."""
    networks, agent, meta = s.networks, s.agent, s.meta

    outer_hp = losses.HyperParams(*[jnp.asarray(v) for v in meta.outer_values])

    def main_head(params, traj: Trajectory, eta_outer):
        logits, values = networks.apply(params, traj.observation, eta_outer)
        return logits[..., 0, :], values[..., 0]

    def outer_objective(params, eta_outer, reference_logits, traj: Trajectory, target_params=None):
        """f(x): main head's V-trace loss with the fixed outer values + KL to
        the reference policy (`reference_logits`; None: x's own policy, whose
        KL term then has value and gradient 0).

        Targets come from `target_params` (default: stop_gradient(params)), so
        grad f is the usual semi-gradient."""
        logits, values = main_head(params, traj, eta_outer)
        if target_params is None:
            t_logits, t_values = sg(logits), sg(values)
        else:
            t_logits, t_values = main_head(target_params, traj, eta_outer)
        if reference_logits is None:
            reference_logits = sg(logits[:-1])
        return losses.outer_loss(
            logits[:-1],
            values,
            reference_logits,
            s.ac_batch(traj),
            outer_hp,
            meta.kl_weight,
            agent.rho_bar,
            agent.c_bar,
            t_logits[:-1],
            t_values,
            updated_first=meta.outer_kl == "updated_first",
        )

    def reference_logits(params, eta_outer, traj):
        return sg(main_head(params, traj, eta_outer)[0][:-1])

    def outer(params0, eta_outer, target_params=None):
        """f(x, val): the outer objective with the KL reference of x_0 = params0
        on val, and targets `target_params` (default stop_gradient(x))."""
        return lambda x, val: outer_objective(
            x, eta_outer, reference_logits(params0, eta_outer, val), val, target_params
        )

    return _Outer(main_head, outer_objective, reference_logits, outer)


def _make_grounded(s: _Setting, outer_objective: Callable) -> Callable:
    """eta_outer -> BMG's grounded step (x, val, opt_state) -> x~:
    x~ = sg(x - a G(grad f(x))) with f's KL reference the policy at x itself,
    where the step starts: its gradient there is 0, so the grounded step
    follows the outer V-trace loss and is not pulled back towards the policy
    at x_0, L steps older. G: identity (`sgd`) or the inner RMSProp
    preconditioner with the statistics the L - 1 steps carried (`rms`)."""
    step_size = s.meta.grounded_step_size(s.agent.learning_rate)
    precondition = rms_preconditioner(s.agent) if s.meta.target_step == "rms" else None

    def grounded(eta_outer):
        def step(x, val, opt_state):
            return meta_lib.grounded_step(
                lambda p, v: outer_objective(p, eta_outer, None, v),
                step_size,
                x,
                val,
                opt_state[0] if precondition is not None else None,
                precondition,
                s.psum,
            )

        return step

    return grounded


def _make_meta_objectives(s: _Setting, inner_step: Callable, f: _Outer):
    """(meta_objective, bootstrap_target) of `meta.objective` (None, None without one):
    the library's MG, mixed and BMG (`agents.meta`) bound to this learner."""
    meta, K, L = s.meta, s.meta.K, s.meta.L
    main_head, outer, num_shards = f.main_head, f.at, s.num_shards

    same = meta.outer_sample == "same"

    def split(batches: Trajectory):
        """K inner batches and the validation batch: the last inner batch
        itself (`same`) or the one after it (`next`)."""
        return [_index(batches, k) for k in range(K)], _index(batches, K - 1 if same else K)

    grounded = _make_grounded(s, f.objective)

    def mg_objective(
        meta_logits, eta_outer, params, opt_state, batches: Trajectory, target_params=None
    ):
        """f(x_K(w)) (`agents.meta.mg`); its w-gradient is (dx_K/dw)^T grad f(x_K),
        grad f the semi-gradient. `eta_outer` (the network's conditioning in f)
        and `target_params` (f's targets; default stop_gradient(x_K)) are
        explicit inputs, so with both held fixed this is an ordinary function of w."""
        inner, val = split(batches)
        return meta_lib.mg(
            inner_step,
            outer(params, eta_outer, target_params),
            meta_logits,
            params,
            opt_state,
            inner,
            val,
        )

    def bootstrap_target(params_k, opt_state_k, meta_logits, eta_outer, val: Trajectory):
        """x~ from x_K: L - 1 steps of the meta-learned rule (current w, no graph)
        on the validation batch, then the grounded step. Returns x~ and f's terms
        plus the step's norm ||x~ - x_{K+L-1}||."""
        return meta_lib.bootstrap_target(
            inner_step,
            grounded(eta_outer),
            meta_logits,
            params_k,
            opt_state_k,
            [val] * (L - 1),
            val,
        )

    def bmg_objective(meta_logits, eta_outer, params, opt_state, batches: Trajectory):
        """mu(x~, x_K(w)) with the target x~ held constant (`agents.meta.bmg`)."""
        inner, val = split(batches)
        match = meta_lib.matching(
            meta.matching,
            lambda p, v: main_head(p, v, eta_outer),
            meta.value_match_weight,
            num_shards,
        )
        return meta_lib.bmg(
            inner_step,
            match,
            meta_logits,
            params,
            opt_state,
            inner,
            val,
            grounded=grounded(eta_outer),
            target_batches=[val] * (L - 1),
        )

    def mixed_objective(
        meta_logits, eta_outer, params, opt_state, batches: Trajectory, target_params=None
    ):
        """sum_k c_k f(x_k(w)) on batch k (`agents.meta.mixed`). `target_params`
        (K parameter trees; default stop_gradient(x_k)) are f's targets."""
        inner = [_index(batches, k) for k in range(K)]
        # f_k sees (the batch x_k was stepped on (`same`) or the one after it,
        # the targets of x_k): the library passes vals through.
        vals = [
            (
                _index(batches, k - 1 if same else k),
                None if target_params is None else target_params[k - 1],
            )
            for k in range(1, K + 1)
        ]

        def f(x, val_and_targets):
            val, targets = val_and_targets
            return outer(params, eta_outer, targets)(x, val)

        return meta_lib.mixed(
            inner_step, f, meta_logits, params, opt_state, inner, vals, meta.mix_coefficients
        )

    objectives = {"mg": mg_objective, "bmg": bmg_objective, "mixed": mixed_objective}
    return objectives.get(meta.objective), bootstrap_target if meta.objective == "bmg" else None


def _make_init_and_update(s: _Setting, inner_step: Callable, meta_objective: Optional[Callable]):
    """init(key) -> TrainingState and the pure update(state, batches) -> (state, metrics):
    one inner step, or the meta-objective's K steps and one meta-gradient step;
    a non-finite result leaves the state as it was and counts as skipped."""
    networks, agent = s.networks, s.agent
    inner_opt, meta_opt, psum, pmean = s.inner_opt, s.meta_opt, s.psum, s.pmean
    num_heads = networks.num_heads

    def init(key) -> TrainingState:
        params = networks.init(key)
        logits = jnp.full(
            (num_heads, len(HYPER_NAMES)), agent.init_logit, dtype=jnp.result_type(float)
        )
        return TrainingState(
            params=params,
            opt_state=inner_opt.init(params),
            meta=MetaState(logits, meta_opt.init(logits)),
            step=jnp.zeros((), jnp.int32),
            skipped=jnp.zeros((), jnp.int32),
        )

    def update(state: TrainingState, batches: Trajectory):
        metrics: Dict[str, Array] = {}
        check: Any  # what must be finite for the update to be kept
        if meta_objective is None:
            params, opt_state, inner_terms = inner_step(
                state.params, state.opt_state, state.meta.logits, _index(batches, 0)
            )
            new_meta = state.meta
            check = (params, inner_terms["loss"])
        else:
            eta_outer = sg(s.eta(state.meta.logits))
            (meta_loss, (params, opt_state, inner_terms, outer_terms)), meta_grad = (
                jax.value_and_grad(meta_objective, has_aux=True)(
                    state.meta.logits, eta_outer, state.params, state.opt_state, batches
                )
            )
            meta_grad = psum(meta_grad)
            meta_updates, meta_opt_state = meta_opt.update(meta_grad, state.meta.opt_state)
            new_meta = MetaState(
                optax.apply_updates(state.meta.logits, meta_updates), meta_opt_state
            )
            metrics["meta/loss"] = psum(meta_loss)  # each device holds its part of the sum
            metrics["meta/grad_norm"] = optax.global_norm(meta_grad)
            metrics.update({f"outer/{k}": v for k, v in outer_terms.items()})
            check = (params, new_meta.logits, meta_loss)
        finite = _is_finite(check)
        new = TrainingState(params, opt_state, new_meta, state.step + 1, state.skipped)
        old = state._replace(step=state.step + 1, skipped=state.skipped + 1)
        state = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)

        metrics["inner/grad_norm"] = inner_terms.pop("grad_norm")
        metrics["inner/learning_rate"] = inner_terms.pop("learning_rate")
        for k, v in inner_terms.items():
            for h in range(num_heads):
                metrics[f"inner/{k}/h{h}"] = v[h]
        hp = s.hyperparams(state.meta.logits)
        for name, v in zip(HYPER_NAMES, hp):
            for h in range(num_heads):
                metrics[f"meta/{name}/h{h}"] = v[h]
        metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
        return state, pmean(metrics)

    return init, update


def make_learner(
    networks: Networks,
    agent: AgentConfig,
    meta: MetaConfig,
    reward_clip: float = 1.0,
    axis_name: Optional[str] = None,
    decay_steps: Optional[int] = None,
) -> Learner:
    """Build the pure learner functions for an agent and a meta-objective.

    `decay_steps`: inner steps over which a linear learning-rate schedule
    decays to 0 (`RunConfig.inner_steps_budget`); unused when constant."""
    if meta.objective != "none" and agent.kind != "stacx":
        raise ValueError(
            f"MetaConfig.objective={meta.objective!r} needs AgentConfig.kind='stacx', "
            f"got {agent.kind!r}"
        )
    if networks.num_heads != agent.num_heads:
        raise ValueError(
            f"network has {networks.num_heads} heads but AgentConfig.num_heads={agent.num_heads}"
        )
    if networks.meta_dim != agent.meta_dim:
        raise ValueError(f"network meta_dim={networks.meta_dim}, expected {agent.meta_dim}")
    s = _setting(networks, agent, meta, reward_clip, axis_name, decay_steps)
    inner_step = _make_inner_step(s)
    meta_objective, bootstrap_target = _make_meta_objectives(s, inner_step, _make_outer(s))
    init, update = _make_init_and_update(s, inner_step, meta_objective)
    return Learner(
        init=init,
        update=update,
        num_batches=meta.num_batches,
        window_overlap=meta.window_overlap,
        inner_step=inner_step,
        meta_objective=meta_objective,
        bootstrap_target=bootstrap_target,
        hyperparams=s.hyperparams,
        eta=s.eta,
    )
