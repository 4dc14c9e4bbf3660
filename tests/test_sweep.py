"""scripts/sweep.py: the job list of a grid, bad input, local and SLURM launching, rliable aggregation."""

import csv
import json
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts import sweep

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A PPO run of a few seconds: 64 frames per seed, one update per 16 frames, an evaluation after each update.
TINY_PPO = ["agent.num_train_frames=64", "agent.num_steps=8", "agent.num_envs=2", "agent.num_minibatches=2",
            "agent.update_epochs=1", "agent.num_eval_episodes=1", "agent.eval_every_updates=1", "agent.hidden_dim=16",
            "seed_strategy=vmap"]  # one compiled program whatever the number of seeds


@pytest.fixture(autouse=True)
def no_jobs_start(monkeypatch):
    """Every test but the end-to-end ones: starting a job is a failure."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a job was started: {args}")
    monkeypatch.setattr(sweep, "run_job", refuse)


def iqm_by_hand(values) -> float:
    """The interquartile mean of 4k values: the mean of the middle 2k after sorting."""
    values = np.sort(np.ravel(values))
    quarter = len(values) // 4
    assert len(values) == 4 * quarter
    return float(values[quarter:len(values) - quarter].mean())


# ----------------------------------------------------------------------------------------- the job list

def test_parse_seeds():
    assert sweep.parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert sweep.parse_seeds("3") == (3,)
    assert sweep.parse_seeds("0,2, 5") == (0, 2, 5)
    assert sweep.parse_seeds("0-2,7") == (0, 1, 2, 7)
    for bad, message in (("4-0", "ends before it starts"), ("a", "not a seed"), ("-1", "not a seed"),
                         ("0-2,1", "more than once"), ("", "not a seed"), ("1-", "not a seed")):
        with pytest.raises(sweep.SweepError, match=message) as error:
            sweep.parse_seeds(bad)
        assert "0-4" in str(error.value)  # names the valid forms


def test_dry_run_gives_the_job_list_and_starts_nothing(tmp_path, capsys):
    sweep_dir = tmp_path / "grid"
    code = sweep.main(["--agents", "ppo,td3", "--tasks", "InvertedPendulum-v5", "--seeds", "0-2",
                       "--seeds-per-job", "2", "--grid", "agent.hidden_dim=16,32",
                       "--set", "checkpoint_every_frames=5000", "--dir", str(sweep_dir), "--dry-run"])
    assert code == 0
    printed = capsys.readouterr().out

    expected = []
    for agent in ("ppo", "td3"):
        for hidden in ("16", "32"):
            for seeds, slug in (("0,1", "0-1"), ("2", "2")):
                name = f"{agent}__InvertedPendulum-v5__agent.hidden_dim={hidden}__s{slug}"
                root = sweep_dir.resolve() / "runs" / name
                expected.append((name, root, [sys.executable, str(REPO / "experiments" / f"{agent}.py"),
                                              "--config.task=InvertedPendulum-v5", f"--config.seeds={seeds}",
                                              f"--config.root={root}", "--config.progress=False",
                                              "--config.checkpoint_every_frames=5000",
                                              f"--config.agent.hidden_dim={hidden}"]))
    listing = json.loads((sweep_dir / "jobs.json").read_text())
    assert len(listing["jobs"]) == 8
    for job, (name, root, command) in zip(listing["jobs"], expected):
        assert job["name"] == name
        assert job["root"] == str(root)
        assert job["command"] == command
        assert job["log"] == str(sweep_dir.resolve() / "logs" / f"{name}.log")
        assert shlex.join(command) in printed
    assert listing["jobs"][0]["seeds"] == [0, 1] and listing["jobs"][1]["seeds"] == [2]
    assert "8 job(s)" in printed and "dry run: nothing started" in printed
    # nothing started: no run, no log, no results
    assert not (sweep_dir / "runs").exists() and not list((sweep_dir / "logs").iterdir())
    assert not (sweep_dir / "results.json").exists()


def test_grid_file_and_command_line_merge(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("agents: [ppo]\ntasks: [InvertedPendulum-v5, Hopper-v5]\nseeds: 0-3\nseeds_per_job: 2\n"
                         "grid:\n  agent.lr: [1e-3, 0.0003]\nset:\n  agent.hidden_dim: 16\n")
    grid = sweep.make_grid(tasks="Hopper-v5", grid=["agent.update_epochs=1,2"], grid_file=str(grid_file))
    assert grid.agents == ("ppo",) and grid.tasks == ("Hopper-v5",)  # the command line's tasks win
    assert grid.seeds == (0, 1, 2, 3) and grid.seeds_per_job == 2
    assert grid.grid == {"agent.lr": ("1e-3", "0.0003"), "agent.update_epochs": ("1", "2")}
    assert grid.fixed == {"agent.hidden_dim": "16"}
    jobs = sweep.build_jobs(grid, tmp_path / "s")
    assert len(jobs) == 1 * 1 * 4 * 2  # agents x tasks x (2 x 2 grid values) x seed groups
    assert [job.arm for job in jobs[::2]] == [{"agent.lr": "1e-3", "agent.update_epochs": "1"},
                                              {"agent.lr": "1e-3", "agent.update_epochs": "2"},
                                              {"agent.lr": "0.0003", "agent.update_epochs": "1"},
                                              {"agent.lr": "0.0003", "agent.update_epochs": "2"}]


@pytest.mark.parametrize("args, expected", [
    (["--agents", "td4"], ["unknown agent 'td4'", "ppo", "td3", "tdmpc"]),
    (["--agents", "ppo", "--tasks", "InvertedPendulum-v9"], ["not a known task", "InvertedPendulum-v5"]),
    (["--agents", "td3", "--tasks", "InvertedPendulum-v9"], ["not a known task", "InvertedPendulum-v5"]),
    (["--grid", "agent.lrr=1e-3,3e-4"], ["unknown flag 'agent.lrr'", "agent.lr", "agent.num_steps"]),
    (["--agents", "ppo,td3", "--set", "save_video=False"], ["ppo: unknown flag 'save_video'", "async_envs"]),
    (["--set", "agent.hidden_dim=abc"], ["--config.agent.hidden_dim=abc", "invalid literal for int"]),
    (["--set", "agent.num_train_frames=7"], ["num_train_frames=7", "at least one update"]),  # the loop's resolve
    (["--set", "seed_strategy=fast"], ["seed_strategy='fast'", "vmap"]),
    (["--seeds", "4-0"], ["--seeds '4-0'", "ends before it starts", "0-4"]),
    (["--set", "task=Hopper-v5"], ["'task' is set by the sweep", "--tasks"]),
    (["--grid", "agent.lr"], ["--grid 'agent.lr'", "FLAG=VALUES"]),
    (["--seeds-per-job", "0"], ["--seeds-per-job 0", "positive"]),
    (["--launcher", "cloud"], ["--launcher 'cloud'", "local, slurm"]),
    (["--max-parallel", "0"], ["--max-parallel 0", "positive"]),
])
def test_bad_input_stops_before_any_job(tmp_path, args, expected):
    defaults = {"--agents": "ppo", "--tasks": "InvertedPendulum-v5"}
    argv = [*args, *(item for key, value in defaults.items() if key not in args for item in (key, value)),
            "--dir", str(tmp_path / "s")]
    with pytest.raises(SystemExit) as error:
        sweep.main(argv)  # not a dry run: run_job (refused by the fixture) would be next
    message = str(error.value)
    assert message.startswith("sweep: ")
    for text in expected:
        assert text in message, (text, message)
    assert not (tmp_path / "s").exists()


def test_a_second_launch_into_the_same_sweep_is_refused(tmp_path):
    grid = sweep.make_grid("ppo", "InvertedPendulum-v5", "0", grid=["agent.lr=1e-3,3e-4"])
    jobs = sweep.build_jobs(grid, tmp_path)
    assert sweep.prepare_sweep_dir(jobs, grid, tmp_path) == jobs  # after a dry run, the same jobs may start
    run_dir = Path(jobs[0].root) / "ppo" / "InvertedPendulum-v5" / "20260101-000000-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    with pytest.raises(sweep.SweepError, match="already ran"):
        sweep.prepare_sweep_dir(jobs, grid, tmp_path)
    assert sweep.prepare_sweep_dir(jobs, grid, tmp_path, skip_existing=True) == jobs[1:]
    other = sweep.make_grid("ppo", "InvertedPendulum-v5", "0-1")
    with pytest.raises(sweep.SweepError, match="different sweep"):
        sweep.prepare_sweep_dir(sweep.build_jobs(other, tmp_path), other, tmp_path)


# ----------------------------------------------------------------------------------------- launching

def cheap_job(tmp_path, name, code):
    """A job whose command prints its name and exits with `code`."""
    return sweep.Job(name=name, agent="x", task="t", seeds=(0,), arm={}, root=str(tmp_path / "runs" / name),
                     log=str(tmp_path / "logs" / f"{name}.log"),
                     command=(sys.executable, "-c", f"print('hello from {name}'); raise SystemExit({code})"))


def test_local_launcher_reports_a_failed_job_and_runs_the_others(tmp_path, monkeypatch, capsys):
    monkeypatch.undo()  # jobs may start here
    jobs = [cheap_job(tmp_path, "fails", 3), cheap_job(tmp_path, "works", 0), cheap_job(tmp_path, "also", 0)]
    results = sweep.run_local(jobs, max_parallel=2)
    assert [(r.name, r.returncode) for r in results] == [("fails", 3), ("works", 0), ("also", 0)]
    printed = capsys.readouterr().out
    assert "FAILED 1/3 fails (exit code 3)" in printed and f"log: {jobs[0].log}" in printed
    assert "done  2/3 works" in printed and "done  3/3 also" in printed and "start 3/3 also" in printed
    log = Path(jobs[0].log).read_text()
    assert log.startswith("$ " + shlex.join(jobs[0].command)) and "hello from fails" in log


def write_fake_slurm(bin_dir: Path) -> None:
    """sbatch that keeps the script it is given and answers like SLURM; srun, which submitit looks for."""
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncp "$1" "$(dirname "$0")/submitted.sh"\n'
                                    'echo "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)


def run_array_task(folder: str, task: int) -> int:
    """What a SLURM node does for task `task` of array 4242: submitit's entry point with SLURM's variables;
    returns its exit code (what SLURM records as the task's state)."""
    env = dict(os.environ, SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID=str(5000 + task), SLURM_ARRAY_JOB_ID="4242",
               SLURM_ARRAY_TASK_ID=str(task), SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0",
               SLURM_NODEID="0", SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="localhost")
    return subprocess.run([sys.executable, "-u", "-m", "submitit.core._submit", folder], cwd=REPO, env=env,
                          capture_output=True, timeout=60).returncode


def with_fake_slurm(bin_dir: Path) -> dict:
    """os.environ with the fake sbatch / srun first on PATH. The submissions run in subprocesses: submitit
    is imported there, away from this pytest worker's logging and capture."""
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_slurm_launcher_submits_one_array(tmp_path):
    write_fake_slurm(tmp_path / "bin")
    env = with_fake_slurm(tmp_path / "bin")
    sweep_dir = tmp_path / "s"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep.py"), "--agents", "ppo", "--tasks",
                           "InvertedPendulum-v5", "--seeds", "0-3", "--seeds-per-job", "2", "--grid",
                           "agent.lr=1e-3,3e-4", "--dir", str(sweep_dir), "--launcher", "slurm", "--slurm-partition",
                           "gpu", "--timeout-min", "90", "--gpus-per-node", "1", "--cpus-per-task", "4",
                           "--array-parallelism", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submitted 4 task(s) as SLURM array 4242" in done.stdout
    script = (tmp_path / "bin" / "submitted.sh").read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --job-name=pixax-s"):
        assert line in script.splitlines(), line
    assert "-m submitit.core._submit" in script
    jobs = json.loads((sweep_dir / "jobs.json").read_text())["jobs"]
    task_ids = json.loads((sweep_dir / "slurm.json").read_text())
    assert task_ids == {job["name"]: f"4242_{i}" for i, job in enumerate(jobs)}
    for i, job in enumerate(jobs):  # array task i runs job i's command, logging to job i's log
        with open(sweep_dir / "slurm" / f"4242_{i}" / f"4242_{i}_submitted.pkl", "rb") as f:
            submitted = pickle.load(f)  # a submitit DelayedSubmission
        assert submitted.function is sweep.slurm_task  # pickled by reference to the installed module
        assert tuple(submitted.args) == (list(job["command"]), job["log"])

    # What the nodes do, on cheap commands: task 0 succeeds, task 1 fails and says where its log is.
    done = subprocess.run([sys.executable, __file__, "submit-cheap", str(tmp_path / "c")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = str(tmp_path / "c" / "slurm" / "%j")
    assert [run_array_task(folder, task) for task in (0, 1)] == [0, 1]  # SLURM sees task 1 fail
    outcome = [pickle.loads((tmp_path / "c" / "slurm" / f"4242_{t}" / f"4242_{t}_0_result.pkl").read_bytes())
               for t in (0, 1)]
    assert outcome[0] == ("success", 0)
    cheap = cheap_jobs(tmp_path / "c")
    assert outcome[1][0] == "error" and "exit code 1" in outcome[1][1] and cheap[1].log in outcome[1][1]
    assert "hello from ok" in Path(cheap[0].log).read_text() and "hello from bad" in Path(cheap[1].log).read_text()


def cheap_jobs(folder: Path) -> list:
    return [cheap_job(folder, "ok", 0), cheap_job(folder, "bad", 1)]


# ----------------------------------------------------------------------------------------- aggregation

def test_rliable_aggregates_of_hand_made_scores():
    scores = np.array([7.0, 1.0, 100.0, 3.0, 5.0, 2.0, 6.0, 4.0])
    results = sweep.aggregate_scores({"a": scores.reshape(8, 1)}, gamma=None, reps=200)["a"]
    assert set(results) == {"IQM", "mean", "median"}  # no optimality gap on a raw scale
    assert results["IQM"][0] == pytest.approx((3 + 4 + 5 + 6) / 4)  # the mean of the middle 4 of 8
    assert results["mean"][0] == pytest.approx(128 / 8)
    assert results["median"][0] == pytest.approx(128 / 8)  # rliable: the median of per-task means (one task)
    # 4 runs x 2 tasks: IQM over all 8; mean and median of the two task means; optimality gap at 1
    matrix = np.array([[0.1, 0.9], [0.4, 1.3], [0.2, 0.5], [0.8, 0.6]])
    results = sweep.aggregate_scores({"b": matrix}, gamma=1.0, reps=200)["b"]
    assert results["IQM"][0] == pytest.approx((0.4 + 0.5 + 0.6 + 0.8) / 4)
    task_means = [(0.1 + 0.4 + 0.2 + 0.8) / 4, (0.9 + 1.3 + 0.5 + 0.6) / 4]
    assert results["mean"][0] == pytest.approx(np.mean(task_means))
    assert results["median"][0] == pytest.approx(np.mean(task_means))  # the median of two values
    assert results["optimality gap"][0] == pytest.approx(1 - np.mean([0.1, 0.9, 0.4, 1.0, 0.2, 0.5, 0.8, 0.6]))
    for point, low, high in results.values():
        assert low <= point + 1e-12 and point <= high + 1e-12
    again = sweep.aggregate_scores({"b": matrix}, gamma=1.0, reps=200)["b"]
    assert again == results  # the bootstrap is seeded


def write_run(folder: Path, agent: str, task: str, launcher: dict, rewards: dict[int, list[float]]) -> Path:
    """A run directory as a launcher writes it: config.json and eval.csv (one row per evaluation and seed)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"agent": agent, "task": task,
                                                    "launcher": {"task": task, "root": str(folder), **launcher}}))
    with open(folder / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "step", "frame", "episode_reward"])
        for i in range(max(len(r) for r in rewards.values())):
            for seed, values in rewards.items():
                if i < len(values):
                    writer.writerow([seed, 100 * i, 100 * i, values[i]])
    return folder


def test_aggregate_normalizes_per_task_and_writes_table_and_plots(tmp_path, capsys):
    # two arms (agent.lr), two tasks, seeds 0 and 1; a seed's score is the mean of its last 2 evaluations
    rewards = {
        ("1e-3", "Hopper-v5"): {0: [0, 10, 20, 30], 1: [0, 10, 40, 60]},  # scores 25, 50
        ("3e-4", "Hopper-v5"): {0: [0, 5, 5, 5], 1: [0, 0, 10, 20]},  # 5, 15
        ("1e-3", "Walker2d-v5"): {0: [1, 2, 3, 4], 1: [1, 1, 1, 1]},  # 3.5, 1
        ("3e-4", "Walker2d-v5"): {0: [9, 9, 9, 9], 1: [0, 0, 2, 4]},  # 9, 3
    }
    for (lr, task), by_seed in rewards.items():
        write_run(tmp_path / "runs" / f"{lr}-{task}", "ppo", task, {"seeds": "0,1", "agent": {"lr": float(lr)}},
                  by_seed)
    empty = tmp_path / "runs" / "failed"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"agent": "ppo", "task": "Hopper-v5", "launcher": {}}))
    (empty / "eval.csv").write_text("seed,step,frame,episode_reward\n")

    summary = sweep.aggregate([str(tmp_path / "runs")], tmp_path / "out", last=2, reps=300)
    hopper = {"ppo agent.lr=0.001": [25, 50], "ppo agent.lr=0.0003": [5, 15]}  # min 5, max 50
    walker = {"ppo agent.lr=0.001": [3.5, 1], "ppo agent.lr=0.0003": [9, 3]}  # min 1, max 9
    assert summary["metric"] == "episode_reward" and summary["tasks"] == ["Hopper-v5", "Walker2d-v5"]
    for arm in hopper:
        normalized = np.array([(np.array(hopper[arm]) - 5) / 45, (np.array(walker[arm]) - 1) / 8]).T
        np.testing.assert_allclose(summary["scores"][arm], normalized)
        iqm, mean = summary["aggregates"][arm]["IQM"][0], summary["aggregates"][arm]["mean"][0]
        assert iqm == pytest.approx(iqm_by_hand(normalized))
        assert mean == pytest.approx(normalized.mean())
        assert summary["aggregates"][arm]["optimality gap"][0] == pytest.approx(1 - np.minimum(normalized, 1).mean())
        profile = np.array(summary["profile"][arm])
        taus = np.array(summary["profile"]["tau"])
        np.testing.assert_allclose(profile, [(normalized > tau).mean() for tau in taus])
        assert profile[0] == 1 and profile[-1] == 0

    table = (tmp_path / "out" / "table.md").read_text()
    assert table == capsys.readouterr().out.split("wrote ")[0].rstrip("\n") + "\n"  # printed as written
    assert "min-max normalized per task" in table and "last 2 evaluation(s)" in table
    assert f"skipped {empty}" in table and "no evaluation rows" in table
    row = next(line for line in table.splitlines() if line.startswith("| ppo agent.lr=0.001 "))
    normalized = np.array([[20 / 45, 2.5 / 8], [45 / 45, 0 / 8]])
    assert f"{iqm_by_hand(normalized):.4g} [" in row and "4 x 2" not in row and "2 x 2" in row
    assert "| Hopper-v5 " in table and "37.5 ± 17.68 (n=2)" in table  # the raw per-task table
    for name in ("aggregates.png", "performance_profile.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_MAGIC


def test_aggregate_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        sweep.main(["aggregate", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no run directory"):
        sweep.main(["aggregate", str(tmp_path), "--out", str(tmp_path / "o")])
    write_run(tmp_path / "r", "ppo", "Hopper-v5", {}, {0: [1.0]})
    with pytest.raises(SystemExit, match="--metric 'score' is not valid; choose one of auto, episode_reward"):
        sweep.main(["aggregate", str(tmp_path), "--out", str(tmp_path / "o"), "--metric", "score"])
    with pytest.raises(SystemExit, match="no normalized_score column"):
        sweep.main(["aggregate", str(tmp_path), "--out", str(tmp_path / "o"), "--metric", "normalized_score"])
    write_run(tmp_path / "r2", "ppo", "Hopper-v5", {}, {0: [2.0]})
    with pytest.raises(SystemExit, match="seed 0 of 'ppo' on Hopper-v5 is in two runs"):
        sweep.main(["aggregate", str(tmp_path), "--out", str(tmp_path / "o")])


# ----------------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_a_tiny_grid_runs_locally_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.undo()  # jobs start here
    monkeypatch.setenv("MUJOCO_GL", "egl")
    sweep_dir = tmp_path / "tiny"
    argv = ["--agents", "ppo", "--tasks", "InvertedPendulum-v5", "--seeds", "0-3", "--grid", "agent.lr=1e-3,3e-4",
            *(item for flag in TINY_PPO for item in ("--set", flag)), "--dir", str(sweep_dir), "--max-parallel", "2"]
    assert sweep.main(argv) == 0
    printed = capsys.readouterr().out
    assert "start 1/2 ppo__InvertedPendulum-v5__agent.lr=1e-3__s0-3" in printed
    assert "2 of 2 job(s) succeeded" in printed
    results = json.loads((sweep_dir / "results.json").read_text())
    assert [r["returncode"] for r in results] == [0, 0] and all(len(r["run_dirs"]) == 1 for r in results)

    assert sweep.main(["aggregate", str(sweep_dir), "--out", str(tmp_path / "out"), "--last", "3",
                       "--reps", "500"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    table = (tmp_path / "out" / "table.md").read_text()
    assert "raw returns (one task)" in table
    for result, lr in zip(results, ("0.001", "0.0003")):
        rows = np.genfromtxt(Path(result["run_dirs"][0]) / "eval.csv", delimiter=",", names=True)
        scores = []
        for seed in range(4):
            mine = rows[rows["seed"] == seed]
            scores.append(mine["episode_reward"][np.argsort(mine["frame"])][-3:].mean())
        arm = f"ppo agent.lr={lr}"
        np.testing.assert_allclose(np.ravel(summary["scores"][arm]), scores)
        iqm, mean = summary["aggregates"][arm]["IQM"], summary["aggregates"][arm]["mean"]
        assert iqm[0] == pytest.approx(iqm_by_hand(scores)) and mean[0] == pytest.approx(np.mean(scores))
        assert iqm[1] <= iqm[0] <= iqm[2]
        row = next(line for line in table.splitlines() if line.startswith(f"| {arm} "))
        assert f"{iqm[0]:.4g} [{iqm[1]:.4g}, {iqm[2]:.4g}]" in row

    # the aggregates plot draws these numbers: per metric, a bar over the CI and a tick at the point
    results = {arm: {metric: tuple(v) for metric, v in by.items()} for arm, by in summary["aggregates"].items()}
    fig = sweep.aggregates_figure(results, "episode_reward")
    arms = list(summary["aggregates"])
    for ax, metric in zip(fig.axes, ("IQM", "mean", "median")):
        assert ax.get_title() == metric
        for bar, arm in zip(ax.patches, arms):
            _, low, high = summary["aggregates"][arm][metric]
            assert bar.get_x() == pytest.approx(low) and bar.get_width() == pytest.approx(high - low)
        ticks = [segment[0][0] for collection in ax.collections for segment in collection.get_segments()]
        assert ticks == pytest.approx([summary["aggregates"][arm][metric][0] for arm in arms])
    for name in ("aggregates.png", "performance_profile.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_MAGIC


if __name__ == "__main__":  # test_slurm_launcher_submits_one_array's submission of the cheap jobs
    assert sys.argv[1] == "submit-cheap"
    sweep.submit_slurm(cheap_jobs(Path(sys.argv[2])), Path(sys.argv[2]), sweep.SlurmOptions())
