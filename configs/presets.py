"""Presets (`debug`, `full`), agent choices and `section.field=value` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Dict, Iterable, Optional, TypeVar

from configs.config import (
    AgentConfig,
    ActorConfig,
    ConfigError,
    EnvConfig,
    LearnerConfig,
    MetaConfig,
    NetworkConfig,
    ReplayConfig,
    RunConfig,
)

PRESETS = ("debug", "full", "test")
AGENTS = ("impala", "stacx", "bmg")

# BMG's main Atari agent (Flennerhag et al. 2022, section 5.2 and its
# ablation; each value and its source in docs/design.md): K = 1 differentiated
# step, L = 4 bootstrap steps, an RMSProp-preconditioned grounded step of one
# inner learning rate, KL & V matching with unit value weight.
# The meta-objective sees the inner step's own batch (`outer_sample=same`), as
# STAC practised it; for BMG no source says which, and at initialisation on
# Pong the acting head's g_p is pushed down less on the same batch than on
# the next one; a seed-0 pair of 10M-frame runs did not favour the next batch
# (docs/design.md, section 3.4).
BMG_META = MetaConfig(
    K=1, L=4, matching="kl_v", target_step="rms", value_match_weight=1.0, outer_sample="same"
)


def _agent_sections(agent: str, meta: MetaConfig) -> tuple:
    """AgentConfig and MetaConfig for `impala`, `stacx` (MG) or `bmg`."""
    if agent == "impala":
        return AgentConfig(kind="impala", num_heads=1), dataclasses.replace(meta, objective="none")
    if agent in ("stacx", "bmg"):
        # STACX: three heads; the fields are the scales of the meta-learned values.
        # g_v = 0.5 in our 0.5 * (v_s - V)^2 form is STAC's 0.25 on (v_s - V)^2.
        stacx = AgentConfig(
            kind="stacx", num_heads=3, gamma=1.0, lambda_=1.0, g_v=0.5, g_p=1.0, g_e=0.01, alpha=1.0
        )
        objective = "mg" if agent == "stacx" else "bmg"
        return stacx, dataclasses.replace(meta, objective=objective)
    raise ConfigError(f"unknown agent {agent!r}: allowed agents are {list(AGENTS)}")


CATCH = "Catch"


def _catch(cfg: RunConfig) -> RunConfig:
    """The built-in Catch game (10x5 grid rendered at 10x10, one frame): a tiny
    network and a faster optimiser, so the whole program learns it in about a
    minute on 2 cores (measured: eval return -0.6 -> 1.0 in 600 learner steps)."""
    return dataclasses.replace(
        cfg,
        env=dataclasses.replace(cfg.env, kind="catch", game=CATCH, frame_size=10, frame_stack=1),
        network=dataclasses.replace(cfg.network, kind="tiny", hidden=64),
        agent=dataclasses.replace(cfg.agent, learning_rate=3e-3),
        learner=dataclasses.replace(cfg.learner, batch_size=16),
    )


def _full(agent: str, env: EnvConfig) -> RunConfig:
    """Published IMPALA (deep) / STACX / BMG Atari settings (docs/design.md)."""
    agent_cfg, meta = _agent_sections(agent, BMG_META)
    return RunConfig(
        max_frames=200_000_000,
        env=env,
        network=NetworkConfig(kind="deep", channels=(16, 32, 32), blocks_per_section=2, hidden=256),
        agent=agent_cfg,
        meta=meta,
        replay=ReplayConfig(mode="queue"),
        # A stop waits for the update in flight: BMG on the deep network takes
        # about 21 s per update on 2 CPU cores, and then the checkpoint is written.
        learner=LearnerConfig(batch_size=32, checkpoint_every_minutes=5.0, stop_grace_s=60.0),
        # 48 actor processes and the learner on one host: the actors yield the
        # CPU to the learner where cores are fewer than processes.
        actors=ActorConfig(num_actors=48, envs_per_actor=1, param_refresh_steps=100, nice=19),
    )


def _small(tiny: bool, agent: str, env: EnvConfig) -> RunConfig:
    """debug: one game on 2 CPU cores (learns Pong in 10M frames; `make debug`
    runs its 250k-frame default in a few minutes). test (`tiny`): seconds, for
    end-to-end tests. Each debug value and its source: docs/design.md."""
    meta = dataclasses.replace(BMG_META, L=2) if tiny else BMG_META
    agent_cfg, meta = _agent_sections(agent, meta)
    # debug: RMSProp eps 1e-5 instead of IMPALA's 0.01, and a constant
    # learning rate (docs/design.md section 4, with the runs that chose them).
    agent_cfg = dataclasses.replace(
        agent_cfg,
        unroll_length=10 if tiny else 20,
        rms_eps=0.01 if tiny else 1e-5,
        lr_schedule="linear" if tiny else "constant",
    )
    return RunConfig(
        max_frames=40_000 if tiny else 250_000,
        env=env,
        network=NetworkConfig(
            kind="tiny" if tiny else "small",
            channels=(16, 32),
            hidden=32 if tiny else 256,
            meta_embedding=8,
        ),
        agent=agent_cfg,
        meta=meta,
        # debug: a small uniform replay, each unroll sampled twice on average
        # (the rate limiter keeps actors and learner in step on 2 cores).
        replay=ReplayConfig(
            mode="queue" if tiny else "uniform",
            samples_per_insert=1.0 if tiny else 2.0,
            timeout_ms=60_000,
        ),
        learner=LearnerConfig(
            batch_size=4 if tiny else 8, log_every_seconds=5.0, checkpoint_every_minutes=1.0
        ),
        actors=ActorConfig(
            num_actors=2,
            envs_per_actor=4,
            env_batches=2,
            param_refresh_steps=10 if tiny else 20,
            eval_pause_seconds=0.0 if tiny else 15.0,
        ),
    )


def make_config(
    preset: str = "debug",
    agent: str = "impala",
    game: str = "Pong",
    name: Optional[str] = None,
    overrides: Iterable[str] = (),
    *,
    root: Optional[str] = None,
    seed: Optional[int] = None,
    max_frames: Optional[int] = None,
    max_learner_steps: Optional[int] = None,
    num_actors: Optional[int] = None,
) -> RunConfig:
    """The one path to a validated RunConfig: a preset, an agent and a game
    (one of the 57, or 'Catch'), then `overrides`, strings `section.field=value`
    (e.g. `learner.batch_size=16`, `meta.L=4`), then the keyword fields that
    the command lines name directly. `name` defaults to `<game>-<agent>-<preset>`.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: allowed presets are {list(PRESETS)}")
    if agent not in AGENTS:
        raise ConfigError(f"unknown agent {agent!r}: allowed agents are {list(AGENTS)}")
    catch = isinstance(game, str) and game.lower() == CATCH.lower()
    if catch:
        game = CATCH
    env = EnvConfig(kind="catch" if catch else "atari", game=game)
    cfg = _full(agent, env) if preset == "full" else _small(preset == "test", agent, env)
    cfg = dataclasses.replace(cfg, name=name or f"{game}-{agent}-{preset}")
    if catch:
        cfg = _catch(cfg)
    cfg = apply_overrides(cfg, overrides)
    fields: Dict[str, Any] = {
        k: v
        for k, v in (
            ("root", root),
            ("seed", seed),
            ("max_frames", max_frames),
            ("max_learner_steps", max_learner_steps),
        )
        if v is not None
    }
    if fields:
        cfg = dataclasses.replace(cfg, **fields)
    if num_actors is not None:
        cfg = dataclasses.replace(
            cfg, actors=dataclasses.replace(cfg.actors, num_actors=num_actors)
        )
    return cfg


def parse_count(flag: str, text: str, example: str, minimum: int = 1) -> int:
    """A whole number >= `minimum` from a command-line string such as '2e5'."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= minimum or value != int(value):
        what = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"
        raise ConfigError(f"{flag}={text!r} is not allowed: must be {what}, e.g. {example}")
    return int(value)


def _coerce_item(args: tuple) -> Any:
    """The parser of a `Tuple[X, ...]` field's items: float or int."""
    return float if args and args[0] is float else int


def _coerce(text: str, annotation: Any, where: str) -> Any:
    """Parse a command-line string into the type of a dataclass field
    (`Optional[X]`: 'none' is None, anything else an X)."""
    t = annotation if not isinstance(annotation, str) else eval(annotation, vars(typing))
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        if text.strip().lower() == "none":
            return None
        t = next(a for a in args if a is not type(None))
        origin = typing.get_origin(t)
    try:
        if t is bool:
            low = text.strip().lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if t is int:
            v = float(text)  # accepts 1e6
            if v != int(v):
                raise ValueError
            return int(v)
        if t is float:
            return float(text)
        if origin in (tuple, typing.Tuple):
            item = _coerce_item(typing.get_args(t))
            return tuple(item(x) for x in text.replace("(", "").replace(")", "").split(",") if x)
        return text
    except ValueError:
        raise ConfigError(
            f"override {where}={text!r} is not allowed: cannot parse it as "
            f"{getattr(t, '__name__', t)}"
        ) from None


Config = TypeVar("Config")


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Apply `section.field=value` (or `field=value`) strings to a frozen
    dataclass: RunConfig and its sections, or any other config (e.g. the
    two-colors study's flat TwoColorsConfig, `field=value` only).

    All of them at once: each section is rebuilt (and validated) once with
    every change it gets, so fields checked together may come in any order;
    a key given twice takes its last value."""
    changes: dict = {}
    form = "section.field=value" if _has_sections(cfg) else "field=value"
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not allowed: expected {form}")
        key, text = item.split("=", 1)
        node, path = changes, key.strip().split(".")
        for name in path[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {key.strip()!r} is not allowed: {name!r} is not a section"
                )
        node[path[-1]] = (text.strip(), key.strip())
    return _apply(cfg, changes)


def _has_sections(cfg: Any) -> bool:
    """Whether any field of the dataclass `cfg` is itself a dataclass."""
    return any(dataclasses.is_dataclass(getattr(cfg, f.name)) for f in dataclasses.fields(cfg))


def _apply(obj: Any, changes: dict) -> Any:
    """`obj` with `changes` ({field: (text, key)} or {section: {...}}) applied."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    values = {}
    for name, change in changes.items():
        where = change[1] if isinstance(change, tuple) else f"{name}.*"
        if name not in fields:
            raise ConfigError(
                f"override {where!r} is not allowed: {type(obj).__name__} has no field "
                f"{name!r}; fields are {sorted(fields)}"
            )
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if isinstance(change, tuple):
                raise ConfigError(
                    f"override {where!r} is not allowed: {name!r} is a section; "
                    f"name one of its fields, e.g. {name}.{dataclasses.fields(current)[0].name}"
                )
            values[name] = _apply(current, change)
        elif isinstance(change, dict):
            raise ConfigError(f"override {name!r} is not allowed: {name!r} is not a section")
        else:
            values[name] = _coerce(change[0], fields[name].type, where)
    return dataclasses.replace(obj, **values) if values else obj
