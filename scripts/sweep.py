"""Sweeps: a grid over agents, tasks, seeds and flags, run as local processes or as one SLURM array
(submitit), then aggregated with rliable into a table and plots.

    python scripts/sweep.py --agents td3,ppo --tasks Hopper-v5,Walker2d-v5 --seeds 0-4 \
        --grid agent.num_train_frames=100000,300000 --set save_video=False --dir sweeps/frames --dry-run
    python scripts/sweep.py --grid-file sweep.yaml --launcher local --max-parallel 2
    python scripts/sweep.py --grid-file sweep.yaml --launcher slurm --slurm-partition gpu --timeout-min 2880
    python scripts/sweep.py aggregate sweeps/frames --out sweeps/frames/results --last 3

A job is (agent, task, flag combination, seed group): the seeds of a job train in ONE process
(`--config.seeds=0,1,2`, pixax's multi-seed design); `--seeds-per-job` splits the seeds into groups.
Every job gets a deterministic name `<agent>__<task>__<arm>__s<seeds>` and its own
`--config.root=<sweep dir>/runs/<name>`, so its run directory is
`<sweep dir>/runs/<name>/<agent>/<task>/<timestamp>/`. The sweep directory holds jobs.json (the grid
and the exact commands), logs/<name>.log (each job's output) and, after a local launch,
results.json (return codes and times).

Bad input stops before any job starts: every job's flags are parsed by the launcher's own flag
definitions (ml_collections) and checked by its loop's own `resolve` (core/launch.py,
core/onpolicy.py, core/offline.py), so an unknown agent, task or flag, or a bad value, is named
together with the valid choices. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import datetime
import functools
import itertools
import json
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout too: `python scripts/sweep.py`
    sys.path.insert(0, str(REPO))

from scripts import offline_table, plot, tables  # noqa: E402  (run-directory readers, markdown tables)

EXPERIMENTS = REPO / "experiments"
# Launcher flags the sweep sets itself: the task and seeds are axes of the grid, the root is the job's folder.
MANAGED_FLAGS = {"task": "--tasks", "seeds": "--seeds", "root": "the job's folder under the sweep directory"}
SWEEP_DEFAULTS = {"progress": "False"}  # no progress bars in log files, unless --set progress=True
GRID_FILE_KEYS = ("agents", "tasks", "seeds", "seeds_per_job", "grid", "set")
LAUNCHERS = ("local", "slurm")


class SweepError(ValueError):
    """Bad sweep input; the message says what was wrong and what is valid."""


# ----------------------------------------------------------------------------------------- the grid

@dataclasses.dataclass(frozen=True)
class Grid:
    """What to sweep: the cartesian product agents x tasks x grid values x seed groups."""

    agents: tuple[str, ...]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    seeds_per_job: int | None = None  # None: all seeds in one job
    grid: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # flag -> values (one axis each)
    fixed: Mapping[str, str] = dataclasses.field(default_factory=dict)  # flag -> value, the same in every job


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    agent: str
    task: str
    seeds: tuple[int, ...]
    arm: dict[str, str]  # this job's values of the grid's flags
    root: str  # --config.root: the launcher writes <root>/<agent>/<task>/<timestamp>/
    log: str
    command: tuple[str, ...]


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-4' -> (0, 1, 2, 3, 4); '0,2,5' and '0-2,7' too. Distinct non-negative integers, in the given order."""
    valid = "valid forms: 0-4 (a range, both ends included), 0,1,2 (a list), 0-2,7 (both)"
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise SweepError(f"--seeds {text!r}: {part!r} is not a seed or a range of seeds; {valid}")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise SweepError(f"--seeds {text!r}: the range {part!r} ends before it starts; {valid}")
        seeds += range(start, end + 1)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise SweepError(f"--seeds {text!r} names seed(s) {repeated} more than once; {valid}")
    return tuple(seeds)


def _flag_name(key: str) -> str:
    """'--config.agent.lr' or 'config.agent.lr' -> 'agent.lr'."""
    key = key.strip().lstrip("-")
    return key[len("config."):] if key.startswith("config.") else key


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """'agent.lr=1e-3,3e-4' -> ('agent.lr', '1e-3,3e-4')."""
    key, equals, value = text.partition("=")
    if not equals or not _flag_name(key) or value == "":
        raise SweepError(f"{option} {text!r}: expected FLAG=VALUE{'S' if option == '--grid' else ''}, "
                         f"e.g. {option} agent.lr={'1e-3,3e-4' if option == '--grid' else '1e-3'}")
    return _flag_name(key), value


def load_grid_file(path: str | Path) -> dict:
    """A YAML (.yaml/.yml) or JSON grid file: keys agents, tasks, seeds, seeds_per_job, grid, set."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"--grid-file {str(path)!r} does not exist")
    if path.suffix in (".yaml", ".yml"):
        import yaml  # PyYAML: installed with flax and ml_collections

        parse, errors = yaml.safe_load, yaml.YAMLError
    else:
        parse, errors = json.loads, json.JSONDecodeError
    try:
        content = parse(path.read_text())
    except errors as error:  # the parser's own message names the line
        raise SweepError(f"--grid-file {str(path)!r} could not be read: {error}") from None
    if not isinstance(content, dict):
        raise SweepError(f"--grid-file {str(path)!r} must hold a mapping with keys {', '.join(GRID_FILE_KEYS)}")
    unknown = sorted(set(content) - set(GRID_FILE_KEYS))
    if unknown:
        raise SweepError(f"--grid-file {str(path)!r}: unknown key(s) {unknown}; valid keys: "
                         f"{', '.join(GRID_FILE_KEYS)}")
    for key in ("grid", "set"):
        if not isinstance(content.get(key, {}), dict):
            raise SweepError(f"--grid-file {str(path)!r}: {key!r} must map flags to "
                             f"{'lists of values' if key == 'grid' else 'values'}")
    return content


def _names(value: Any) -> tuple[str, ...]:
    """'td3,ppo' or ['td3', 'ppo'] -> ('td3', 'ppo')."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def make_grid(agents: Any = None, tasks: Any = None, seeds: Any = None, seeds_per_job: int | None = None,
              grid: Sequence[str] = (), fixed: Sequence[str] = (), grid_file: str | None = None) -> Grid:
    """The grid from command-line values over a grid file's (the command line wins, flag by flag)."""
    content = load_grid_file(grid_file) if grid_file else {}
    agents = _names(agents if agents is not None else content.get("agents", ()))
    tasks = _names(tasks if tasks is not None else content.get("tasks", ()))
    if not agents:
        raise SweepError(f"no agents given; name at least one with --agents (valid: {', '.join(available_agents())})")
    if not tasks:
        raise SweepError("no tasks given; name at least one with --tasks, e.g. --tasks Hopper-v5,Walker2d-v5")
    seed_text = seeds if seeds is not None else content.get("seeds", "0")
    seed_text = ",".join(map(str, seed_text)) if isinstance(seed_text, (list, tuple)) else str(seed_text)
    per_job = seeds_per_job if seeds_per_job is not None else content.get("seeds_per_job")
    if per_job is not None and (isinstance(per_job, bool) or not isinstance(per_job, int) or per_job < 1):
        raise SweepError(f"--seeds-per-job {per_job!r}: expected a positive integer (default: all seeds in one job)")

    # values as the launcher's command line spells them (YAML/JSON scalars: 0.001, True, "1e-3")
    axes = {_flag_name(k): tuple(str(v) for v in (values if isinstance(values, list) else [values]))
            for k, values in content.get("grid", {}).items()}
    for text in grid:
        key, values = parse_assignment(text, "--grid")
        axes[key] = tuple(v.strip() for v in values.split(","))
    constants = {_flag_name(k): str(v) for k, v in content.get("set", {}).items()}
    constants.update(parse_assignment(text, "--set") for text in fixed)

    for key in [*axes, *constants]:
        if key in MANAGED_FLAGS:
            raise SweepError(f"flag {key!r} is set by the sweep ({MANAGED_FLAGS[key]}); leave it out of --grid/--set")
    for key, values in axes.items():
        if not values or any(v == "" for v in values) or len(set(values)) != len(values):
            raise SweepError(f"--grid {key}: expected distinct, non-empty values separated by commas, got {values}")
    both = sorted(set(axes) & set(constants))
    if both:
        raise SweepError(f"flag(s) {both} are both in --grid and --set; give each flag one place")
    return Grid(agents=agents, tasks=tasks, seeds=parse_seeds(seed_text), seeds_per_job=per_job,
                grid=axes, fixed=constants)


# ----------------------------------------------------------------------------------------- launchers

def available_agents() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS.glob("*.py") if p.stem != "__init__")


@dataclasses.dataclass(frozen=True)
class Launcher:
    """What experiments/<agent>.py hands to core.launch.command_line: its flags and its run function."""

    agent: str
    path: Path
    defaults: Any  # ml_collections ConfigDict: every --config.* flag it accepts, with its default
    run_fn: Callable  # run_fn(config, resume): what its command line calls

    def flag_names(self) -> list[str]:
        """The leaf flags, e.g. ['task', 'seeds', ..., 'agent.lr', ...]."""
        def leaves(config, prefix=""):
            for key, value in config.items():
                if hasattr(value, "items"):
                    yield from leaves(value, f"{prefix}{key}.")
                else:
                    yield prefix + key
        return list(leaves(self.defaults))


@contextlib.contextmanager
def _replaced(module, name: str, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


@functools.lru_cache(maxsize=None)
def load_launcher(agent: str) -> Launcher:
    """Runs experiments/<agent>.py as its command line would, with core.launch.command_line (which every
    launcher ends in) replaced by a recorder: so the sweep knows exactly the flags the launcher takes."""
    path = EXPERIMENTS / f"{agent}.py"
    if not path.is_file():
        raise SweepError(f"unknown agent {agent!r}; valid agents (experiments/<agent>.py): "
                         f"{', '.join(available_agents())}")
    from core import launch

    recorded: dict[str, Any] = {}
    with _replaced(launch, "command_line", lambda defaults, run_fn: recorded.update(defaults=defaults, run_fn=run_fn)):
        runpy.run_path(str(path), run_name="__main__")
    if not recorded:
        raise SweepError(f"{path} does not end in core.launch.command_line, so its flags are unknown to the sweep")
    return Launcher(agent=agent, path=path, defaults=recorded["defaults"], run_fn=recorded["run_fn"])


@contextlib.contextmanager
def _loops_only_resolve(checked: list):
    """Within: the loops' run functions only check their config (their `resolve`, their first step),
    append True to `checked` and return. A launcher that gets past them to a run directory is stopped."""
    from core import launch, offline, onpolicy
    from core import logging as runlog

    def check_offpolicy(agent_module, agent_name, config, resume="", **_):
        launch.resolve(agent_module, config)
        checked.append(True)

    def check_onpolicy(agent_module, agent_name, config, resume="", **_):
        if str(config.task).startswith("mjx_"):  # onpolicy.run's JAX-native path checks these three
            from envs import mjx

            launch.parse_seeds(config.seeds)
            overrides = {k: v for k, v in config.agent.items() if v is not None}
            agent_module.config_for_task(mjx.gym_id_of(config.task), **overrides)
        else:
            onpolicy.resolve(agent_module, config)
        checked.append(True)

    def check_offline(agent_module, agent_name, config, resume="", **_):
        offline.resolve(agent_module, config)
        checked.append(True)

    def no_run_dir(*args, **kwargs):
        raise SweepError("its launcher went past core's run functions (launch, onpolicy, offline.run) toward a "
                         "run directory, so the sweep cannot check its flags without training")

    with _replaced(launch, "run", check_offpolicy), _replaced(onpolicy, "run", check_onpolicy), \
            _replaced(offline, "run", check_offline), _replaced(runlog, "new_run_dir", no_run_dir):
        yield


def check_flags(launcher: Launcher, flags: Sequence[str]) -> None:
    """Parses `--config.*` flags with the launcher's own flag definitions, then runs its loop's checks.
    Raises SweepError naming the bad flag or value and what is valid."""
    from absl import flags as absl_flags
    from ml_collections import config_flags

    names = launcher.flag_names()
    for flag in flags:
        name = flag.split("=", 1)[0][len("--config."):]
        if name not in names:
            raise SweepError(f"{launcher.agent}: unknown flag {name!r}; valid flags of {launcher.path.name}: "
                             f"{', '.join(names)}")
    argv = [str(launcher.path), *flags]
    flag_values = absl_flags.FlagValues()
    holder = config_flags.DEFINE_config_dict("config", copy.deepcopy(launcher.defaults), flag_values=flag_values,
                                             sys_argv=argv)
    try:
        flag_values(argv)
    except absl_flags.Error as error:  # e.g. "flag --config.agent.batch_size=abc: invalid literal for int()"
        raise SweepError(f"{launcher.agent}: {error}") from None
    checked: list = []
    try:
        with _loops_only_resolve(checked):
            launcher.run_fn(holder.value, "")
    except (ValueError, TypeError, ImportError, FileNotFoundError) as error:  # SweepError is a ValueError
        raise SweepError(f"{launcher.agent}: {error}") from None
    except SystemExit as error:  # a launcher's own early exit (it prints "pixax: <what was wrong>")
        raise SweepError(f"{launcher.agent}: {error}") from None
    if not checked:
        raise SweepError(f"{launcher.agent}: {launcher.path.name} did not call core's launch, onpolicy or offline "
                         f"run function, so the sweep cannot check its flags")


# ----------------------------------------------------------------------------------------- jobs

def _slug(text: str) -> str:
    """A file-name-safe spelling (a dataset id's '/' becomes '_')."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def _seeds_slug(seeds: Sequence[int]) -> str:
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return "_".join(map(str, seeds))


def build_jobs(grid: Grid, sweep_dir: str | Path, python: str = sys.executable) -> list[Job]:
    """The job list of a grid (agents x tasks x grid values x seed groups, in that order), every job
    checked by its launcher. Raises SweepError listing every distinct problem; starts nothing."""
    sweep_dir = Path(sweep_dir).resolve()
    per_job = grid.seeds_per_job or len(grid.seeds)
    seed_groups = [grid.seeds[i:i + per_job] for i in range(0, len(grid.seeds), per_job)]
    arms = [dict(zip(grid.grid, values)) for values in itertools.product(*grid.grid.values())]
    fixed = {**SWEEP_DEFAULTS, **grid.fixed}

    jobs, problems = [], []
    for agent in grid.agents:
        try:
            launcher = load_launcher(agent)
        except SweepError as error:
            problems.append(str(error))
            continue
        for task, arm in itertools.product(grid.tasks, arms):
            arm_name = "+".join(f"{key}={value}" for key, value in arm.items()) or "default"
            arm_jobs = []
            for seeds in seed_groups:
                name = _slug(f"{agent}__{task}__{arm_name}__s{_seeds_slug(seeds)}")
                root = sweep_dir / "runs" / name
                flags = [f"--config.task={task}", f"--config.seeds={','.join(map(str, seeds))}",
                         f"--config.root={root}",
                         *(f"--config.{key}={value}" for key, value in {**fixed, **arm}.items())]
                arm_jobs.append(Job(name=name, agent=agent, task=task, seeds=tuple(seeds), arm=arm, root=str(root),
                                    log=str(sweep_dir / "logs" / f"{name}.log"),
                                    command=(python, str(launcher.path), *flags)))
            try:  # the seed groups of an arm differ only in their seeds (checked above) and root
                check_flags(launcher, arm_jobs[0].command[2:])
            except SweepError as error:
                if str(error) not in problems:
                    problems.append(str(error))
                continue
            jobs += arm_jobs
    if problems:
        raise SweepError("the grid has bad input, no job was started:\n  " + "\n  ".join(problems))
    names = [job.name for job in jobs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise SweepError(f"grid values that differ only in characters unsafe in file names give jobs the same "
                         f"name: {clashes}; spell the values differently")
    return jobs


def prepare_sweep_dir(jobs: Sequence[Job], grid: Grid, sweep_dir: str | Path, skip_existing: bool = False) -> list[Job]:
    """Writes jobs.json and creates logs/; returns the jobs to start. A sweep directory of a different
    grid, or jobs that already ran there (unless skip_existing, which leaves them out), stop here."""
    sweep_dir = Path(sweep_dir).resolve()
    listing = {"grid": dataclasses.asdict(grid), "jobs": [dataclasses.asdict(job) for job in jobs]}
    listing_path = sweep_dir / "jobs.json"
    if listing_path.is_file():
        earlier = json.loads(listing_path.read_text())
        if [job["command"] for job in earlier.get("jobs", [])] != [list(job.command) for job in jobs]:
            raise SweepError(f"{sweep_dir} already holds a different sweep ({len(earlier.get('jobs', []))} jobs in "
                             f"{listing_path}); choose another --dir, or remove that one")
    ran = [job for job in jobs if any(Path(job.root).glob(f"{job.agent}/*/*/config.json"))]
    if ran and not skip_existing:
        raise SweepError(f"{len(ran)} job(s) already ran in {sweep_dir} (e.g. {ran[0].root}); rerunning adds second "
                         f"run directories of the same seeds. Pass --skip-existing to start only the others (remove a "
                         f"job's folder to run it again), or choose another --dir")
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    listing_path.write_text(json.dumps(listing, indent=2, default=list) + "\n")
    return [job for job in jobs if job not in ran]


def describe(jobs: Sequence[Job]) -> str:
    """The job list as the commands a shell would run, one job per block."""
    return "\n".join(f"[{i}/{len(jobs)}] {job.name}\n  {shlex.join(job.command)}" for i, job in enumerate(jobs, 1))


# ----------------------------------------------------------------------------------------- running

def run_job(command: Sequence[str], log_path: str, on_start: Callable | None = None) -> int:
    """Runs one job's command with its output in log_path; returns its exit code."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT)
        if on_start is not None:
            on_start(process)
        return process.wait()


def slurm_task(command: Sequence[str], log_path: str) -> int:
    """One task of the SLURM array: the job's command; a failure raises, so SLURM and submitit mark it failed."""
    code = run_job(command, log_path)
    if code != 0:
        raise RuntimeError(f"exit code {code}: {shlex.join(command)}; see {log_path}")
    return code


@dataclasses.dataclass(frozen=True)
class JobResult:
    name: str
    returncode: int
    seconds: float
    log: str
    run_dirs: list[str]


def run_local(jobs: Sequence[Job], max_parallel: int = 1, out=None) -> list[JobResult]:
    """Runs the jobs as subprocesses, at most max_parallel at a time, printing each start and end (to `out`,
    default stdout); a failed job is reported with its log and the others go on. Ctrl-C stops them all."""
    lock, running, stopping = threading.Lock(), set(), threading.Event()
    t0 = time.monotonic()

    def say(text):
        with lock:
            print(f"[{time.monotonic() - t0:7.1f}s] {text}", file=out or sys.stdout, flush=True)

    def started(process):
        with lock:
            running.add(process)
            if stopping.is_set():  # Ctrl-C came while this job was starting
                process.terminate()

    def one(index_job):
        index, job = index_job
        if stopping.is_set():
            return JobResult(job.name, -1, 0.0, job.log, [])
        say(f"start {index}/{len(jobs)} {job.name}")
        start = time.monotonic()
        code = run_job(job.command, job.log, on_start=started)
        seconds = time.monotonic() - start
        runs = sorted(str(p.parent) for p in Path(job.root).glob(f"{job.agent}/*/*/config.json"))
        if code == 0:
            say(f"done  {index}/{len(jobs)} {job.name} in {seconds:.1f}s -> {', '.join(runs) or '(no run directory)'}")
        else:
            say(f"FAILED {index}/{len(jobs)} {job.name} (exit code {code}) after {seconds:.1f}s; log: {job.log}")
        return JobResult(job.name, code, seconds, job.log, runs)

    pool = ThreadPoolExecutor(max_workers=max_parallel)
    try:
        results = list(pool.map(one, enumerate(jobs, 1)))
    except KeyboardInterrupt:
        with lock:
            stopping.set()
            for process in running:
                process.terminate()
        raise
    finally:
        pool.shutdown(wait=True)
    return results


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None  # None: the cluster's default partition
    timeout_min: int = 2880
    gpus_per_node: int = 1
    cpus_per_task: int = 8  # the off-policy loops step their environments in subprocesses
    mem_gb: float | None = None
    array_parallelism: int = 256  # tasks of the array running at once


def import_submitit():
    """submitit, imported without its logging setup: at import it calls logging.config.dictConfig, which
    closes every logging handler already installed (a caller's, pytest's), so its own logger gets a
    handler here instead."""
    import logging
    import os

    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    import submitit

    logger = logging.getLogger("submitit")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s (%(asctime)s) - %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return submitit


def submit_slurm(jobs: Sequence[Job], sweep_dir: str | Path, options: SlurmOptions, cluster: str = "slurm") -> list:
    """Submits the jobs as one SLURM array (submitit's AutoExecutor.map_array); returns submitit's jobs.
    cluster="debug" runs the same submissions in this process (submitit's DebugExecutor)."""
    submitit = import_submitit()

    sweep_dir = Path(sweep_dir).resolve()
    executor = submitit.AutoExecutor(folder=sweep_dir / "slurm" / "%j", cluster=cluster)
    executor.update_parameters(name=f"pixax-{sweep_dir.name}", timeout_min=options.timeout_min,
                               gpus_per_node=options.gpus_per_node, cpus_per_task=options.cpus_per_task,
                               mem_gb=options.mem_gb, slurm_partition=options.partition,
                               slurm_array_parallelism=options.array_parallelism)
    # The task by reference to the installed module (also when this file runs as __main__), which the nodes import.
    import importlib

    task = importlib.import_module("scripts.sweep").slurm_task
    return executor.map_array(task, [list(job.command) for job in jobs], [job.log for job in jobs])


# ----------------------------------------------------------------------------------------- aggregation

AGGREGATE_METRICS = ("IQM", "mean", "median", "optimality gap")
SCORE_METRICS = ("auto", "episode_reward", "normalized_score")
NORMALIZATIONS = ("auto", "none", "minmax")
NOT_ARM_FLAGS = ("task", "seeds", "root", "dataset", "dataset_root", "progress")  # where and how, not what


@dataclasses.dataclass
class RunScores:
    run_dir: str
    agent: str
    task: str  # the problem: the task, or for offline runs the dataset
    flags: dict[str, Any]  # the run's launcher flags, flattened ('agent.lr': 0.001)
    scores: dict[int, float]  # seed -> mean of its last K evaluations
    last: int  # the frame (offline: update) of its last evaluation
    arm: str = ""


def _flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _eval_columns(run_dir: Path) -> list[str]:
    path = run_dir / "eval.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return f.readline().strip().split(",")


def read_run(run_dir: Path, metric: str, last: int) -> RunScores | None:
    """One run's per-seed scores (the mean of each seed's last `last` evaluations), or None without evaluations.
    A run whose eval.csv scripts/plot.py cannot read raises SystemExit with its message."""
    config = json.loads((run_dir / "config.json").read_text())
    flags = _flatten(config.get("launcher", {}))
    if metric == "normalized_score":  # offline runs: scripts/offline_table.py reads these
        scores, final = offline_table.seed_scores(run_dir, last)
        if not scores:
            return None
        agent, task = config["agent"], flags.get("dataset") or config["task"]
    else:
        agent, task, rows = plot.load_run(run_dir)
        curves = plot.frames_by_seed(rows)  # {(None, seed): {frame: return}}, a repeated frame counted once
        scores = {seed: float(np.mean([curve[frame] for frame in sorted(curve)[-last:]]))
                  for (_, seed), curve in curves.items()}
        final = max(max(curve) for curve in curves.values())
        task = flags.get("dataset") or task
    return RunScores(str(run_dir), agent, task, flags, scores, final)


def collect_scores(paths: Sequence[str], metric: str = "auto", last: int = 1,
                   notes: list | None = None) -> tuple[list[RunScores], str]:
    """Every run under `paths` (folders holding config.json), with each seed's score; and the metric used
    (auto: normalized_score when every run logs it, else episode_reward). Arms are named by the agent and
    the launcher flags that differ between the runs (task, seeds, root, dataset aside)."""
    notes = notes if notes is not None else []
    try:
        run_dirs = offline_table.run_dirs(paths)
    except FileNotFoundError as error:
        raise SweepError(f"aggregate: {error}") from None
    if not run_dirs:
        raise SweepError(f"aggregate: no run directory (a folder with config.json) under {', '.join(paths)}")
    if metric == "auto":
        every_run_normalized = all("normalized_score" in _eval_columns(d) for d in run_dirs)
        metric = "normalized_score" if every_run_normalized else "episode_reward"
    runs = []
    for run_dir in run_dirs:
        if metric not in _eval_columns(run_dir):
            if metric == "normalized_score" and (run_dir / "eval.csv").is_file():
                raise SweepError(f"aggregate: {run_dir}/eval.csv has no normalized_score column (only offline runs "
                                 f"log it); use --metric episode_reward")
            notes.append(f"skipped {run_dir}: no evaluations yet")
            continue
        try:
            run = read_run(run_dir, metric, last)
        except SystemExit as error:  # scripts/plot.py's message, e.g. "has a header but no evaluation rows yet"
            notes.append(f"skipped {run_dir}: {error}")
            continue
        if run is None:
            notes.append(f"skipped {run_dir}: no evaluations yet")
        else:
            runs.append(run)
    if not runs:
        raise SweepError(f"aggregate: none of the {len(run_dirs)} run(s) under {', '.join(paths)} has evaluations yet")
    keys = sorted({k for run in runs for k in run.flags} - set(NOT_ARM_FLAGS))
    # A flag differs when runs that have it disagree (a run without it is of an older or another launcher).
    varying = [k for k in keys if len({json.dumps(run.flags[k], default=str) for run in runs if k in run.flags}) > 1]
    for run in runs:
        settings = [f"{k}={run.flags[k]}" for k in varying if run.flags.get(k) is not None]
        run.arm = " ".join([run.agent, *settings])
    return runs, metric


def score_matrices(runs: Sequence[RunScores], notes: list) -> tuple[dict[str, np.ndarray], list[str]]:
    """{arm: scores of shape (runs, tasks)}, rliable's layout, over the tasks every arm has. Seeds of one
    arm and task pooled over runs; where an arm's tasks have different seed counts, the lowest seeds of
    each task are kept (the same count for all its tasks)."""
    cells: dict[tuple[str, str], dict[int, tuple[float, str]]] = {}
    for run in runs:
        cell = cells.setdefault((run.arm, run.task), {})
        for seed, score in run.scores.items():
            if seed in cell:
                raise SweepError(f"aggregate: seed {seed} of {run.arm!r} on {run.task} is in two runs, {cell[seed][1]} "
                                 f"and {run.run_dir}; remove one of them (e.g. an interrupted attempt)")
            cell[seed] = (score, run.run_dir)
    arms = list(dict.fromkeys(run.arm for run in runs))
    all_tasks = list(dict.fromkeys(run.task for run in runs))
    tasks = [t for t in all_tasks if all((arm, t) in cells for arm in arms)]
    for task in all_tasks:
        if task not in tasks:
            have = [arm for arm in arms if (arm, task) in cells]
            notes.append(f"task {task} left out: only {', '.join(have)} ran it")
    if not tasks:
        raise SweepError("aggregate: no task was run by every arm, so the arms cannot be compared; "
                         "aggregate a subset of the runs")
    matrices = {}
    for arm in arms:
        counts = [len(cells[arm, task]) for task in tasks]
        n = min(counts)
        if len(set(counts)) > 1:
            notes.append(f"{arm}: {n} seed(s) per task kept (its tasks have {sorted(set(counts))} seeds)")
        matrices[arm] = np.array([[cells[arm, task][seed][0] for seed in sorted(cells[arm, task])[:n]]
                                  for task in tasks]).T
    return matrices, tasks


def normalize_minmax(matrices: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per task (column): (score - lowest) / (highest - lowest) over every arm's seeds; a task where all
    scores are equal maps to 0."""
    stacked = np.concatenate(list(matrices.values()), axis=0)
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return {arm: (scores - low) / span for arm, scores in matrices.items()}


@contextlib.contextmanager
def _numpy_seed(seed: int):
    """rliable's stratified bootstrap draws from numpy's global generator; seed it, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def aggregate_scores(matrices: Mapping[str, np.ndarray], gamma: float | None = 1.0, reps: int = 2000,
                     seed: int = 0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{arm: {metric: (point, 95% CI low, high)}}: rliable's IQM, mean, median (of per-task means) and
    optimality gap at `gamma` (left out when gamma is None), with stratified bootstrap CIs over runs."""
    from rliable import library as rly
    from rliable import metrics

    names = [m for m in AGGREGATE_METRICS if gamma is not None or m != "optimality gap"]

    def all_metrics(scores):
        values = [metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores), metrics.aggregate_median(scores)]
        if gamma is not None:
            values.append(metrics.aggregate_optimality_gap(scores, gamma))
        return np.array(values)

    with _numpy_seed(seed):
        points, intervals = rly.get_interval_estimates(dict(matrices), all_metrics, reps=reps)
    return {arm: {name: (float(points[arm][i]), float(intervals[arm][0, i]), float(intervals[arm][1, i]))
                  for i, name in enumerate(names)} for arm in matrices}


def performance_profiles(matrices: Mapping[str, np.ndarray], taus: np.ndarray, reps: int = 2000,
                         seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{arm: (fraction of runs with score > tau, CI low, CI high)} at each tau (rliable's score distributions)."""
    from rliable import library as rly

    with _numpy_seed(seed):
        profiles, cis = rly.create_performance_profile(dict(matrices), taus, reps=reps)
    return {arm: (np.asarray(profiles[arm]), np.asarray(cis[arm][0]), np.asarray(cis[arm][1])) for arm in matrices}


def aggregates_figure(results: Mapping[str, Mapping[str, tuple[float, float, float]]], xlabel: str):
    """rliable's interval-estimate plot: per metric, each arm's 95% CI as a bar and its point estimate as a tick."""
    from rliable import plot_utils

    arms = list(results)
    names = list(next(iter(results.values())))
    points = {arm: np.array([results[arm][m][0] for m in names]) for arm in arms}
    intervals = {arm: np.array([[results[arm][m][1] for m in names], [results[arm][m][2] for m in names]])
                 for arm in arms}
    fig, _ = plot_utils.plot_interval_estimates(points, intervals, metric_names=names, algorithms=arms, xlabel=xlabel,
                                                row_height=max(0.5, 1.5 / len(arms)), xlabel_y_coordinate=-0.25)
    return fig


def profiles_figure(profiles: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], taus: np.ndarray, xlabel: str):
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    plot_utils.plot_performance_profiles({arm: p[0] for arm, p in profiles.items()}, taus,
                                         performance_profile_cis={arm: (p[1], p[2]) for arm, p in profiles.items()},
                                         ax=ax, xlabel=xlabel + r" ($\tau$)")
    ax.legend(loc="best", fontsize="small")
    return fig


def _number(value: float) -> str:
    return f"{value:.4g}"


def report_table(results, matrices, tasks, runs, metric, scale_note, notes, last, reps) -> str:
    """table.md: the aggregate table (per arm), the per-task table of raw scores, and how they were made."""
    names = list(next(iter(results.values())))
    rows = [["arm", "runs x tasks", *[f"{m} [95% CI]" for m in names]]]
    for arm, by_metric in results.items():
        rows.append([arm, f"{matrices[arm].shape[0]} x {matrices[arm].shape[1]}",
                     *[f"{_number(p)} [{_number(lo)}, {_number(hi)}]" for p, lo, hi in by_metric.values()]])
    raw: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        if run.task in tasks and run.arm in results:
            raw.setdefault((run.arm, run.task), []).extend(run.scores.values())
    task_rows = [["task", *results]]
    for task in tasks:
        cells = []
        for arm in results:
            values = np.array(raw[arm, task])
            spread = f" ± {_number(values.std(ddof=1))}" if len(values) > 1 else ""
            cells.append(f"{_number(values.mean())}{spread} (n={len(values)})")
        task_rows.append([task, *cells])
    lasts = sorted({run.last for run in runs})
    lines = [
        tables.markdown_table(rows, text_columns=2), "",
        f"Score of a seed: the mean of its last {last} evaluation(s)' `{metric}` in eval.csv "
        f"(last evaluation at {'update' if metric == 'normalized_score' else 'frame'}(s) "
        f"{', '.join(f'{x:,}' for x in lasts)}). {scale_note}",
        f"IQM, mean, median (of per-task means) and optimality gap: rliable 1.2, 95% stratified bootstrap "
        f"confidence intervals over runs ({reps} resamples, percentile method).", "",
        f"Raw `{metric}` per task (mean ± sample std over seeds):", "",
        tables.markdown_table(task_rows, text_columns=1),
    ]
    if notes:
        lines += ["", "Notes:", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def aggregate(paths: Sequence[str], out: str | Path, metric: str = "auto", last: int = 1, normalize: str = "auto",
              reps: int = 2000, seed: int = 0) -> dict:
    """Reads the runs, writes table.md, aggregates.png, performance_profile.png, scores.csv and summary.json
    to `out`; returns the summary."""
    import matplotlib.pyplot as plt  # the Agg backend: scripts/plot.py chose it when imported

    if metric not in SCORE_METRICS:
        raise SweepError(f"--metric {metric!r} is not valid; choose one of {', '.join(SCORE_METRICS)}")
    if normalize not in NORMALIZATIONS:
        raise SweepError(f"--normalize {normalize!r} is not valid; choose one of {', '.join(NORMALIZATIONS)}")
    if last < 1 or reps < 1:
        raise SweepError(f"--last {last} / --reps {reps}: expected positive integers")
    notes: list[str] = []
    runs, metric = collect_scores(paths, metric, last, notes)
    matrices, tasks = score_matrices(runs, notes)

    if normalize == "minmax" or (normalize == "auto" and metric == "episode_reward" and len(tasks) > 1):
        matrices = normalize_minmax(matrices)
        scale_note, gamma, xlabel = ("Scores are min-max normalized per task over all arms' seeds (0 = the lowest, "
                                     "1 = the highest seed score on that task); optimality gap at 1."), 1.0, \
            "min-max normalized score"
    elif metric == "normalized_score":
        scale_note, gamma, xlabel = ("Scores are the datasets' normalized scores (0 = random, 100 = expert "
                                     "reference); optimality gap at 100."), 100.0, "normalized score"
    else:
        scale_note, gamma, xlabel = (f"Scores are raw returns ({'one task' if len(tasks) == 1 else 'not normalized'}); "
                                     "no optimality gap (it needs a normalized scale)."), None, metric

    results = aggregate_scores(matrices, gamma, reps, seed)
    all_scores = np.concatenate([m.ravel() for m in matrices.values()])
    margin = 0.05 * (all_scores.max() - all_scores.min()) or 0.5  # so the profiles start at 1 and end at 0
    taus = np.linspace(all_scores.min() - margin, all_scores.max() + margin, 101)
    profiles = performance_profiles(matrices, taus, reps, seed)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = report_table(results, matrices, tasks, runs, metric, scale_note, notes, last, reps)
    (out / "table.md").write_text(table)
    for name, fig in (("aggregates.png", aggregates_figure(results, xlabel)),
                      ("performance_profile.png", profiles_figure(profiles, taus, xlabel))):
        fig.savefig(out / name, dpi=120, bbox_inches="tight")
        plt.close(fig)
    with (out / "scores.csv").open("w", newline="") as f:  # every seed's score before normalization
        writer = csv.writer(f)
        writer.writerow(["arm", "task", "seed", "score", "run_dir"])
        for run in runs:
            writer.writerows([run.arm, run.task, seed_id, score, run.run_dir]
                             for seed_id, score in sorted(run.scores.items()))
    summary = {"metric": metric, "last": last, "tasks": tasks, "scale": scale_note, "reps": reps, "notes": notes,
               "scores": {arm: m.tolist() for arm, m in matrices.items()},
               "aggregates": {arm: {name: list(v) for name, v in r.items()} for arm, r in results.items()},
               "profile": {"tau": taus.tolist(), **{arm: p[0].tolist() for arm, p in profiles.items()}}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table)
    print(f"wrote {out / 'table.md'}, {out / 'aggregates.png'}, {out / 'performance_profile.png'}, "
          f"{out / 'scores.csv'}, {out / 'summary.json'}")
    return summary


# ----------------------------------------------------------------------------------------- command line

def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep.py [run]", description="Build a grid of pixax jobs and run it "
                                "(local processes or one SLURM array). `sweep.py aggregate -h` for the results.")
    g = p.add_argument_group("grid")
    g.add_argument("--agents", help=f"comma-separated launchers: {', '.join(available_agents())}")
    g.add_argument("--tasks", help="comma-separated tasks, e.g. Hopper-v5,Walker2d-v5")
    g.add_argument("--seeds", help="e.g. 0-4 or 0,1,2 or 0-2,7 (default 0)")
    g.add_argument("--seeds-per-job", type=int, help="seeds trained in one process (default: all seeds in one job)")
    g.add_argument("--grid", action="append", default=[], metavar="FLAG=V1,V2",
                   help="one axis of the grid, e.g. agent.lr=1e-3,3e-4 (repeat for more axes)")
    g.add_argument("--set", action="append", default=[], dest="fixed", metavar="FLAG=V",
                   help="a flag for every job, e.g. agent.num_train_frames=100000 (repeatable)")
    g.add_argument("--grid-file", help="YAML or JSON with keys agents, tasks, seeds, seeds_per_job, grid, set "
                   "(the command line wins where both give a value)")
    r = p.add_argument_group("running")
    r.add_argument("--dir", help="the sweep directory (default sweeps/<YYYYmmdd-HHMMSS>)")
    r.add_argument("--dry-run", action="store_true", help="print the job list and write jobs.json; start nothing")
    r.add_argument("--launcher", default="local", help="local (subprocesses) or slurm (one array through submitit)")
    r.add_argument("--max-parallel", type=int, default=1, help="local: jobs running at once (default 1)")
    r.add_argument("--skip-existing", action="store_true",
                   help="start only the jobs whose folder holds no run yet (e.g. after removing failed ones)")
    s = p.add_argument_group("slurm")
    defaults = SlurmOptions()
    s.add_argument("--slurm-partition", default=defaults.partition, help="(default: the cluster's default)")
    s.add_argument("--timeout-min", type=int, default=defaults.timeout_min,
                   help=f"per task, in minutes (default {defaults.timeout_min})")
    s.add_argument("--gpus-per-node", type=int, default=defaults.gpus_per_node,
                   help=f"per task (default {defaults.gpus_per_node})")
    s.add_argument("--cpus-per-task", type=int, default=defaults.cpus_per_task,
                   help=f"(default {defaults.cpus_per_task}: the loops step environments in subprocesses)")
    s.add_argument("--mem-gb", type=float, default=defaults.mem_gb, help="per task (default: the cluster's)")
    s.add_argument("--array-parallelism", type=int, default=defaults.array_parallelism,
                   help=f"tasks of the array running at once (default {defaults.array_parallelism})")
    return p


def _aggregate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep.py aggregate", description="rliable aggregates (IQM, mean, median, "
                                "optimality gap with stratified bootstrap CIs) and performance profiles of runs.")
    p.add_argument("paths", nargs="+", help="sweep directories, run directories, or folders holding them")
    p.add_argument("--out", required=True, help="folder for table.md, aggregates.png, performance_profile.png, ...")
    p.add_argument("--metric", default="auto", help=f"{', '.join(SCORE_METRICS)} (auto: normalized_score when "
                   "every run logs it, else episode_reward)")
    p.add_argument("--last", type=int, default=1, help="evaluations averaged into a seed's score (default 1)")
    p.add_argument("--normalize", default="auto", help=f"{', '.join(NORMALIZATIONS)} (auto: min-max per task when "
                   "episode_reward scores span several tasks)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (rliable's papers use 50000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    return p


def _check_run_options(args) -> None:
    if args.launcher not in LAUNCHERS:
        raise SweepError(f"--launcher {args.launcher!r} is not valid; choose one of {', '.join(LAUNCHERS)}")
    if args.max_parallel < 1:
        raise SweepError(f"--max-parallel {args.max_parallel}: expected a positive number of jobs")
    for name in ("timeout_min", "gpus_per_node", "cpus_per_task", "array_parallelism"):
        value = getattr(args, name)
        if value < (0 if name == "gpus_per_node" else 1):
            raise SweepError(f"--{name.replace('_', '-')} {value}: expected a "
                             f"{'non-negative' if name == 'gpus_per_node' else 'positive'} integer")
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if args.launcher == "slurm" and not args.dry_run and missing:
        raise SweepError(f"--launcher slurm: {' and '.join(missing)} not on this machine's PATH; run the sweep from "
                         f"a SLURM login node, or use --launcher local")


def run_command(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    _check_run_options(args)
    grid = make_grid(args.agents, args.tasks, args.seeds, args.seeds_per_job, args.grid, args.fixed, args.grid_file)
    sweep_dir = Path(args.dir or Path("sweeps") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    jobs = build_jobs(grid, sweep_dir)
    # a dry run may look at a sweep that has run: it lists every job and says which already ran
    to_start = prepare_sweep_dir(jobs, grid, sweep_dir, skip_existing=args.skip_existing or args.dry_run)
    skipped = len(jobs) - len(to_start)
    print(f"sweep: {len(jobs)} job(s) in {sweep_dir}" + (f", {skipped} already ran (skipped)" if skipped else ""))
    if args.dry_run:
        print(describe(jobs))
        print(f"dry run: nothing started; the job list is in {sweep_dir / 'jobs.json'}")
        return 0
    if not to_start:
        print("sweep: nothing to start")
        return 0
    if args.launcher == "slurm":
        options = SlurmOptions(args.slurm_partition, args.timeout_min, args.gpus_per_node, args.cpus_per_task,
                               args.mem_gb, args.array_parallelism)
        submitted = submit_slurm(to_start, sweep_dir, options)
        (sweep_dir / "slurm.json").write_text(json.dumps(
            {job.name: handle.job_id for job, handle in zip(to_start, submitted)}, indent=2) + "\n")
        print(f"sweep: submitted {len(submitted)} task(s) as SLURM array {submitted[0].job_id.split('_')[0]}; "
              f"job logs in {sweep_dir / 'logs'}, SLURM's in {sweep_dir / 'slurm'}")
        print(f"when they are done: python {Path(__file__).relative_to(REPO)} aggregate {sweep_dir} "
              f"--out {sweep_dir / 'results'}")
        return 0
    start = time.monotonic()
    results = run_local(to_start, args.max_parallel)
    (sweep_dir / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2) + "\n")
    failed = [r for r in results if r.returncode != 0]
    print(f"sweep: {len(results) - len(failed)} of {len(results)} job(s) succeeded in "
          f"{time.monotonic() - start:.1f}s; results in {sweep_dir / 'results.json'}")
    for r in failed:
        print(f"  FAILED {r.name} (exit code {r.returncode}): {r.log}")
    print(f"aggregate: python {Path(__file__).relative_to(REPO)} aggregate {sweep_dir} --out {sweep_dir / 'results'}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["aggregate"]:
            args = _aggregate_parser().parse_args(argv[1:])
            aggregate(args.paths, args.out, args.metric, args.last, args.normalize, args.reps, args.seed)
            return 0
        return run_command(argv[1:] if argv[:1] == ["run"] else argv)
    except SweepError as error:
        raise SystemExit(f"sweep: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
