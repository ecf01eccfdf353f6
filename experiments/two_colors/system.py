"""Training two-colors agents: the inner update, the meta-objectives bound to an
agent, and one seed's whole training as one `lax.scan` over cycles.

Training runs in cycles of C = K + L - 1 inner updates, each on a fresh
rollout collected by the current parameters x_k; one more rollout, collected
by x_C, is the validation batch (and the first inner batch of the next cycle,
so no data is spent on meta-learning alone). After the cycle, w is updated:

  none:         nothing (eps stays at `init_entropy_weight`: the baseline)
  mg  (L = 1):  grad_w f(x_K(w))                       f = outer loss on val
  bmg:          grad_w mu(x~, x_K(w)),
                x~ = sg(x_{K+L-1} - a * grad f(x_{K+L-1}))

x_K(w) re-runs the first K inner updates with the graph from x_0. The L - 1
bootstrap steps of BMG are the agent's own next updates (the meta-learned rule
with w held fixed, from x_K, on the next rollouts), so x_{K+L-1} is the
agent's real parameter vector at the end of the cycle: the target costs one
extra gradient, not L - 1 (`bootstrap_target` is the same thing written as a
function of x_K; a test checks they agree). So MG updates w once per K inner
updates and BMG once per K + L - 1. The grounded step is plain SGD with step
size `target_step_size` (0.1). The matching mu is `kl`: mean over the
validation states of KL(pi_x~ || pi_x_K(w)) (default), or `l2`:
0.5 ||x~ - x_K(w)||^2 over all parameters, or `greedy` (Q(lambda), K = 0).
The meta-parameters w are learned with Adam (eps 1e-4).

Reuse: `make_meta_objectives(inner_update, outer_loss, policy_logits, ...)`
takes the inner update and the outer loss as functions, and `unroll` returns
every x_1..x_K, so the mixture of 1..K-step meta-gradients (`mixed`) and a
second agent need no change there. `run(cfg, key)` is one seed's whole
training; `jitted_run` / `run_seeds` vmap it over seeds.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from agents import meta as meta_lib
from experiments.two_colors import env
from experiments.two_colors.agents import (
    Agent,
    Rollout,
    entropy_weight,
    make_agent,
    meta_init,
    mlp_init,
)
from experiments.two_colors.config import MATCHINGS, TwoColorsConfig
from experiments.two_colors.replay import (
    Replay,
    replay_batch,
    replay_init,
    replay_push,
    replay_reprioritise,
    replay_sample,
)

Array = jax.Array


# ----------------------------------------------------------------------------
# Inner update and meta-objectives (the reusable part)
# ----------------------------------------------------------------------------
def make_inner_optimizer(cfg: TwoColorsConfig) -> optax.GradientTransformation:
    """SGD (lr `learning_rate`), after global-norm clipping if `max_grad_norm` > 0."""
    sgd = (optax.sgd if cfg.inner_optimizer == "sgd" else optax.adam)(cfg.learning_rate)
    if cfg.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), sgd)
    return sgd


InnerUpdate = Callable[[Any, Any, Any, Rollout], Tuple[Any, Any, Dict[str, Array]]]


def make_inner_update(
    agent: Agent, cfg: TwoColorsConfig, optimizer: Optional[optax.GradientTransformation] = None
) -> InnerUpdate:
    """(params, opt_state, meta_params, batch) -> (params', opt_state', terms).

    One optax step (SGD, lr `cfg.learning_rate`, by default) on the inner loss
    with eps = entropy_weight(meta_params, batch.meta_input). Differentiable in
    meta_params and params: MG, BMG and the target bootstrap all use it."""
    opt = optimizer or make_inner_optimizer(cfg)

    def inner_update(params, opt_state, meta_params, batch: Rollout):
        eps = entropy_weight(meta_params, batch.meta_input)
        grads, terms = agent.inner_grads(params, batch, eps)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if agent.set_meta_output is not None:
            params = agent.set_meta_output(params, eps)
        return params, opt_state, dict(terms, eps=eps)

    return inner_update


def _as_list(batches) -> List[Rollout]:
    """A list of rollouts, or a Rollout with a leading axis, as a list."""
    if isinstance(batches, Rollout):
        n = batches.action.shape[0]
        return [jax.tree_util.tree_map(lambda x: x[i], batches) for i in range(n)]
    return list(batches)


class MetaObjectives(NamedTuple):
    """The meta-objectives of `agents.meta` bound to this agent's update rule
    and outer loss, returning values only (for `jax.grad`)."""

    unroll: Callable  # (meta_params, params, opt_state, batches) -> [(x_k, s_k)] k = 1..K
    mg: Callable  # (meta_params, params, opt_state, batches, val) -> f(x_K(w))
    grounded_step: Callable  # (params, val) -> sg(x - a * grad f(x))
    bootstrap_target: Callable  # (params_K, opt_state_K, meta_params, batches, val) -> x~
    matching: Callable  # (target, params, val) -> mu
    bmg: Callable  # (meta_params, params, opt_state, batches, val, target) -> mu(x~, x_K(w))
    # (meta_params, params, opt_state, batches, vals, c) -> sum_k c_k f(x_k, vals[k-1])
    mixed: Callable
    # (meta_params, params, batch, val, target) -> mu(x~, x_0 with eps(w) of batch)
    bmg_k0: Callable


def make_meta_objectives(
    inner_update: InnerUpdate,
    outer_loss: Callable,
    policy_logits: Callable,
    matching: str,
    target_step_size: float,
    set_meta_output: Optional[Callable] = None,
) -> MetaObjectives:
    """MG, mixed and BMG (`agents.meta`) from an inner update and an outer loss,
    with an SGD grounded step of size `target_step_size` and `matching` (L2 in
    parameter space, or KL of the policies on the validation states).

    `batches` is a list (or a Rollout with a leading axis) of the K inner
    batches; the number of unrolled steps is its length."""
    if matching not in MATCHINGS:
        raise ValueError(f"matching={matching!r}, expected one of {MATCHINGS}")

    def outer(params, batch: Rollout):
        return outer_loss(params, batch), {}

    match = meta_lib.matching(
        matching, lambda params, val: (policy_logits(params, val.observation[:-1]), None)
    )

    def grounded(params, val: Rollout, opt_state=None):
        return meta_lib.grounded_step(outer, target_step_size, params, val)

    def unroll(meta_params, params, opt_state, batches):
        steps = meta_lib.unroll(inner_update, meta_params, params, opt_state, _as_list(batches))
        return [(p, o) for p, o, _ in steps]

    def mg(meta_params, params, opt_state, batches, val: Rollout):
        return meta_lib.mg(
            inner_update, outer, meta_params, params, opt_state, _as_list(batches), val
        )[0]

    def grounded_step(params, val: Rollout):
        return grounded(params, val)[0]

    def bootstrap_target(params_k, opt_state_k, meta_params, batches, val: Rollout):
        """L - 1 = len(batches) steps of the rule from sg(x_K), w held fixed,
        then the grounded step on `val`."""
        return meta_lib.bootstrap_target(
            inner_update, grounded, meta_params, params_k, opt_state_k, _as_list(batches), val
        )[0]

    def bmg(meta_params, params, opt_state, batches, val: Rollout, target):
        return meta_lib.bmg(
            inner_update,
            match,
            meta_params,
            params,
            opt_state,
            _as_list(batches),
            val,
            target=target,
        )[0]

    def mixed(meta_params, params, opt_state, batches, vals, coefficients):
        return meta_lib.mixed(
            inner_update,
            outer,
            meta_params,
            params,
            opt_state,
            _as_list(batches),
            _as_list(vals),
            coefficients,
        )[0]

    def bmg_k0(meta_params, params, batch: Rollout, val: Rollout, target):
        """K = 0: w reaches the matched policy only through the meta output the
        next update would write from `batch` (no update is differentiated)."""
        if set_meta_output is None:
            raise ValueError("K = 0 needs an agent whose meta output is in its parameters")
        params = set_meta_output(params, entropy_weight(meta_params, batch.meta_input))
        return match(target, params, val)

    return MetaObjectives(unroll, mg, grounded_step, bootstrap_target, match, bmg, mixed, bmg_k0)


# ----------------------------------------------------------------------------
# Training: one seed is one lax.scan over cycles
# ----------------------------------------------------------------------------
class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    meta_params: Any
    meta_opt_state: Any
    env_state: env.EnvState
    pending: Rollout  # collected by `params`: next inner batch (last cycle's val)
    key: Array
    replay: Optional[Replay] = None  # with `replay_rollouts` > 0: every rollout so far


# (params, env_state, meta_input of the previous rollout, key) -> (env_state, Rollout)
Collect = Callable[[Any, env.EnvState, Array, Array], Tuple[env.EnvState, Rollout]]


class System(NamedTuple):
    """Everything `run` needs, built once per config."""

    cfg: TwoColorsConfig
    agent: Agent
    inner_update: InnerUpdate
    meta: MetaObjectives
    inner_opt: optax.GradientTransformation
    meta_opt: optax.GradientTransformation
    collect: Collect
    init: Callable[[Array], TrainState]  # key -> TrainState
    cycle: Callable[[TrainState], Tuple[TrainState, Dict[str, Array]]]  # -> (state, logs)


def make_collect(cfg: TwoColorsConfig, agent: Agent) -> Collect:
    """`rollout_length` steps acting with the agent's policy, as one `lax.scan`."""

    def collect(params, env_state, last_input, key):
        """T steps acting with params; last_input: previous rollout's meta input."""

        def act(carry, k):
            s, obs = carry
            ka, ke = jax.random.split(k)
            a = jax.random.categorical(ka, agent.policy_logits(params, obs)).astype(jnp.int32)
            s, next_obs, r = env.step(s, a, ke, cfg.swap_every)
            return (s, next_obs), (obs, a, r)

        (env_state, last_obs), (obs, a, r) = jax.lax.scan(
            act, (env_state, env.observe(env_state)), jax.random.split(key, cfg.rollout_length)
        )
        meta_input = jnp.concatenate([last_input[1:], jnp.mean(r)[None]])
        return env_state, Rollout(jnp.concatenate([obs, last_obs[None]]), a, r, meta_input)

    return collect


def make_init(
    cfg: TwoColorsConfig,
    agent: Agent,
    inner_opt: optax.GradientTransformation,
    meta_opt: optax.GradientTransformation,
    collect: Collect,
) -> Callable[[Array], TrainState]:
    """key -> the first TrainState: fresh agent and meta-network, one rollout collected."""

    def init(key) -> TrainState:
        k_env, k_agent, k_meta, k_roll, key = jax.random.split(key, 5)
        params = agent.init(k_agent)
        meta_params = meta_init(k_meta, cfg)
        env_state, first = collect(params, env.reset(k_env), jnp.zeros((cfg.meta_inputs,)), k_roll)
        replay = replay_init(first, cfg.replay_rollouts) if cfg.replay_rollouts else None
        return TrainState(
            params,
            inner_opt.init(params),
            meta_params,
            meta_opt.init(meta_params),
            env_state,
            first,
            key,
            replay,
        )

    return init


def scheduled_epsilon(cfg: TwoColorsConfig, t: Array) -> Array:
    """Linear from init_epsilon at the first update to final_epsilon after
    `epsilon_decay_steps` (or at the last update); t is the update's step
    count (T at the first, `steps` at the last)."""
    assert cfg.final_epsilon is not None, "a schedule needs final_epsilon"
    T = cfg.rollout_length
    span = (cfg.epsilon_decay_steps or cfg.steps) - T
    frac = jnp.clip((t - T) / max(span, 1), 0.0, 1.0)
    return cfg.init_epsilon + frac * (cfg.final_epsilon - cfg.init_epsilon)


def cycle_keys(cfg: TwoColorsConfig, key: Array) -> Tuple[Array, List[Array]]:
    """The next state's key and the cycle's keys: one per rollout, then (with
    replay) one per update to draw its replayed rollouts."""
    if cfg.replay_rollouts:
        key, *keys = jax.random.split(key, 2 * cfg.cycle + 1)
    else:
        key, *keys = jax.random.split(key, cfg.cycle + 1)
    return key, keys


def reset_output_layer(cfg: TwoColorsConfig, state: TrainState, key: Array) -> TrainState:
    """A new Q output layer when the cycle crosses a multiple of `q_reset_every`,
    written into the state, so the meta-objectives unroll from the same x_0 as
    the agent."""
    crossed = (state.env_state.t % cfg.q_reset_every) < cfg.cycle * cfg.rollout_length
    fresh = mlp_init(jax.random.fold_in(key, 7), [cfg.hidden, env.NUM_ACTIONS])[0]
    q = state.params["q"]
    last = jax.tree_util.tree_map(lambda a, b: jnp.where(crossed, a, b), fresh, q[-1])
    return state._replace(params=dict(state.params, q=q[:-1] + [last]))


class InnerPhase(NamedTuple):
    """What the C inner updates of a cycle leave behind."""

    params: Any  # x_C
    opt_state: Any
    env_state: env.EnvState
    replay: Optional[Replay]
    batches: List[Rollout]  # the cycle's first batch, then the rollout after each update
    inner_batches: List[Rollout]  # what each update learned on (with replayed rollouts)
    terms: Dict[str, Array]  # the last update's terms
    logs: Dict[str, Array]  # per update: eps; per rollout: reward, picks


def make_inner_phase(
    cfg: TwoColorsConfig, agent: Agent, inner_update: InnerUpdate, collect: Collect
) -> Callable[[TrainState, List[Array]], InnerPhase]:
    """(state, keys) -> the cycle's C inner updates, each followed by a fresh rollout."""
    C = cfg.cycle

    def inner_phase(state: TrainState, keys: List[Array]) -> InnerPhase:
        p, o, env_state, replay = state.params, state.opt_state, state.env_state, state.replay
        batches, inner_batches, eps, rewards, picks = [state.pending], [], [], [], []
        terms: Dict[str, Array] = {}
        for k in range(C):
            inner = batches[-1]
            if replay is not None:
                idx = replay_sample(replay, cfg.replay_batch, cfg.replay_priority, keys[C + k])
                inner = replay_batch(replay, inner, idx)
            inner_batches.append(inner)
            p, o, terms = inner_update(p, o, state.meta_params, inner)
            if replay is not None:
                replay = replay_reprioritise(replay, idx, terms["td_max"])
            if cfg.final_epsilon is not None:  # the schedule replaces the (fixed) meta output
                assert agent.set_meta_output is not None, "a schedule needs the Q(lambda) agent"
                terms = dict(terms, eps=scheduled_epsilon(cfg, env_state.t))
                p = agent.set_meta_output(p, terms["eps"])
            eps.append(terms["eps"])
            env_state, b = collect(p, env_state, batches[-1].meta_input, keys[k])
            batches.append(b)
            if replay is not None:
                replay = replay_push(replay, b)
            rewards.append(jnp.sum(b.reward))
            picks.append(jnp.sum(jnp.abs(b.reward)))  # pick-ups of either item
        logs = {"reward": jnp.stack(rewards), "picks": jnp.stack(picks), "eps": jnp.stack(eps)}
        return InnerPhase(p, o, env_state, replay, batches, inner_batches, terms, logs)

    return inner_phase


def make_meta_gradient(
    cfg: TwoColorsConfig, meta: MetaObjectives
) -> Callable[[TrainState, InnerPhase], Tuple[Array, Any]]:
    """(state at the cycle's start, its inner phase) -> (meta-loss, grad_w) of
    `cfg.objective`; zero for `none`."""
    K = cfg.K

    def meta_gradient(state: TrainState, inner: InnerPhase) -> Tuple[Array, Any]:
        w, x0, s0 = state.meta_params, state.params, state.opt_state
        batches, val = inner.batches, inner.batches[cfg.cycle]
        if cfg.objective == "none":  # the baseline: eps stays at init_entropy_weight
            return jnp.zeros(()), jax.tree_util.tree_map(jnp.zeros_like, w)
        if cfg.objective == "mg":
            return jax.value_and_grad(meta.mg)(w, x0, s0, inner.inner_batches[:K], val)
        if cfg.objective == "mixed":  # the k-step term is judged on the rollout after x_k
            return jax.value_and_grad(meta.mixed)(
                w, x0, s0, inner.inner_batches[:K], batches[1 : K + 1], cfg.mix_coefficients
            )
        # BMG: x_{K+L-1} = inner.params, the agent's own L - 1 steps after x_K.
        target = meta.grounded_step(inner.params, val)
        if K == 0:  # x~ is L steps past x_0; the matched policy is x_0's with eps(w)
            return jax.value_and_grad(meta.bmg_k0)(w, x0, batches[0], val, target)
        return jax.value_and_grad(meta.bmg)(w, x0, s0, inner.inner_batches[:K], val, target)

    return meta_gradient


def make_system(cfg: TwoColorsConfig, agent: Optional[Agent] = None) -> System:
    """The agent (by default `cfg.agent`'s), its optimisers and meta-objectives,
    and the pure functions `init` and `cycle` that `run` scans."""
    agent = agent or make_agent(cfg)
    inner_opt = make_inner_optimizer(cfg)
    meta_opt = optax.adam(cfg.meta_learning_rate, eps=cfg.meta_adam_eps)
    inner_update = make_inner_update(agent, cfg, inner_opt)
    meta = make_meta_objectives(
        inner_update,
        agent.outer_loss,
        agent.policy_logits,
        cfg.matching,
        cfg.target_step_size,
        agent.set_meta_output,
    )
    collect = make_collect(cfg, agent)
    inner_phase = make_inner_phase(cfg, agent, inner_update, collect)
    meta_gradient = make_meta_gradient(cfg, meta)

    def cycle(state: TrainState) -> Tuple[TrainState, Dict[str, Array]]:
        key, keys = cycle_keys(cfg, state.key)
        if cfg.q_reset_every:
            state = reset_output_layer(cfg, state, key)
        inner = inner_phase(state, keys)
        meta_loss, meta_grad = meta_gradient(state, inner)
        updates, meta_opt_state = meta_opt.update(meta_grad, state.meta_opt_state)
        meta_params = optax.apply_updates(state.meta_params, updates)
        val = inner.batches[cfg.cycle]
        new = TrainState(
            inner.params, inner.opt_state, meta_params, meta_opt_state, inner.env_state, val, key,
            inner.replay,
        )  # fmt: skip
        logs = dict(inner.logs, meta_loss=meta_loss, entropy=inner.terms["entropy"])
        return new, logs

    init = make_init(cfg, agent, inner_opt, meta_opt, collect)
    return System(cfg, agent, inner_update, meta, inner_opt, meta_opt, collect, init, cycle)


def num_cycles(cfg: TwoColorsConfig) -> int:
    """Cycles needed for `cfg.steps` steps of rollouts and of inner updates."""
    return -(-cfg.num_rollouts // cfg.cycle)


def run(cfg: TwoColorsConfig, key, system: Optional[System] = None) -> Dict[str, Array]:
    """One seed's whole training (jit-able). Logs are means over `log_every`
    steps: reward per step, entropy weight (per inner update), policy entropy
    and meta-loss (per cycle, repeated over its updates); plus the total reward
    of exactly `cfg.steps` steps."""
    system = system or make_system(cfg)
    state = system.init(key)
    first_reward = jnp.sum(state.pending.reward)
    _, logs = jax.lax.scan(lambda s, _: system.cycle(s), state, None, length=num_cycles(cfg))
    n, C = cfg.num_rollouts, cfg.cycle
    per_rollout = {  # indexed by rollout (reward) / by inner update (the others)
        "reward": jnp.concatenate([first_reward[None], logs["reward"].reshape(-1)])[:n],
        "eps": logs["eps"].reshape(-1)[:n],
        "entropy": jnp.repeat(logs["entropy"], C)[:n],
        "meta_loss": jnp.repeat(logs["meta_loss"], C)[:n],
    }
    per_bin = cfg.log_every // cfg.rollout_length
    bins = n // per_bin
    out = {
        k: jnp.mean(v[: bins * per_bin].reshape(bins, per_bin), axis=1)
        for k, v in per_rollout.items()
    }
    out["reward"] = out["reward"] / cfg.rollout_length  # mean reward per step
    out["total_reward"] = jnp.sum(per_rollout["reward"])
    return out


def seed_keys(seeds: Sequence[int]) -> Array:
    return jnp.stack([jax.random.PRNGKey(s) for s in seeds])


def jitted_run(cfg: TwoColorsConfig) -> jax.stages.Wrapped:
    """jit(vmap(run)): keys [S, 2] -> logs with a leading seed axis."""
    system = make_system(cfg)
    return jax.jit(jax.vmap(lambda k: run(cfg, k, system)))


def run_seeds(cfg: TwoColorsConfig, seeds: Sequence[int]) -> Dict[str, Array]:
    """Train one agent per seed, all at once; logs have a leading seed axis."""
    return jitted_run(cfg)(seed_keys(seeds))
