"""Plot pixax learning curves beside the official DrQ-v2 curves.

    python scripts/plot.py runs/drqv2/cartpole_swingup/2026-11-30_12-00-00 [RUN_DIR ...] \
        --out plot.png [--reference-dir DIR] [--max-frames N] [--title T]

Every run directory holds `config.json` (with "agent" and "task") and `eval.csv` (one row per
evaluation and seed). Runs are grouped by task, one subplot per task. Within a task, all seeds of
all given runs of the same agent are pooled into one curve: the mean over seeds with a 95%
confidence band, mean +- 1.96 * std / sqrt(n). The official DrQ-v2 curve of that task
(`<reference-dir>/dmc_<task>.csv`) is drawn the same way, cut to the frames the pixax runs cover.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

# <repo>/../shared/reference/drqv2-curves, found from this file so the script runs from any cwd.
DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "drqv2-curves"

EVAL_COLUMNS = ("seed", "frame", "episode_reward")  # the eval.csv columns a plot needs
REFERENCE_COLUMNS = ("seed", "frame", "episode_reward")  # the reference columns a plot needs
CONFIDENCE_Z = 1.96  # two-sided 95% normal quantile

# frames_by_seed: one learning curve per seed, {seed key: {frame: episode return}}.
FramesBySeed = Mapping[Hashable, Mapping[int, float]]


def _read_csv_columns(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """Reads a CSV into dicts, stopping with a message if any required column is missing."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise SystemExit(
                f"{what} {path} lacks column(s) {missing}; expected at least {list(required)} "
                f"(found {header})."
            )
        return list(reader)


def _parse_curve_rows(
    rows: Sequence[Mapping[str, str]], path: Path
) -> list[dict[str, int | float]]:
    """Converts seed, frame and episode_reward of CSV rows to numbers, naming the bad line if any."""
    parsed = []
    for line_number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            parsed.append(
                {
                    # int(float(...)) also accepts frames written as "10000.0"
                    "seed": int(float(row["seed"])),
                    "frame": int(float(row["frame"])),
                    "episode_reward": float(row["episode_reward"]),
                }
            )
        except (TypeError, ValueError):
            raise SystemExit(
                f"{path} line {line_number}: seed, frame and episode_reward must be numbers, "
                f"got seed={row['seed']!r}, frame={row['frame']!r}, "
                f"episode_reward={row['episode_reward']!r}."
            ) from None
    return parsed


def load_run(run_dir: str | Path) -> tuple[str, str, list[dict[str, int | float]]]:
    """Reads one run directory; returns (agent, task, rows), each row {seed, frame, episode_reward}."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SystemExit(f"{run_dir} is not a run directory: it does not exist or is not a folder.")
    missing = [name for name in ("eval.csv", "config.json") if not (run_dir / name).is_file()]
    if missing:
        raise SystemExit(
            f"{run_dir} is not a run directory: it has no {' and no '.join(missing)} "
            "(a run directory runs/<agent>/<task>/<timestamp>/ holds config.json and eval.csv)."
        )

    config_path = run_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise SystemExit(f"{config_path} is not valid JSON: {error}.") from None
    if not isinstance(config, dict):
        raise SystemExit(f"{config_path} must hold a JSON object, got {type(config).__name__}.")
    names = {}
    for key in ("agent", "task"):
        value = config.get(key)
        if not isinstance(value, str) or not value:
            raise SystemExit(
                f'{config_path} needs "{key}" as a non-empty string '
                f"(e.g. \"agent\": \"drqv2\", \"task\": \"cartpole_swingup\"), got {value!r}."
            )
        names[key] = value

    eval_path = run_dir / "eval.csv"
    rows = _parse_curve_rows(_read_csv_columns(eval_path, EVAL_COLUMNS, "eval file"), eval_path)
    if not rows:
        raise SystemExit(f"{eval_path} has a header but no evaluation rows yet; nothing to plot.")
    return names["agent"], names["task"], rows


def frames_by_seed(
    rows: Sequence[Mapping[str, int | float]], run_label: Hashable = None
) -> dict[Hashable, dict[int, float]]:
    """Groups rows into one curve per seed, keyed (run_label, seed) so equal seeds of two runs stay apart.

    If a seed has two rows at the same frame (e.g. an evaluation repeated after a resume), the
    later row wins.
    """
    curves: dict[Hashable, dict[int, float]] = {}
    for row in rows:
        curves.setdefault((run_label, int(row["seed"])), {})[int(row["frame"])] = float(
            row["episode_reward"]
        )
    return curves


def mean_and_band(
    curves: FramesBySeed,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and its 95% band at every frame; returns (x, mean, lo, hi), x ascending.

    Seeds evaluated at different frames are aggregated over the union of their frames: each
    frame uses only the seeds evaluated there (n varies per frame). No interpolation, so every
    point is an average of measured returns. The band is mean +- 1.96 * std / sqrt(n) with the
    sample standard deviation (ddof=1); where n = 1 there is no band (lo = hi = mean).
    """
    if not curves:
        raise ValueError("mean_and_band needs at least one seed's curve, got none.")
    frames = sorted(set().union(*(curve.keys() for curve in curves.values())))
    mean, half_width = [], []
    for frame in frames:
        returns = np.array([curve[frame] for curve in curves.values() if frame in curve])
        mean.append(returns.mean())
        n = len(returns)
        half_width.append(CONFIDENCE_Z * returns.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0)
    x, mean_arr, half = np.array(frames), np.array(mean), np.array(half_width)
    return x, mean_arr, mean_arr - half, mean_arr + half


def load_reference(path: str | Path) -> dict[Hashable, dict[int, float]]:
    """Reads an official curve file (columns ,agent,task,seed,frame,episode_reward,hour); {seed: {frame: return}}."""
    path = Path(path)
    rows = _parse_curve_rows(_read_csv_columns(path, REFERENCE_COLUMNS, "reference file"), path)
    curves: dict[Hashable, dict[int, float]] = {}
    for row in rows:
        curves.setdefault(row["seed"], {})[row["frame"]] = row["episode_reward"]
    return curves


def clip_frames(curves: FramesBySeed, max_frame: int) -> dict[Hashable, dict[int, float]]:
    """Keeps the points at frames <= max_frame; seeds left with no point are dropped."""
    clipped = {
        seed: {frame: r for frame, r in curve.items() if frame <= max_frame}
        for seed, curve in curves.items()
    }
    return {seed: curve for seed, curve in clipped.items() if curve}


def collect_runs(run_dirs: Sequence[str | Path]) -> dict[str, dict[str, dict[Hashable, dict[int, float]]]]:
    """Loads the runs and pools seeds: {task: {agent: frames_by_seed}}, tasks and agents in given order."""
    by_task: dict[str, dict[str, dict[Hashable, dict[int, float]]]] = {}
    for run_dir in run_dirs:
        agent, task, rows = load_run(run_dir)
        # Key curves by the resolved path so the same run given twice is not counted twice.
        curves = frames_by_seed(rows, run_label=str(Path(run_dir).resolve()))
        by_task.setdefault(task, {}).setdefault(agent, {}).update(curves)
    return by_task


def _seeds_label(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _draw_curve(ax: plt.Axes, curves: FramesBySeed, label: str, **style) -> None:
    x, mean, lo, hi = mean_and_band(curves)
    (line,) = ax.plot(x, mean, label=f"{label} ({_seeds_label(len(curves))})", **style)
    if len(curves) > 1:
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def plot_tasks(
    runs_by_task: Mapping[str, Mapping[str, FramesBySeed]],
    reference_dir: Path | None,
    max_frames: int | None = None,
    title: str | None = None,
) -> Figure:
    """One subplot per task: each pixax agent's pooled curve, and the official DrQ-v2 curve if its file exists."""
    n_tasks = len(runs_by_task)
    n_cols = min(3, n_tasks)
    n_rows = math.ceil(n_tasks / n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(5.5 * n_cols, 4.0 * n_rows), squeeze=False, layout="constrained"
    )
    for ax, (task, runs_by_agent) in zip(axes.flat, runs_by_task.items()):
        if max_frames is not None:
            runs_by_agent = {agent: clip_frames(c, max_frames) for agent, c in runs_by_agent.items()}
            runs_by_agent = {agent: c for agent, c in runs_by_agent.items() if c}
        if not runs_by_agent:
            raise SystemExit(f"task {task}: no pixax evaluation at or below --max-frames {max_frames}.")
        for agent, curves in runs_by_agent.items():
            _draw_curve(ax, curves, f"pixax {agent}")

        x_end = max_frames or max(max(c) for curves in runs_by_agent.values() for c in curves.values())
        reference_path = reference_dir / f"dmc_{task}.csv" if reference_dir is not None else None
        if reference_path is not None and reference_path.is_file():
            reference = clip_frames(load_reference(reference_path), x_end)
            if reference:
                _draw_curve(ax, reference, "official DrQ-v2", color="black", linestyle="--")

        ax.set_title(task)
        ax.set_xlabel("frames")
        ax.set_ylabel("episode return")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 500k, 1M rather than 1e6 offsets
        ax.set_xlim(0, x_end or None)  # a run evaluated only at frame 0 keeps the automatic range
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    for ax in axes.flat[n_tasks:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Plot pixax eval curves (mean and 95% band over seeds) beside official DrQ-v2 curves."
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="runs/<agent>/<task>/<timestamp>/")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument(
        "--reference-dir",
        default=None,
        help=f"folder of dmc_<task>.csv official curves (default: {DEFAULT_REFERENCE_DIR})",
    )
    parser.add_argument("--max-frames", type=int, default=None, help="cut every curve at this frame")
    parser.add_argument("--title", default=None, help="figure title")
    args = parser.parse_args(argv)

    if args.max_frames is not None and args.max_frames <= 0:
        raise SystemExit(f"--max-frames must be a positive number of frames, got {args.max_frames}.")
    if args.reference_dir is not None:
        reference_dir = Path(args.reference_dir)
        if not reference_dir.is_dir():
            raise SystemExit(f"--reference-dir {reference_dir} is not a folder.")
    elif DEFAULT_REFERENCE_DIR.is_dir():
        reference_dir = DEFAULT_REFERENCE_DIR
    else:
        print(f"note: no reference folder at {DEFAULT_REFERENCE_DIR}; plotting pixax only.", file=sys.stderr)
        reference_dir = None

    fig = plot_tasks(collect_runs(args.run_dirs), reference_dir, args.max_frames, args.title)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
