"""Run configuration: frozen dataclasses, presets, the 57-game table and HNS.

Importing this package loads only the Python standard library.
"""

from configs.config import (
    ActorConfig,
    AgentConfig,
    ConfigError,
    EnvConfig,
    HYPER_NAMES,
    LearnerConfig,
    MetaConfig,
    NetworkConfig,
    ReplayConfig,
    RunConfig,
    load_config,
    save_config,
    shared_config,
)
from configs.games import (
    aggregate_hns,
    all_games,
    get_game,
    hns,
    mean_hns,
    median_hns,
    reference_table,
    suggest_game,
)
from configs.presets import AGENTS, PRESETS, apply_overrides, make_config, parse_count

__all__ = [
    "ActorConfig",
    "AgentConfig",
    "ConfigError",
    "EnvConfig",
    "HYPER_NAMES",
    "LearnerConfig",
    "MetaConfig",
    "NetworkConfig",
    "ReplayConfig",
    "RunConfig",
    "load_config",
    "save_config",
    "shared_config",
    "aggregate_hns",
    "all_games",
    "get_game",
    "hns",
    "mean_hns",
    "median_hns",
    "reference_table",
    "suggest_game",
    "AGENTS",
    "PRESETS",
    "apply_overrides",
    "make_config",
    "parse_count",
]
