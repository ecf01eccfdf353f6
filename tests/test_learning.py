"""Meta-gradients: finite differences, the BMG/MG equivalence, stopped targets,
and full updates on Atari-shaped data."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from agents import builders, learning, losses, networks as nets
from configs import AgentConfig, MetaConfig, make_config
from tests.conftest import enable_x64, fake_batches

OBS, A, T, B = (5,), 3, 4, 3


TINY_AGENT = AgentConfig(
    kind="stacx",
    num_heads=3,
    gamma=1.0,
    lambda_=1.0,
    g_v=0.25,
    g_p=1.0,
    g_e=0.01,
    alpha=1.0,
    learning_rate=0.05,
    lr_schedule="constant",
    max_grad_norm=1e6,
)


def _tiny_network():
    """A 1-layer tanh MLP with the 3 STACX heads (smooth everywhere that matters)."""
    return nets.make_networks_from_torso(
        functools.partial(nets.mlp_torso, hidden=8),
        OBS,
        A,
        num_heads=3,
        meta_dim=18,
        meta_embedding=4,
    )


def _tiny_learner(meta: MetaConfig):
    return learning.make_learner(_tiny_network(), TINY_AGENT, meta)


def _tiny_setup(meta: MetaConfig, seed=0):
    """float64 STACX learner, its state, perturbed meta-logits, eta and batches."""
    learner = _tiny_learner(meta)
    state = learner.init(jax.random.PRNGKey(seed))
    # Meta-parameters away from their initial value, so every path is active.
    logits = state.meta.logits + jax.random.normal(jax.random.PRNGKey(7), (3, 6))
    batches = jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.float64) if x.dtype.kind == "f" else jnp.asarray(x),
        fake_batches(meta.K + 1, T, B, OBS, A, seed=seed, float_obs=True),
    )
    eta_outer = learner.eta(logits)
    return learner, state, logits, eta_outer, batches


def _rel_err(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.slow
def test_mg_meta_gradient_through_two_steps_matches_finite_differences():
    with enable_x64():
        learner, state, logits, eta_outer, batches = _tiny_setup(MetaConfig(objective="mg", K=2))
        args = (eta_outer, state.params, state.opt_state, batches)
        # The meta-gradient used in updates: f's targets stopped at x_K.
        grad = jax.grad(lambda w: learner.meta_objective(w, *args)[0])(logits)
        # As a plain function of w: f's targets from the fixed x_K(w0), the
        # inner updates exactly as the learner runs them.
        x_k = learner.meta_objective(logits, *args)[1][0]
        f = jax.jit(lambda w: learner.meta_objective(w, *args, target_params=x_k)[0])
        eps = 1e-6
        fd = np.zeros(logits.shape)
        for idx in np.ndindex(*logits.shape):
            e = jnp.zeros_like(logits).at[idx].set(eps)
            fd[idx] = (f(logits + e) - f(logits - e)) / (2 * eps)
        assert np.abs(fd).max() > 1e-4, "meta-gradient too small to test"
        assert _rel_err(grad, jnp.asarray(fd)) < 1e-5
        # every kind of meta-parameter (gamma, lambda, g_v, g_p, g_e, alpha) gets gradient
        assert np.all(np.abs(fd).max(axis=0) > 1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("K", [1, 2])
def test_bmg_l1_l2_sgd_is_step_size_times_mg(K):
    """BMG with L = 1, L2 matching and an SGD grounded step is a * MG. The
    grounded step's KL reference is its own starting point (inert), so the
    identity holds against MG without the KL term; the BMG side keeps its
    default kl_weight, which must not matter."""
    a = 0.3
    with enable_x64():
        mg, state, logits, eta_outer, batches = _tiny_setup(
            MetaConfig(objective="mg", K=K, kl_weight=0.0)
        )
        bmg = _tiny_learner(
            MetaConfig(
                objective="bmg",
                K=K,
                L=1,
                matching="l2",
                target_step="sgd",
                target_step_size=a,
                kl_weight=5.0,
            )
        )
        args = (eta_outer, state.params, state.opt_state, batches)
        g_mg = jax.grad(lambda w: mg.meta_objective(w, *args)[0])(logits)
        g_bmg = jax.grad(lambda w: bmg.meta_objective(w, *args)[0])(logits)
        assert float(jnp.abs(g_mg).max()) > 1e-4
        assert _rel_err(g_bmg, a * g_mg) < 1e-6


@pytest.mark.parametrize("target_step, L", [("sgd", 1), ("rms", 3)])
def test_no_gradient_reaches_the_bootstrapped_target(target_step, L):
    with enable_x64():
        meta = MetaConfig(objective="bmg", K=1, L=L, matching="kl", target_step=target_step)
        learner, state, logits, eta_outer, batches = _tiny_setup(meta)
        val = jax.tree_util.tree_map(lambda x: x[1], batches)

        def target_sum(params, w):
            target, _ = learner.bootstrap_target(params, state.opt_state, w, eta_outer, val)
            return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(target))

        g_params, g_w = jax.grad(target_sum, argnums=(0, 1))(state.params, logits)
        assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(g_params))
        assert float(jnp.abs(g_w).max()) == 0.0
        # ...while the target itself moved away from its starting point.
        target, _ = learner.bootstrap_target(state.params, state.opt_state, logits, eta_outer, val)
        moved = jax.tree_util.tree_map(
            lambda t, p: float(jnp.abs(t - p).max()), target, state.params
        )
        assert max(jax.tree_util.tree_leaves(moved)) > 1e-6


def test_bmg_kl_matching_is_zero_with_zero_gradient_at_the_target():
    with enable_x64():
        meta = MetaConfig(objective="bmg", K=1, L=1, matching="kl_v")
        learner, state, logits, eta_outer, batches = _tiny_setup(meta)
        network = _tiny_network()

        def main_head(params):
            lg, v = network.apply(params, batches.observation[1], eta_outer)
            return lg[..., 0, :], v[..., 0]

        # Learner == target: the KL-and-value matching of x with itself.
        logits_x, values_x = main_head(state.params)
        mu = losses.kl_v_matching(logits_x, logits_x, values_x, values_x)

        def mu_of(params):
            lg, v = main_head(params)
            return losses.kl_v_matching(logits_x, lg, values_x, v)

        grad = jax.grad(mu_of)(state.params)
        assert abs(float(mu)) < 1e-12
        assert max(float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(grad)) < 1e-12


@pytest.mark.slow
def test_nan_batch_is_skipped_and_counted():
    cfg = make_config("test", "bmg")
    network = builders.make_networks(cfg, (12, 12, 1), 3)
    learner = builders.make_learner(cfg, network)
    state = learner.init(jax.random.PRNGKey(0))
    batches = fake_batches(learner.num_batches, 5, 2, (12, 12, 1), 3)
    bad = batches._replace(reward=np.full_like(batches.reward, np.nan))
    new, metrics = jax.jit(learner.update)(state, bad)
    assert int(new.skipped) == 1 and int(new.step) == 1 and float(metrics["skipped"]) == 1.0
    for x, y in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(x, y)
    good, metrics = jax.jit(learner.update)(new, batches)
    assert int(good.step) == 2 and int(good.skipped) == 1 and float(metrics["skipped"]) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["debug", "full"])
def test_one_bmg_update_on_atari_shaped_data(preset):
    """T = 20, B = 4, 84x84x4: small (debug) and deep ResNet (full) networks."""
    cfg = make_config(preset, "bmg", overrides=["meta.L=2"])
    network = builders.make_networks(cfg, (84, 84, 4), 6)
    learner = builders.make_learner(cfg, network)
    state = learner.init(jax.random.PRNGKey(0))
    batches = fake_batches(learner.num_batches, 20, 4, (84, 84, 4), 6)
    new, metrics = jax.jit(learner.update)(state, batches)
    assert int(new.step) == 1 and int(new.skipped) == 0
    change = [
        float(jnp.abs(a - b).max())
        for a, b in zip(
            jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(state.params)
        )
    ]
    assert min(change) > 0.0  # every parameter array moved
    assert float(jnp.abs(new.meta.logits - state.meta.logits).min()) > 0.0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(new))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    expected = {
        "meta/loss",
        "meta/grad_norm",
        "outer/kl",
        "outer/loss",
        "inner/grad_norm",
        "inner/pg/h2",
        "inner/value/h0",
        "inner/entropy/h1",
        "meta/gamma/h0",
        "meta/alpha/h2",
        "meta/g_e/h1",
        "skipped",
        "inner/learning_rate",
        "outer/target_distance",
        "outer/grounded_step_norm",
    }
    assert expected <= set(metrics)


@pytest.mark.slow
@pytest.mark.parametrize("lam, k", [(0.0, 1), (1.0, 3)])
def test_mixed_with_one_hot_weights_is_k_step_mg(lam, k):
    """lambda = 0 puts all weight on the 1-step term, lambda = 1 on the K-step one."""
    K = 3
    with enable_x64():
        mixed, state, logits, eta_outer, batches = _tiny_setup(
            MetaConfig(objective="mixed", K=K, mix_lambda=lam)
        )
        mg = _tiny_learner(MetaConfig(objective="mg", K=k))
        args = (eta_outer, state.params, state.opt_state)
        g_mixed = jax.grad(lambda w: mixed.meta_objective(w, *args, batches)[0])(logits)
        first = jax.tree_util.tree_map(lambda x: x[: k + 1], batches)
        g_mg = jax.grad(lambda w: mg.meta_objective(w, *args, first)[0])(logits)
        assert float(jnp.abs(g_mg).max()) > 1e-4
        np.testing.assert_array_equal(np.asarray(g_mixed), np.asarray(g_mg))


@pytest.mark.slow
def test_mixed_coefficients_and_meta_gradient_match_finite_differences():
    assert MetaConfig(objective="mixed", K=3, mix_lambda=0.5).mix_coefficients == (0.5, 0.25, 0.25)
    assert MetaConfig(objective="mixed", K=2, mix_weights=(1.0, 3.0)).mix_coefficients == (
        0.25,
        0.75,
    )
    with enable_x64():
        learner, state, logits, eta_outer, batches = _tiny_setup(
            MetaConfig(objective="mixed", K=2, mix_lambda=0.4)
        )
        args = (eta_outer, state.params, state.opt_state, batches)
        grad = jax.grad(lambda w: learner.meta_objective(w, *args)[0])(logits)
        # f's targets fixed at x_1(w0), x_2(w0): then the objective is a plain function of w.
        x1 = learner.inner_step(
            state.params, state.opt_state, logits, jax.tree_util.tree_map(lambda x: x[0], batches)
        )
        x2 = learner.inner_step(
            x1[0], x1[1], logits, jax.tree_util.tree_map(lambda x: x[1], batches)
        )
        f = jax.jit(lambda w: learner.meta_objective(w, *args, target_params=(x1[0], x2[0]))[0])
        eps = 1e-6
        fd = np.zeros(logits.shape)
        for idx in np.ndindex(*logits.shape):
            e = jnp.zeros_like(logits).at[idx].set(eps)
            fd[idx] = (f(logits + e) - f(logits - e)) / (2 * eps)
        assert np.abs(fd).max() > 1e-4
        assert _rel_err(grad, jnp.asarray(fd)) < 1e-5


@pytest.mark.slow
def test_mixed_update_from_config_overrides():
    cfg = make_config(
        "test", "stacx", overrides=["meta.objective=mixed", "meta.K=2", "meta.mix_weights=1,2"]
    )
    network = builders.make_networks(cfg, (12, 12, 1), 3)
    learner = builders.make_learner(cfg, network)
    assert learner.num_batches == 2  # STACX: K = 2 inner batches, the same sample outside
    state = learner.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(learner.update)(state, fake_batches(2, 5, 2, (12, 12, 1), 3))
    assert int(new.step) == 1 and int(new.skipped) == 0
    assert float(jnp.abs(new.meta.logits - state.meta.logits).max()) > 0.0
    assert all(np.isfinite(float(v)) for v in metrics.values())


@pytest.mark.slow
def test_linear_schedule_needs_its_horizon():
    agent = dataclasses.replace(TINY_AGENT, lr_schedule="linear")
    with pytest.raises(
        ValueError,
        match=r"decay_steps=None is not allowed with "
        r"AgentConfig.lr_schedule='linear'",
    ):
        learning.make_learner(_tiny_network(), agent, MetaConfig(objective="mg"))
    learner = learning.make_learner(
        _tiny_network(), agent, MetaConfig(objective="mg"), decay_steps=10
    )
    state = learner.init(jax.random.PRNGKey(0))
    batches = fake_batches(2, T, B, OBS, A, float_obs=True)
    _, metrics = jax.jit(learner.update)(state, batches)
    np.testing.assert_allclose(float(metrics["inner/learning_rate"]), agent.learning_rate)
