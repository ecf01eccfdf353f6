"""Actor-critic with a meta-learned entropy weight on two-colors: MG vs BMG.

The agent (docs/design.md section 8): separate actor and critic MLPs (2 hidden ReLU
layers; 128 wide by default, DESIGN says 256, see `TwoColorsConfig.hidden`),
one environment stream, an update every `rollout_length` (16) steps by one SGD
step (lr 0.1, gradients clipped to global norm 5) on the n-step actor-critic
loss (discount 0.99, bootstrapped from V(s_16))

  inner loss = pg + value_weight * 0.5 * mean((G - V)^2) - eps * mean(entropy),

where the entropy weight `eps = meta_net(w, s)` comes from a meta-network
(10 -> 32 ReLU -> 1 sigmoid) fed with the mean reward of each of the last 10
rollouts; the meta-parameters w are learned with Adam (eps 1e-4).

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
updates and BMG once per K + L - 1. The outer loss f is the actor-critic loss
with a fixed entropy weight `outer_entropy` (default 0: policy gradient +
value error, no entropy term); the grounded step is plain SGD with step size
`target_step_size` (0.1). The matching mu is `kl`: mean over the validation
states of KL(pi_x~ || pi_x_K(w)) (default), or `l2`: 0.5 ||x~ - x_K(w)||^2
over all parameters.

Reuse: `make_meta_objectives(inner_update, outer_loss, policy_logits, ...)`
takes the inner update and the outer loss as functions, and `unroll` returns
every x_1..x_K, so the mixture of 1..K-step meta-gradients (`mixed`) and a
second agent need no change there. `agent="q_lambda"` is an
epsilon-greedy Peng's Q(lambda) learner whose epsilon is the meta-network's
output (`make_q_lambda`); it provides the same `Agent` functions, so MG, BMG
and mixed run through the same code. `run(cfg, key)` is one seed's whole
training as one `lax.scan`; `jitted_run` / `run_seeds` vmap it over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from agents import losses
from agents import meta as meta_lib
from experiments.two_colors import env
from configs.config import geometric_mix
from configs.validate import ConfigError, check_choice, check_int, check_num, fail

Array = jax.Array
sg = jax.lax.stop_gradient

# none: fixed entropy weight (no meta-learning); mixed: sum_k c_k f(x_k) (Bonnet et al. 2021)
OBJECTIVES = ("none", "mg", "bmg", "mixed")
# greedy: KL(one-hot argmax of the target's policy || pi_x(w)), the Q(lambda)
# agent's published BMG target (a greedy policy; -log pi_x(w)(greedy action))
MATCHINGS = ("kl", "l2", "greedy")
# actor_critic: the meta-network sets the entropy weight; q_lambda: epsilon of an
# epsilon-greedy Peng's Q(lambda) learner
AGENTS = ("actor_critic", "q_lambda")
# The config field that holds each agent's meta-network output at init.
META_OUTPUT_FIELD = {"actor_critic": "init_entropy_weight", "q_lambda": "init_epsilon"}


# ----------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TwoColorsConfig:
    """One two-colors run (one seed); every field is checked."""

    agent: str = "actor_critic"  # actor_critic | q_lambda
    objective: str = "bmg"  # none | mg | bmg | mixed
    # Inner updates differentiated through. 0 (BMG, q_lambda agent): none; the
    # matched policy is the agent's own at the cycle's start with the epsilon
    # eps(w) the first update would write (no backpropagation through an update).
    K: int = 1
    mix_lambda: float = 0.5  # mixed: c_k = (1 - lambda) lambda^(k-1), c_K = lambda^(K-1)
    L: int = 1  # BMG bootstrap horizon (L - 1 rule steps + 1 grounded step); 1 for mg
    matching: str = "kl"  # BMG matching function: kl | l2 | greedy (q_lambda)
    target_step_size: float = 0.1  # a, the grounded SGD step of the BMG target
    outer_entropy: float = 0.0  # entropy weight in the outer loss f (fixed)
    steps: int = 1_000_000  # environment steps (a multiple of rollout_length)
    swap_every: int = env.SWAP_EVERY
    rollout_length: int = 16
    # Width of each hidden layer of actor and critic. The follow-up paper uses 256; 128 is
    # ~4x cheaper and keeps 4 objectives x 5 seeds x 1M steps near 12 minutes
    # on 2 (shared) CPU cores, where 256 would take most of an hour.
    hidden: int = 128
    num_layers: int = 2
    learning_rate: float = 0.1  # inner SGD
    # Inner gradients clipped to this global norm (0: none). Without it, plain
    # SGD at lr 0.1 let the critic diverge in 1 of 6 seeds (values 8 -> 1e27 in
    # one cycle); the 99th percentile of the critic's gradient norm is ~8.
    max_grad_norm: float = 5.0
    discount: float = 0.99
    value_weight: float = 1.0
    meta_inputs: int = 10  # mean reward of each of the last `meta_inputs` rollouts
    meta_hidden: int = 32
    init_entropy_weight: float = 0.1  # actor_critic: meta-network output at init
    init_epsilon: float = 0.1  # q_lambda: meta-network output (epsilon) at init
    q_lambda: float = 0.8  # q_lambda: lambda of Peng's Q(lambda) returns
    # q_lambda, objective none: epsilon falls linearly from init_epsilon (first
    # update) to final_epsilon over `epsilon_decay_steps` steps (0: the whole run)
    # and stays there; None: held at init_epsilon.
    final_epsilon: Optional[float] = None
    epsilon_decay_steps: int = 0
    # q_lambda: a FIFO of the last `replay_rollouts` rollouts (0: none); every
    # inner update then learns from the fresh rollout plus `replay_batch`
    # rollouts drawn from it with replacement (as `replay_priority` says).
    replay_rollouts: int = 0
    replay_batch: int = 0
    # Draw replayed rollouts with probability ~ priority^replay_priority, priority =
    # the rollout's largest |G - Q(s, a)| when last learned on (0: uniformly).
    replay_priority: float = 0.0
    q_layer_norm: bool = False  # q_lambda: layer normalisation before each hidden ReLU
    # q_lambda: re-initialise the Q-network's output layer every this many steps (0: never)
    q_reset_every: int = 0
    inner_optimizer: str = "sgd"  # sgd | adam (eps 1e-8 inside optax's adam)
    meta_learning_rate: float = 1e-4
    meta_adam_eps: float = 1e-4
    log_every: int = 1024  # environment steps per logged point (multiple of rollout_length)

    def __post_init__(self):
        check_choice(self, "agent", AGENTS)
        check_choice(self, "objective", OBJECTIVES)
        check_choice(self, "matching", MATCHINGS)
        check_int(self, "K", 0, 64)
        check_int(self, "L", 1, 64)
        if self.K == 0 and (self.objective, self.agent) != ("bmg", "q_lambda"):
            fail(
                self,
                "K",
                0,
                "is allowed only for objective='bmg' with agent='q_lambda' (the matched "
                "policy's epsilon is the meta-network's output)",
            )
        if self.K == 0 and self.L < 2:
            fail(self, "L", self.L, "must be >= 2 with K=0 (a cycle needs at least one update)")
        if self.matching == "greedy" and self.agent != "q_lambda":
            fail(self, "matching", "greedy", "needs agent='q_lambda' (a greedy target of Q)")
        if self.objective != "bmg" and self.L != 1:
            fail(
                self,
                "L",
                self.L,
                f"must be 1 for objective={self.objective!r} (only BMG bootstraps)",
            )
        if self.objective == "none" and self.K != 1:
            fail(self, "K", self.K, "must be 1 for objective='none' (no meta-gradient)")
        check_num(self, "target_step_size", 0.0, lo_open=True)
        check_num(self, "mix_lambda", 0.0, 1.0)
        check_num(self, "outer_entropy", 0.0)
        check_int(self, "rollout_length", 1)
        check_int(self, "steps", self.rollout_length)
        if self.steps % self.rollout_length:
            fail(
                self,
                "steps",
                self.steps,
                f"must be a multiple of rollout_length={self.rollout_length}",
            )
        check_int(self, "swap_every", 1)
        check_int(self, "hidden", 1)
        check_int(self, "num_layers", 1, 8)
        check_num(self, "learning_rate", 0.0, lo_open=True)
        check_num(self, "max_grad_norm", 0.0)
        check_num(self, "discount", 0.0, 1.0)
        check_num(self, "value_weight", 0.0)
        check_int(self, "meta_inputs", 1)
        check_int(self, "meta_hidden", 1)
        check_num(self, "init_entropy_weight", 0.0, 1.0, lo_open=True, hi_open=True)
        check_num(self, "init_epsilon", 0.0, 1.0, lo_open=True, hi_open=True)
        check_num(self, "q_lambda", 0.0, 1.0)
        if self.final_epsilon is not None:
            check_num(self, "final_epsilon", 0.0, 1.0, lo_open=True, hi_open=True)
            if (self.agent, self.objective) != ("q_lambda", "none"):
                fail(
                    self,
                    "final_epsilon",
                    self.final_epsilon,
                    "is allowed only for agent='q_lambda' with objective='none' (a schedule)",
                )
        check_choice(self, "inner_optimizer", ("sgd", "adam"))
        check_int(self, "q_reset_every", 0)
        check_int(self, "epsilon_decay_steps", 0)
        check_int(self, "replay_rollouts", 0)
        check_int(self, "replay_batch", 0)
        check_num(self, "replay_priority", 0.0, 10.0)
        if (self.replay_rollouts > 0) != (self.replay_batch > 0):
            fail(
                self,
                "replay_batch",
                self.replay_batch,
                f"and replay_rollouts={self.replay_rollouts} must be both 0 (no replay) "
                "or both > 0",
            )
        for field in ("q_layer_norm", "q_reset_every"):
            if getattr(self, field) and self.agent != "q_lambda":
                fail(self, field, getattr(self, field), "is allowed only for agent='q_lambda'")
        if self.replay_rollouts and self.agent != "q_lambda":
            fail(
                self,
                "replay_rollouts",
                self.replay_rollouts,
                "is allowed only for agent='q_lambda' (the actor-critic learns on-policy)",
            )
        check_num(self, "meta_learning_rate", 0.0, lo_open=True)
        check_num(self, "meta_adam_eps", 0.0, lo_open=True)
        check_int(self, "log_every", self.rollout_length)
        if self.log_every % self.rollout_length:
            fail(
                self,
                "log_every",
                self.log_every,
                f"must be a multiple of rollout_length={self.rollout_length}",
            )

    @property
    def cycle(self) -> int:
        """Inner updates per meta-update, C = K + L - 1."""
        return self.K + self.L - 1

    @property
    def init_meta_output(self) -> float:
        """The meta-network's output at init: entropy weight or epsilon."""
        return getattr(self, META_OUTPUT_FIELD[self.agent])

    @property
    def num_rollouts(self) -> int:
        return self.steps // self.rollout_length

    @property
    def mix_coefficients(self) -> Tuple[float, ...]:
        """c_1..c_K of the `mixed` estimator (sum 1), as MetaConfig's."""
        return geometric_mix(self.mix_lambda, self.K)


def parse_objective(name: str, agent: str = "actor_critic") -> Dict[str, Any]:
    """'mg' | 'mg_k4' | 'bmg_l8' | 'bmg_k2_l4' | 'bmg_k0_l4' | 'mixed_k8' ->
    TwoColorsConfig fields; 'fixed_0.05' is objective none with the meta output
    (entropy weight, or epsilon for agent q_lambda) held at 0.05;
    'linear_0.5_0.01' (q_lambda) is objective none with epsilon falling
    linearly from 0.5 to 0.01 over the run; 'linear_0.5_0.05_1e5' over the
    first 100,000 steps, then held."""
    if name.lower().startswith("fixed_"):
        text = name[len("fixed_") :]
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(
                f"objective {name!r} is not allowed: fixed_<value> needs a "
                f"number in (0, 1), e.g. fixed_0.05"
            ) from None
        return {"objective": "none", META_OUTPUT_FIELD[agent]: value}
    if name.lower().startswith("linear_"):
        parts = name[len("linear_") :].split("_")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            start, end = float(parts[0]), float(parts[1])
            span = int(float(parts[2])) if len(parts) == 3 else 0
        except ValueError:
            raise ConfigError(
                f"objective {name!r} is not allowed: linear_<start>_<end>[_<steps>] needs "
                f"two numbers in (0, 1) and optionally a step count, e.g. "
                f"linear_0.5_0.01 (over the run) or linear_0.5_0.05_1e5"
            ) from None
        fields = {"objective": "none", "init_epsilon": start, "final_epsilon": end}
        return dict(fields, epsilon_decay_steps=span) if span else fields
    parts = name.lower().split("_")
    if parts[0] not in OBJECTIVES:
        raise ConfigError(
            f"objective {name!r} is not allowed: must start with one of "
            f"{list(OBJECTIVES)} or be fixed_<value> or linear_<start>_<end>, e.g. mg, "
            f"mg_k4, bmg_l8, bmg_k2_l4, bmg_k0_l4, mixed_k8, fixed_0.05, linear_0.5_0.01"
        )
    fields: Dict[str, Any] = {"objective": parts[0]}
    for p in parts[1:]:
        if len(p) < 2 or p[0] not in "kl" or not p[1:].isdigit():
            raise ConfigError(
                f"objective {name!r} is not allowed: suffixes are _k<int> and _l<int>, e.g. bmg_l8"
            )
        fields[p[0].upper()] = int(p[1:])
    return fields


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


def make_actor_critic(cfg: TwoColorsConfig) -> Agent:
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

    def loss_of_outputs(logits, v, target_v, batch: Rollout, entropy_weight):
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

    def q_net(layers, obs):
        if not cfg.q_layer_norm:
            return mlp_apply(layers, obs)
        x = obs
        for layer in layers[:-1]:
            h = x @ layer["w"] + layer["b"]
            mean = jnp.mean(h, axis=-1, keepdims=True)
            h = (h - mean) * jax.lax.rsqrt(jnp.var(h, axis=-1, keepdims=True) + 1e-5)
            x = jax.nn.relu(h)
        return x @ layers[-1]["w"] + layers[-1]["b"]

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

    def _as_list(batches) -> List[Rollout]:
        if isinstance(batches, Rollout):
            n = batches.action.shape[0]
            return [jax.tree_util.tree_map(lambda x: x[i], batches) for i in range(n)]
        return list(batches)

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
class Replay(NamedTuple):
    """A FIFO of the last N rollouts (leading axis N), filled from slot 0."""

    rollouts: Rollout
    priority: Array  # float32 [N]: largest |G - Q(s, a)| of each rollout when last learned on
    count: Array  # int32 []: rollouts pushed so far


def replay_init(first: Rollout, capacity: int) -> Replay:
    """A FIFO of `capacity` slots holding `first` in slot 0."""
    empty = jax.tree_util.tree_map(lambda x: jnp.zeros((capacity,) + x.shape, x.dtype), first)
    return replay_push(
        Replay(empty, jnp.zeros((capacity,), jnp.float32), jnp.zeros((), jnp.int32)), first
    )


def replay_push(replay: Replay, rollout: Rollout) -> Replay:
    """The newest rollout overwrites the oldest once the FIFO is full; it gets
    the largest priority held (1 in an empty FIFO), so it is drawn soon."""
    n = replay.rollouts.action.shape[0]
    slot = replay.count % n
    rollouts = jax.tree_util.tree_map(lambda b, x: b.at[slot].set(x), replay.rollouts, rollout)
    top = jnp.where(replay.count > 0, jnp.max(replay.priority), 1.0)
    return Replay(rollouts, replay.priority.at[slot].set(top), replay.count + 1)


def replay_sample(replay: Replay, size: int, exponent: float, key) -> Array:
    """`size` slot indices, with replacement, from the filled slots: uniformly
    for exponent 0, else with probability proportional to priority^exponent
    (prioritised replay, Schaul et al. 2016, without importance weights)."""
    n = replay.rollouts.action.shape[0]
    filled = jnp.arange(n) < jnp.minimum(replay.count, n)
    if exponent == 0:
        logits = jnp.where(filled, 0.0, -jnp.inf)
    else:
        logits = jnp.where(filled, exponent * jnp.log(replay.priority + 1e-6), -jnp.inf)
    return jax.random.categorical(key, logits, shape=(size,))


def replay_batch(replay: Replay, fresh: Rollout, idx: Array) -> Rollout:
    """The fresh rollout plus the rollouts in slots `idx`: transitions
    [1 + len(idx), ...], the fresh rollout's meta input."""
    return Rollout(
        *(jnp.concatenate([f[None], b[idx]]) for f, b in zip(fresh[:3], replay.rollouts[:3])),
        meta_input=fresh.meta_input,
    )


def replay_reprioritise(replay: Replay, idx: Array, td_max: Array) -> Replay:
    """New priorities of the drawn slots: td_max [1 + len(idx)], fresh rollout first."""
    return replay._replace(priority=replay.priority.at[idx].set(td_max[1:]))


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    meta_params: Any
    meta_opt_state: Any
    env_state: env.EnvState
    pending: Rollout  # collected by `params`: next inner batch (last cycle's val)
    key: Array
    replay: Optional[Replay] = None  # with `replay_rollouts` > 0: every rollout so far


class System(NamedTuple):
    """Everything `run` needs, built once per config."""

    cfg: TwoColorsConfig
    agent: Agent
    inner_update: InnerUpdate
    meta: MetaObjectives
    inner_opt: optax.GradientTransformation
    meta_opt: optax.GradientTransformation
    collect: Callable  # (params, env_state, meta_input, key) -> (env_state, Rollout)
    init: Callable  # key -> TrainState
    cycle: Callable  # TrainState -> (TrainState, logs)


def make_system(cfg: TwoColorsConfig, agent: Optional[Agent] = None) -> System:
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
    T, K, C = cfg.rollout_length, cfg.K, cfg.cycle

    def collect(params, env_state, last_input, key):
        """T steps acting with params; last_input: previous rollout's meta input."""

        def act(carry, k):
            s, obs = carry
            ka, ke = jax.random.split(k)
            a = jax.random.categorical(ka, agent.policy_logits(params, obs)).astype(jnp.int32)
            s, next_obs, r = env.step(s, a, ke, cfg.swap_every)
            return (s, next_obs), (obs, a, r)

        (env_state, last_obs), (obs, a, r) = jax.lax.scan(
            act, (env_state, env.observe(env_state)), jax.random.split(key, T)
        )
        meta_input = jnp.concatenate([last_input[1:], jnp.mean(r)[None]])
        return env_state, Rollout(jnp.concatenate([obs, last_obs[None]]), a, r, meta_input)

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

    def scheduled_epsilon(t):
        """Linear from init_epsilon at the first update to final_epsilon after
        `epsilon_decay_steps` (or at the last update); t is the update's step
        count (T at the first, `steps` at the last)."""
        span = (cfg.epsilon_decay_steps or cfg.steps) - T
        frac = jnp.clip((t - T) / max(span, 1), 0.0, 1.0)
        return cfg.init_epsilon + frac * (cfg.final_epsilon - cfg.init_epsilon)

    def cycle(state: TrainState):
        if cfg.replay_rollouts:  # one more key per update to draw its replayed rollouts
            key, *keys = jax.random.split(state.key, 2 * C + 1)
        else:
            key, *keys = jax.random.split(state.key, C + 1)
        if cfg.q_reset_every:  # a new output layer when the cycle crosses a multiple
            crossed = (state.env_state.t % cfg.q_reset_every) < C * T
            fresh = mlp_init(jax.random.fold_in(key, 7), [cfg.hidden, env.NUM_ACTIONS])[0]
            q = state.params["q"]
            last = jax.tree_util.tree_map(lambda a, b: jnp.where(crossed, a, b), fresh, q[-1])
            # In the state, so the meta-objectives unroll from the same x_0 as the agent.
            state = state._replace(params=dict(state.params, q=q[:-1] + [last]))
        p, o, env_state, replay = state.params, state.opt_state, state.env_state, state.replay
        batches, inner_batches, eps, rewards, picks = [state.pending], [], [], [], []
        for k in range(C):  # C inner updates, each followed by a fresh rollout
            inner = batches[-1]
            if replay is not None:
                idx = replay_sample(replay, cfg.replay_batch, cfg.replay_priority, keys[C + k])
                inner = replay_batch(replay, inner, idx)
            inner_batches.append(inner)
            p, o, terms = inner_update(p, o, state.meta_params, inner)
            if replay is not None:
                replay = replay_reprioritise(replay, idx, terms["td_max"])
            if cfg.final_epsilon is not None:  # the schedule replaces the (fixed) meta output
                terms = dict(terms, eps=scheduled_epsilon(env_state.t))
                p = agent.set_meta_output(p, terms["eps"])
            eps.append(terms["eps"])
            env_state, b = collect(p, env_state, batches[-1].meta_input, keys[k])
            batches.append(b)
            if replay is not None:
                replay = replay_push(replay, b)
            rewards.append(jnp.sum(b.reward))
            picks.append(jnp.sum(jnp.abs(b.reward)))  # pick-ups of either item
        val = batches[C]
        if cfg.objective == "none":  # the baseline: eps stays at init_entropy_weight
            meta_loss = jnp.zeros(())
            meta_grad = jax.tree_util.tree_map(jnp.zeros_like, state.meta_params)
        elif cfg.objective == "mg":
            meta_loss, meta_grad = jax.value_and_grad(meta.mg)(
                state.meta_params, state.params, state.opt_state, inner_batches[:K], val
            )
        elif cfg.objective == "mixed":  # the k-step term is judged on the rollout after x_k
            meta_loss, meta_grad = jax.value_and_grad(meta.mixed)(
                state.meta_params,
                state.params,
                state.opt_state,
                inner_batches[:K],
                batches[1 : K + 1],
                cfg.mix_coefficients,
            )
        elif K == 0:  # x~ is L steps past x_0; the matched policy is x_0's with eps(w)
            target = meta.grounded_step(p, val)
            meta_loss, meta_grad = jax.value_and_grad(meta.bmg_k0)(
                state.meta_params, state.params, batches[0], val, target
            )
        else:  # x_{K+L-1} = p: the agent's own L - 1 steps after x_K
            target = meta.grounded_step(p, val)
            meta_loss, meta_grad = jax.value_and_grad(meta.bmg)(
                state.meta_params, state.params, state.opt_state, inner_batches[:K], val, target
            )
        updates, meta_opt_state = meta_opt.update(meta_grad, state.meta_opt_state)
        meta_params = optax.apply_updates(state.meta_params, updates)
        new = TrainState(p, o, meta_params, meta_opt_state, env_state, val, key, replay)
        logs = {
            "reward": jnp.stack(rewards),
            "picks": jnp.stack(picks),
            "eps": jnp.stack(eps),
            "meta_loss": meta_loss,
            "entropy": terms["entropy"],
        }
        return new, logs

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


def jitted_run(cfg: TwoColorsConfig) -> Callable[[Array], Dict[str, Array]]:
    """jit(vmap(run)): keys [S, 2] -> logs with a leading seed axis."""
    system = make_system(cfg)
    return jax.jit(jax.vmap(lambda k: run(cfg, k, system)))


def run_seeds(cfg: TwoColorsConfig, seeds: Sequence[int]) -> Dict[str, Array]:
    """Train one agent per seed, all at once; logs have a leading seed axis."""
    return jitted_run(cfg)(seed_keys(seeds))
