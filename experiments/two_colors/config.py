"""The two-colors study's config: one frozen dataclass, every field checked, and
the objective names of the command lines (`parse_objective`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from configs.config import geometric_mix
from configs.validate import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_num,
    fail,
)
from experiments.two_colors import env

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
INNER_OPTIMIZERS = ("sgd", "adam")


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

    def __post_init__(self) -> None:
        self._check_objective()
        self._check_budget()
        self._check_learners()
        self._check_q_lambda()
        self._check_replay()

    def _check_objective(self) -> None:
        """Agent, objective, matching and the K / L horizons that go with them."""
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

    def _check_budget(self) -> None:
        """Steps, rollouts, swaps and logging, each a whole number of rollouts."""
        check_int(self, "rollout_length", 1)
        check_int(self, "steps", self.rollout_length)
        self._check_multiple_of_rollout("steps")
        check_int(self, "swap_every", 1)
        check_int(self, "log_every", self.rollout_length)
        self._check_multiple_of_rollout("log_every")

    def _check_multiple_of_rollout(self, field: str) -> None:
        value = getattr(self, field)
        if value % self.rollout_length:
            fail(self, field, value, f"must be a multiple of rollout_length={self.rollout_length}")

    def _check_learners(self) -> None:
        """Networks, inner and meta optimisers, and the meta-network's output at init."""
        check_int(self, "hidden", 1)
        check_int(self, "num_layers", 1, 8)
        check_num(self, "learning_rate", 0.0, lo_open=True)
        check_num(self, "max_grad_norm", 0.0)
        check_num(self, "discount", 0.0, 1.0)
        check_num(self, "value_weight", 0.0)
        check_choice(self, "inner_optimizer", INNER_OPTIMIZERS)
        check_int(self, "meta_inputs", 1)
        check_int(self, "meta_hidden", 1)
        check_num(self, "init_entropy_weight", 0.0, 1.0, lo_open=True, hi_open=True)
        check_num(self, "init_epsilon", 0.0, 1.0, lo_open=True, hi_open=True)
        check_num(self, "meta_learning_rate", 0.0, lo_open=True)
        check_num(self, "meta_adam_eps", 0.0, lo_open=True)

    def _check_q_lambda(self) -> None:
        """The Q(lambda) agent's own fields: returns, epsilon schedule, network options."""
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
        check_int(self, "epsilon_decay_steps", 0)
        check_bool(self, "q_layer_norm")
        check_int(self, "q_reset_every", 0)
        for field in ("q_layer_norm", "q_reset_every"):
            if getattr(self, field) and self.agent != "q_lambda":
                fail(self, field, getattr(self, field), "is allowed only for agent='q_lambda'")

    def _check_replay(self) -> None:
        """The replay of recent rollouts: both sizes or neither, Q(lambda) only."""
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
        if self.replay_rollouts and self.agent != "q_lambda":
            fail(
                self,
                "replay_rollouts",
                self.replay_rollouts,
                "is allowed only for agent='q_lambda' (the actor-critic learns on-policy)",
            )

    @property
    def cycle(self) -> int:
        """Inner updates per meta-update, C = K + L - 1."""
        return self.K + self.L - 1

    @property
    def init_meta_output(self) -> float:
        """The meta-network's output at init: entropy weight or epsilon."""
        value: float = getattr(self, META_OUTPUT_FIELD[self.agent])
        return value

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
        return _fixed_fields(name, agent)
    if name.lower().startswith("linear_"):
        return _linear_fields(name)
    return _meta_fields(name)


def _fixed_fields(name: str, agent: str) -> Dict[str, Any]:
    """'fixed_<value>': no meta-learning, the agent's meta output held at value."""
    try:
        value = float(name[len("fixed_") :])
    except ValueError:
        raise ConfigError(
            f"objective {name!r} is not allowed: fixed_<value> needs a "
            f"number in (0, 1), e.g. fixed_0.05"
        ) from None
    return {"objective": "none", META_OUTPUT_FIELD[agent]: value}


def _linear_fields(name: str) -> Dict[str, Any]:
    """'linear_<start>_<end>[_<steps>]': epsilon from start to end, then held."""
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
    fields: Dict[str, Any] = {"objective": "none", "init_epsilon": start, "final_epsilon": end}
    return dict(fields, epsilon_decay_steps=span) if span else fields


def _meta_fields(name: str) -> Dict[str, Any]:
    """'<objective>[_k<K>][_l<L>]': a meta-learning objective and its horizons."""
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
