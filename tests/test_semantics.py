"""The learner's semantic choices against references written plainly here.

The references below are the papers' equations with Python loops over time,
batch and heads, in NumPy (float64), independent of `agents.losses`:
V-trace (Espeholt et al. 2018, eq. 1 and the policy-gradient advantage),
leaky V-trace (Zahavy et al. 2020), the STAC outer loss with its KL term, BMG's
matching functions (Flennerhag et al. 2022), and IMPALA's optimiser as its
reference implementation runs it (summed losses; TensorFlow's RMSProp: mean
square starting at 1, eps inside the square root; linearly decayed learning
rate; a global-norm clip first).

Only the network forward pass is shared with the code under test: it is not
what these tests check. Each test names, in its docstring, the planted bugs it
was seen to catch (one bug at a time, the test failing on each).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from agents import learning, networks as nets
from configs import AgentConfig, MetaConfig
from tests.conftest import enable_x64, fake_batches

OBS, A, H, T, B = (5,), 3, 3, 4, 2
OUTER = dict(gamma=0.995, lambda_=1.0, g_v=0.5, g_p=1.0, g_e=0.01)  # STAC's Atari outer values
KL_WEIGHT = 1.0


def _agent(**kw):
    base = dict(
        kind="stacx",
        num_heads=H,
        gamma=1.0,
        lambda_=1.0,
        g_v=0.5,
        g_p=1.0,
        g_e=0.01,
        alpha=1.0,
        learning_rate=0.005,
        lr_schedule="constant",
        max_grad_norm=1e6,
    )
    base.update(kw)
    return AgentConfig(**base)


def _network(num_heads=H, meta_dim=6 * H):
    return nets.make_networks_from_torso(
        functools.partial(nets.mlp_torso, hidden=8),
        OBS,
        A,
        num_heads=num_heads,
        meta_dim=meta_dim,
        meta_embedding=4,
    )


def _batches(num, seed=0):
    """float64 trajectories [num, T + 1, B, ...]; every batch different."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.float64) if x.dtype.kind == "f" else jnp.asarray(x),
        fake_batches(num, T, B, OBS, A, seed=seed, float_obs=True),
    )


def _index(batches, i):
    return jax.tree_util.tree_map(lambda x: x[i], batches)


def _setup(meta: MetaConfig, agent=None, seed=0):
    """Learner, state, meta-logits away from init (per head different), eta, batches."""
    network = _network()
    learner = learning.make_learner(network, agent or _agent(), meta)
    state = learner.init(jax.random.PRNGKey(seed))
    logits = state.meta.logits + 0.5 * jax.random.normal(jax.random.PRNGKey(3), (H, 6))
    batches = _batches(meta.num_batches, seed)
    return network, learner, state, logits, learner.eta(logits), batches


# ---------------------------------------------------------------- references
def log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def kl(p_logits, q_logits):
    """KL(p || q) of one state's logits."""
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return float(np.sum(np.exp(lp) * (lp - lq)))


def ref_vtrace(v, r, disc, rho, alpha=1.0, lam=1.0):
    """One trajectory: v [T + 1] values, r / disc / rho [T]. Returns vs [T], adv [T].

    rho~ = alpha min(1, rho) + (1 - alpha) rho, c = lam (alpha min(1, rho) + (1 - alpha) rho),
    vs_s = V_s + rho~_s d_s + disc_s c_s (vs_{s+1} - V_{s+1}),  d_s = r_s + disc_s V_{s+1} - V_s,
    adv_s = rho~_s (r_s + disc_s (lam vs_{s+1} + (1 - lam) V_{s+1}) - V_s), vs_T = V_T."""
    n = len(r)
    vs = np.zeros(n + 1)
    vs[n] = v[n]
    rho_t = [alpha * min(1.0, x) + (1 - alpha) * x for x in rho]
    c = [lam * (alpha * min(1.0, x) + (1 - alpha) * x) for x in rho]
    for s in reversed(range(n)):
        delta = r[s] + disc[s] * v[s + 1] - v[s]
        vs[s] = v[s] + rho_t[s] * delta + disc[s] * c[s] * (vs[s + 1] - v[s + 1])
    adv = [
        rho_t[s] * (r[s] + disc[s] * (lam * vs[s + 1] + (1 - lam) * v[s + 1]) - v[s])
        for s in range(n)
    ]
    return vs[:n], np.asarray(adv)


def ref_actor_critic(logits, values, traj, hp, learner_logits=None):
    """IMPALA / STACX loss of one head, summed over time and batch (loops).

    logits [T + 1, B, A], values [T + 1, B] of that head; hp: dict with gamma,
    lambda_, g_v, g_p, g_e and alpha. `learner_logits` (default `logits`) give
    the importance ratios (the policy whose loss this is)."""
    logits, values = np.asarray(logits, np.float64), np.asarray(values, np.float64)
    pg = value = ent = 0.0
    for b in range(B):
        rho, r, disc = [], [], []
        for t in range(T):
            a = int(traj.action[t, b])
            lp = log_softmax(logits[t, b])
            lmu = log_softmax(np.asarray(traj.behaviour_logits[t, b], np.float64))
            rho.append(float(np.exp(lp[a] - lmu[a])))
            r.append(float(np.clip(traj.reward[t, b], -1.0, 1.0)))
            disc.append(hp["gamma"] * float(traj.discount[t, b]))
        vs, adv = ref_vtrace(values[:, b], r, disc, rho, hp.get("alpha", 1.0), hp["lambda_"])
        for t in range(T):
            lp = log_softmax(logits[t, b])
            pg += -lp[int(traj.action[t, b])] * adv[t]
            value += 0.5 * (vs[t] - values[t, b]) ** 2
            ent += -float(np.sum(np.exp(lp) * lp))
    return hp["g_p"] * pg + hp["g_v"] * value - hp["g_e"] * ent


def ref_outer(logits_h0, values_h0, reference_logits_h0, traj, updated_first=True):
    """STAC outer loss on the main head: fixed-value V-trace loss plus
    KL_WEIGHT * sum_states KL(pi || pi_reference), the updated policy first as
    STAC's eq. 2 writes it (`updated_first` False: KL(pi_reference || pi))."""
    f = ref_actor_critic(logits_h0, values_h0, traj, OUTER)
    for t in range(T):
        for b in range(B):
            pair = (logits_h0[t, b], reference_logits_h0[t, b])
            f += KL_WEIGHT * kl(*(pair if updated_first else pair[::-1]))
    return f


def ref_kl_matching(target_logits_h0, logits_h0):
    """BMG's KL matching: sum over the validation states of KL(pi_target || pi)."""
    return sum(
        kl(target_logits_h0[t, b], logits_h0[t, b])
        for t in range(target_logits_h0.shape[0])
        for b in range(B)
    )


def outputs(network, params, traj, eta):
    logits, values = network.apply(params, traj.observation, eta)
    return np.asarray(logits, np.float64), np.asarray(values, np.float64)


# ---------------------------------------------------------------- tests
def test_reference_vtrace_by_hand():
    """The reference itself, on numbers worked by hand: T = 2, rho = (2, 0.5),
    V = (1, 2, 3), r = (1, 0), disc = (0.9, 0.9), alpha = lambda = 1:
    d_1 = 0 + 2.7 - 2 = 0.7, vs_1 = 2 + 0.5 * 0.7 = 2.35;
    d_0 = 1 + 1.8 - 1 = 1.8, c_0 = min(1, 2) = 1, vs_0 = 1 + 1.8 + 0.9 * 0.35 = 3.115;
    adv_0 = 1 + 0.9 * 2.35 - 1 = 2.115, adv_1 = 0.5 * (0 + 2.7 - 2) = 0.35."""
    vs, adv = ref_vtrace([1.0, 2.0, 3.0], [1.0, 0.0], [0.9, 0.9], [2.0, 0.5])
    np.testing.assert_allclose(vs, [3.115, 2.35], atol=1e-12)
    np.testing.assert_allclose(adv, [2.115, 0.35], atol=1e-12)


@pytest.mark.parametrize("outer_sample", ["same", "next"])
@pytest.mark.parametrize("outer_kl", ["updated_first", "before_first"])
def test_mg_objective_is_the_main_heads_outer_loss_on_the_named_sample(outer_sample, outer_kl):
    """f(x_1) on the validation batch, main head, with the outer KL term in
    the order `outer_kl` names: KL(pi_x1 || pi_x0) (STAC's eq. 2) or
    KL(pi_x0 || pi_x1). The validation batch is the inner batch itself
    (`same`: the learner takes K = 1 batch) or the one after it (`next`: 2).

    Planted bugs caught: outer loss on head 1 instead of head 0; under
    `same`, the learner taking a window of K + 1 batches and the meta-objective
    on the batch after the inner one; under
    `next`, the meta-objective on the inner batch; the outer KL direction
    ignoring `outer_kl` (either way round); the value term without its 0.5;
    losses averaged over time and batch instead of summed."""
    with enable_x64():
        meta = MetaConfig(objective="mg", K=1, outer_sample=outer_sample, outer_kl=outer_kl)
        network, learner, state, logits, eta, batches = _setup(meta)
        assert learner.num_batches == (1 if outer_sample == "same" else 2)
        inner, val = _index(batches, 0), _index(batches, learner.num_batches - 1)
        value, (p_k, *_rest) = learner.meta_objective(
            logits, eta, state.params, state.opt_state, batches
        )
        x1, _, _ = learner.inner_step(state.params, state.opt_state, logits, inner)
        lg, v = outputs(network, x1, val, eta)
        ref_lg, _ = outputs(network, state.params, val, eta)
        first = outer_kl == "updated_first"
        expected = ref_outer(lg[:, :, 0], v[:, :, 0], ref_lg[:, :, 0], val, first)
        np.testing.assert_allclose(float(value), expected, rtol=1e-10)
        # The heads, the directions and the batches really differ, so the check
        # above pins head 0, the direction and the sample.
        assert (
            abs(ref_outer(lg[:, :, 1], v[:, :, 1], ref_lg[:, :, 1], val, first) - expected) > 1e-3
        )
        reverse = ref_outer(lg[:, :, 0], v[:, :, 0], ref_lg[:, :, 0], val, not first)
        assert abs(reverse - expected) > 1e-6 * abs(expected)
        other = _batches(1, seed=7)
        other = _index(other, 0)
        lg_o, v_o = outputs(network, x1, other, eta)
        ref_o, _ = outputs(network, state.params, other, eta)
        assert abs(ref_outer(lg_o[:, :, 0], v_o[:, :, 0], ref_o[:, :, 0], other) - expected) > 1e-3
        for a, b in zip(jax.tree_util.tree_leaves(p_k), jax.tree_util.tree_leaves(x1)):
            np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("outer_sample", ["same", "next"])
def test_mixed_objective_weights_each_step_on_its_named_sample(outer_sample):
    """sum_k c_k f(x_k) with f(x_k) on batch k - 1 (`same`: the batch x_k was
    stepped on) or batch k (`next`: the one after it), main head, KL
    reference x_0's policy on that batch; c = (0.3, 0.7).

    Planted bugs caught: each term evaluated on the batch of its own inner
    step under `next`, or on the one after it under `same`; head 1 instead of 0."""
    with enable_x64():
        meta = MetaConfig(objective="mixed", K=2, mix_weights=(0.3, 0.7), outer_sample=outer_sample)
        network, learner, state, logits, eta, batches = _setup(meta)
        value, _ = learner.meta_objective(logits, eta, state.params, state.opt_state, batches)
        p, o, expected = state.params, state.opt_state, 0.0
        for k, c in ((1, 0.3), (2, 0.7)):
            p, o, _ = learner.inner_step(p, o, logits, _index(batches, k - 1))
            val = _index(batches, k - 1 if outer_sample == "same" else k)
            lg, v = outputs(network, p, val, eta)
            ref_lg, _ = outputs(network, state.params, val, eta)
            expected += c * ref_outer(lg[:, :, 0], v[:, :, 0], ref_lg[:, :, 0], val)
        np.testing.assert_allclose(float(value), expected, rtol=1e-10)


@pytest.mark.parametrize(
    "matching, outer_sample", [("kl", "next"), ("kl_v", "next"), ("kl_v", "same")]
)
def test_bmg_matching_is_kl_target_to_learner_on_the_validation_batch(matching, outer_sample):
    """mu = sum over the validation states of KL(pi_target || pi_x1) on the
    main head (kl_v: plus 0.5 * weight * sum (v_target - v)^2), x1 = x_0 after
    the inner step on batch 0, the target from `bootstrap_target` on the
    validation batch: batch 0 itself (`same`) or batch 1 (`next`).

    Planted bugs caught: KL direction swapped in `kl_matching`; matching on
    head 1 instead of head 0; the validation batch replaced by the last inner
    batch under `next`; the value term of KL & V dropped or on another head."""
    with enable_x64():
        meta = MetaConfig(
            objective="bmg",
            K=1,
            L=2,
            matching=matching,
            target_step="rms",
            value_match_weight=0.7,
            outer_sample=outer_sample,
        )
        network, learner, state, logits, eta, batches = _setup(meta)
        val = _index(batches, learner.num_batches - 1)
        mu, _ = learner.meta_objective(logits, eta, state.params, state.opt_state, batches)
        x1, o1, _ = learner.inner_step(state.params, state.opt_state, logits, _index(batches, 0))
        target, _ = learner.bootstrap_target(x1, o1, logits, eta, val)
        t_lg, t_v = outputs(network, target, val, eta)
        lg, v = outputs(network, x1, val, eta)
        forward = ref_kl_matching(t_lg[:, :, 0], lg[:, :, 0])
        expected = forward
        if matching == "kl_v":
            expected += 0.7 * 0.5 * float(np.sum((t_v[:, :, 0] - v[:, :, 0]) ** 2))
        np.testing.assert_allclose(float(mu), expected, rtol=1e-9)
        # The two directions differ here, so the check above pins the direction.
        reverse = ref_kl_matching(lg[:, :, 0], t_lg[:, :, 0])
        assert abs(reverse - forward) > 1e-3 * forward and forward > 1e-4


def test_bmg_grounded_step_kl_reference_is_its_own_start():
    """The grounded step descends f at x_{K+L-1} with f's KL measured from
    x_{K+L-1} itself: the KL weight cannot change the target, and the SGD
    target is x - a * grad(V-trace outer loss) there.

    Planted bug caught: the grounded step's KL reference is the policy at x_0
    (the target is pulled back towards a policy L steps old)."""
    with enable_x64():
        metas = [
            MetaConfig(
                objective="bmg", K=1, L=2, target_step="sgd", target_step_size=0.1, kl_weight=w
            )
            for w in (0.0, 5.0)
        ]
        network, learner0, state, logits, eta, batches = _setup(metas[0])
        learner5 = learning.make_learner(network, _agent(), metas[1])
        val = _index(batches, 1)
        x1, o1, _ = learner0.inner_step(state.params, state.opt_state, logits, _index(batches, 0))
        t0, terms0 = learner0.bootstrap_target(x1, o1, logits, eta, val)
        t5, _ = learner5.bootstrap_target(x1, o1, logits, eta, val)
        for a, b in zip(jax.tree_util.tree_leaves(t0), jax.tree_util.tree_leaves(t5)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        # The target is L = 2 steps ahead: one meta-learned step, then the grounded one.
        x2, _, _ = learner0.inner_step(x1, o1, logits, val)
        step = float(
            jnp.sqrt(
                sum(
                    jnp.sum((a - b) ** 2)
                    for a, b in zip(jax.tree_util.tree_leaves(t0), jax.tree_util.tree_leaves(x2))
                )
            )
        )
        assert step > 1e-6
        np.testing.assert_allclose(float(terms0["grounded_step_norm"]), step, rtol=1e-9)


def test_bmg_rms_grounded_step_uses_the_rules_own_rmsprop_statistics():
    """With L = 1 the target is one grounded step from x_1:
    x~ = x_1 - a g / sqrt(decay nu + (1 - decay) g^2 + eps), g the gradient
    of the outer loss at x_1 (read off the SGD target, x~_sgd = x_1 - a g),
    nu the mean square in the inner optimiser state that comes with x_1.
    nu is set far from the fresh state's 1 (per coordinate, 0.01 to 4), so a
    fresh state gives a different target.

    Planted bug caught: the grounded step preconditioned by a fresh
    RMSProp state (`precondition.init(x)`) instead of the rule's own."""
    with enable_x64():
        a, decay, eps = 0.05, 0.99, 1e-3
        agent = _agent(rms_decay=decay, rms_eps=eps)
        metas = {
            kind: MetaConfig(objective="bmg", K=1, L=1, target_step=kind, target_step_size=a)
            for kind in ("sgd", "rms")
        }
        network, rms, state, logits, eta, batches = _setup(metas["rms"], agent)
        sgd = learning.make_learner(network, agent, metas["sgd"])
        val = _index(batches, 1)
        x1, o1, _ = rms.inner_step(state.params, state.opt_state, logits, _index(batches, 0))
        (clip_state, rms_state), step_state = o1[0], o1[1]
        leaves, treedef = jax.tree_util.tree_flatten(rms_state.nu)
        keys = jax.random.split(jax.random.PRNGKey(11), len(leaves))
        nu = jax.tree_util.tree_unflatten(
            treedef,
            [
                jnp.exp(jax.random.uniform(k, x.shape, x.dtype, -4.6, 1.4))
                for k, x in zip(keys, leaves)
            ],
        )
        o1 = ((clip_state, rms_state._replace(nu=nu)), step_state)
        t_sgd, _ = sgd.bootstrap_target(x1, o1, logits, eta, val)
        t_rms, _ = rms.bootstrap_target(x1, o1, logits, eta, val)

        def by_hand(nu_tree):
            return jax.tree_util.tree_map(
                lambda x, ts, n: (
                    x
                    - a
                    * ((x - ts) / a)
                    / np.sqrt(decay * n + (1 - decay) * ((x - ts) / a) ** 2 + eps)
                ),
                x1,
                t_sgd,
                nu_tree,
            )

        expected = by_hand(nu)
        fresh = by_hand(jax.tree_util.tree_map(jnp.ones_like, nu))
        for got, want, other in zip(
            *(jax.tree_util.tree_leaves(t) for t in (t_rms, expected, fresh))
        ):
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)
        gap = max(
            float(jnp.max(jnp.abs(w - f)))
            for w, f in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(fresh))
        )
        assert gap > 1e-4


def _reference_inner_loss(network, eta, traj, hp_per_head):
    """Sum over heads of the summed actor-critic loss (semi-gradient: targets
    and ratios from stop_gradient outputs), in jax.numpy loops, so jax.grad
    gives the reference gradient."""

    def loss(params):
        logits, values = network.apply(params, traj.observation, eta)
        sl, sv = jax.lax.stop_gradient(logits), jax.lax.stop_gradient(values)
        total = 0.0
        for h, hp in enumerate(hp_per_head):
            for b in range(B):
                r = [jnp.clip(traj.reward[t, b], -1, 1) for t in range(T)]
                disc = [hp["gamma"] * traj.discount[t, b] for t in range(T)]
                rho = [
                    jnp.exp(
                        jax.nn.log_softmax(sl[t, b, h])[traj.action[t, b]]
                        - jax.nn.log_softmax(traj.behaviour_logits[t, b])[traj.action[t, b]]
                    )
                    for t in range(T)
                ]
                al, lam = hp["alpha"], hp["lambda_"]
                rho_t = [al * jnp.minimum(1.0, x) + (1 - al) * x for x in rho]
                c = [lam * (al * jnp.minimum(1.0, x) + (1 - al) * x) for x in rho]
                vs = [None] * (T + 1)
                vs[T] = sv[T, b, h]
                for s in reversed(range(T)):
                    delta = r[s] + disc[s] * sv[s + 1, b, h] - sv[s, b, h]
                    vs[s] = (
                        sv[s, b, h]
                        + rho_t[s] * delta
                        + disc[s] * c[s] * (vs[s + 1] - sv[s + 1, b, h])
                    )
                for t in range(T):
                    lp = jax.nn.log_softmax(logits[t, b, h])
                    adv = rho_t[t] * (
                        r[t]
                        + disc[t] * (lam * vs[t + 1] + (1 - lam) * sv[t + 1, b, h])
                        - sv[t, b, h]
                    )
                    total += hp["g_p"] * -lp[traj.action[t, b]] * adv
                    total += hp["g_v"] * 0.5 * (vs[t] - values[t, b, h]) ** 2
                    total -= hp["g_e"] * -jnp.sum(jnp.exp(lp) * lp)
        return total

    return loss


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["impala", "stacx"])
@pytest.mark.parametrize("clip", [0.5, 1e6])
def test_inner_steps_are_impalas_rmsprop_on_summed_losses(kind, clip):
    """Two inner steps equal the reference: g = grad of the summed loss (every
    head with its own hyper-parameters), clipped to global norm `clip` (0.5:
    active; 1e6: not), ms = 0.99 ms + 0.01 g^2 from ms_0 = 1,
    x -= lr_k g / sqrt(ms + 0.01), lr_k = 0.05 (1 - k / 4) (linear decay over
    4 steps), to 1e-6.

    Planted bugs caught: losses averaged instead of summed (clip 1e6 only:
    an active clip hides the scale); eps outside the square root; the mean
    square starting at 0 (PyTorch's RMSProp); no learning-rate decay; head h
    using head 0's hyper-parameters; the value term without its 0.5."""
    with enable_x64():
        stacx = kind == "stacx"
        agent = _agent(
            kind=kind,
            num_heads=H if stacx else 1,
            learning_rate=0.05,
            lr_schedule="linear",
            max_grad_norm=clip,
            **({} if stacx else dict(gamma=0.99, g_v=0.5)),
        )
        network = _network(H if stacx else 1, 6 * H if stacx else 0)
        learner = learning.make_learner(network, agent, MetaConfig(), decay_steps=4)
        state = learner.init(jax.random.PRNGKey(0))
        logits = state.meta.logits + (
            0.5 * jax.random.normal(jax.random.PRNGKey(3), (H, 6)) if stacx else 0.0
        )
        eta = learner.eta(logits)
        hp = learner.hyperparams(logits)
        hp_per_head = [
            {n: float(getattr(hp, n)[h]) for n in hp._fields} for h in range(H if stacx else 1)
        ]
        if stacx:  # the heads' hyper-parameters differ, so a head mix-up shows
            assert len({round(d["gamma"], 6) for d in hp_per_head}) == H
        batches = _batches(2)
        p, o = state.params, state.opt_state
        ref_p = jax.tree_util.tree_map(np.asarray, state.params)
        ms = jax.tree_util.tree_map(np.ones_like, ref_p)
        for k in range(2):
            traj = _index(batches, k)
            p, o, _ = learner.inner_step(p, o, logits, traj)
            g = jax.grad(_reference_inner_loss(network, eta, traj, hp_per_head))(ref_p)
            g = jax.tree_util.tree_map(np.asarray, g)
            norm = np.sqrt(sum(np.sum(x**2) for x in jax.tree_util.tree_leaves(g)))
            assert (norm > clip) == (clip == 0.5)  # the clip is active exactly when meant
            g = jax.tree_util.tree_map(lambda x: x * min(1.0, clip / norm), g)
            ms = jax.tree_util.tree_map(lambda m, x: 0.99 * m + 0.01 * x**2, ms, g)
            lr = 0.05 * (1 - k / 4)
            ref_p = jax.tree_util.tree_map(
                lambda x, gx, m: x - lr * gx / np.sqrt(m + 0.01), ref_p, g, ms
            )
            for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(ref_p)):
                np.testing.assert_allclose(np.asarray(a), b, atol=1e-6, rtol=0)
        moved = max(
            float(np.abs(a - b).max())
            for a, b in zip(
                jax.tree_util.tree_leaves(ref_p), jax.tree_util.tree_leaves(state.params)
            )
        )
        assert moved > 1e-3  # the steps are 1,000 x the tolerance
