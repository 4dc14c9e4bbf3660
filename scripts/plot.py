"""Plot pixax learning curves (or any logged metric) over frames, pooled over seeds.

    python scripts/plot.py runs/drqv2/cartpole_swingup/2026-11-30_12-00-00 [RUN_DIR ...] \
        --out plot.png [--reference-dir DIR] [--max-frames N] [--title T]
    python scripts/plot.py runs/ppo/Hopper-v5/<timestamp> runs/props/Hopper-v5/<timestamp> \
        --out hopper.png [--props-reference-dir DIR] [--final-table]
    python scripts/plot.py runs/drm/.../<timestamp> runs/drqv2/.../<timestamp> \
        --metric dormant_ratio --out beta.png [--bin-frames 10000] [--events]

Every run directory holds `config.json` (with "agent" and "task"). Runs are grouped by task, one
subplot per task. Within a task, all seeds of all given runs of the same agent are pooled into one
curve: the mean over seeds with a 95% confidence band, mean +- 1.96 * std / sqrt(n).

--metric episode_reward (the default) plots evaluation returns from `eval.csv` beside official curves,
cut to the frames the pixax runs cover (or --max-frames). The official curves live in subfolders of
<repo>/../shared/reference, one per kind:
- agents "ppo" and "props" (PROPS_ARM_BY_AGENT): the PROPS paper's arm "PPO" resp. "PROPS" from
  `<props-reference-dir>/<Env>.csv` (default props-curves/; Env is the task without its -vN suffix,
  Hopper-v5 -> Hopper.csv; the paper ran -v4), dashed in the agent's colour with its ci95 band. Its
  timestep (environment steps, no action repeat) is compared with pixax's frame, which for these
  agents equals the environment steps.
- every other agent: the official DrQ-v2 curve `<reference-dir>/dmc_<task>.csv` (default drqv2-curves/),
  pooled over its seeds like pixax's, dashed in black.
A missing reference file draws no official curve; --reference-dir and --props-reference-dir replace
the default folder of their kind.

--final-table also prints a markdown table, one row per task and agent: pixax's last evaluation (mean
over seeds of each seed's last eval return +- 1.96 * std(ddof=1) / sqrt(n), n, at which frame) and
its mean return over training (all evaluations from step 0 on, per seed, then over seeds), beside the
PROPS-paper arm's last row (mean_return +- ci95, n_seeds, timestep) and the mean of that arm's rows
(approximate: the reference keeps at most 60 evaluations per arm). Agents without a PROPS-paper arm
get "-" there. The table uses all logged evaluations; --max-frames cuts the figure only.

Any other --metric is read from `updates.csv` (one row per update) if that file has the column,
else from `metrics.csv` (one row per training episode). Per seed, the values are averaged within
bins of --bin-frames frames: the bin ending at frame x holds the rows with x - bin < frame <= x, and
its mean is drawn at x (the bin's END frame, so no point lies beyond the last logged frame rounded up). Blank cells (a metric not logged yet) and NaNs are
left out of the means; True/False cells count as 1/0. No reference curve is drawn (the official
curves hold returns only). A run that does not log the metric (e.g. DrQ-v2 for dormant_ratio) is
skipped with a note on stderr; if no run logs it, the script stops and lists the columns each run has.
--events draws a dotted vertical line, in the agent's colour, at each frame where `events.csv` has a
"perturb" row (runs without events.csv draw none).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import re
import sys
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede the pyplot import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

# `python scripts/plot.py` puts scripts/ on sys.path, not the repository root that `scripts.tables` needs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.tables import markdown_table  # noqa: E402

# <repo>/../shared/reference, found from this file so the script runs from any cwd; one subfolder per kind.
DEFAULT_REFERENCE_ROOT = Path(__file__).resolve().parents[2] / "shared" / "reference"
DRQV2_KIND = "drqv2"  # official DrQ-v2 curves, per seed: <folder>/dmc_<task>.csv
PROPS_KIND = "props"  # PROPS-paper curves, per arm: <folder>/<Env>.csv
REFERENCE_SUBDIRS = {DRQV2_KIND: "drqv2-curves", PROPS_KIND: "props-curves"}
DEFAULT_REFERENCE_DIR = DEFAULT_REFERENCE_ROOT / REFERENCE_SUBDIRS[DRQV2_KIND]  # the DrQ-v2 folder, as before
DEFAULT_PROPS_REFERENCE_DIR = DEFAULT_REFERENCE_ROOT / REFERENCE_SUBDIRS[PROPS_KIND]
# The pixax agents compared with the PROPS paper, and the paper's arm each matches; all others with DrQ-v2.
PROPS_ARM_BY_AGENT = {"ppo": "PPO", "props": "PROPS"}
PROPS_REFERENCE_VERSION = "-v4"  # the PROPS paper's MuJoCo tasks (pixax runs -v5)

EVAL_COLUMNS = ("seed", "frame", "episode_reward")  # the eval.csv columns a plot needs
REFERENCE_COLUMNS = ("seed", "frame", "episode_reward")  # the DrQ-v2 reference columns a plot needs
PROPS_REFERENCE_COLUMNS = ("arm", "timestep", "mean_return", "ci95", "n_seeds")  # the PROPS-paper columns
CONFIDENCE_Z = 1.96  # two-sided 95% normal quantile
RETURN_METRIC = "episode_reward"  # the default metric: evaluation returns from eval.csv
METRIC_FILES = ("updates.csv", "metrics.csv")  # where any other metric is looked for, in this order
DEFAULT_BIN_FRAMES = 10_000
PERTURB_EVENT = "perturb"  # the events.csv event drawn by --events

# frames_by_seed: one curve per seed, {seed key: {frame: value}} (an episode return, or a binned metric).
FramesBySeed = Mapping[Hashable, Mapping[int, float]]


class MetricNotLogged(LookupError):
    """A run directory has none of METRIC_FILES with the requested metric column."""


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


def _check_run_dir(run_dir: Path, needed: Sequence[str]) -> None:
    """Stops with a message if run_dir is not a folder or lacks any of the needed files."""
    if not run_dir.is_dir():
        raise SystemExit(f"{run_dir} is not a run directory: it does not exist or is not a folder.")
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing:
        raise SystemExit(
            f"{run_dir} is not a run directory: it has no {' and no '.join(missing)} "
            "(a run directory runs/<agent>/<task>/<timestamp>/ holds config.json and eval.csv)."
        )


def _read_agent_task(run_dir: Path) -> tuple[str, str]:
    """The "agent" and "task" of run_dir/config.json, stopping with a message if either is missing."""
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
    return names["agent"], names["task"]


def load_run(run_dir: str | Path) -> tuple[str, str, list[dict[str, int | float]]]:
    """Reads one run directory's evaluations; returns (agent, task, rows), each row {seed, frame, episode_reward}."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, ("eval.csv", "config.json"))
    agent, task = _read_agent_task(run_dir)
    eval_path = run_dir / "eval.csv"
    rows = _parse_curve_rows(_read_csv_columns(eval_path, EVAL_COLUMNS, "eval file"), eval_path)
    if not rows:
        raise SystemExit(f"{eval_path} has a header but no evaluation rows yet; nothing to plot.")
    return agent, task, rows


def _csv_header(path: Path) -> list[str] | None:
    """The column names of a CSV, or None if the file does not exist (an empty file has no columns)."""
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return next(csv.reader(f), [])


def find_metric_file(run_dir: str | Path, metric: str) -> Path:
    """The first of run_dir/updates.csv, run_dir/metrics.csv with a `metric` column.

    Raises MetricNotLogged, naming the files looked in and the columns they have, if neither has it.
    """
    run_dir = Path(run_dir)
    looked_in = []
    for name in METRIC_FILES:
        header = _csv_header(run_dir / name)
        if header is not None and metric in header:
            return run_dir / name
        looked_in.append(f"{name} " + ("(absent)" if header is None else f"(columns {header})"))
    raise MetricNotLogged(f"{run_dir} does not log {metric!r}: looked in {'; '.join(looked_in)}.")


def _parse_value(cell: str) -> float:
    """A metric cell as a number: True/False (e.g. `perturbed`) count as 1/0; raises ValueError otherwise."""
    flags = {"true": 1.0, "false": 0.0}
    return flags[cell.strip().lower()] if cell.strip().lower() in flags else float(cell)


def read_metric_points(path: str | Path, metric: str) -> Iterator[tuple[int, int, float]]:
    """Streams (seed, frame, value) of one metric column of a CSV with seed and frame columns.

    Rows with a blank or NaN value are left out (update metrics are blank in the training episodes
    logged before updates start). updates.csv has one row per update, so rows are never all held in memory.
    """
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        missing = [c for c in ("seed", "frame", metric) if c not in header]
        if missing:
            raise SystemExit(f"{path} lacks column(s) {missing}; expected seed, frame and {metric} (found {header}).")
        seed_at, frame_at, value_at = (header.index(c) for c in ("seed", "frame", metric))
        for line_number, row in enumerate(reader, start=2):  # line 1 is the header
            cell = row[value_at] if value_at < len(row) else ""
            if not cell.strip():
                continue
            try:
                seed, frame, value = int(float(row[seed_at])), int(float(row[frame_at])), _parse_value(cell)
            except (IndexError, ValueError):
                raise SystemExit(
                    f"{path} line {line_number}: seed, frame and {metric} must be numbers, got {row!r}."
                ) from None
            if math.isfinite(value):
                yield seed, frame, value


def bin_by_frames(
    points: Iterable[tuple[Hashable, int, float]], bin_frames: int
) -> dict[Hashable, dict[int, float]]:
    """Averages (seed, frame, value) points per seed within bins of bin_frames frames: {seed: {bin end: mean}}.

    The bin ending at x (a multiple of bin_frames) holds the frames x - bin_frames < frame <= x, so a
    value logged at a multiple of bin_frames is drawn at its own frame (frame 0 gets a bin of its own).
    """
    if bin_frames <= 0:
        raise ValueError(f"bin_frames must be a positive number of frames, got {bin_frames}.")
    sums: dict[Hashable, dict[int, list[float]]] = {}  # {seed: {bin end: [sum, count]}}
    for seed, frame, value in points:
        bin_end = -(-frame // bin_frames) * bin_frames  # ceil(frame / bin_frames) * bin_frames, in integers
        total = sums.setdefault(seed, {}).setdefault(bin_end, [0.0, 0])
        total[0] += value
        total[1] += 1
    return {
        seed: {bin_end: total / count for bin_end, (total, count) in sorted(bins.items())}
        for seed, bins in sums.items()
    }


def load_metric(
    run_dir: str | Path, metric: str, bin_frames: int = DEFAULT_BIN_FRAMES
) -> tuple[str, str, dict[Hashable, dict[int, float]]]:
    """Reads one metric of one run, binned per seed; returns (agent, task, {seed: {bin end: mean}}).

    Raises MetricNotLogged if the run logs no such column, or logged only blank/NaN values.
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, ("config.json",))
    agent, task = _read_agent_task(run_dir)
    path = find_metric_file(run_dir, metric)
    curves = bin_by_frames(read_metric_points(path, metric), bin_frames)
    if not curves:
        raise MetricNotLogged(f"{path} has a {metric!r} column but no numeric value in it yet.")
    return agent, task, curves


def load_perturb_frames(run_dir: str | Path) -> list[int]:
    """The frames of run_dir/events.csv's "perturb" rows (all seeds, each once, ascending); [] without events.csv."""
    path = Path(run_dir) / "events.csv"
    if not path.is_file():
        return []
    rows = _read_csv_columns(path, ("frame", "event"), "events file")
    try:
        return sorted({int(float(row["frame"])) for row in rows if row["event"] == PERTURB_EVENT})
    except (TypeError, ValueError):
        raise SystemExit(f"{path}: every frame must be a number.") from None


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


def reference_kind(agent: str) -> str:
    """Which official curves a pixax agent is drawn beside: PROPS_KIND for ppo/props, else DRQV2_KIND."""
    return PROPS_KIND if agent in PROPS_ARM_BY_AGENT else DRQV2_KIND


def props_reference_path(props_reference_dir: Path, task: str) -> Path:
    """<props_reference_dir>/<Env>.csv of a pixax task: the task name without its -vN suffix (Hopper-v5 -> Hopper)."""
    return props_reference_dir / f"{re.sub(r'-v[0-9]+$', '', task)}.csv"


@dataclasses.dataclass(frozen=True)
class ArmCurve:
    """One arm of a PROPS-paper curve file, rows in file order (timestep ascending)."""

    arm: str
    timestep: np.ndarray  # environment steps of the training env
    mean_return: np.ndarray  # mean over seeds of each seed's mean evaluation return
    ci95: np.ndarray  # 1.96 * std(ddof=1) / sqrt(n_seeds)
    n_seeds: np.ndarray

    def up_to(self, max_step: int) -> ArmCurve:
        """The rows at timestep <= max_step."""
        keep = self.timestep <= max_step
        return ArmCurve(self.arm, self.timestep[keep], self.mean_return[keep], self.ci95[keep], self.n_seeds[keep])


def load_props_reference(path: str | Path, arm: str) -> ArmCurve:
    """Reads one arm (e.g. "PPO", "PROPS") of a PROPS-paper curve file (arm,timestep,mean_return,ci95,n_seeds)."""
    path = Path(path)
    rows = _read_csv_columns(path, PROPS_REFERENCE_COLUMNS, "PROPS reference file")
    arm_rows = [(line_number, row) for line_number, row in enumerate(rows, start=2) if row["arm"] == arm]
    if not arm_rows:
        arms = list(dict.fromkeys(row["arm"] for row in rows))
        raise SystemExit(f"PROPS reference file {path} has no arm {arm!r}; its arms are {arms}.")
    columns: dict[str, list[float]] = {name: [] for name in PROPS_REFERENCE_COLUMNS[1:]}
    for line_number, row in arm_rows:
        try:
            for name, values in columns.items():
                values.append(float(row[name]))
        except (TypeError, ValueError):
            raise SystemExit(
                f"{path} line {line_number}: {', '.join(columns)} must be numbers, got "
                + ", ".join(f"{name}={row[name]!r}" for name in columns) + "."
            ) from None
    order = np.argsort(columns["timestep"], kind="stable")
    return ArmCurve(
        arm=arm,
        timestep=np.array(columns["timestep"], dtype=np.int64)[order],
        mean_return=np.array(columns["mean_return"])[order],
        ci95=np.array(columns["ci95"])[order],
        n_seeds=np.array(columns["n_seeds"], dtype=np.int64)[order],
    )


def clip_frames(curves: FramesBySeed, max_frame: int) -> dict[Hashable, dict[int, float]]:
    """Keeps the points at frames <= max_frame; seeds left with no point are dropped."""
    clipped = {
        seed: {frame: r for frame, r in curve.items() if frame <= max_frame}
        for seed, curve in curves.items()
    }
    return {seed: curve for seed, curve in clipped.items() if curve}


def collect_runs(
    run_dirs: Sequence[str | Path], metric: str = RETURN_METRIC, bin_frames: int = DEFAULT_BIN_FRAMES
) -> dict[str, dict[str, dict[Hashable, dict[int, float]]]]:
    """Loads the runs and pools seeds: {task: {agent: frames_by_seed}}, tasks and agents in given order.

    The return metric comes from eval.csv (every run must have it). Any other metric is binned
    (load_metric); runs that do not log it are skipped with a note on stderr, and if none logs it
    the script stops, listing what each run has.
    """
    by_task: dict[str, dict[str, dict[Hashable, dict[int, float]]]] = {}
    not_logged = []
    for run_dir in run_dirs:
        # Key curves by the resolved path so the same run given twice is not counted twice.
        run_label = str(Path(run_dir).resolve())
        if metric == RETURN_METRIC:
            agent, task, rows = load_run(run_dir)
            curves = frames_by_seed(rows, run_label)
        else:
            try:
                agent, task, binned = load_metric(run_dir, metric, bin_frames)
            except MetricNotLogged as error:
                not_logged.append(str(error))
                continue
            curves = {(run_label, seed): curve for seed, curve in binned.items()}
        by_task.setdefault(task, {}).setdefault(agent, {}).update(curves)
    if not by_task:
        raise SystemExit(f"no run logs {metric!r}:\n  " + "\n  ".join(not_logged))
    for message in not_logged:
        print(f"note: skipping {message}", file=sys.stderr)
    return by_task


def collect_perturb_frames(run_dirs: Sequence[str | Path]) -> dict[str, dict[str, list[int]]]:
    """The perturbation frames of the runs: {task: {agent: frames}}, pooled over runs and seeds."""
    by_task: dict[str, dict[str, set[int]]] = {}
    for run_dir in run_dirs:
        frames = load_perturb_frames(run_dir)
        if frames:
            agent, task = _read_agent_task(Path(run_dir))
            by_task.setdefault(task, {}).setdefault(agent, set()).update(frames)
    return {task: {agent: sorted(f) for agent, f in agents.items()} for task, agents in by_task.items()}


def _seeds_label(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _draw_curve(ax: plt.Axes, curves: FramesBySeed, label: str, **style) -> str:
    """Draws the pooled curve with its band; returns the line's colour."""
    x, mean, lo, hi = mean_and_band(curves)
    (line,) = ax.plot(x, mean, label=f"{label} ({_seeds_label(len(curves))})", **style)
    if len(curves) > 1:
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line.get_color()


def _draw_arm_curve(ax: plt.Axes, curve: ArmCurve, colour: str) -> None:
    """Draws a PROPS-paper arm, dashed, with its ci95 band (nothing if the cut left no row)."""
    if len(curve.timestep) == 0:
        return
    ax.plot(curve.timestep, curve.mean_return, color=colour, linestyle="--",
            label=f"official {curve.arm} (PROPS paper, {PROPS_REFERENCE_VERSION})")
    ax.fill_between(curve.timestep, curve.mean_return - curve.ci95, curve.mean_return + curve.ci95,
                    color=colour, alpha=0.1, linewidth=0)


def plot_tasks(
    runs_by_task: Mapping[str, Mapping[str, FramesBySeed]],
    reference_dir: Path | None,
    max_frames: int | None = None,
    title: str | None = None,
    metric: str = RETURN_METRIC,
    perturb_frames_by_task: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
    props_reference_dir: Path | None = None,
) -> Figure:
    """One subplot per task: each pixax agent's pooled curve of `metric`.

    For the return metric, official curves are added where their files exist, cut to the frames
    drawn: for ppo/props agents the matching PROPS-paper arm (PROPS_ARM_BY_AGENT) from
    props_reference_dir/<Env>.csv, dashed in the agent's colour with its ci95 band; if any other
    agent is in the subplot, the official DrQ-v2 curve from reference_dir/dmc_<task>.csv, dashed in
    black. For other metrics, perturb_frames_by_task ({task: {agent: frames}}) adds dotted vertical
    lines in the agent's colour (agents without a curve in that task are left out).
    """
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
            raise SystemExit(f"task {task}: no pixax {metric} point at or below --max-frames {max_frames}.")
        colour_by_agent = {agent: _draw_curve(ax, curves, f"pixax {agent}") for agent, curves in runs_by_agent.items()}

        x_end = max_frames or max(max(c) for curves in runs_by_agent.values() for c in curves.values())
        if metric == RETURN_METRIC:
            kinds = {reference_kind(agent) for agent in runs_by_agent}
            reference_path = reference_dir / f"dmc_{task}.csv" if reference_dir is not None else None
            if DRQV2_KIND in kinds and reference_path is not None and reference_path.is_file():
                reference = clip_frames(load_reference(reference_path), x_end)
                if reference:
                    _draw_curve(ax, reference, "official DrQ-v2", color="black", linestyle="--")
            props_path = props_reference_path(props_reference_dir, task) if props_reference_dir is not None else None
            if PROPS_KIND in kinds and props_path is not None and props_path.is_file():
                for agent in runs_by_agent:
                    if reference_kind(agent) == PROPS_KIND:
                        arm_curve = load_props_reference(props_path, PROPS_ARM_BY_AGENT[agent]).up_to(x_end)
                        _draw_arm_curve(ax, arm_curve, colour_by_agent[agent])
        elif perturb_frames_by_task:
            for agent, frames in perturb_frames_by_task.get(task, {}).items():
                if agent not in colour_by_agent:
                    continue
                for i, frame in enumerate(f for f in frames if f <= x_end):
                    # One legend entry per agent; matplotlib hides labels starting with "_".
                    label = f"{agent} perturbation" if i == 0 else "_nolegend_"
                    ax.axvline(frame, color=colour_by_agent[agent], linestyle=":", linewidth=1.0, label=label)

        ax.set_title(task)
        ax.set_xlabel("frames")
        ax.set_ylabel("episode return" if metric == RETURN_METRIC else metric)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 500k, 1M rather than 1e6 offsets
        ax.set_xlim(0, x_end or None)  # a run evaluated only at frame 0 keeps the automatic range
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    for ax in axes.flat[n_tasks:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def final_evaluation(curves: FramesBySeed) -> tuple[float, float, int, int, int]:
    """Each seed's last evaluation, pooled: (mean, 95% half width, n seeds, first and last of the seeds' last frames).

    The half width is 1.96 * std(ddof=1) / sqrt(n), 0 for one seed. Seeds of a run still in progress may
    have stopped at different frames; the last two values show that range.
    """
    if not curves:
        raise ValueError("final_evaluation needs at least one seed's curve, got none.")
    last_frames = [max(curve) for curve in curves.values()]
    returns = np.array([curve[frame] for curve, frame in zip(curves.values(), last_frames)])
    n = len(returns)
    half_width = CONFIDENCE_Z * returns.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0
    return float(returns.mean()), float(half_width), n, min(last_frames), max(last_frames)


def mean_over_training(curves: FramesBySeed) -> float:
    """Per seed the mean of all its evaluations (step 0 included), then the mean over seeds."""
    return float(np.mean([np.mean(list(curve.values())) for curve in curves.values()]))


def final_table(
    runs_by_task: Mapping[str, Mapping[str, FramesBySeed]], props_reference_dir: Path | None
) -> str:
    """A markdown table, one row per task and agent: pixax's last evaluation and mean return over training
    beside the matching PROPS-paper arm's (its last row, and the mean of its rows), followed by notes.

    Agents without a PROPS-paper arm, or tasks without a file in props_reference_dir, get "-" there.
    """
    rows = [["task", "agent", "official arm", "pixax final", "n", "at step", "official final", "n", "at step",
             "pixax mean over training", "official mean over training"]]
    for task, runs_by_agent in runs_by_task.items():
        props_path = props_reference_path(props_reference_dir, task) if props_reference_dir is not None else None
        for agent, curves in runs_by_agent.items():
            mean, half_width, n, first_last, last_last = final_evaluation(curves)
            steps = f"{last_last}" if first_last == last_last else f"{first_last}-{last_last}"
            official = ["-"] * 5
            if agent in PROPS_ARM_BY_AGENT and props_path is not None and props_path.is_file():
                arm = load_props_reference(props_path, PROPS_ARM_BY_AGENT[agent])
                official = [arm.arm, f"{arm.mean_return[-1]:.1f} ± {arm.ci95[-1]:.1f}", f"{arm.n_seeds[-1]}",
                            f"{arm.timestep[-1]}", f"{arm.mean_return.mean():.1f}"]
            rows.append([task, agent, official[0], f"{mean:.1f} ± {half_width:.1f}", f"{n}", steps, *official[1:4],
                         f"{mean_over_training(curves):.1f}", official[4]])
    notes = [
        "pixax final: mean over seeds of each seed's last evaluation ± 1.96·std(ddof=1)/√n; at step: the seeds' "
        "last evaluation frame (= environment steps for ppo/props; a range if the seeds differ).",
        f"official: the PROPS paper's arm on {PROPS_REFERENCE_VERSION} tasks, its last row (mean_return ± ci95, "
        "n_seeds, timestep).",
        "mean over training: every evaluation from step 0 on, averaged per seed, then over seeds; the official "
        "one averages the reference rows, which keep at most 60 evaluations per arm, so it is approximate.",
    ]
    return markdown_table(rows, text_columns=3) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def _reference_folder(given: str | None, default: Path) -> Path | None:
    """The folder given on the command line (checked by main), else `default` if it exists, else None with a note."""
    if given is not None:
        return Path(given)
    if default.is_dir():
        return default
    print(f"note: no reference folder at {default}; its official curves are left out.", file=sys.stderr)
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Plot pixax eval curves, or any logged metric, over frames (mean and 95% band over "
        "seeds); eval returns are drawn beside the official DrQ-v2 curves."
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="runs/<agent>/<task>/<timestamp>/")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument(
        "--reference-dir",
        default=None,
        help="folder of the official DrQ-v2 curves dmc_<task>.csv, drawn beside every agent other than "
        f"{'/'.join(PROPS_ARM_BY_AGENT)} (default: {DEFAULT_REFERENCE_DIR})",
    )
    parser.add_argument(
        "--props-reference-dir",
        default=None,
        help="folder of the PROPS-paper curves <Env>.csv (arm,timestep,mean_return,ci95,n_seeds), drawn beside "
        f"{', '.join(f'{agent} (arm {arm})' for agent, arm in PROPS_ARM_BY_AGENT.items())} "
        f"(default: {DEFAULT_PROPS_REFERENCE_DIR})",
    )
    parser.add_argument(
        "--final-table",
        action="store_true",
        help="also print a markdown table per task and agent: the last evaluation and the mean return over "
        "training, beside the PROPS-paper arm's",
    )
    parser.add_argument("--max-frames", type=int, default=None, help="cut every curve at this frame")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument(
        "--metric",
        default=RETURN_METRIC,
        help=f"column to plot (default {RETURN_METRIC}: eval returns from eval.csv); any other name is "
        f"read from {' or else '.join(METRIC_FILES)}, e.g. dormant_ratio",
    )
    parser.add_argument(
        "--bin-frames",
        type=int,
        default=DEFAULT_BIN_FRAMES,
        help=f"for metrics other than {RETURN_METRIC}: average each seed's values over bins of this many "
        f"frames, drawn at the bin's end frame (default {DEFAULT_BIN_FRAMES})",
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help=f"for metrics other than {RETURN_METRIC}: dotted vertical lines at the perturbations in events.csv",
    )
    args = parser.parse_args(argv)

    if args.max_frames is not None and args.max_frames <= 0:
        raise SystemExit(f"--max-frames must be a positive number of frames, got {args.max_frames}.")
    if args.bin_frames <= 0:
        raise SystemExit(f"--bin-frames must be a positive number of frames, got {args.bin_frames}.")
    plots_returns = args.metric == RETURN_METRIC
    if args.events and plots_returns:
        print(f"note: --events is drawn only for metrics other than {RETURN_METRIC}; ignoring it.", file=sys.stderr)
    if args.final_table and not plots_returns:
        raise SystemExit(f"--final-table compares evaluation returns: use it with --metric {RETURN_METRIC}.")
    for flag, given in (("--reference-dir", args.reference_dir), ("--props-reference-dir", args.props_reference_dir)):
        if given is not None and not Path(given).is_dir():
            raise SystemExit(f"{flag} {given} is not a folder.")

    runs_by_task = collect_runs(args.run_dirs, args.metric, args.bin_frames)
    kinds = {reference_kind(agent) for runs_by_agent in runs_by_task.values() for agent in runs_by_agent}
    reference_dir = props_reference_dir = None  # the official curves hold returns only
    if plots_returns and DRQV2_KIND in kinds:
        reference_dir = _reference_folder(args.reference_dir, DEFAULT_REFERENCE_DIR)
    if plots_returns and PROPS_KIND in kinds:
        props_reference_dir = _reference_folder(args.props_reference_dir, DEFAULT_PROPS_REFERENCE_DIR)
    perturb_frames = collect_perturb_frames(args.run_dirs) if args.events and not plots_returns else None
    fig = plot_tasks(runs_by_task, reference_dir, args.max_frames, args.title, args.metric, perturb_frames,
                     props_reference_dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")
    if args.final_table:
        print()
        print(final_table(runs_by_task, props_reference_dir))


if __name__ == "__main__":
    main()
