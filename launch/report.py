"""Results of a sweep: `python -m launch.report runs/sweep [--out=DIR] [--last=5]`.

Writes into `--out` (default `<sweep>/report/`):
  report.md              summary and per-game table (Markdown)
  per_game.csv           one row per game of the plan
  per_run.csv            one row per (game, seed) run
  hns_per_game.png       HNS per game, sorted, symmetric-log axis, with 100 %, the
                         published IMPALA / STACX medians and this sweep's median
  learning_curves.png    HNS vs frames, one panel per game, one line per seed

Definitions (also printed in report.md):
* final score of a run: mean return of its last `--last` evaluator episodes
  (logs/evaluator.csv; unclipped returns; fewer if the run has fewer);
* HNS = 100 * (score - random) / (human - random), configs/games.py;
* per game, the seeds that have results are averaged first (score and HNS);
  the median and mean are then taken across games;
* a game of the plan with no evaluator episode in any seed is "missing": shown,
  never counted as zero, and left out of the median and mean;
* beside them, the interquartile mean (IQM), median and mean of the HNS over
  runs x games with 95 % stratified-bootstrap CIs (rliable; `launch.aggregate`),
  on the first n seeds of every scored game, n the fewest any of them has.

The plan is the sweep's manifest (`sweep.json`, every game any sweep on this
folder was asked to run); without one, the run folders found in the folder.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import statistics
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from configs.games import all_games, hns, reference_table
from launch.aggregate import interval_estimates
from launch.run_folder import RunFolder

PUBLISHED_MEDIANS = (("IMPALA", 191.8), ("STACX", 364.0))  # median HNS %, Atari-57, 200M frames
DEFAULT_LAST = 5
ATARI = frozenset(reference_table())


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------
def find_plan(sweep_dir: str):
    """(manifest or None, plan games, runs [{game, seed, name, run_dir, budget...}])."""
    manifest = None
    path = os.path.join(sweep_dir, "sweep.json")
    if os.path.exists(path):
        with open(path) as f:
            manifest = json.load(f)
    runs = []
    if manifest:
        for r in manifest.get("runs", []):
            runs.append(
                dict(
                    game=r["game"],
                    seed=int(r["seed"]),
                    name=r["name"],
                    run_dir=os.path.join(sweep_dir, r.get("run_dir", r["name"])),
                    max_frames=r.get("max_frames"),
                    max_learner_steps=r.get("max_learner_steps", 0),
                )
            )
        games = list(manifest.get("games", []))
    else:
        for entry in sorted(os.listdir(sweep_dir)):
            run_dir = os.path.join(sweep_dir, entry)
            if not os.path.isdir(run_dir):
                continue
            folder = RunFolder(run_dir)
            game = folder.game()
            if game is None:
                continue
            runs.append(
                dict(
                    game=game,
                    seed=folder.sweep_seed(),
                    name=entry,
                    run_dir=run_dir,
                    max_frames=None,
                    max_learner_steps=0,
                )
            )
        games = []
    if not manifest:  # the reference table's (alphabetical) order
        order = {g: i for i, g in enumerate(all_games())}
        runs.sort(key=lambda r: (order[r["game"]], r["seed"], r["name"]))
    for r in runs:
        if r["game"] not in games:
            games.append(r["game"])
    return manifest, games, runs


# ----------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------
def _hns(game: str, score: float) -> Optional[float]:
    """HNS on an Atari game; None on Catch (a pipeline check, no human score)."""
    return hns(game, score) if game in ATARI else None


def summarize(sweep_dir: str, last: int = DEFAULT_LAST) -> Dict:
    """Per-run and per-game results, and the median / mean HNS across games."""
    manifest, games, runs = find_plan(sweep_dir)
    per_run = [_run_row(run, last) for run in runs]
    per_game = [_game_row(game, [r for r in per_run if r["game"] == game]) for game in games]
    scored = {g["game"]: g["hns"] for g in per_game if g["hns"] is not None}
    return dict(
        aggregate=_aggregate(per_game),
        sweep_dir=os.path.abspath(sweep_dir),
        manifest=manifest,
        last=last,
        per_run=per_run,
        per_game=per_game,
        median=statistics.median(scored.values()) if scored else None,
        mean=statistics.fmean(scored.values()) if scored else None,
        games_with_results=len(scored),
        games_planned=len(per_game),
        missing=[g["game"] for g in per_game if g["hns"] is None],
    )


def _run_row(run: Dict, last: int) -> Dict:
    """One run of the plan: its evaluation curve and the mean of its `last` episodes."""
    folder = RunFolder(run["run_dir"])
    episodes = folder.episodes(run["game"])
    progress = folder.progress(run.get("max_frames"), run.get("max_learner_steps") or 0)
    row = dict(
        game=run["game"],
        seed=run["seed"],
        name=run["name"],
        run_dir=run["run_dir"],
        episodes=len(episodes),
        final_score=None,
        hns=None,
        frames=None,
        finished=progress.finished,
        curve=[(f, _hns(run["game"], r)) for f, r in episodes if run["game"] in ATARI],
    )
    if episodes:
        tail = episodes[-last:]
        row["final_score"] = statistics.fmean(r for _, r in tail)
        row["hns"] = _hns(run["game"], row["final_score"])
        row["frames"] = tail[-1][0]
    return row


def _game_row(game: str, mine: List[Dict]) -> Dict:
    """One game over its seeds' rows: means of those with results, and its status."""
    done = [r for r in mine if r["final_score"] is not None]
    g = dict(
        game=game,
        seeds=len(mine),
        seeds_with_results=len(done),
        seeds_finished=sum(r["finished"] for r in mine),
        final_score=None,
        hns=None,
        frames=None,
        hns_per_seed=[],
    )
    if done:
        g["final_score"] = statistics.fmean(r["final_score"] for r in done)
        g["frames"] = statistics.fmean(r["frames"] for r in done)
        if game in ATARI:
            g["hns"] = statistics.fmean(r["hns"] for r in done)
            g["hns_per_seed"] = [(r["seed"], r["hns"]) for r in done]
    if not done:
        g["status"] = "missing"
    elif mine and g["seeds_finished"] == len(mine):
        g["status"] = "finished"
    else:
        g["status"] = "in progress"
    return g


def _aggregate(per_game: List[Dict]) -> Optional[Dict]:
    """IQM, median and mean HNS with bootstrap CIs over [seeds, games]: the
    first n seeds (by seed) of every game with results, n the fewest any has."""
    scored = [g for g in per_game if g["hns_per_seed"]]
    if not scored:
        return None
    n = min(len(g["hns_per_seed"]) for g in scored)
    matrix = [[h for _, h in sorted(g["hns_per_seed"])[:n]] for g in scored]
    return interval_estimates({"hns": np.array(matrix).T})["hns"]


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------
def _num(v: Optional[float], fmt: str = "{:.1f}") -> str:
    return "" if v is None else fmt.format(v)


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.1f} %"


def definitions(last: int) -> List[str]:
    return [
        f"Final score of a run: mean return of its last {last} evaluator episodes "
        f"(unclipped; all of them if it has fewer). HNS = 100 x (score - random) / "
        f"(human - random).",
        "Per game the seeds with results are averaged first; the median and mean are then "
        "taken across games. Games with no evaluator episode yet are missing: shown, not "
        "counted as zero, and left out of the median and mean.",
    ]


GAME_COLUMNS = "game status seeds seeds_with_results seeds_finished final_score hns frames"
RUN_COLUMNS = "game seed name finished episodes final_score hns frames run_dir"


def _write_csv(path: str, header: List[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_csvs(s: Dict, out: str) -> List[str]:
    game_path, run_path = os.path.join(out, "per_game.csv"), os.path.join(out, "per_run.csv")

    def scores(row):
        return [
            _num(row["final_score"], "{:.6g}"),
            _num(row["hns"], "{:.6g}"),
            _num(row["frames"], "{:.0f}"),
        ]

    _write_csv(
        game_path,
        GAME_COLUMNS.split() + ["hns_per_seed"],
        (
            [g["game"], g["status"], g["seeds"], g["seeds_with_results"], g["seeds_finished"]]
            + scores(g)
            + [";".join(f"{seed}:{h:.6g}" for seed, h in g["hns_per_seed"])]
            for g in s["per_game"]
        ),
    )
    _write_csv(
        run_path,
        RUN_COLUMNS.split(),
        (
            [r["game"], r["seed"], r["name"], int(r["finished"]), r["episodes"]]
            + scores(r)
            + [os.path.relpath(r["run_dir"], s["sweep_dir"])]
            for r in s["per_run"]
        ),
    )
    return [game_path, run_path]


def write_markdown(s: Dict, out: str, images: Sequence[str]) -> str:
    m = s["manifest"] or {}
    lines = [f"# Sweep report: {os.path.basename(s['sweep_dir'])}", ""]
    lines.append(
        f"Sweep folder `{s['sweep_dir']}`"
        + (
            f"; agent `{m.get('agent')}`, preset `{m.get('preset')}`, "
            f"{m.get('max_frames'):,} frames per run"
            if m.get("max_frames")
            else ""
        )
        + (f" or {m['max_learner_steps']:,} learner steps" if m.get("max_learner_steps") else "")
        + f". Made {datetime.datetime.now().isoformat(timespec='seconds')}."
    )
    lines.append("")
    lines += [f"* {d}" for d in definitions(s["last"])]
    lines.append("")
    missing = s["missing"]
    lines.append(
        f"**Median HNS {_pct(s['median'])}**, mean HNS {_pct(s['mean'])}, over "
        f"{s['games_with_results']} of {s['games_planned']} games"
        + (f" ({len(missing)} missing: {', '.join(missing)})" if missing else "")
        + ". Published medians (57 games, 200M frames): "
        + ", ".join(f"{name} {v:g} %" for name, v in PUBLISHED_MEDIANS)
        + "."
    )
    lines.append("")
    a = s.get("aggregate")
    if a:
        lines.append(
            f"Over {a['runs']} seed(s) x {a['games']} game(s), 95 % bootstrap CIs: "
            + ", ".join(
                f"{stat} HNS {a[stat]:.1f} % [{a[stat + '_ci'][0]:.1f}, {a[stat + '_ci'][1]:.1f}]"
                for stat in ("iqm", "median", "mean")
            )
            + "."
        )
        lines.append("")
    lines.append(
        "| game | status | seeds with results | final score | HNS % | HNS % per seed | frames |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for g in s["per_game"]:
        seeds = ", ".join(f"{h:.1f}" for _, h in g["hns_per_seed"])
        lines.append(
            f"| {g['game']} | {g['status']} | {g['seeds_with_results']}/{g['seeds']} | "
            f"{_num(g['final_score']) or 'missing'} | {_num(g['hns']) or 'missing'} | "
            f"{seeds} | {_num(g['frames'], '{:,.0f}')} |"
        )
    lines.append("")
    for img in images:
        lines.append(f"![{os.path.splitext(os.path.basename(img))[0]}]({os.path.basename(img)})")
        lines.append("")
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend. Imported when a plot is
    drawn, so reading results (and the modules that import this one) does not
    load matplotlib."""
    import matplotlib  # noqa: PLC0415 (matplotlib: only to plot)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (matplotlib: only to plot)

    return plt


def plot_bars(s: Dict, path: str) -> str:
    plt = pyplot()

    scored = sorted((g for g in s["per_game"] if g["hns"] is not None), key=lambda g: g["hns"])
    missing = [g for g in s["per_game"] if g["hns"] is None]
    rows = missing + scored  # bottom to top: missing, then lowest to highest HNS
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.22 * max(len(rows), 1)))
    ys = range(len(rows))
    values = [g["hns"] if g["hns"] is not None else 0.0 for g in rows]
    colors = ["tab:blue" if g["hns"] is not None and g["hns"] >= 100 else "tab:gray" for g in rows]
    bars = ax.barh(list(ys), values, color=colors, height=0.7)
    for bar, g in zip(bars, rows):
        if g["hns"] is None:
            bar.set_visible(False)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(
        [g["game"] + (" (missing)" if g["hns"] is None else "") for g in rows], fontsize=7
    )
    for y, g in zip(ys, rows):
        if g["hns"] is None:
            ax.text(0.0, y, "  missing", va="center", ha="left", fontsize=7, color="tab:red")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.axvline(100, color="black", ls="--", lw=1, label="human (100 %)")
    for (name, v), c in zip(PUBLISHED_MEDIANS, ("tab:orange", "tab:green")):
        ax.axvline(v, color=c, ls=":", lw=1.5, label=f"{name} published median ({v:g} %)")
    if s["median"] is not None:
        ax.axvline(
            s["median"],
            color="tab:red",
            lw=1.5,
            label=f"this sweep: median {s['median']:.1f} % ({s['games_with_results']} games)",
        )
    ax.set_xlabel("HNS % (symmetric log scale: logarithmic beyond ±1 %)")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_title(
        f"HNS per game: final score = mean of the last {s['last']} evaluation episodes, "
        f"seeds averaged",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rolling_mean(values: List[float], window: int) -> List[float]:
    """The mean of each value and the `window - 1` before it (fewer at the start)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def _frames_label(x: float, _pos=None) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:g}{unit}"
    return f"{x:g}"


def plot_curves(s: Dict, path: str) -> str:
    plt = pyplot()
    from matplotlib.lines import Line2D  # noqa: PLC0415 (with pyplot: see `pyplot`)
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415 (matplotlib: only to plot)

    games = s["per_game"]
    seeds = set()
    cols = min(8, max(1, math.ceil(math.sqrt(len(games)))))
    rows = max(1, math.ceil(len(games) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat[len(games) :]:
        ax.axis("off")
    for ax, g in zip(axes.flat, games):
        ax.set_title(g["game"], fontsize=8)
        ax.tick_params(labelsize=6)
        runs = [r for r in s["per_run"] if r["game"] == g["game"] and r["curve"]]
        if not runs:
            ax.text(
                0.5,
                0.5,
                "missing",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="tab:red",
                fontsize=9,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for r in runs:
            xs = [f for f, _ in r["curve"]]
            ax.plot(
                xs,
                rolling_mean([h for _, h in r["curve"]], s["last"]),
                lw=1,
                color=f"C{r['seed'] % 10}",
            )
            seeds.add(r["seed"])
        lo, hi = ax.get_ylim()
        if lo <= 100 <= hi:
            ax.axhline(100, color="black", ls="--", lw=0.6)
        ax.xaxis.set_major_formatter(FuncFormatter(_frames_label))
    handles = [
        Line2D([], [], color=f"C{seed % 10}", label=f"seed {seed}") for seed in sorted(seeds)
    ]
    if handles:
        fig.legend(handles=handles, loc="upper right", fontsize=8, ncol=min(len(handles), 5))
    fig.suptitle(
        f"HNS % vs frames (running mean of {s['last']} evaluation episodes, "
        f"one line per seed; dashed: human level)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(
    sweep_dir: str,
    out: Optional[str] = None,
    last: int = DEFAULT_LAST,
    plots: bool = True,
    summary: Optional[Dict] = None,
) -> Dict:
    """Summarize and write every file; returns the summary plus `files`."""
    s = summary or summarize(sweep_dir, last)
    out = out or os.path.join(sweep_dir, "report")
    os.makedirs(out, exist_ok=True)
    files = write_csvs(s, out)
    images = []
    if plots:
        images = [
            plot_bars(s, os.path.join(out, "hns_per_game.png")),
            plot_curves(s, os.path.join(out, "learning_curves.png")),
        ]
    files.insert(0, write_markdown(s, out, images))
    s["files"] = files + images
    return s


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.report", description=__doc__.split("\n")[0])
    p.add_argument("sweep", help="sweep folder (the --out of launch.sweep)")
    p.add_argument("--out", default=None, help="report folder (default <sweep>/report)")
    p.add_argument(
        "--last",
        type=int,
        default=DEFAULT_LAST,
        help="evaluator episodes averaged for a run's final score",
    )
    p.add_argument("--no_plots", action="store_true", help="tables only")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.last < 1:
        print(f"error: --last={args.last} is not allowed: must be >= 1", file=sys.stderr)
        return 2
    if not os.path.isdir(args.sweep):
        print(f"error: sweep folder {args.sweep!r} does not exist", file=sys.stderr)
        return 2
    try:
        s = summarize(args.sweep, args.last)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot read the sweep in {args.sweep!r}: {e}", file=sys.stderr)
        return 2
    if not s["per_game"]:
        print(
            f"error: {args.sweep!r} has no sweep.json and no run folder with results",
            file=sys.stderr,
        )
        return 2
    s = write_report(args.sweep, args.out, args.last, plots=not args.no_plots, summary=s)
    print(
        f"median HNS {_pct(s['median'])}, mean HNS {_pct(s['mean'])} over "
        f"{s['games_with_results']} of {s['games_planned']} games"
        + (f" ({len(s['missing'])} missing)" if s["missing"] else "")
    )
    for path in s["files"]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
