"""Frozen, validated configuration dataclasses.

Every field is checked in `__post_init__`; a bad value raises `ConfigError`
whose message names the field, the value and what is allowed. No globals, no
flags: `launch/` turns command-line flags into these objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from typing import Any, Tuple

from configs import games
from configs.validate import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_num,
    fail,
    is_int,
    is_num,
)
from utils.files import read_json, write_json_atomic


def geometric_mix(lam: float, K: int) -> Tuple[float, ...]:
    """Lambda-style weights of the 1..K-step meta-gradients (sum 1):
    c_k = (1 - lam) lam^(k-1) for k < K, c_K = lam^(K-1)."""
    return tuple((1 - lam) * lam ** (k - 1) for k in range(1, K)) + (lam ** (K - 1),)


# ----------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------
ENV_KINDS = ("atari", "catch")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Atari protocol (docs/design.md section 6), every setting explicit.

    `kind='catch'` is the built-in pixel game used to prove the pipeline learns.
    """

    kind: str = "atari"
    game: str = "Pong"  # CamelCase name from the 57-game table (ignored for catch)
    frame_skip: int = 4  # action repeat, max-pool over the last two frames
    frame_size: int = 84  # square grayscale frames
    frame_stack: int = 4
    noop_max: int = 30  # up to this many no-ops at reset (0 disables)
    max_episode_frames: int = 108_000  # 30 minutes of emulator frames
    sticky_action_prob: float = 0.0  # ALE repeat_action_probability
    full_action_space: bool = False
    clip_reward: float = 1.0  # training reward clip in [-c, c]; evaluation is unclipped

    def __post_init__(self):
        check_choice(self, "kind", ENV_KINDS)
        if self.kind == "atari":
            if not isinstance(self.game, str) or self.game not in games.reference_table():
                fail(self, "game", self.game, games.unknown_game_message(str(self.game)))
        check_int(self, "frame_skip", 1, 16)
        check_int(self, "frame_size", 8, 256)
        check_int(self, "frame_stack", 1, 16)
        check_int(self, "noop_max", 0, 1000)
        check_int(self, "max_episode_frames", 1)
        check_num(self, "sticky_action_prob", 0.0, 1.0)
        check_bool(self, "full_action_space")
        check_num(self, "clip_reward", 0.0, lo_open=True)

    @property
    def observation_shape(self) -> Tuple[int, int, int]:
        return (self.frame_size, self.frame_size, self.frame_stack)

    @property
    def frames_per_step(self) -> int:
        """Emulator frames per agent step: the action repeat (Catch: 1)."""
        return self.frame_skip if self.kind == "atari" else 1

    @property
    def label(self) -> str:
        """The game's name in logs and reports: the Atari game, or 'Catch'."""
        return self.game if self.kind == "atari" else self.kind.capitalize()


# ----------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------
NETWORK_KINDS = ("small", "deep", "tiny")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """`deep`: IMPALA ResNet (channels 16/32/32, 2 residual blocks per section).
    `small`: two conv layers, for CPU debug runs. `tiny`: one small conv layer,
    for tests. All end in a `hidden`-unit ReLU layer."""

    kind: str = "deep"
    channels: Tuple[int, ...] = (16, 32, 32)
    blocks_per_section: int = 2
    hidden: int = 256
    meta_embedding: int = 16  # width of the learned embedding of the meta-parameters

    def __post_init__(self):
        check_choice(self, "kind", NETWORK_KINDS)
        if (
            not isinstance(self.channels, tuple)
            or not self.channels
            or not all(is_int(c) and c >= 1 for c in self.channels)
        ):
            fail(self, "channels", self.channels, "must be a non-empty tuple of positive integers")
        check_int(self, "blocks_per_section", 0, 16)
        check_int(self, "hidden", 1)
        check_int(self, "meta_embedding", 1)


# ----------------------------------------------------------------------------
# Agent (the inner learner)
# ----------------------------------------------------------------------------
AGENT_KINDS = ("impala", "stacx")
HYPER_NAMES = ("gamma", "lambda_", "g_v", "g_p", "g_e", "alpha")
LR_SCHEDULES = ("linear", "constant")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Actor-critic learner. IMPALA: one head, fixed hyper-parameters.
    STACX: `num_heads` heads (the first acts), each with its own 6
    meta-parameters `outer * sigmoid(logit)`, logits initialised at `init_logit`.

    `gamma, lambda_, g_v, g_p, g_e, alpha` are IMPALA's fixed values and the
    STACX scale (the `outer` values) of the meta-learned ones. Every term is
    summed over time and batch, as in IMPALA's reference implementation:
    loss = g_p * sum pg + g_v * 0.5 * sum (v_s - V)^2 - g_e * sum entropy.

    Optimiser (IMPALA's reference implementation, TensorFlow's RMSProp):
    global-norm clip `max_grad_norm`, then RMSProp with `rms_eps` inside the
    square root and the mean square starting at 1, then the step
    `learning_rate`, decayed linearly to 0 over the run's budget when
    `lr_schedule='linear'` (`agents.learning._rmsprop`).
    """

    kind: str = "impala"
    num_heads: int = 1
    unroll_length: int = 20  # T: each trajectory has T + 1 observations
    gamma: float = 0.99
    lambda_: float = 1.0
    g_v: float = 0.5
    g_p: float = 1.0
    g_e: float = 0.01
    alpha: float = 1.0  # leaky V-trace mix; 1 = plain V-trace
    rho_bar: float = 1.0
    c_bar: float = 1.0
    learning_rate: float = 6e-4  # RMSProp (inner optimiser), initial value
    lr_schedule: str = "linear"  # linear: to 0 over the budget (RunConfig.inner_steps_budget)
    rms_decay: float = 0.99
    rms_eps: float = 0.01
    max_grad_norm: float = 40.0
    init_logit: float = 4.6  # sigmoid(4.6) = 0.990

    def __post_init__(self):
        check_choice(self, "kind", AGENT_KINDS)
        check_int(self, "num_heads", 1, 16)
        if self.kind == "impala" and self.num_heads != 1:
            fail(self, "num_heads", self.num_heads, "must be 1 when kind='impala'")
        check_int(self, "unroll_length", 1, 10_000)
        for f in ("gamma", "lambda_", "alpha"):
            check_num(self, f, 0.0, 1.0)
        for f in ("g_v", "g_p", "g_e"):
            check_num(self, f, 0.0, 1e6)
        for f in ("rho_bar", "c_bar"):
            check_num(self, f, 0.0, lo_open=True)
        check_num(self, "learning_rate", 0.0, 10.0, lo_open=True)
        check_choice(self, "lr_schedule", LR_SCHEDULES)
        check_num(self, "rms_decay", 0.0, 1.0, hi_open=True)
        check_num(self, "rms_eps", 0.0, lo_open=True)
        check_num(self, "max_grad_norm", 0.0, lo_open=True)
        check_num(self, "init_logit", -20.0, 20.0)

    @property
    def hyper_values(self) -> Tuple[float, ...]:
        """(gamma, lambda_, g_v, g_p, g_e, alpha) in `HYPER_NAMES` order."""
        return tuple(float(getattr(self, n)) for n in HYPER_NAMES)

    @property
    def meta_dim(self) -> int:
        """Length of the meta-parameter vector the network is conditioned on:
        the 6 values of every head for STACX, none for IMPALA."""
        return len(HYPER_NAMES) * self.num_heads if self.kind == "stacx" else 0


# ----------------------------------------------------------------------------
# Meta-objective
# ----------------------------------------------------------------------------
META_OBJECTIVES = ("none", "mg", "bmg", "mixed")
MATCHINGS = ("l2", "kl", "kl_v")
TARGET_STEPS = ("sgd", "rms")
# Which sample the meta-objective is measured on: `same`, the inner step's own
# batch (STAC's practice), or `next`, a later independent batch (the textbook
# cross-validation form).
OUTER_SAMPLES = ("same", "next")
# The outer KL term's argument order: `updated_first` = KL(pi_updated || pi_before),
# as STAC's eq. 2 writes it; `before_first` = KL(pi_before || pi_updated).
OUTER_KLS = ("updated_first", "before_first")
# Default grounded-step size per kind, as a multiple of the inner learning
# rate (MetaConfig.target_step_size = 0). rms: the target's last step is one
# inner RMSProp step taken on the outer loss. sgd: a plain gradient step as
# large as an inner step at initialisation, where RMSProp's mean square is 1
# (docs/design.md, "BMG's main Atari agent").
DEFAULT_TARGET_STEP_SCALES = {"rms": 1.0, "sgd": 1.0}


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """How the meta-parameters learn.

    `mg`: meta-gradient through K inner steps of the outer loss.
    `bmg`: bootstrapped target from L - 1 more inner steps plus one grounded
    step on the outer loss (`target_step`: plain SGD, or preconditioned by the
    inner RMSProp statistics) of size `grounded_step_size(lr)`, matched by
    `matching` (KL(target || learner) on the validation states, optionally
    plus `value_match_weight` times the value error).
    `mixed`: sum_k c_k f(x_k(w)) over k = 1..K (Bonnet et al. 2021), each term
    the k-step MG objective on the batch after x_k; c = `mix_weights` if given,
    else lambda-style geometric weights from `mix_lambda` (`mix_coefficients`):
    lambda = 0 is MG with K = 1, lambda = 1 is MG with K.
    The outer loss is the first head's V-trace loss with the fixed `outer_*`
    values plus `kl_weight` * KL(updated policy || pre-update policy) (STAC's
    eq. 2; `outer_kl` = `before_first` swaps the arguments), summed over time
    and batch like the inner loss. `outer_sample` names the batch that the
    outer loss (MG, mixed) or the target and matching (BMG) see: `same`, the
    last inner step's own batch, or `next`, the batch after it (one more
    batch per window). `outer_g_v` = 0.5 in our
    0.5 * (v_s - V)^2 form is STAC's g_v = 0.25 on (v_s - V)^2.
    """

    objective: str = "none"
    K: int = 1
    L: int = 1
    matching: str = "kl"
    target_step: str = "sgd"
    target_step_size: float = 0.0  # a in x~ = x - a * G(grad f); 0: the kind's default
    value_match_weight: float = 1.0  # weight of the value term in kl_v
    outer_gamma: float = 0.995
    outer_lambda: float = 1.0
    outer_g_v: float = 0.5
    outer_g_p: float = 1.0
    outer_g_e: float = 0.01
    kl_weight: float = 1.0
    outer_kl: str = "updated_first"
    outer_sample: str = "next"
    meta_learning_rate: float = 1e-3  # Adam
    meta_adam_eps: float = 1e-4
    meta_max_grad_norm: float = 1.0
    mix_lambda: float = 0.5  # `mixed`: c_k = (1 - lambda) lambda^(k-1), c_K = lambda^(K-1)
    mix_weights: Tuple[float, ...] = ()  # `mixed`: explicit c_1..c_K (normalised)

    def __post_init__(self):
        check_choice(self, "objective", META_OBJECTIVES)
        check_int(self, "K", 1, 64)
        check_int(self, "L", 1, 64)
        check_choice(self, "matching", MATCHINGS)
        check_choice(self, "target_step", TARGET_STEPS)
        check_num(self, "target_step_size", 0.0)
        check_num(self, "value_match_weight", 0.0)
        for f in ("outer_gamma", "outer_lambda"):
            check_num(self, f, 0.0, 1.0)
        for f in ("outer_g_v", "outer_g_p", "outer_g_e", "kl_weight"):
            check_num(self, f, 0.0, 1e6)
        check_choice(self, "outer_kl", OUTER_KLS)
        check_choice(self, "outer_sample", OUTER_SAMPLES)
        check_num(self, "meta_learning_rate", 0.0, 10.0, lo_open=True)
        check_num(self, "meta_adam_eps", 0.0, lo_open=True)
        check_num(self, "meta_max_grad_norm", 0.0, lo_open=True)
        check_num(self, "mix_lambda", 0.0, 1.0)
        w = self.mix_weights
        if w and (len(w) != self.K or not all(is_num(x) and x >= 0 for x in w) or sum(w) <= 0):
            fail(
                self,
                "mix_weights",
                w,
                f"must be empty or K={self.K} numbers >= 0 with a positive sum",
            )

    @property
    def num_batches(self) -> int:
        """Batches one update takes: 1 without a meta-objective, else the K
        inner batches plus, with `outer_sample=next`, the batch after them."""
        if self.objective == "none":
            return 1
        return self.K + (1 if self.outer_sample == "next" else 0)

    @property
    def window_overlap(self) -> int:
        """Batches an update shares with the one before: with `next`, the batch
        after the inner ones is the next update's first inner batch."""
        return 1 if self.objective != "none" and self.outer_sample == "next" else 0

    @property
    def mix_coefficients(self) -> Tuple[float, ...]:
        """c_1..c_K of the `mixed` estimator, summing to 1."""
        if self.mix_weights:
            total = float(sum(self.mix_weights))
            return tuple(float(x) / total for x in self.mix_weights)
        return geometric_mix(self.mix_lambda, self.K)

    def grounded_step_size(self, inner_learning_rate: float) -> float:
        """a of the target's grounded step: `target_step_size`, or when it is 0
        the default of `target_step`, a multiple of the inner learning rate."""
        return (
            self.target_step_size
            or DEFAULT_TARGET_STEP_SCALES[self.target_step] * inner_learning_rate
        )

    @property
    def outer_values(self) -> Tuple[float, ...]:
        """(gamma, lambda_, g_v, g_p, g_e, alpha=1) of the outer loss."""
        return (
            self.outer_gamma,
            self.outer_lambda,
            self.outer_g_v,
            self.outer_g_p,
            self.outer_g_e,
            1.0,
        )


# ----------------------------------------------------------------------------
# Replay, learner, actors
# ----------------------------------------------------------------------------
REPLAY_MODES = ("queue", "uniform")


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """`queue`: on-policy FIFO, each trajectory sampled once (IMPALA).
    `uniform`: a small replay sampled uniformly, `samples_per_insert` times on
    average per trajectory."""

    mode: str = "queue"
    max_size: int = 0  # trajectories; 0 = 10 x the learner batch
    samples_per_insert: float = 1.0  # uniform mode only
    min_size: int = 1
    timeout_ms: int = 30_000  # every sample/insert wait is bounded by this
    prefetch_batches: int = 2

    def __post_init__(self):
        check_choice(self, "mode", REPLAY_MODES)
        check_int(self, "max_size", 0)
        check_num(self, "samples_per_insert", 0.0, 1e4, lo_open=True)
        check_int(self, "min_size", 1)
        check_int(self, "timeout_ms", 1)
        check_int(self, "prefetch_batches", 1, 64)


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    batch_size: int = 32  # global batch of trajectories per inner step, split over devices
    num_devices: int = 0  # 0 = all of jax.local_devices()
    publish_every: int = 1  # learner steps between parameter publications
    # Inputs made ahead of the update in a background thread (0: inline, for debugging).
    prefetch_windows: int = 2
    log_every_seconds: float = 10.0
    checkpoint_every_minutes: float = 5.0
    keep_checkpoints: int = 3
    # Seconds the launcher waits for the nodes after a stop request (Ctrl-C,
    # SIGTERM) before it kills them (Launchpad's own default is 10 s); the
    # learner's final checkpoint must fit in it on a busy host.
    stop_grace_s: float = 30.0
    # At the budget the learner holds the program open, at most this long,
    # until the evaluator has logged an episode played with the final
    # parameters: a finished run always ends with an evaluation of what it
    # learned (0: stop at once).
    final_eval_timeout_s: float = 120.0

    def __post_init__(self):
        check_int(self, "batch_size", 1)
        check_int(self, "num_devices", 0)
        if self.num_devices and self.batch_size % self.num_devices:
            fail(
                self,
                "batch_size",
                self.batch_size,
                f"must divide by num_devices={self.num_devices} (each device gets "
                f"batch_size / num_devices trajectories)",
            )
        check_int(self, "publish_every", 1)
        check_int(self, "prefetch_windows", 0, 16)
        check_num(self, "log_every_seconds", 0.0, lo_open=True)
        check_num(self, "checkpoint_every_minutes", 0.0, lo_open=True)
        check_int(self, "keep_checkpoints", 1)
        check_num(self, "stop_grace_s", 1.0, 3600.0)
        check_num(self, "final_eval_timeout_s", 0.0, 3600.0)


@dataclasses.dataclass(frozen=True)
class ActorConfig:
    num_actors: int = 48
    envs_per_actor: int = 1  # environments stepped together in one actor process
    # Overlapped loop: the envs step in `env_batches` batches; while the
    # emulators run one batch, the policy acts on and Reverb takes another.
    # False: the serial loop (step all, act, write), for debugging.
    overlap: bool = True
    env_batches: int = 1
    param_refresh_steps: int = 100  # actor steps between parameter pulls
    env_threads: int = 1
    evaluator: bool = True
    eval_episodes_per_round: int = 1
    eval_pause_seconds: float = 0.0  # evaluator idles this long between episodes (small hosts)
    # Nice value of the actor and evaluator processes (0-19), set by the
    # launcher as it spawns them: on a host with fewer free cores than
    # actors, the learner, replay and counter get the CPU they ask for first,
    # from start-up on (48 processes importing JAX and TensorFlow at once).
    nice: int = 0
    # Queue replay: while the table is full, an actor waits (polling with
    # back-off) instead of stepping out unrolls the FIFO remover would drop,
    # so a learner slower than its actors keeps the CPU they would burn.
    wait_when_full: bool = True
    # On a host with fewer than 2 cores per actor process, or too little
    # memory, the launcher packs the actors into fewer processes of more envs,
    # every env kept (launch/host.py).
    fit_host: bool = True

    def __post_init__(self):
        check_int(self, "num_actors", 0, 4096)
        check_int(self, "envs_per_actor", 1, 1024)
        check_bool(self, "overlap")
        check_int(self, "env_batches", 1, 1024)
        if self.overlap and self.envs_per_actor % self.env_batches:
            raise ConfigError(
                f"actors.env_batches={self.env_batches} must divide actors.envs_per_actor="
                f"{self.envs_per_actor} (the overlapped loop steps equal batches); or set "
                f"actors.overlap=false for the serial loop"
            )
        check_int(self, "param_refresh_steps", 1)
        check_int(self, "env_threads", 1, 256)
        check_bool(self, "evaluator")
        check_int(self, "eval_episodes_per_round", 1)
        check_num(self, "eval_pause_seconds", 0.0, 86_400.0)
        check_int(self, "nice", 0, 19)
        check_bool(self, "wait_when_full")
        check_bool(self, "fit_host")

    @property
    def env_batch_size(self) -> int:
        """Envs the policy acts on at once (all of them in the serial loop)."""
        return self.envs_per_actor // self.env_batches if self.overlap else self.envs_per_actor


# ----------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    root: str = "runs"
    seed: int = 0
    max_frames: int = 200_000_000  # emulator frames (agent steps x frame_skip), all actors
    max_learner_steps: int = 0  # 0 = no step budget
    env: EnvConfig = EnvConfig()
    network: NetworkConfig = NetworkConfig()
    agent: AgentConfig = AgentConfig()
    meta: MetaConfig = MetaConfig()
    replay: ReplayConfig = ReplayConfig()
    learner: LearnerConfig = LearnerConfig()
    actors: ActorConfig = ActorConfig()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            fail(self, "name", self.name, "must be a non-empty string without '/'")
        if not isinstance(self.root, str) or not self.root:
            fail(self, "root", self.root, "must be a non-empty path")
        check_int(self, "seed", 0)
        check_int(self, "max_frames", 1)
        check_int(self, "max_learner_steps", 0)
        if self.agent.kind == "impala" and self.meta.objective != "none":
            fail(
                self,
                "meta.objective",
                self.meta.objective,
                "must be 'none' with agent.kind='impala' (meta-learning needs agent.kind='stacx')",
            )

    @property
    def run_dir(self) -> str:
        return os.path.join(self.root, self.name)

    def budget_reached(self, frames: float, learner_steps: float) -> bool:
        """The run's stopping test (`budget_reached` with this run's budget)."""
        return budget_reached(frames, learner_steps, self.max_frames, self.max_learner_steps)

    def budget_share(self, frames: float, learner_steps: float) -> float:
        """The share of the budget done, in [0, 1]: of the frames, or of the
        learner steps when that budget is set and nearer its end."""
        share = frames / self.max_frames
        if self.max_learner_steps:
            share = max(share, learner_steps / self.max_learner_steps)
        return min(1.0, max(0.0, share))

    def to_dict(self) -> dict:
        """Plain JSON-ready nested dict (tuples become lists); `from_dict` inverts it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Any) -> "RunConfig":
        """RunConfig from `to_dict`'s output, every field validated; ConfigError
        names an unknown or malformed key."""
        return _from_dict(cls, data, "")

    @property
    def agent_name(self) -> str:
        """'impala', 'stacx' (MG), 'bmg', or 'stacx-fixed' (no meta-learning)."""
        if self.agent.kind == "impala":
            return "impala"
        return {"mg": "stacx", "bmg": "bmg", "mixed": "stacx-mixed", "none": "stacx-fixed"}[
            self.meta.objective
        ]

    @property
    def inner_steps_per_update(self) -> int:
        """Inner optimiser steps (= new batches consumed) per learner update."""
        return self.meta.K if self.meta.objective != "none" else 1

    @property
    def inner_steps_budget(self) -> int:
        """Inner optimiser steps the run's budget buys: the horizon of the
        learning-rate decay. One step consumes batch x T agent steps, each
        trajectory sampled `samples_per_insert` times in uniform mode (once in
        queue mode); a learner-step budget, when set and smaller, wins."""
        spi = self.replay.samples_per_insert if self.replay.mode == "uniform" else 1.0
        frames_per_batch = (
            self.learner.batch_size * self.agent.unroll_length * self.env.frames_per_step
        )
        steps = math.ceil(self.max_frames * spi / frames_per_batch)
        if self.max_learner_steps:
            steps = min(steps, self.max_learner_steps * self.inner_steps_per_update)
        return max(1, steps)


def budget_reached(
    frames: float, learner_steps: float, max_frames: int, max_learner_steps: int = 0
) -> bool:
    """The stopping test of every run: frames >= max_frames, or learner steps
    >= max_learner_steps when that budget is set (0 = none)."""
    if frames >= max_frames:
        return True
    return bool(max_learner_steps) and learner_steps >= max_learner_steps


# Fields each actor host may set for itself: where it writes, and how it acts.
HOST_LOCAL_FIELDS = ("root", "actors")


def shared_config(cfg: RunConfig) -> dict:
    """What every host feeding one run must agree on: the config without
    `HOST_LOCAL_FIELDS` (the trajectories' meaning: game, network, unroll...)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in HOST_LOCAL_FIELDS}


def save_config(cfg: RunConfig, path: str) -> None:
    """Write `cfg.to_dict()` as JSON, atomically (a reader never sees half a file)."""
    write_json_atomic(path, cfg.to_dict())


def load_config(path: str) -> RunConfig:
    """The RunConfig a `save_config` file holds; ConfigError if it cannot be read."""
    return RunConfig.from_dict(read_json(path, f"config file {path!r}", ConfigError))


def _from_dict(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {where or cls.__name__}={data!r} is not allowed: "
            f"expected a mapping of {cls.__name__} fields"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"config key {where}{unknown[0]!r} is not allowed: "
            f"{cls.__name__} has the fields {names}"
        )
    values = {}
    for name, value in data.items():
        t = hints[name]
        if dataclasses.is_dataclass(t):
            value = _from_dict(t, value, f"{where}{name}.")
        elif typing.get_origin(t) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)
