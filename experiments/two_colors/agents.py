"""The two-colors agents: networks, the actor-critic and the Q(lambda) agent.

The actor-critic (docs/design.md section 8): separate actor and critic MLPs (2
hidden ReLU layers; 128 wide by default, DESIGN says 256, see
`TwoColorsConfig.hidden`), updated every `rollout_length` (16) steps by one SGD
step (lr 0.1, gradients clipped to global norm 5) on the n-step actor-critic
loss (discount 0.99, bootstrapped from V(s_16))

  inner loss = pg + value_weight * 0.5 * mean((G - V)^2) - eps * mean(entropy),

where the entropy weight `eps = meta_net(w, s)` comes from a meta-network
(10 -> 32 ReLU -> 1 sigmoid) fed with the mean reward of each of the last 10
rollouts. The outer loss f is the same loss with a fixed entropy weight
`outer_entropy` (default 0: policy gradient + value error, no entropy term).

`agent="q_lambda"` is an epsilon-greedy Peng's Q(lambda) learner whose epsilon
is the meta-network's output (`make_q_lambda`). Both are an `Agent`: pure
functions that `system.make_system` binds to the meta-objectives, so MG, BMG
and mixed run through the same code for either.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp

from agents import losses
from experiments.two_colors import env
from experiments.two_colors.config import TwoColorsConfig

Array = jax.Array
sg = jax.lax.stop_gradient


# ----------------------------------------------------------------------------
# Networks (plain JAX pytrees)
# ----------------------------------------------------------------------------
def _logit(p: float) -> float:
    """log(p / (1 - p)): the pre-sigmoid value whose sigmoid is p."""
    return math.log(p / (1.0 - p))


def mlp_init(key, sizes: Sequence[int], dtype=jnp.float32) -> List[Dict[str, Array]]:
    """Layers {'w': [in, out], 'b': [out]}; truncated-normal weights, std 1/sqrt(fan_in)."""
    layers = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        std = 1.0 / math.sqrt(n_in) / 0.87962566  # haiku's truncated-normal correction
        w = std * jax.random.truncated_normal(k, -2.0, 2.0, (n_in, n_out), dtype)
        layers.append({"w": w, "b": jnp.zeros((n_out,), dtype)})
    return layers


def mlp_apply(layers, x: Array) -> Array:
    for layer in layers[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def layer_norm_mlp_apply(layers, x: Array) -> Array:
    """`mlp_apply` with a layer normalisation (no scale or offset) before each hidden ReLU."""
    for layer in layers[:-1]:
        h = x @ layer["w"] + layer["b"]
        mean = jnp.mean(h, axis=-1, keepdims=True)
        h = (h - mean) * jax.lax.rsqrt(jnp.var(h, axis=-1, keepdims=True) + 1e-5)
        x = jax.nn.relu(h)
    return x @ layers[-1]["w"] + layers[-1]["b"]


class Rollout(NamedTuple):
    """`rollout_length` = T transitions of one stream. An inner batch with
    replay puts a leading axis [1 + replay_batch] on the first three fields
    (the fresh rollout first); meta_input is then the fresh rollout's."""

    observation: Array  # [T + 1, 30]: s_0..s_T (s_T bootstraps)
    action: Array  # [T] int32
    reward: Array  # [T] float32
    meta_input: Array  # [meta_inputs]: mean reward of the last rollouts, this one last


class Agent(NamedTuple):
    """An agent's pure functions: the actor-critic and the Q(lambda) agent."""

    init: Callable[[Array], Any]  # key -> params
    policy_logits: Callable[[Any, Array], Array]  # (params, obs [..., 30]) -> [..., A]
    # (params, batch, meta output) -> (grads, terms with an "entropy" entry)
    inner_grads: Callable[[Any, Rollout, Array], Tuple[Any, Dict[str, Array]]]
    outer_loss: Callable[[Any, Rollout], Array]  # f(x) on a batch; targets stopped
    # (params, meta output) -> params: where the meta output is part of the agent's
    # state (Q(lambda): its epsilon), the inner update writes it there; None: not.
    set_meta_output: Optional[Callable[[Any, Array], Any]] = None


def actor_critic_loss(
    cfg: TwoColorsConfig, logits: Array, v: Array, target_v: Array, batch: Rollout, entropy_weight
) -> Tuple[Array, Dict[str, Array]]:
    """n-step actor-critic loss; returns and advantages come from `target_v`."""
    # returns_t = sum_{s >= t} gamma^(s - t) r_s + gamma^(T - t) V(s_T), as one
    # [T, T] product: cheaper than a scan, above all inside meta-gradients.
    T = batch.reward.shape[0]
    idx = jnp.arange(T)
    power = (idx[None, :] - idx[:, None]).astype(v.dtype)
    discounts = jnp.where(power >= 0, cfg.discount ** jnp.maximum(power, 0), 0.0)
    returns = (
        discounts @ batch.reward.astype(v.dtype)
        + cfg.discount ** (T - idx).astype(v.dtype) * target_v[-1]
    )
    adv = returns - target_v[:-1]
    log_pi = jax.nn.log_softmax(logits)
    log_pi_a = jnp.take_along_axis(log_pi, batch.action[:, None], axis=-1)[:, 0]
    pg = -jnp.mean(log_pi_a * adv)
    value = 0.5 * jnp.mean(jnp.square(returns - v[:-1]))
    ent = jnp.mean(losses.entropy(logits))
    loss = pg + cfg.value_weight * value - entropy_weight * ent
    return loss, {"pg": pg, "value": value, "entropy": ent}


def make_actor_critic(cfg: TwoColorsConfig) -> Agent:
    """Separate actor and critic MLPs; the meta output is the inner loss's entropy weight."""
    sizes = [env.OBS_DIM] + [cfg.hidden] * cfg.num_layers

    def init(key):
        ka, kc = jax.random.split(key)
        return {
            "actor": mlp_init(ka, sizes + [env.NUM_ACTIONS]),
            "critic": mlp_init(kc, sizes + [1]),
        }

    def policy_logits(params, obs):
        return mlp_apply(params["actor"], obs)

    def values(params, obs):
        return mlp_apply(params["critic"], obs)[..., 0]

    loss_of_outputs = functools.partial(actor_critic_loss, cfg)

    def outputs(params, obs):
        return policy_logits(params, obs[:-1]), values(params, obs)

    def inner_grads(params, batch: Rollout, entropy_weight):
        """Semi-gradient of the inner loss (targets held fixed for this gradient,
        but computed from x inside, so its derivative w.r.t. x, which the K-step
        meta-gradient needs, is exact)."""
        (logits, v), pullback = jax.vjp(lambda p: outputs(p, batch.observation), params)
        g_out, terms = jax.grad(loss_of_outputs, argnums=(0, 1), has_aux=True)(
            logits, v, v, batch, entropy_weight
        )
        (grads,) = pullback(g_out)
        return grads, terms

    def outer_loss(params, batch: Rollout):
        logits, v = outputs(params, batch.observation)
        return loss_of_outputs(logits, v, sg(v), batch, cfg.outer_entropy)[0]

    return Agent(init, policy_logits, inner_grads, outer_loss)


def peng_q_lambda_returns(
    reward: Array, next_max_q: Array, discount: float, lambda_: Array | float
) -> Array:
    """Peng's Q(lambda) returns of one rollout (no terminal states in two-colors).

      G_t = r_t + discount * ((1 - lambda) * max_a Q(s_{t+1}, a) + lambda * G_{t+1}),
      G_{T-1} = r_{T-1} + discount * max_a Q(s_T, a).

    Peng's form: traces are not cut after exploratory actions (Watkins' would
    set lambda to 0 there). reward, next_max_q: [T] -> [T]."""
    chex.assert_equal_shape([reward, next_max_q])
    chex.assert_rank(reward, 1)
    lambda_ = jnp.asarray(lambda_, reward.dtype)

    def backward(g_next, r_v):
        r, v = r_v
        g = r + discount * ((1.0 - lambda_) * v + lambda_ * g_next)
        return g, g

    # Starting from g_T = max_a Q(s_T, a) makes the last step r + discount * max_a Q(s_T, a).
    _, returns = jax.lax.scan(backward, next_max_q[-1], (reward, next_max_q), reverse=True)
    return returns


def epsilon_greedy_log_probs(q: Array, epsilon: Array) -> Array:
    """log of (1 - eps) * onehot(argmax q) + eps / A; q [..., A], eps scalar.

    Differentiable in epsilon, constant in q (the argmax has no gradient)."""
    num_actions = q.shape[-1]
    greedy = jax.nn.one_hot(jnp.argmax(q, axis=-1), num_actions, dtype=q.dtype)
    return jnp.log((1.0 - epsilon) * greedy + epsilon / num_actions)


def make_q_lambda(cfg: TwoColorsConfig) -> Agent:
    """Epsilon-greedy Peng's Q(lambda) agent; epsilon comes from the meta-network.

    params = {"q": MLP 30 -> hidden x num_layers -> 4, "eps_logit": []}. The
    policy is epsilon-greedy over Q with eps = sigmoid(eps_logit), and the inner
    update writes the meta-network's output into eps_logit (`set_meta_output`),
    so x_K(w) depends on w through the exploration it will act with.

    inner loss (Q only): 0.5 * mean((G_t - Q(s_t, a_t))^2), G Peng's Q(lambda)
    returns (`q_lambda`, discount `discount`) held fixed for the gradient; with
    replay the mean runs over the fresh rollout and the replayed ones (Peng's
    returns are not corrected for the older policies that collected those).

    outer loss f (what MG descends and BMG's grounded step takes):
      0.5 * mean((G - Q(s, a))^2) + mean(-log pi_eps(a_t | s_t) * sg(G_t - max_a Q(s_t, a)))
    The second term is the policy gradient of the epsilon-greedy policy: Q gets
    no gradient from it (argmax) and epsilon gets the REINFORCE signal - raise
    epsilon when greedy actions do worse than Q predicts (after a colour
    swap), lower it when exploratory actions do worse than greedy ones. MG
    descends it for x_K(w). BMG's target x~ is a step on f from the agent's
    parameters L - 1 updates later; with `matching="l2"` only the eps_logit
    leaf of x_K(w) depends on w, so BMG pulls epsilon toward the target's;
    with "kl", KL(pi_x~ || pi_x_K(w)) also raises epsilon wherever the target's
    greedy action differs from today's. "greedy" with K = 0 is the published
    form (BMG paper, section 5.1; Luketina et al. 2022, appendix A.1): the
    target is the one-hot greedy policy of x~ and mu = sum over validation
    states of -log pi_eps(w)(argmax_a Q_x~(s, a) | s), with Q of the cycle's
    first parameters. If the greedy actions of x_0 and x~ differ on a fraction
    d of the states, mu is least at eps = d * A / (A - 1): epsilon tracks how
    much the greedy policy is about to change."""
    sizes = [env.OBS_DIM] + [cfg.hidden] * cfg.num_layers + [env.NUM_ACTIONS]

    def init(key):
        return {"q": mlp_init(key, sizes), "eps_logit": jnp.asarray(_logit(cfg.init_epsilon))}

    q_net = layer_norm_mlp_apply if cfg.q_layer_norm else mlp_apply

    def q_values(params, obs):
        return q_net(params["q"], obs)

    def policy_logits(params, obs):
        return epsilon_greedy_log_probs(q_values(params, obs), jax.nn.sigmoid(params["eps_logit"]))

    def returns_of(reward, next_max_q):
        return peng_q_lambda_returns(reward, next_max_q, cfg.discount, cfg.q_lambda)

    def td_terms(q, batch: Rollout):
        """q: [..., T + 1, A] -> (Q(s_t, a_t), returns G, max_a Q(s_t, a)), each
        [..., T]; a leading axis holds several rollouts (fresh + replayed)."""
        q_sa = jnp.take_along_axis(q[..., :-1, :], batch.action[..., None], axis=-1)[..., 0]
        max_q = jnp.max(q, axis=-1)
        returns_fn = returns_of if batch.reward.ndim == 1 else jax.vmap(returns_of)
        returns = returns_fn(batch.reward.astype(q.dtype), sg(max_q[..., 1:]))
        return q_sa, sg(returns), sg(max_q[..., :-1])

    def inner_grads(params, batch: Rollout, epsilon):
        def td_loss(q_params):
            q_sa, returns, _ = td_terms(q_net(q_params, batch.observation), batch)
            errors = returns - q_sa
            return 0.5 * jnp.mean(jnp.square(errors)), jnp.max(jnp.abs(errors), axis=-1)

        (loss, td_max), g_q = jax.value_and_grad(td_loss, has_aux=True)(params["q"])
        # Entropy of the epsilon-greedy policy: the same in every state.
        entropy = losses.entropy(epsilon_greedy_log_probs(jnp.eye(env.NUM_ACTIONS)[0], epsilon))
        return (
            {"q": g_q, "eps_logit": jnp.zeros_like(params["eps_logit"])},
            {"td": loss, "td_max": sg(td_max), "entropy": entropy},
        )

    def outer_loss(params, batch: Rollout):
        q = q_values(params, batch.observation)
        q_sa, returns, max_q = td_terms(q, batch)
        log_pi = epsilon_greedy_log_probs(q[:-1], jax.nn.sigmoid(params["eps_logit"]))
        log_pi_a = jnp.take_along_axis(log_pi, batch.action[:, None], axis=-1)[:, 0]
        pg = -jnp.mean(log_pi_a * (returns - max_q))
        return 0.5 * jnp.mean(jnp.square(returns - q_sa)) + pg

    def set_meta_output(params, epsilon):
        return dict(params, eps_logit=jnp.log(epsilon) - jnp.log1p(-epsilon))

    return Agent(init, policy_logits, inner_grads, outer_loss, set_meta_output)


def make_agent(cfg: TwoColorsConfig) -> Agent:
    return make_q_lambda(cfg) if cfg.agent == "q_lambda" else make_actor_critic(cfg)


# ----------------------------------------------------------------------------
# Meta-network: recent rewards -> entropy weight
# ----------------------------------------------------------------------------
def meta_init(key, cfg: TwoColorsConfig, dtype=jnp.float32):
    """Output sigmoid(bias) = `init_meta_output` at zero input; for objective
    none the output layer's weights are zero, so the output stays there."""
    layers = mlp_init(key, [cfg.meta_inputs, cfg.meta_hidden, 1], dtype)
    layers[-1]["b"] = jnp.full((1,), _logit(cfg.init_meta_output), dtype)
    if cfg.objective == "none":
        layers[-1]["w"] = jnp.zeros_like(layers[-1]["w"])
    return layers


def entropy_weight(meta_params, meta_input: Array) -> Array:
    """sigmoid(MLP(meta_input)): a scalar in (0, 1), the entropy weight of the
    actor-critic or the epsilon of the Q(lambda) agent."""
    return jax.nn.sigmoid(mlp_apply(meta_params, meta_input)[..., 0])
