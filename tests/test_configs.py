"""Foundation: config validation, presets, overrides, HNS with hand-computed values."""

import subprocess
import sys

import pytest

from configs import (
    ActorConfig,
    AgentConfig,
    ConfigError,
    EnvConfig,
    LearnerConfig,
    MetaConfig,
    NetworkConfig,
    ReplayConfig,
    RunConfig,
    all_games,
    get_game,
    hns,
    make_config,
    mean_hns,
    median_hns,
    suggest_game,
    aggregate_hns,
)


def test_table_has_57_games_with_pong_reference():
    assert len(all_games()) == 57
    pong = get_game("Pong")
    assert (pong.random, pong.human, pong.ale_id) == (-20.7, 14.6, "pong")
    assert get_game("ms_pacman").game == "MsPacman"


def test_hns_hand_computed():
    # (0 - (-20.7)) / (14.6 - (-20.7)) = 20.7 / 35.3 = 0.586402...
    assert hns("Pong", 0.0) == pytest.approx(58.6402266, abs=1e-6)
    assert hns("Pong", 14.6) == pytest.approx(100.0)
    assert hns("Pong", -20.7) == pytest.approx(0.0)
    # Breakout: random 1.7, human 30.5 -> 30.5 points is 100 %, 16.1 is 50 %.
    assert hns("Breakout", 16.1) == pytest.approx(50.0)


def test_median_and_mean_of_hand_made_table():
    per_game = {"A": 10.0, "B": 250.0, "C": 40.0, "D": 100.0}
    assert median_hns(per_game) == pytest.approx(70.0)  # (40 + 100) / 2
    assert mean_hns(per_game) == pytest.approx(100.0)  # 400 / 4
    assert median_hns({"A": 3.0, "B": 1.0, "C": 2.0}) == 2.0
    agg = aggregate_hns({"Pong": 0.0, "Breakout": 16.1, "Boxing": 12.1})
    # Boxing: random 0.1, human 12.1 -> 100 %. HNS = [58.64, 50, 100].
    assert agg["median"] == pytest.approx(58.6402266, abs=1e-6)
    assert agg["mean"] == pytest.approx((58.6402266 + 50 + 100) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="empty"):
        median_hns({})
    with pytest.raises(ValueError, match="non-finite"):
        mean_hns({"A": float("nan")})


def test_unknown_game_suggests_closest():
    with pytest.raises(ConfigError) as e:
        EnvConfig(game="Pongg")
    msg = str(e.value)
    assert "EnvConfig.game='Pongg'" in msg and "did you mean 'Pong'" in msg and "57 games" in msg
    assert suggest_game("breakot") == "Breakout"
    assert suggest_game("spaceinvader") == "SpaceInvaders"
    with pytest.raises(ValueError, match="unknown Atari game 'Zork'"):
        hns("Zork", 1.0)


@pytest.mark.parametrize(
    "make, field, value, allowed",
    [
        (
            lambda: EnvConfig(kind="mujoco"),
            "EnvConfig.kind",
            "'mujoco'",
            "one of ['atari', 'catch']",
        ),
        (lambda: EnvConfig(frame_skip=0), "EnvConfig.frame_skip", "0", "integer in [1, 16]"),
        (
            lambda: EnvConfig(sticky_action_prob=1.5),
            "EnvConfig.sticky_action_prob",
            "1.5",
            "[0.0, 1.0]",
        ),
        (
            lambda: NetworkConfig(kind="huge"),
            "NetworkConfig.kind",
            "'huge'",
            "['small', 'deep', 'tiny']",
        ),
        (lambda: NetworkConfig(channels=()), "NetworkConfig.channels", "()", "non-empty tuple"),
        (lambda: AgentConfig(kind="dqn"), "AgentConfig.kind", "'dqn'", "['impala', 'stacx']"),
        (
            lambda: AgentConfig(learning_rate=-0.1),
            "AgentConfig.learning_rate",
            "-0.1",
            "(0.0, 10.0]",
        ),
        (
            lambda: AgentConfig(kind="impala", num_heads=3),
            "AgentConfig.num_heads",
            "3",
            "must be 1",
        ),
        (lambda: AgentConfig(gamma=1.2), "AgentConfig.gamma", "1.2", "[0.0, 1.0]"),
        (
            lambda: MetaConfig(objective="maml"),
            "MetaConfig.objective",
            "'maml'",
            "['none', 'mg', 'bmg', 'mixed']",
        ),
        (lambda: MetaConfig(K=0), "MetaConfig.K", "0", "integer in [1, 64]"),
        (lambda: MetaConfig(L=0), "MetaConfig.L", "0", "integer in [1, 64]"),
        (
            lambda: MetaConfig(matching="cosine"),
            "MetaConfig.matching",
            "'cosine'",
            "['l2', 'kl', 'kl_v']",
        ),
        (
            lambda: MetaConfig(target_step="adam"),
            "MetaConfig.target_step",
            "'adam'",
            "['sgd', 'rms']",
        ),
        (
            lambda: ReplayConfig(mode="prioritized"),
            "ReplayConfig.mode",
            "'prioritized'",
            "['queue', 'uniform']",
        ),
        (lambda: ReplayConfig(timeout_ms=0), "ReplayConfig.timeout_ms", "0", ">= 1"),
        (lambda: LearnerConfig(batch_size=0), "LearnerConfig.batch_size", "0", ">= 1"),
        (lambda: ActorConfig(num_actors=-1), "ActorConfig.num_actors", "-1", "[0, 4096]"),
        (lambda: ActorConfig(evaluator="yes"), "ActorConfig.evaluator", "'yes'", "True or False"),
        (
            lambda: EnvConfig(full_action_space=1),
            "EnvConfig.full_action_space",
            "1",
            "True or False",
        ),
        (lambda: RunConfig(max_frames=-5), "RunConfig.max_frames", "-5", ">= 1"),
        (lambda: RunConfig(name="a/b"), "RunConfig.name", "'a/b'", "without '/'"),
        (
            lambda: RunConfig(meta=MetaConfig(objective="bmg")),
            "RunConfig.meta.objective",
            "'bmg'",
            "agent.kind='stacx'",
        ),
    ],
)
def test_every_validation_error_names_field_value_and_allowed(make, field, value, allowed):
    with pytest.raises(ConfigError) as e:
        make()
    msg = str(e.value)
    assert f"{field}={value}" in msg, msg
    assert allowed in msg, msg


def test_presets_and_agents():
    debug = make_config("debug", "bmg", "Pong")
    assert debug.actors.num_actors == 2 and debug.network.kind == "small"
    assert (debug.agent.kind, debug.agent.num_heads, debug.meta.objective) == ("stacx", 3, "bmg")
    full = make_config("full", "impala", "Breakout")
    assert full.actors.num_actors == 48 and full.network.kind == "deep"
    assert full.network.channels == (16, 32, 32) and full.network.hidden == 256
    assert (full.agent.gamma, full.agent.g_v, full.agent.g_e) == (0.99, 0.5, 0.01)
    assert full.meta.objective == "none" and full.agent_name == "impala"
    stacx = make_config("full", "stacx", "Pong")
    assert stacx.meta.outer_values == (0.995, 1.0, 0.5, 1.0, 0.01, 1.0)
    assert stacx.agent_name == "stacx" and stacx.agent.init_logit == 4.6
    with pytest.raises(ConfigError, match=r"unknown preset 'fast'.*\['debug', 'full', 'test'\]"):
        make_config("fast")
    with pytest.raises(ConfigError, match=r"unknown agent 'dqn'.*\['impala', 'stacx', 'bmg'\]"):
        make_config("debug", "dqn")
    with pytest.raises(ConfigError, match="Pongg.*did you mean 'Pong'"):
        make_config("debug", "impala", "Pongg")


def test_overrides_parse_types_and_reject_unknown_fields():
    cfg = make_config(
        "debug",
        "bmg",
        overrides=[
            "meta.L=4",
            "max_frames=1e6",
            "network.channels=8,16",
            "actors.evaluator=false",
            "agent.learning_rate=3e-4",
            "meta.matching=kl_v",
        ],
    )
    assert cfg.meta.L == 4 and cfg.max_frames == 1_000_000
    assert cfg.network.channels == (8, 16) and cfg.actors.evaluator is False
    assert cfg.agent.learning_rate == 3e-4 and cfg.meta.matching == "kl_v"
    mixed = ["meta.objective=mixed", "meta.K=2", "meta.mix_weights=0.25,0.75"]
    assert make_config("debug", "stacx", overrides=mixed).meta.mix_weights == (0.25, 0.75)
    with pytest.raises(ConfigError, match="MetaConfig has no field 'Q'"):
        make_config(overrides=["meta.Q=1"])
    with pytest.raises(ConfigError, match=r"meta.K='two'.*cannot parse it as int"):
        make_config(overrides=["meta.K=two"])
    with pytest.raises(ConfigError, match=r"MetaConfig.K=0 is not allowed"):
        make_config(overrides=["meta.K=0"])
    with pytest.raises(ConfigError, match="expected section.field=value"):
        make_config(overrides=["meta.K"])


def test_configs_are_frozen():
    cfg = make_config()
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]


def test_importing_configs_has_no_side_effects():
    code = (
        "import sys, threading; import configs; configs.make_config('full', 'bmg');"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('jax', 'jaxlib', 'tensorflow', 'reverb', 'launchpad', 'numpy', 'haiku')];"
        "assert not heavy, heavy; assert threading.active_count() == 1;"
        "print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "clean"


def test_derived_budget_step_size_and_agent_name():
    # debug: B = 8, T = 20, 4 frames per step, 2 samples per insert:
    # 10M frames -> 10e6 * 2 / (8 * 20 * 4) = 31,250 inner steps (the lr-decay horizon).
    cfg = make_config("debug", "impala", overrides=["max_frames=10e6"])
    assert cfg.inner_steps_budget == 31_250
    # queue replay samples once; a smaller learner-step budget wins (K inner steps each).
    full = make_config("full", "stacx", overrides=["max_frames=1e6", "max_learner_steps=100"])
    assert full.env.frames_per_step == 4 and full.inner_steps_budget == 100
    catch = make_config("test", "impala", "catch", max_frames=4000)  # B = 16 for Catch
    assert catch.env.frames_per_step == 1 and catch.inner_steps_budget == 25  # 4000 / (16 * 10)
    # BMG's grounded step: a multiple of the inner learning rate per kind, or explicit.
    bmg = make_config("full", "bmg")
    assert (bmg.meta.K, bmg.meta.L, bmg.meta.target_step, bmg.meta.matching) == (
        1,
        4,
        "rms",
        "kl_v",
    )
    assert bmg.meta.grounded_step_size(6e-4) == 6e-4
    assert MetaConfig(target_step="sgd", target_step_size=0.3).grounded_step_size(6e-4) == 0.3
    mixed = make_config("debug", "stacx", overrides=["meta.objective=mixed"])
    assert mixed.agent_name == "stacx-mixed"
    with pytest.raises(
        ConfigError,
        match=r"AgentConfig.lr_schedule='cosine' is not allowed: "
        r"must be one of \['linear', 'constant'\]",
    ):
        AgentConfig(lr_schedule="cosine")


def test_catch_is_a_game_of_its_own():
    cfg = make_config("debug", "impala", "Catch")
    assert (cfg.env.kind, cfg.env.game, cfg.env.label, cfg.name) == (
        "catch",
        "Catch",
        "Catch",
        "Catch-impala-debug",
    )
    assert (cfg.env.frame_size, cfg.env.frame_stack, cfg.network.kind) == (10, 1, "tiny")
    assert make_config("debug", "impala", "Pong").env.label == "Pong"


def test_config_round_trips_through_its_file(tmp_path):
    from configs import load_config, save_config

    cfg = make_config(
        "full",
        "bmg",
        "Breakout",
        name="b",
        root=str(tmp_path),
        seed=3,
        max_frames=1000,
        max_learner_steps=7,
        num_actors=5,
        overrides=["network.channels=8,8", "meta.mix_weights=()"],
    )
    path = str(tmp_path / "config.json")
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert (cfg.seed, cfg.max_frames, cfg.max_learner_steps, cfg.actors.num_actors) == (
        3,
        1000,
        7,
        5,
    )
    assert cfg.network.channels == (8, 8)
    bad = cfg.to_dict()
    bad["learner"]["batchsize"] = 4
    with pytest.raises(
        ConfigError,
        match=r"config key learner.'batchsize' is not allowed: "
        r"LearnerConfig has the fields \['batch_size'",
    ):
        RunConfig.from_dict(bad)
    bad = cfg.to_dict()
    bad["learner"]["batch_size"] = 0
    with pytest.raises(ConfigError, match=r"LearnerConfig.batch_size=0 is not allowed"):
        RunConfig.from_dict(bad)
    with pytest.raises(ConfigError, match=r"config file .*nope.json' is not allowed: cannot read"):
        load_config(str(tmp_path / "nope.json"))


def test_budget_test_and_meta_dim_are_derived_once():
    cfg = make_config("test", "stacx", max_frames=100, max_learner_steps=5)
    assert not cfg.budget_reached(99, 4)
    assert cfg.budget_reached(100, 0) and cfg.budget_reached(0, 5)
    assert not make_config("test", "stacx", max_frames=100).budget_reached(99, 10**9)
    assert cfg.agent.meta_dim == 6 * 3 and make_config("test", "impala").agent.meta_dim == 0
