"""Run many games and seeds: `python -m launch.sweep --games=all --agent=bmg --seeds=3`.

Each (game, seed) is its own `python -m launch.run` program with its own run
folder `<out>/<Game>-seed<k>`, started in its own process group; `--parallel=N`
runs N at once. The sweep writes `<out>/sweep.json` (the plan and every run's
status) and appends each program's output to `<out>/<run>/sweep.log`.

Finished and resumed runs. The truth is on disk: a run is finished when the
counters of its newest readable checkpoint reach the budget (frames >=
max_frames, or learner_steps >= max_learner_steps when that budget is set),
exactly the test the learner uses to stop. When a program reaches its budget
the sweep writes `<run>/sweep-done.json` (the counters and the budget); a run
whose marker, or else whose checkpoint, meets the current budget is skipped.
Anything else is started again and `launch.run` resumes it from its checkpoint
(counters, CSV logs and parameters continue). A larger `--frames` on a later
sweep makes finished runs unfinished again, and they continue.

Ctrl-C (SIGINT) or SIGTERM: the sweep sends SIGTERM to every running program's
process group (the Launchpad launcher and its nodes; the learner writes a last
checkpoint), waits for them (`--stop_timeout`, then SIGKILL; a second Ctrl-C
kills at once), records them as interrupted and exits 130 (SIGINT) / 143.

`--dry_run` builds every game's environment in this process, steps it, measures
the emulator's speed and prints the plan with a time estimate; nothing starts.

`--launcher=slurm` submits the unfinished runs as one Slurm job array instead
(`launch/sweep/slurm.py`): same run folders, same skip-and-resume rule;
`--status` and `--cancel` follow and stop it.

Exit codes: 0 every run finished; 1 a run failed or stopped short of its budget
(or a dry-run environment failed); 2 bad input; 128 + signal when interrupted.

Modules, by job: `plan` (the runs and the manifest), `local` (the local
scheduler), `slurm` (the Slurm launcher), `dry_run`, `cli` (the command line).
"""
