"""Two-colors: the environment by hand, the MG / BMG meta-gradients in float64,
and a short training run (finite, shapes, deterministic)."""

import dataclasses
import functools
import gzip
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest


from configs import ConfigError
from experiments.two_colors import env, q_compare
from experiments.two_colors import run as tc
from experiments.two_colors.config import AGENTS, TwoColorsConfig, parse_objective
from experiments.two_colors.agents import (
    Rollout,
    entropy_weight,
    epsilon_greedy_log_probs,
    mlp_apply,
    peng_q_lambda_returns,
)
from experiments.two_colors.replay import (
    replay_batch,
    replay_init,
    replay_push,
    replay_reprioritise,
    replay_sample,
)
from experiments.two_colors.system import (
    jitted_run,
    make_meta_objectives,
    make_system,
    run_seeds,
    seed_keys,
)
from experiments.two_colors.q_diagnosis import per_phase
from tests.conftest import enable_x64

UP, DOWN, LEFT, RIGHT = range(4)
KEY = jax.random.PRNGKey(0)


def _state(agent, items, t=0):
    return env.EnvState(
        jnp.asarray(agent, jnp.int32), jnp.asarray(items, jnp.int32), jnp.asarray(t, jnp.int32)
    )


# ---------------------------------------------------------------- environment
def test_observation_is_one_hot_xy_of_agent_then_items():
    obs = np.asarray(env.observe(_state((1, 3), [(0, 0), (4, 2)])))
    assert obs.shape == (30,) and obs.dtype == np.float32
    expected = np.zeros(30, np.float32)
    expected[[1, 5 + 3, 10 + 0, 15 + 0, 20 + 4, 25 + 2]] = 1.0
    np.testing.assert_array_equal(obs, expected)


@pytest.mark.parametrize(
    "action,expected", [(UP, (2, 1)), (DOWN, (2, 3)), (LEFT, (1, 2)), (RIGHT, (3, 2))]
)
def test_moves(action, expected):
    s, obs, r = env.step(_state((2, 2), [(0, 0), (4, 4)]), action, KEY)
    assert tuple(np.asarray(s.agent)) == expected and float(r) == 0.0
    np.testing.assert_array_equal(np.asarray(s.items), [(0, 0), (4, 4)])  # no respawn
    assert int(s.t) == 1
    np.testing.assert_array_equal(obs, env.observe(s))


def test_walls_keep_the_agent_in_place():
    for action in (UP, LEFT):
        s, _, _ = env.step(_state((0, 0), [(3, 3), (4, 4)]), action, KEY)
        assert tuple(np.asarray(s.agent)) == (0, 0)
    for action in (DOWN, RIGHT):
        s, _, _ = env.step(_state((4, 4), [(0, 0), (1, 1)]), action, KEY)
        assert tuple(np.asarray(s.agent)) == (4, 4)


def test_rewards_and_swap_timing():
    # Item 0 at the right of the agent, item 1 at its left; swap every 5 steps.
    start = ((1, 1), [(2, 1), (0, 1)])
    for t, right, left in [
        (0, 1, -1),
        (4, 1, -1),
        (5, -1, 1),
        (9, -1, 1),
        (10, 1, -1),
        (15, -1, 1),
    ]:
        _, _, r_right = env.step(_state(*start, t), RIGHT, KEY, swap_every=5)
        _, _, r_left = env.step(_state(*start, t), LEFT, KEY, swap_every=5)
        assert (float(r_right), float(r_left)) == (right, left), t
    assert [int(env.paying_item(t, 5)) for t in range(12)] == [0] * 5 + [1] * 5 + [0] * 2
    assert int(env.paying_item(99_999)) == 0 and int(env.paying_item(100_000)) == 1
    assert int(env.paying_item(200_000)) == 0


def test_pick_up_respawns_agent_and_both_items_at_distinct_cells():
    key = jax.random.PRNGKey(3)
    s, obs, r = env.step(_state((1, 1), [(2, 1), (0, 1)]), RIGHT, key)
    cells = np.asarray(env._random_cells(key))
    assert float(r) == 1.0 and int(s.t) == 1
    np.testing.assert_array_equal(np.asarray(s.agent), cells[0])
    np.testing.assert_array_equal(np.asarray(s.items), cells[1:])
    np.testing.assert_array_equal(obs, env.observe(s))


def test_random_cells_are_distinct_and_uniform():
    cells = jax.vmap(env._random_cells)(jax.random.split(KEY, 25_000))
    flat = np.asarray(cells[..., 0] + env.SIZE * cells[..., 1])
    assert flat.min() >= 0 and flat.max() < 25
    assert np.all(
        (flat[:, 0] != flat[:, 1]) & (flat[:, 0] != flat[:, 2]) & (flat[:, 1] != flat[:, 2])
    )
    for i in range(3):  # each role is uniform over the 25 cells: 1000 expected each
        counts = np.bincount(flat[:, i], minlength=25)
        assert counts.min() > 850 and counts.max() < 1150, counts
    s = env.reset(KEY)
    xy = np.concatenate([np.asarray(s.agent)[None], np.asarray(s.items)])
    assert len({tuple(c) for c in xy}) == 3 and int(s.t) == 0


# ---------------------------------------------------------------- config
def test_config_validation():
    with pytest.raises(ConfigError, match=r"TwoColorsConfig.L=4 is not allowed"):
        TwoColorsConfig(objective="mg", L=4)
    with pytest.raises(ConfigError, match="matching"):
        TwoColorsConfig(matching="cosine")
    with pytest.raises(ConfigError, match="steps=1000 is not allowed"):
        TwoColorsConfig(steps=1000)
    assert parse_objective("bmg_k2_l8") == {"objective": "bmg", "K": 2, "L": 8}
    assert parse_objective("mg") == {"objective": "mg"}
    with pytest.raises(ConfigError):
        parse_objective("bmg_x3")


# ---------------------------------------------------------------- meta-gradients
@functools.lru_cache(maxsize=None)
def _tiny_f64(K, L=1, matching="kl", max_grad_norm=0.0, agent="actor_critic"):
    """float64 system on a tiny network (weights scaled up so the policy is not
    uniform), meta-parameters away from init, and K + L rollouts collected by
    the agent as in training. Call inside `enable_x64()`. The meta-objectives
    take any number of inner batches, so one setup serves several K."""
    cfg = TwoColorsConfig(
        agent=agent,
        objective="bmg",
        K=K,
        L=L,
        matching=matching,
        hidden=8,
        steps=4096,
        max_grad_norm=max_grad_norm,
        init_entropy_weight=0.3,
        init_epsilon=0.3,
    )
    system = make_system(cfg)
    to64 = lambda t: jax.tree_util.tree_map(  # noqa: E731
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, t
    )
    state = to64(system.init(jax.random.PRNGKey(1)))
    # Larger weights than at init, so the entropy gradient is not ~0.
    state = state._replace(params=jax.tree_util.tree_map(lambda x: 1.5 * x, state.params))
    # The rollouts of one training cycle (same keys as `system.cycle`).
    batches, p, o, es = [state.pending], state.params, state.opt_state, state.env_state
    _, *keys = jax.random.split(state.key, cfg.cycle + 1)
    inner_update, collect = jax.jit(system.inner_update), jax.jit(system.collect)
    for k in range(cfg.cycle):
        p, o, _ = inner_update(p, o, state.meta_params, batches[-1])
        es, b = collect(p, es, batches[-1].meta_input, keys[k])
        batches.append(to64(b))
    meta_params = jax.tree_util.tree_map(  # away from init, every unit active
        lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(9), x.shape, x.dtype),
        state.meta_params,
    )
    return cfg, system, state, meta_params, batches, p


@pytest.mark.slow
@pytest.mark.parametrize("agent", AGENTS)
def test_bmg_l1_l2_sgd_equals_target_step_times_mg_gradient(agent):
    """With L = 1, L2 matching and an SGD grounded step, the BMG meta-gradient is
    a * (dx_K/dw)^T grad f(x_K) = a * the MG meta-gradient (docs/design.md, section 3.4)."""
    with enable_x64():
        for K in (1,):  # (K = 2 holds too; left out to keep the file fast)
            cfg, system, state, w, batches, _ = _tiny_f64(2, 2, "kl", agent=agent)
            meta = make_meta_objectives(
                system.inner_update,
                system.agent.outer_loss,
                system.agent.policy_logits,
                "l2",
                cfg.target_step_size,
            )
            args = (state.params, state.opt_state, batches[:K])
            val = batches[K]
            g_mg = jax.jit(jax.grad(meta.mg))(w, *args, val)
            x_k = jax.jit(meta.unroll)(w, *args)[-1][0]
            target = jax.jit(meta.grounded_step)(x_k, val)
            g_bmg = jax.jit(jax.grad(meta.bmg))(w, *args, val, target)
            a = cfg.target_step_size
            for gb, gm in zip(jax.tree_util.tree_leaves(g_bmg), jax.tree_util.tree_leaves(g_mg)):
                np.testing.assert_allclose(gb, a * gm, rtol=1e-9, atol=1e-14)
            assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(g_mg)) > 0


def _check_directional_derivative(fn, w):
    """grad fn . d == (fn(w + h d) - fn(w - h d)) / 2h for a random direction d."""
    grad = jax.jit(jax.grad(fn))(w)
    direction = jax.tree_util.tree_map(
        lambda x: jax.random.normal(jax.random.PRNGKey(5), x.shape, x.dtype), w
    )
    h = 1e-6
    shifted = lambda s: jax.tree_util.tree_map(lambda x, d: x + s * d, w, direction)  # noqa
    fd = (fn(shifted(h)) - fn(shifted(-h))) / (2 * h)
    analytic = sum(
        jnp.vdot(g, d)
        for g, d in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction))
    )
    assert abs(float(analytic)) > 1e-8
    np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("objective,clip", [("mg", 0.0), ("bmg", 0.5)])
def test_k_step_meta_gradient_matches_finite_differences(objective, clip, agent):
    """Through 2 inner steps, in float64. (MG's f stops the gradient through its
    value targets; they depend on w only when the global-norm clip couples the
    critic's step to the actor's, so MG is checked without clipping.)"""
    with enable_x64():
        cfg, system, state, w, batches, _ = _tiny_f64(2, 2, "kl", max_grad_norm=clip, agent=agent)
        args = (state.params, state.opt_state, batches[:2])
        val = batches[3]
        if objective == "mg":
            fn = lambda m: system.meta.mg(m, *args, val)  # noqa: E731
        else:
            x_k = jax.jit(system.meta.unroll)(w, *args)[-1]
            target = jax.jit(system.meta.bootstrap_target)(x_k[0], x_k[1], w, batches[2:3], val)
            fn = lambda m: system.meta.bmg(m, *args, val, target)  # noqa: E731
        _check_directional_derivative(jax.jit(fn), w)


def test_no_gradient_flows_into_the_target():
    with enable_x64():
        _, system, state, w, batches, _ = _tiny_f64(2, 2, "kl")
        args = (state.params, state.opt_state, batches[:1])
        x_k = jax.jit(system.meta.unroll)(w, *args)[-1][0]
        target = jax.jit(system.meta.grounded_step)(x_k, batches[1])
        g = jax.jit(jax.grad(system.meta.bmg, argnums=5))(w, *args, batches[1], target)
        assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree_util.tree_leaves(g))


@pytest.mark.slow
def test_training_cycle_is_k_steps_bootstrap_and_one_meta_update():
    """`system.cycle` (BMG, K = 2, L = 2) equals its parts: the agent ends at
    x_{K+L-1}, the val rollout is carried over, and w moves by Adam on
    grad_w mu(x~, x_K(w)) with x~ = bootstrap_target(x_K, ...) written out."""
    with enable_x64():
        cfg, system, state, _, batches, x_c = _tiny_f64(2, 2, "kl")
        new, logs = jax.jit(system.cycle)(state)
        close = functools.partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-12)
        jax.tree_util.tree_map(close, new.params, x_c)
        close(new.pending.observation, batches[-1].observation)
        w, args = state.meta_params, (state.params, state.opt_state, batches[:2])
        x_k, o_k = jax.jit(system.meta.unroll)(w, *args)[-1]
        target = jax.jit(system.meta.bootstrap_target)(x_k, o_k, w, batches[2:3], batches[3])
        jax.tree_util.tree_map(close, target, system.meta.grounded_step(x_c, batches[3]))
        g = jax.jit(jax.grad(system.meta.bmg))(w, *args, batches[3], target)
        updates, _ = system.meta_opt.update(g, state.meta_opt_state)
        jax.tree_util.tree_map(close, new.meta_params, optax.apply_updates(w, updates))
        assert logs["reward"].shape == (3,) and logs["eps"].shape == (3,)


# ---------------------------------------------------------------- short runs
@pytest.mark.parametrize(
    "agent,objective,matching",
    [
        ("actor_critic", "mg", "kl"),
        ("actor_critic", "bmg_l2", "l2"),
        ("actor_critic", "mixed_k2", "kl"),
        ("q_lambda", "mg", "kl"),
        ("q_lambda", "bmg_l2", "kl"),
    ],
)
@pytest.mark.slow
def test_short_run_finite_shapes_deterministic(agent, objective, matching):
    cfg = TwoColorsConfig(
        **parse_objective(objective, agent),
        agent=agent,
        matching=matching,
        hidden=16,
        steps=3072,
        swap_every=1024,
        log_every=256,
    )
    fn = jitted_run(cfg)
    keys = seed_keys([0, 1])
    out = jax.tree_util.tree_map(np.asarray, fn(keys))
    bins = cfg.steps // cfg.log_every
    for k in ("reward", "eps", "entropy", "meta_loss"):
        assert out[k].shape == (2, bins), k
        assert np.all(np.isfinite(out[k])), k
    assert out["total_reward"].shape == (2,)
    # The logged reward rate adds up to the total (log_every divides steps here).
    np.testing.assert_allclose(out["reward"].sum(1) * cfg.log_every, out["total_reward"], rtol=1e-5)
    assert np.all((out["eps"] > 0) & (out["eps"] < 1))
    assert np.ptp(out["eps"]) > 0  # meta-learning moves the meta output
    assert not np.array_equal(out["reward"][0], out["reward"][1])  # seeds differ
    again = jax.tree_util.tree_map(np.asarray, fn(keys))
    for k in out:
        np.testing.assert_array_equal(out[k], again[k])


@pytest.mark.slow
def test_mixed_one_hot_is_k_step_mg_and_matches_finite_differences():
    """mixed with c = (1, 0) is MG K = 1 and with (0, 1) MG K = 2, exactly; with
    c = (0.6, 0.4) its meta-gradient matches a directional finite difference
    (no clipping: then f's stopped value targets do not depend on w)."""
    with enable_x64():
        cfg, system, state, w, batches, _ = _tiny_f64(2, 1, "kl")
        args = (state.params, state.opt_state, batches[:2])
        vals = batches[1:3]

        def mixed(c):
            return jax.jit(jax.grad(lambda m: system.meta.mixed(m, *args, vals, c)))(w)

        for c, k in (((1.0, 0.0), 1), ((0.0, 1.0), 2)):
            g_mg = jax.jit(
                jax.grad(lambda m: system.meta.mg(m, *args[:2], batches[:k], batches[k]))
            )(w)
            for a, b in zip(jax.tree_util.tree_leaves(mixed(c)), jax.tree_util.tree_leaves(g_mg)):
                np.testing.assert_array_equal(a, b)
        _check_directional_derivative(
            jax.jit(lambda m: system.meta.mixed(m, *args, vals, (0.6, 0.4))), w
        )
    assert TwoColorsConfig(objective="mixed", K=3, mix_lambda=0.5).mix_coefficients == (
        0.5,
        0.25,
        0.25,
    )


# ---------------------------------------------------------------- Q(lambda) agent (issue 11)
def test_peng_q_lambda_returns_by_hand():
    r = jnp.array([1.0, 0.0, 2.0])
    next_max_q = jnp.array([0.5, 1.0, 3.0])  # max_a Q(s_1..s_3, a)
    # G_2 = 2 + .9 * 3 = 4.7; G_1 = .9 * (.5 * 1 + .5 * 4.7) = 2.565;
    # G_0 = 1 + .9 * (.5 * .5 + .5 * 2.565) = 2.37925
    np.testing.assert_allclose(
        peng_q_lambda_returns(r, next_max_q, 0.9, 0.5), [2.37925, 2.565, 4.7], rtol=1e-6
    )
    # lambda = 0: one-step Q-learning targets; lambda = 1: discounted rewards + final bootstrap
    np.testing.assert_allclose(
        peng_q_lambda_returns(r, next_max_q, 0.9, 0.0), [1.45, 0.9, 4.7], rtol=1e-6
    )
    np.testing.assert_allclose(
        peng_q_lambda_returns(r, next_max_q, 0.9, 1.0), [4.807, 4.23, 4.7], rtol=1e-6
    )


def test_epsilon_greedy_log_probs_and_their_epsilon_gradient():
    q = jnp.array([1.0, 3.0, 2.0, 0.0])
    np.testing.assert_allclose(
        jnp.exp(epsilon_greedy_log_probs(q, 0.2)), [0.05, 0.85, 0.05, 0.05], rtol=1e-6
    )
    # d log p / d eps: greedy (1/A - 1) / p = -0.75 / 0.85; others (1/A) / p = 5.
    jac = jax.jacobian(lambda e: epsilon_greedy_log_probs(q, e))(0.2)
    np.testing.assert_allclose(jac, [5.0, -0.75 / 0.85, 5.0, 5.0], rtol=1e-5)
    g_q = jax.grad(lambda x: epsilon_greedy_log_probs(x, 0.2)[1])(q)
    np.testing.assert_array_equal(g_q, np.zeros(4))  # argmax: no gradient into Q


def test_q_inner_update_descends_peng_td_loss_and_writes_epsilon():
    """The inner loss is 0.5 mean((G - Q(s, a))^2) with G written out as a loop;
    the update leaves eps_logit to the meta-network: sigmoid(eps_logit) = eps(w)."""
    with enable_x64():
        cfg, system, state, w, batches, _ = _tiny_f64(1, 1, agent="q_lambda")
        b = batches[0]
        q = np.asarray(mlp_apply(state.params["q"], b.observation))
        T = b.reward.shape[0]
        g, returns = q[T].max(), np.zeros(T)
        for t in reversed(range(T)):
            boot = (
                q[t + 1].max()
                if t == T - 1
                else ((1 - cfg.q_lambda) * q[t + 1].max() + cfg.q_lambda * g)
            )
            g = returns[t] = float(b.reward[t]) + cfg.discount * boot
        q_sa = q[np.arange(T), np.asarray(b.action)]
        p, _, terms = system.inner_update(state.params, state.opt_state, w, b)
        np.testing.assert_allclose(terms["td"], 0.5 * np.mean((returns - q_sa) ** 2), rtol=1e-10)
        eps = entropy_weight(w, b.meta_input)
        np.testing.assert_allclose(jax.nn.sigmoid(p["eps_logit"]), eps, rtol=1e-10)
        np.testing.assert_allclose(terms["eps"], eps, rtol=1e-10)


def test_q_mg_meta_gradient_is_reinforce_on_epsilon():
    """For the Q agent, x_K(w) depends on w only through its epsilon, so the MG
    meta-gradient is the policy gradient of the epsilon-greedy policy on the
    validation rollout: grad_w -mean(log pi_eps(w)(a|s) * (G - max_a Q(s, a)))."""
    with enable_x64():
        cfg, system, state, w, batches, _ = _tiny_f64(1, 1, agent="q_lambda")
        args = (state.params, state.opt_state, batches[:1])
        val = batches[1]
        g_mg = jax.grad(system.meta.mg)(w, *args, val)
        x_k = system.meta.unroll(w, *args)[-1][0]
        q = mlp_apply(x_k["q"], val.observation)
        max_q = jnp.max(q, axis=-1)
        adv = peng_q_lambda_returns(val.reward, max_q[1:], cfg.discount, cfg.q_lambda) - max_q[:-1]

        def reinforce(m):
            log_pi = epsilon_greedy_log_probs(q[:-1], entropy_weight(m, batches[0].meta_input))
            return -jnp.mean(log_pi[jnp.arange(adv.shape[0]), val.action] * adv)

        g_ref = jax.grad(reinforce)(w)
        for a, b in zip(jax.tree_util.tree_leaves(g_mg), jax.tree_util.tree_leaves(g_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-14)
        assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(g_mg)) > 0


def test_fixed_epsilon_objective_holds_epsilon():
    assert parse_objective("fixed_0.05", "q_lambda") == {
        "objective": "none",
        "init_epsilon": 0.05,
    }
    assert parse_objective("fixed_0.2") == {"objective": "none", "init_entropy_weight": 0.2}
    with pytest.raises(ConfigError, match="fixed_<value>"):
        parse_objective("fixed_x")
    with pytest.raises(ConfigError, match="init_epsilon=1.5 is not allowed"):
        TwoColorsConfig(agent="q_lambda", **parse_objective("fixed_1.5", "q_lambda"))
    cfg = TwoColorsConfig(
        agent="q_lambda",
        **parse_objective("fixed_0.05", "q_lambda"),
        hidden=16,
        steps=1024,
        log_every=256,
    )
    out = run_seeds(cfg, [0])
    np.testing.assert_allclose(out["eps"], 0.05, rtol=1e-5)
    assert np.isfinite(float(out["total_reward"][0]))


# ---------------------------------------------------------------- runner
def _runner(tmp_path, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.two_colors.run",
            "--steps=2048",
            "--seeds=2",
            "--hidden=8",
            "--swap_every=1024",
            f"--out={tmp_path}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_runner_q_agent_writes_results_and_plots_and_refuses_mixed_agents(tmp_path):
    done = _runner(tmp_path, "--agent=q_lambda", "--objectives=fixed_0.1,mg")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["agent"] == "q_lambda" and set(results["objectives"]) == {"fixed_0.1", "mg"}
    fixed = results["objectives"]["fixed_0.1"]
    assert fixed["config"]["init_epsilon"] == 0.1 and fixed["config"]["objective"] == "none"
    assert len(fixed["total_reward"]) == 2 and np.allclose(fixed["curves"]["eps"], 0.1, rtol=1e-5)
    for png in ("total_reward.png", "cumulative_reward.png", "reward_rate.png", "epsilon.png"):
        assert (tmp_path / png).stat().st_size > 0, png
    # Appending actor-critic runs to a Q(lambda) results file is refused, file unchanged.
    before = (tmp_path / "results.json").read_text()
    done = _runner(tmp_path, "--objectives=mg", "--append")
    assert done.returncode == 2 and "--append" in done.stderr and "q_lambda" in done.stderr
    assert (tmp_path / "results.json").read_text() == before


def _fake_result(seeds, total, cfg=None):
    cfg = cfg or {"steps": 4, "log_every": 1, "swap_every": 2, "objective": "mg", "K": 1}
    return {
        "config": cfg,
        "seeds": list(seeds),
        "total_reward": list(total),
        "runtime_s": 10.0,
        "compile_s": 1.0,
        "steps_per_s": 0,
        "curves": {k: [[float(s)] * 4 for s in seeds] for k in ("reward", "eps", "entropy")},
    }


def test_merge_objective_joins_seed_chunks_in_seed_order():
    merged = tc.merge_objective(
        _fake_result([2, 3], [20.0, 30.0]), _fake_result([0, 1], [0.0, 10.0])
    )
    assert merged["seeds"] == [0, 1, 2, 3] and merged["total_reward"] == [0.0, 10.0, 20.0, 30.0]
    assert merged["curves"]["eps"] == [[float(s)] * 4 for s in range(4)]
    # t-interval over all four: mean 15, sd 12.91, t(0.975, 3) = 3.182 -> half width 20.54.
    assert merged["mean"] == 15.0
    np.testing.assert_allclose(merged["ci95"], [15 - 20.5424, 15 + 20.5424], rtol=1e-4)
    assert merged["runtime_s"] == 20.0 and merged["compile_s"] == 2.0
    assert [c["seeds"] for c in merged["chunks"]] == [[2, 3], [0, 1]]
    assert merged["steps_per_s"] == round(4 * 4 / 20.0)
    # A third chunk keeps the chunk list; a rerun of the same seeds replaces.
    three = tc.merge_objective(merged, _fake_result([4], [40.0]))
    assert three["seeds"] == [0, 1, 2, 3, 4] and len(three["chunks"]) == 3
    rerun = _fake_result([0, 1], [5.0, 6.0])
    assert tc.merge_objective(_fake_result([1, 0], [0.0, 1.0]), rerun) is rerun


def test_write_results_is_atomic(tmp_path):
    good = {"agent": "actor_critic", "objectives": {"mg": _fake_result([0], [1.0])}}
    tc.write_results(good, str(tmp_path))
    before = {n: (tmp_path / n).read_text() for n in ("results.json", "summary.json")}
    assert "curves" in before["results.json"] and "curves" not in before["summary.json"]
    bad = {
        "agent": "actor_critic",
        "objectives": {"mg": dict(good["objectives"]["mg"], mean=object())},
    }
    with pytest.raises(TypeError):  # fails mid-write: the complete files stay
        tc.write_results(bad, str(tmp_path))
    assert {n: (tmp_path / n).read_text() for n in before} == before


def test_check_chunk_refuses_other_config_and_overlapping_seeds():
    old = _fake_result([0, 1], [0.0, 1.0])
    tc.check_chunk(None, "mg", {"K": 2}, [0], "x")
    tc.check_chunk(old, "mg", dict(old["config"]), [2, 3], "x")  # a chunk
    tc.check_chunk(old, "mg", dict(old["config"]), [1, 0], "x")  # a rerun
    tc.check_chunk(old, "mg", dict(old["config"], added_field=1), [2], "x")  # newer field
    with pytest.raises(ConfigError, match=r"different config.*'K': \(1, 4\)"):
        tc.check_chunk(old, "mg", dict(old["config"], K=4), [2], "x")
    with pytest.raises(ConfigError, match=r"overlap.*at \[1\]"):
        tc.check_chunk(old, "mg", dict(old["config"]), [1, 2], "x")
    with pytest.raises(ConfigError, match="cannot combine b"):
        tc.merge_results({"steps": 4, "objectives": {}}, {"steps": 8, "objectives": {}}, "b")


def test_merge_results_keeps_header_and_objectives_only():
    # An older file's per-run field (its number of seeds) does not survive a merge.
    head = {"agent": "actor_critic", "steps": 4, "log_every": 1, "swap_every": 2}
    merged = tc.merge_results(
        dict(head, num_seeds=10, objectives={}), dict(head, objectives={}), "b"
    )
    assert merged == dict(head, objectives={})
    assert tc.merge_results(None, dict(head, num_seeds=10, objectives={}), "a") == merged


@pytest.mark.slow
def test_runner_seed_chunks_by_append_and_merge_equal_one_run(tmp_path):
    dirs = {n: tmp_path / n for n in ("full", "a", "b", "m")}
    for name, args in (
        ("full", ["--seeds=2"]),
        ("a", ["--seeds=1", "--seed_offset=1"]),
        ("b", ["--seeds=1"]),
    ):
        done = _runner(dirs[name], "--objectives=mg", "--plots=false", *args)
        assert done.returncode == 0, done.stderr[-2000:]
    kept = tmp_path / "b.json.gz"  # how chunks are kept in experiments/two_colors/results
    kept.write_bytes(gzip.compress((dirs["b"] / "results.json").read_bytes()))
    done = _runner(dirs["m"], f"--merge={dirs['a']},{tmp_path / 'nothing.json'}")
    assert done.returncode == 2 and "nothing.json" in done.stderr
    done = _runner(dirs["m"], f"--merge={dirs['a']},{kept}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (dirs["m"] / "total_reward.png").stat().st_size > 0
    before = (dirs["a"] / "results.json").read_text()
    done = _runner(dirs["a"], "--objectives=mg", "--seeds=2", "--append")  # seeds 0, 1
    assert done.returncode == 2 and "overlap" in done.stderr and "at [1]" in done.stderr
    assert (dirs["a"] / "results.json").read_text() == before  # refused before running
    done = _runner(dirs["a"], "--objectives=mg", "--seeds=1", "--append", "--plots=false")
    assert done.returncode == 0, done.stderr[-2000:]
    full = json.loads((dirs["full"] / "results.json").read_text())["objectives"]["mg"]
    for name in ("a", "m"):
        r = json.loads((dirs[name] / "results.json").read_text())["objectives"]["mg"]
        assert r["seeds"] == [0, 1] and len(r["chunks"]) == 2, name
        # Seed s starts from PRNGKey(s) whatever else is vmapped beside it.
        assert r["total_reward"] == full["total_reward"] and r["mean"] == full["mean"], name
        np.testing.assert_allclose(r["curves"]["eps"], full["curves"]["eps"], rtol=1e-6)


def test_q_diagnosis_splits_pick_ups_by_colour_per_phase():
    """+1 rewards are the paying item's pick-ups, -1 the other's; the probe
    Q-values are read at each phase's last cycle, by the item that pays there
    (plant: swapping `pays` for `1 - pays` fails the Q assertions)."""
    cfg = TwoColorsConfig(agent="q_lambda", objective="none", steps=64, swap_every=32)
    # 4 rollouts of 16 steps, one seed; phase 0 = rollouts 0-1, phase 1 = 2-3.
    reward = np.array([[3.0, 1.0, -2.0, 0.0]])  # sums per rollout
    picks = np.array([[5.0, 1.0, 2.0, 4.0]])  # |reward| sums: pick-ups
    q = np.array([[[9, 9], [1.0, 2.0], [9, 9], [3.0, 4.0]]])  # [seed, cycle, item]
    raw = {"reward": reward, "picks": picks, "q_right": q, "dead": np.zeros((1, 4))}
    p0, p1 = per_phase(raw, cfg, first_item=0)
    assert p0["paying_item"] == 0 and p1["paying_item"] == 1
    assert p0["paying_picks_per_1k"] == pytest.approx((4 + 1) * 1000 / 32)
    assert p0["other_picks_per_1k"] == pytest.approx((1 + 0) * 1000 / 32)
    assert p1["paying_picks_per_1k"] == pytest.approx((0 + 2) * 1000 / 32)
    assert p1["reward_per_step"] == pytest.approx(-2 / 32)
    assert (p0["q_pick_paying_end"], p0["q_pick_other_end"]) == (1.0, 2.0)
    assert (p1["q_pick_paying_end"], p1["q_pick_other_end"]) == (4.0, 3.0)


# ---------------------------------------------------------------- Q(lambda): swap, replay, BMG
def _go_to(state, item):
    """A scripted move toward `item` (x first, then y)."""
    dx, dy = np.asarray(state.items[item]) - np.asarray(state.agent)
    if dx:
        return RIGHT if dx > 0 else LEFT
    return DOWN if dy > 0 else UP


@pytest.mark.slow
def test_q_targets_through_pick_ups_and_a_colour_swap_by_hand():
    """A hand-made trajectory that always walks to item 0 with a swap every 6
    steps: each pick-up pays +1 before the swap and -1 after it, the agent and
    items respawn, and the learner's Peng's Q(lambda) targets bootstrap straight
    through the pick-ups (no episode cut) from max_a Q at the respawned state.
    The targets and the TD loss are written out with loops on a forward pass
    written here. Planted bugs it catches: a target cut at a pick-up (an episode
    end), an observation (and so a bootstrap) of the agent before its respawn,
    rewards of the previous colour phase after the swap."""
    swap, T = 6, 16
    state = _state((0, 0), [(2, 0), (4, 4)], t=0)
    obs, actions, rewards, picks = [env.observe(state)], [], [], []
    for t, key in enumerate(jax.random.split(KEY, T)):
        a = _go_to(state, 0)
        before = state
        state, o, r = env.step(state, a, key, swap_every=swap)
        np.testing.assert_array_equal(o, env.observe(state))  # the respawned state's
        moved = np.clip(np.asarray(before.agent) + env.MOVES[a], 0, env.SIZE - 1)
        picked = tuple(moved) == tuple(np.asarray(before.items[0]))
        assert float(r) == (0.0 if not picked else (1.0 if (t // swap) % 2 == 0 else -1.0))
        if picked:  # respawned: three distinct cells, and the observation shows them
            cells = {tuple(np.asarray(state.agent))} | {tuple(c) for c in np.asarray(state.items)}
            assert len(cells) == 3
            picks.append((t, float(r)))
        obs.append(o)
        actions.append(a)
        rewards.append(float(r))
    assert any(r > 0 for _, r in picks) and any(r < 0 for _, r in picks), picks
    batch = Rollout(
        jnp.stack(obs),
        jnp.asarray(actions, jnp.int32),
        jnp.asarray(rewards, jnp.float32),
        jnp.zeros((10,)),
    )
    # The batch is float32: full-precision matmuls, not an accelerator's TF32.
    with enable_x64(), jax.default_matmul_precision("highest"):
        cfg = TwoColorsConfig(agent="q_lambda", objective="none", hidden=8, steps=1024)
        system = make_system(cfg)
        params = system.agent.init(jax.random.PRNGKey(3))
        layers = [{k: np.asarray(v, np.float64) for k, v in la.items()} for la in params["q"]]
        x = np.asarray(batch.observation, np.float64)
        for la in layers[:-1]:
            x = np.maximum(x @ la["w"] + la["b"], 0.0)
        q = x @ layers[-1]["w"] + layers[-1]["b"]  # [T + 1, 4]
        g, targets = q[T].max(), np.zeros(T)
        for t in reversed(range(T)):
            boot = (
                q[t + 1].max()
                if t == T - 1
                else (1 - cfg.q_lambda) * q[t + 1].max() + (cfg.q_lambda * g)
            )
            g = targets[t] = rewards[t] + cfg.discount * boot
        td = 0.5 * np.mean((targets - q[np.arange(T), actions]) ** 2)
        _, _, terms = system.inner_update(
            params, system.inner_opt.init(params), system.init(KEY).meta_params, batch
        )
        np.testing.assert_allclose(float(terms["td"]), td, rtol=1e-5)


@pytest.mark.slow
def test_replay_fifo_priorities_and_batches():
    """The FIFO keeps the last N rollouts (oldest overwritten), a new rollout gets
    the largest priority held, draws come only from filled slots (uniformly, or
    by priority), the inner batch puts the fresh rollout first with its own meta
    input, and the TD loss over a batch is the mean of the per-rollout losses."""

    def rollout(i):
        return Rollout(
            jnp.full((3, 30), float(i)),
            jnp.full((2,), i % 4, jnp.int32),
            jnp.full((2,), i, jnp.float32),
            jnp.full((10,), float(i)),
        )

    replay = replay_init(rollout(0), 3)
    assert int(replay.pushed) == 1 and list(np.asarray(replay.priority)) == [1.0, 0.0, 0.0]
    idx = replay_sample(replay, 64, 0.0, KEY)
    assert set(np.asarray(idx).tolist()) == {0}  # only the filled slot
    replay = replay_reprioritise(replay, jnp.array([0]), jnp.array([9.0, 2.5]))
    for i in (1, 2, 3):
        replay = replay_push(replay, rollout(i))
    # Slot 0 now holds rollout 3 (the oldest, 0, was overwritten); new slots got
    # the largest priority held at their push (2.5).
    np.testing.assert_array_equal(replay.rollouts.reward[:, 0], [3.0, 1.0, 2.0])
    np.testing.assert_array_equal(replay.priority, [2.5, 2.5, 2.5])
    replay = replay._replace(priority=jnp.array([1e-9, 1.0, 0.0]))
    assert set(np.asarray(replay_sample(replay, 64, 1.0, KEY)).tolist()) == {1}
    assert len(set(np.asarray(replay_sample(replay, 256, 0.0, KEY)).tolist())) == 3
    batch = replay_batch(replay, rollout(7), jnp.array([2, 0]))
    np.testing.assert_array_equal(batch.reward[:, 0], [7.0, 2.0, 3.0])
    np.testing.assert_array_equal(batch.meta_input, rollout(7).meta_input)
    with enable_x64():
        cfg, system, state, w, batches, _ = _tiny_f64(1, 1, agent="q_lambda")
        stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *batches[:3])
        stacked = stacked._replace(meta_input=batches[0].meta_input)
        _, _, terms = system.inner_update(state.params, state.opt_state, w, stacked)
        each = [system.inner_update(state.params, state.opt_state, w, b)[2] for b in batches[:3]]
        np.testing.assert_allclose(terms["td"], np.mean([t["td"] for t in each]), rtol=1e-10)
        np.testing.assert_allclose(terms["td_max"], [t["td_max"] for t in each], rtol=1e-10)


@pytest.mark.slow
def test_linear_epsilon_schedule_from_start_to_end():
    assert parse_objective("linear_0.5_0.01", "q_lambda") == {
        "objective": "none",
        "init_epsilon": 0.5,
        "final_epsilon": 0.01,
    }
    with pytest.raises(ConfigError, match=r"linear_<start>_<end>\[_<steps>\]"):
        parse_objective("linear_0.5")
    with pytest.raises(ConfigError, match="final_epsilon=0.01 is not allowed"):
        TwoColorsConfig(agent="q_lambda", objective="mg", final_epsilon=0.01)
    cfg = TwoColorsConfig(
        agent="q_lambda", objective="none", init_epsilon=0.5, final_epsilon=0.1,
        hidden=8, steps=1024, log_every=16,
    )  # fmt: skip
    eps = np.asarray(run_seeds(cfg, [0])["eps"][0])
    # Update u (u = 0..63) acts with 0.5 + (0.1 - 0.5) * u / 63.
    np.testing.assert_allclose(eps, 0.5 - 0.4 * np.arange(64) / 63, rtol=1e-5)
    fields = parse_objective("linear_0.5_0.1_336", "q_lambda")
    assert fields["epsilon_decay_steps"] == 336
    cfg = dataclasses.replace(cfg, **fields)
    eps = np.asarray(run_seeds(cfg, [0])["eps"][0])
    # Over the first 336 steps (20 updates after the first), then held at 0.1.
    want = np.maximum(0.5 - 0.4 * np.arange(64) / 20, 0.1)
    np.testing.assert_allclose(eps, want, rtol=1e-5)


def _greedy_k0_system():
    return _tiny_f64(0, 2, "greedy", agent="q_lambda")


def test_greedy_kl_to_a_one_hot_target_and_its_epsilon_derivative_by_hand():
    """BMG's published target for epsilon: mu = sum over the validation states of
    KL(one-hot greedy policy of x~ || epsilon-greedy policy of x) =
    -log((1 - eps) [g(s) = g~(s)] + eps / A); d mu / d eps = sum over agreeing
    states (1 - 1/A) / p minus (disagreeing states) / eps. No gradient reaches
    the target. Planted bugs it catches: KL(pi_x || greedy) (the other
    direction: infinite), the target's own epsilon-greedy policy as the target
    (a soft KL), the agent's greedy action as the target."""
    with enable_x64():
        cfg, system, state, w, batches, x_c = _greedy_k0_system()
        val, A = batches[-1], env.NUM_ACTIONS
        # A target far enough from x that the greedy actions differ on some states.
        target = jax.tree_util.tree_map(
            lambda x: x + jax.random.normal(jax.random.PRNGKey(5), x.shape, x.dtype), x_c
        )
        obs = val.observation[:-1]
        g_t = np.argmax(np.asarray(mlp_apply(target["q"], obs)), -1)
        g_x = np.argmax(np.asarray(mlp_apply(state.params["q"], obs)), -1)
        agree = g_t == g_x
        assert 0 < agree.sum() < len(agree), agree  # both kinds of states occur

        def mu(eps):
            return system.meta.matching(
                target, system.agent.set_meta_output(state.params, eps), val
            )

        for eps in (0.05, 0.3):
            p_agree = (1 - eps) + eps / A
            want = -(agree.sum() * np.log(p_agree) + (~agree).sum() * np.log(eps / A))
            np.testing.assert_allclose(float(mu(eps)), want, rtol=1e-10)
            d_want = agree.sum() * (1 - 1 / A) / p_agree - (~agree).sum() / eps
            np.testing.assert_allclose(float(jax.grad(mu)(eps)), d_want, rtol=1e-8)
        g_target = jax.grad(
            lambda t: system.meta.matching(t, system.agent.set_meta_output(state.params, 0.2), val)
        )(target)
        assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree_util.tree_leaves(g_target))


def test_bmg_k0_cycle_matches_x0_with_eps_of_w_to_the_target_l_steps_on():
    """objective bmg, K = 0, L = 2, greedy: the cycle makes one update (x_1, the
    agent's own) and moves w by Adam on grad_w mu(x~, x_0 with eps(w, batch_0)),
    x~ = the grounded step from x_1 on the validation rollout. Planted bugs it
    catches: matching at x_1 instead of x_0, eps from the validation rollout's
    meta input, the target from x_0."""
    with enable_x64():
        cfg = TwoColorsConfig(
            agent="q_lambda", objective="bmg", K=0, L=2, matching="greedy", hidden=8,
            steps=4096, learning_rate=3.0, target_step_size=3.0, init_epsilon=0.3,
        )  # fmt: skip
        system = make_system(cfg)
        to64 = lambda t: jax.tree_util.tree_map(  # noqa: E731
            lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, t
        )
        state = to64(system.init(jax.random.PRNGKey(4)))
        # Distinct meta inputs, so eps(w) of batch 0 and of the validation batch differ.
        pending = state.pending._replace(meta_input=jnp.linspace(-1.0, 1.0, 10))
        state = state._replace(pending=pending)
        _, k0 = jax.random.split(state.key)
        x1, _, _ = system.inner_update(state.params, state.opt_state, state.meta_params, pending)
        _, val = system.collect(x1, state.env_state, pending.meta_input, k0)
        val = to64(val)
        target = system.meta.grounded_step(x1, val)
        greedy = lambda p: np.argmax(np.asarray(mlp_apply(p["q"], val.observation[:-1])), -1)  # noqa: E731
        assert (greedy(target) != greedy(state.params)).any()
        assert (greedy(target) != greedy(system.meta.grounded_step(state.params, val))).any()

        def mu(m):
            eps = entropy_weight(m, pending.meta_input)
            return system.meta.matching(
                target, system.agent.set_meta_output(state.params, eps), val
            )

        new, logs = jax.jit(system.cycle)(state)
        close = functools.partial(np.testing.assert_allclose, rtol=1e-9, atol=1e-12)
        jax.tree_util.tree_map(close, new.params, x1)
        w = state.meta_params
        g = jax.grad(mu)(w)
        assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(g)) > 0
        updates, _ = system.meta_opt.update(g, state.meta_opt_state)
        jax.tree_util.tree_map(close, new.meta_params, optax.apply_updates(w, updates))
        close(logs["meta_loss"], mu(w))


def test_k0_and_greedy_need_the_q_agent_and_bmg():
    with pytest.raises(ConfigError, match="K=0 is not allowed"):
        TwoColorsConfig(objective="mg", K=0)
    with pytest.raises(ConfigError, match="K=0 is not allowed"):
        TwoColorsConfig(objective="bmg", K=0, L=2)  # actor-critic
    with pytest.raises(ConfigError, match="L=1 is not allowed"):
        TwoColorsConfig(agent="q_lambda", objective="bmg", K=0, L=1)
    with pytest.raises(ConfigError, match="matching='greedy' is not allowed"):
        TwoColorsConfig(matching="greedy")
    with pytest.raises(ConfigError, match="replay_batch=0 is not allowed"):
        TwoColorsConfig(agent="q_lambda", replay_rollouts=8)
    with pytest.raises(ConfigError, match="q_layer_norm=True is not allowed"):
        TwoColorsConfig(q_layer_norm=True)
    with pytest.raises(ConfigError, match="q_reset_every=100 is not allowed"):
        TwoColorsConfig(q_reset_every=100)
    with pytest.raises(ConfigError, match="replay_rollouts=8 is not allowed"):
        TwoColorsConfig(replay_rollouts=8, replay_batch=2)
    assert parse_objective("bmg_k0_l4") == {"objective": "bmg", "K": 0, "L": 4}


def test_q_compare_grids_are_equal_sized_valid_and_share_the_learner():
    """Every method of the comparison has a grid of the same size, every setting
    is a valid config with the shared value learner, and only the epsilon
    method differs between them."""
    sizes = {m: len(g) for m, g in q_compare.GRIDS.items()}
    assert len(set(sizes.values())) == 1, sizes
    assert set(sizes) == {"fixed", "linear", "mg", "bmg_greedy", "bmg_l2"}
    assert set(q_compare.EXTENSIONS) == set(sizes)
    for method, grid in q_compare.GRIDS.items():
        for _, objective, extra in grid + list(q_compare.EXTENSIONS[method]):
            cfg = q_compare.method_config(objective, extra, 400_000)
            for field, value in q_compare.LEARNER.items():
                assert getattr(cfg, field) == value, (method, field)
    bmg = q_compare.method_config(*q_compare.GRIDS["bmg_greedy"][0][1:], 400_000)
    assert (bmg.objective, bmg.K, bmg.matching) == ("bmg", 0, "greedy")


def _finite_numbers(tree):
    """Every number in a JSON tree (bools aside), flattened."""
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _finite_numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _finite_numbers(v)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


@pytest.mark.slow  # 1-2 minutes on 2 cores: ten small programs compiled, one per setting
def test_q_compare_runs_every_stage_on_a_tiny_budget(tmp_path, monkeypatch):
    """learners, tune, compare and report, end to end, on 2 seeds x 2,048 steps with
    a swap every 512 (--override), two learners and two settings per method
    (fewer programs to compile): each stage's JSON holds finite numbers where the
    report reads them, and the report has a row per method."""
    monkeypatch.setattr(q_compare, "LEARNERS", [q_compare.LEARNERS[0], q_compare.LEARNERS[2]])
    monkeypatch.setattr(q_compare, "GRIDS", {m: q_compare.GRIDS[m][:2] for m in ("fixed", "mg")})
    tiny = ["--steps=2048", "--seeds=2", f"--out={tmp_path}", "--methods=fixed,mg"]
    tiny += ["--override=swap_every=512", "--override=log_every=128", "--override=hidden=8"]
    for stage in ("learners", "tune", "compare", "report"):
        q_compare.main([f"--stage={stage}", *tiny])
    learners = json.loads((tmp_path / "learners.json").read_text())
    assert len(learners["learners"]) == 2
    assert learners["overrides"] == [o.split("=", 1)[1] for o in tiny[-3:]]
    for row in learners["learners"]:
        assert len(row["phase_reward_per_step"]) == 4, row
        assert np.all(np.isfinite(row["phase_reward_per_step"] + [row["total_reward"]]))
    tuning = json.loads((tmp_path / "tuning.json").read_text())
    for method in ("fixed", "mg"):
        entry = tuning["methods"][method]
        assert len(entry["grid"]) == 2 and len(entry["extension"]) == 1
        assert entry["best"] in [r["label"] for r in entry["grid"] + entry["extension"]]
        assert all(np.isfinite(r["total_reward"]) for r in entry["grid"] + entry["extension"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["objectives"]) == {"fixed", "mg"}
    for method, r in summary["objectives"].items():
        assert r["config"]["swap_every"] == 512 and r["seeds"] == [100, 101]
        assert len(r["total_reward"]) == 2 and len(r["phase_reward_per_step"]) == 4
        numbers = _finite_numbers({k: r[k] for k in ("total_reward", "mean", "ci95")})
        numbers += r["phase_reward_per_step"] + r["odd_even_reward_per_step"]
        assert numbers and np.all(np.isfinite(numbers)), (method, numbers)
    curves = json.loads((tmp_path / "results.json").read_text())["objectives"]["mg"]["curves"]
    assert np.asarray(curves["eps"]).shape == (2, 16)  # 2,048 steps in 128-step points
    report = (tmp_path / "report.md").read_text()
    assert report.count("\n| fixed (") == 1 and report.count("\n| mg (") == 1
    for png in ("total_reward.png", "epsilon_around_swaps.png", "epsilon.png"):
        assert (tmp_path / png).stat().st_size > 0, png


def test_runner_override_fields_and_objective_names():
    """--override goes through configs.apply_overrides (typed, every field
    checked); the objective name's own fields keep the name's value; --agent
    and --steps are flags of their own."""
    fields = {"agent": "q_lambda", "matching": "l2"}
    overrides = ["init_epsilon=0.3", "replay_rollouts=8", "replay_batch=2", "final_epsilon=none"]
    fixed = tc.objective_config("fixed_0.05", 1024, fields, overrides)
    assert (fixed.objective, fixed.init_epsilon, fixed.replay_rollouts) == ("none", 0.05, 8)
    mg = tc.objective_config("mg", 1024, fields, overrides)
    assert (mg.objective, mg.init_epsilon, mg.steps, mg.final_epsilon) == ("mg", 0.3, 1024, None)
    linear = tc.objective_config("linear_0.5_0.1", 1024, fields, ["replay_priority=1"])
    assert linear.final_epsilon == 0.1 and linear.replay_priority == 1.0
    with pytest.raises(ConfigError, match="TwoColorsConfig has no field 'hiden'"):
        tc.objective_config("mg", 1024, fields, ["hiden=8"])
    with pytest.raises(ConfigError, match="expected field=value"):
        tc.objective_config("mg", 1024, fields, ["hidden"])
    with pytest.raises(ConfigError, match="replay_batch=0 is not allowed"):
        tc.objective_config("mg", 1024, fields, ["replay_rollouts=8"])
    for flag in ("agent", "steps"):
        with pytest.raises(ConfigError, match=f"use --{flag}"):
            tc.objective_config("mg", 1024, fields, [f"{flag}=x"])
