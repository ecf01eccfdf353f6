"""Every command line the README shows parses and validates (nothing starts).

`python -m launch.run`, `launch.sweep` and `experiments.atari_learning.curves` lines
go through the same parsers and config builders as the real programs (the
sweep plans its runs); any other `python -m module` must be importable and
every `make target` must exist in the Makefile.
"""

import dataclasses
import importlib.util
import os
import re
import shlex

import pytest
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands(path=os.path.join(ROOT, "README.md")):
    """`python -m ...` and `make ...` lines of the README's code blocks and
    inline code spans, continuation lines joined, comments dropped."""
    with open(path) as f:
        text = f.read()
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            commands.append(line.split(" #")[0].strip())
    commands += re.findall(
        r"`((?:python -m|make) [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S)
    )
    return [c for c in commands if c.startswith(("python -m ", "make "))]


def check_command(command: str, tmp: str) -> None:
    """Parse and validate one command line as its program would."""
    words = shlex.split(command)
    if words[0] == "make":
        with open(os.path.join(ROOT, "Makefile")) as f:
            targets = set(re.findall(r"^([A-Za-z][\w-]*):", f.read(), re.M))
        wanted = {w for w in words[1:] if "=" not in w}  # VAR=value sets a make variable
        assert wanted <= targets, f"{command!r}: no such make target"
        return
    module, argv = words[2], words[3:]
    if module == "launch.run":
        from launch.run import build_config, define_flags

        fv = flags.FlagValues()
        define_flags(fv)
        fv(["launch.run"] + argv)
        build_config(fv)
    elif module == "launch.sweep":
        from launch.sweep import cli, plan

        args = cli.parse_args(argv)
        cli.validate(args)
        assert plan.plan_runs(args, os.path.join(tmp, "sweep"))
    elif module == "experiments.atari_learning.curves":
        from experiments.atari_learning import curves as atari_learning

        atari_learning.make_run_config(atari_learning.parse_args(argv))
    else:
        assert importlib.util.find_spec(module) is not None, f"{command!r}: no module {module}"


COMMANDS = readme_commands()


def test_the_readme_shows_the_main_command_lines():
    modules = {shlex.split(c)[2] for c in COMMANDS if c.startswith("python")}
    assert {"launch.run", "launch.sweep", "experiments.atari_learning.curves"} <= modules, modules
    assert "make test" in COMMANDS and "make debug" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses_and_validates(command, tmp_path):
    check_command(command, str(tmp_path))


def test_a_bad_readme_command_would_fail(tmp_path):
    """The check is not vacuous: a mistyped agent, override or target fails."""
    from configs import ConfigError

    with pytest.raises(ConfigError, match="unknown agent 'bmgg'"):
        check_command("python -m launch.run --agent=bmgg", str(tmp_path))
    with pytest.raises(ConfigError, match="has no field 'LL'"):
        check_command("python -m launch.run --agent=bmg --override=meta.LL=4", str(tmp_path))
    with pytest.raises(AssertionError, match="no such make target"):
        check_command("make tests", str(tmp_path))


def test_config_flag_excludes_the_other_config_flags(tmp_path):
    """`--config` runs exactly the file: combining it with a config flag is an error."""
    from configs import ConfigError, make_config, save_config
    from launch.run import build_config, define_flags

    cfg = make_config("test", "bmg", "Catch", root=str(tmp_path), seed=4)
    path = str(tmp_path / "config.json")
    save_config(cfg, path)
    fv = flags.FlagValues()
    define_flags(fv)
    fv(["launch.run", f"--config={path}"])
    assert build_config(fv) == cfg
    fv = flags.FlagValues()
    define_flags(fv)
    fv(["launch.run", f"--config={path}", "--seed=5"])
    with pytest.raises(ConfigError, match=r"--seed is not allowed with --config="):
        build_config(fv)


def test_memory_warning_names_the_need_and_the_actors_that_fit():
    from configs import make_config
    from launch import host

    full = make_config("full", "bmg", "Pong")  # 48 actors, deep network
    need = 48 * host.ACTOR_GB + host.LEARNER_GB["deep"] + host.OTHER_GB
    assert host.memory_needed_gb(full) == pytest.approx(need)  # 27.4 GB
    assert host.memory_warning(full, 64.0) == ""
    line = host.memory_warning(full, 24.0)
    fit = int((24.0 - host.LEARNER_GB["deep"] - host.OTHER_GB) / host.ACTOR_GB)  # 35
    assert "about 27 GB (48 actor processes" in line and f"--num_actors={fit}" in line
    assert host.memory_warning(make_config("debug", "bmg", "Pong"), 24.0) == ""


@pytest.mark.parametrize(
    "cores, memory_gb, processes, envs, batches",
    [
        (2, 23.0, 4, 12, 2),  # this machine: 2 processes per core
        (16, 128.0, 24, 2, 2),  # the lent GPU host: 32 would not divide 48 envs
        (24, 128.0, 48, 1, 1),  # a big host keeps the design card's 48 processes
        # memory: 19 processes (19 x 0.27 + 29 x 0.01 = 5.4 GB) fit beside the learner
        # (5.6 GB spare), 16 divide the envs: 3 each, in one batch (odd)
        (64, 20.0, 16, 3, 1),
    ],
)
def test_actors_are_packed_into_what_the_host_holds_keeping_every_env(
    cores, memory_gb, processes, envs, batches
):
    from configs import make_config
    from launch import host

    full = make_config("full", "bmg", "Pong")
    fitted = host.fit_actors(full, cores, memory_gb)
    a = fitted.actors
    assert (a.num_actors, a.envs_per_actor, a.env_batches) == (processes, envs, batches)
    assert dataclasses.replace(fitted, actors=full.actors) == full  # nothing else changes
    line = host.packing_line(full, fitted, cores, memory_gb)
    assert (line is None) == (processes == 48)
    off = dataclasses.replace(full, actors=dataclasses.replace(full.actors, fit_host=False))
    assert host.fit_actors(off, cores, memory_gb) is off
    debug = make_config("debug", "bmg", "Pong")  # 2 actors of 4 envs fit 2 cores
    assert host.fit_actors(debug, cores, memory_gb) == debug
