"""Agent losses against references: NumPy leaky V-trace, rlax, hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from agents import losses


def numpy_leaky_vtrace(v_tm1, v_t, r_t, discount_t, rho, alpha, lam, rho_bar=1.0, c_bar=1.0):
    """Direct transcription of the sum form:
    vs_s = V(x_s) + sum_{t>=s} (prod_{i=s}^{t-1} d_i c_i) rho~_t delta_t."""
    T = len(r_t)
    rho_c = alpha * np.minimum(rho_bar, rho) + (1 - alpha) * rho
    c = lam * (alpha * np.minimum(c_bar, rho) + (1 - alpha) * rho)
    delta = rho_c * (r_t + discount_t * v_t - v_tm1)
    vs = np.zeros(T)
    for s in range(T):
        total, coef = 0.0, 1.0
        for t in range(s, T):
            total += coef * delta[t]
            coef *= discount_t[t] * c[t]
        vs[s] = v_tm1[s] + total
    vs_tp1 = np.append(vs[1:], v_t[-1])
    q_tp1 = lam * vs_tp1 + (1 - lam) * v_t  # lambda-mixed bootstrap, as in rlax
    adv = rho_c * (r_t + discount_t * q_tp1 - v_tm1)
    return vs, adv


def _random_inputs(seed, T=9):
    rng = np.random.default_rng(seed)
    values, r = rng.normal(size=T + 1), rng.normal(size=T)
    v_tm1, v_t = values[:-1], values[1:]  # as in a trajectory
    discount = 0.97 * (rng.random(T) > 0.2)  # some episode ends
    rho = np.exp(rng.normal(scale=0.8, size=T))  # both sides of 1
    return v_tm1, v_t, r, discount, rho


@pytest.mark.parametrize(
    "seed, alpha, lam", [(0, 1.0, 1.0), (1, 0.5, 0.9), (2, 0.0, 0.7), (3, 0.3, 1.0)]
)
def test_leaky_vtrace_matches_numpy_reference(seed, alpha, lam):
    v_tm1, v_t, r, discount, rho = _random_inputs(seed)
    vs, adv = losses.leaky_vtrace(
        *map(jnp.asarray, (v_tm1, v_t, r, discount, rho)), alpha=alpha, lambda_=lam
    )
    vs_ref, adv_ref = numpy_leaky_vtrace(v_tm1, v_t, r, discount, rho, alpha, lam)
    np.testing.assert_allclose(vs, vs_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed, lam", [(4, 1.0), (5, 0.8)])
def test_alpha_one_is_rlax_vtrace(seed, lam):
    v_tm1, v_t, r, discount, rho = map(jnp.asarray, _random_inputs(seed))
    vs, adv = losses.leaky_vtrace(v_tm1, v_t, r, discount, rho, alpha=1.0, lambda_=lam)
    ref = rlax.vtrace_td_error_and_advantage(v_tm1, v_t, r, discount, rho, lambda_=lam)
    np.testing.assert_allclose(vs - v_tm1, ref.errors, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adv, ref.pg_advantage, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        vs - v_tm1, rlax.vtrace(v_tm1, v_t, r, discount, rho, lam), rtol=1e-5, atol=1e-5
    )


def test_leaky_vtrace_on_policy_one_step_by_hand():
    # T = 1, rho = 1: vs = r + d * V(x1) = 1 + 0.9 * 2 = 2.8, adv = 2.8 - 0.5 = 2.3.
    vs, adv = losses.leaky_vtrace(
        jnp.array([0.5]),
        jnp.array([2.0]),
        jnp.array([1.0]),
        jnp.array([0.9]),
        jnp.array([1.0]),
        0.5,
        1.0,
    )
    np.testing.assert_allclose(vs, [2.8], rtol=1e-6)
    np.testing.assert_allclose(adv, [2.3], rtol=1e-6)
    # rho = 3 with alpha = 0.5: rho~ = 0.5 * 1 + 0.5 * 3 = 2 -> vs = 0.5 + 2 * 2.3 = 5.1.
    vs, _ = losses.leaky_vtrace(
        jnp.array([0.5]),
        jnp.array([2.0]),
        jnp.array([1.0]),
        jnp.array([0.9]),
        jnp.array([3.0]),
        0.5,
        1.0,
    )
    np.testing.assert_allclose(vs, [5.1], rtol=1e-6)


def test_targets_are_differentiable_in_gamma_and_lambda():
    v_tm1, v_t, r, discount, rho = map(jnp.asarray, _random_inputs(6))

    def total(gamma, lam):
        vs, _ = losses.leaky_vtrace(v_tm1, v_t, r, gamma * (discount > 0), rho, 1.0, lam)
        return jnp.sum(vs)

    g_gamma, g_lam = jax.grad(total, argnums=(0, 1))(0.9, 0.8)
    assert abs(float(g_gamma)) > 1e-3 and abs(float(g_lam)) > 1e-3


def test_entropy_and_kl_by_hand():
    assert float(losses.entropy(jnp.zeros(4))) == pytest.approx(np.log(4), rel=1e-6)
    # p = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3).
    p, q = jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.25, 0.75]))
    expected = 0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0)
    assert float(losses.categorical_kl(p, q)) == pytest.approx(expected, rel=1e-5)


def test_meta_hyperparams_start_at_099_of_scale():
    logits = jnp.full((3, 6), 4.6)
    hp = losses.meta_hyperparams(logits, jnp.array([1.0, 1.0, 0.25, 1.0, 0.01, 1.0]))
    assert hp.gamma.shape == (3,)
    np.testing.assert_allclose(hp.gamma, 0.990048, atol=1e-6)
    np.testing.assert_allclose(hp.g_v, 0.25 * 0.990048, atol=1e-6)
    np.testing.assert_allclose(hp.g_e, 0.01 * 0.990048, atol=1e-7)


def test_actor_critic_loss_by_hand():
    # One step, two actions, on-policy (rho = 1), uniform policy, V = (0.5, 2.0).
    batch = losses.ACBatch(
        actions=jnp.array([[1]]),
        rewards=jnp.array([[1.0]]),
        discounts=jnp.array([[1.0]]),
        behaviour_logits=jnp.zeros((1, 1, 2)),
    )
    hp = losses.HyperParams(*[jnp.asarray(v) for v in (0.9, 1.0, 0.5, 1.0, 0.1, 1.0)])
    loss, terms = losses.actor_critic_loss(
        jnp.zeros((1, 1, 2)), jnp.array([[0.5], [2.0]]), batch, hp
    )
    # vs = 1 + 0.9 * 2 = 2.8, adv = 2.3, log pi(a) = -ln 2.
    assert float(terms["pg"]) == pytest.approx(2.3 * np.log(2), rel=1e-5)
    assert float(terms["value"]) == pytest.approx(0.5 * 2.3**2, rel=1e-5)
    assert float(terms["entropy"]) == pytest.approx(np.log(2), rel=1e-5)
    expected = 2.3 * np.log(2) + 0.5 * 0.5 * 2.3**2 - 0.1 * np.log(2)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_kl_matching_zero_with_zero_gradient_when_target_equals_learner():
    logits = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 6))
    values = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    assert float(losses.kl_matching(logits, logits)) == pytest.approx(0.0, abs=1e-7)
    g = jax.grad(lambda lg: losses.kl_matching(logits, lg))(logits)
    np.testing.assert_allclose(g, 0.0, atol=1e-7)
    g_l, g_v = jax.grad(lambda lg, v: losses.kl_v_matching(logits, lg, values, v), argnums=(0, 1))(
        logits, values
    )
    np.testing.assert_allclose(g_l, 0.0, atol=1e-7)
    np.testing.assert_allclose(g_v, 0.0, atol=1e-7)
    assert float(losses.kl_v_matching(logits, logits, values, values)) == pytest.approx(0, abs=1e-7)


def test_l2_matching_by_hand_and_no_gradient_into_target():
    target = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    params = {"a": jnp.array([0.0, 0.0]), "b": jnp.array(1.0)}
    assert float(losses.l2_matching(target, params)) == pytest.approx(0.5 * (1 + 4 + 4))
    g_target = jax.grad(losses.l2_matching)(target, params)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(g_target))
