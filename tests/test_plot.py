"""Tests for scripts/plot.py: loading runs, pooling seeds, the 95% band, the reference loader, errors."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts import plot

REPO = Path(__file__).resolve().parents[1]
REAL_REFERENCE = Path("/work/shared/reference/drqv2-curves/dmc_cartpole_swingup.csv")
EVAL_HEADER = ["seed", "step", "frame", "episode_reward", "episode_length", "wall_time"]


def write_run(run_dir: Path, agent: str, task: str, rewards_by_seed: dict[int, dict[int, float]]) -> Path:
    """Writes a minimal run directory: config.json and eval.csv with the launcher's header."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"agent": agent, "task": task, "seeds": list(rewards_by_seed)}))
    with (run_dir / "eval.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(EVAL_HEADER)
        for seed, curve in rewards_by_seed.items():
            for frame, reward in curve.items():
                writer.writerow([seed, frame // 2, frame, reward, 1000, 1.5])
    return run_dir


def write_reference(path: Path, rewards_by_seed: dict[int, dict[int, float]], task: str) -> Path:
    """Writes a reference file in the official layout: ,agent,task,seed,frame,episode_reward,hour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "agent", "task", "seed", "frame", "episode_reward", "hour"])
        index = 0
        for seed, curve in rewards_by_seed.items():
            for frame, reward in curve.items():
                writer.writerow([index, "DrQ-v2", task, seed, frame, reward, frame / 1e6])
                index += 1
    return path


@pytest.fixture
def two_runs(tmp_path):
    """Two drqv2 cartpole_swingup runs, 2 seeds each (seeds 0 and 1 in both), evaluated at 0, 1000, 2000."""
    run_a = write_run(
        tmp_path / "runs/drqv2/cartpole_swingup/a", "drqv2", "cartpole_swingup",
        {0: {0: 1.0, 1000: 3.0, 2000: 5.0}, 1: {0: 3.0, 1000: 7.0, 2000: 9.0}},
    )
    run_b = write_run(
        tmp_path / "runs/drqv2/cartpole_swingup/b", "drqv2", "cartpole_swingup",
        {0: {0: 5.0, 1000: 11.0, 2000: 13.0}, 1: {0: 7.0, 1000: 15.0, 2000: 17.0}},
    )
    return run_a, run_b


@pytest.fixture
def reference_dir(tmp_path):
    """A reference folder with cartpole_swingup only: 2 seeds, frames 0..5000 (beyond the runs' 2000)."""
    ref = tmp_path / "reference"
    write_reference(
        ref / "dmc_cartpole_swingup.csv",
        {1: {f: 100.0 + f / 100 for f in range(0, 6000, 1000)}, 2: {f: 200.0 + f / 100 for f in range(0, 6000, 1000)}},
        "cartpole_swingup",
    )
    return ref


def test_mean_and_band_against_hand_computed_values():
    # frame 0: returns 1, 3 -> mean 2, sample std sqrt(2), half width 1.96 * sqrt(2) / sqrt(2) = 1.96
    # frame 10: returns 3, 7 -> mean 5, sample std sqrt(8), half width 1.96 * sqrt(8) / sqrt(2) = 3.92
    x, mean, lo, hi = plot.mean_and_band({0: {10: 3.0, 0: 1.0}, 1: {0: 3.0, 10: 7.0}})
    np.testing.assert_array_equal(x, [0, 10])
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(lo, [0.04, 1.08])
    np.testing.assert_allclose(hi, [3.96, 8.92])


def test_mean_and_band_uses_union_of_frames_with_per_frame_n():
    # seed 1 was not evaluated at frame 20: there n = 1, so mean = its value and no band.
    x, mean, lo, hi = plot.mean_and_band({0: {0: 1.0, 10: 3.0, 20: 8.0}, 1: {0: 3.0, 10: 7.0}})
    np.testing.assert_array_equal(x, [0, 10, 20])
    np.testing.assert_allclose(mean, [2.0, 5.0, 8.0])
    np.testing.assert_allclose(lo, [0.04, 1.08, 8.0])
    np.testing.assert_allclose(hi, [3.96, 8.92, 8.0])


def test_mean_and_band_single_seed_has_no_band():
    x, mean, lo, hi = plot.mean_and_band({0: {0: 4.0, 5: 6.0}})
    np.testing.assert_allclose(mean, [4.0, 6.0])
    np.testing.assert_allclose(lo, mean)
    np.testing.assert_allclose(hi, mean)


def test_load_run_reads_agent_task_and_rows(two_runs):
    agent, task, rows = plot.load_run(two_runs[0])
    assert (agent, task) == ("drqv2", "cartpole_swingup")
    assert len(rows) == 6
    assert rows[0] == {"seed": 0, "frame": 0, "episode_reward": 1.0}
    assert rows[-1] == {"seed": 1, "frame": 2000, "episode_reward": 9.0}


def test_collect_runs_pools_seeds_of_both_runs(two_runs):
    by_task = plot.collect_runs(two_runs)
    curves = by_task["cartpole_swingup"]["drqv2"]
    assert len(curves) == 4  # seed 0 and 1 of each run are distinct runs, not merged
    x, mean, lo, hi = plot.mean_and_band(curves)
    # frame 0: returns 1, 3, 5, 7 -> mean 4, squared deviations 9+1+1+9 = 20, sample var 20/3
    # frame 1000: returns 3, 7, 11, 15 -> mean 9, squared deviations 36+4+4+36 = 80, sample var 80/3
    np.testing.assert_allclose(mean, [4.0, 9.0, 11.0])
    np.testing.assert_allclose(hi[:2] - mean[:2], [1.96 * math.sqrt(20 / 3) / 2, 1.96 * math.sqrt(80 / 3) / 2])
    # the same run given twice is not counted twice
    assert len(plot.collect_runs([two_runs[0], two_runs[0]])["cartpole_swingup"]["drqv2"]) == 2


def test_plot_labels_reference_cut_and_task_without_reference(two_runs, reference_dir, tmp_path):
    other = write_run(tmp_path / "runs/drqv2/walker_walk/c", "drqv2", "walker_walk", {3: {0: 1.0, 4000: 2.0}})
    fig = plot.plot_tasks(plot.collect_runs([*two_runs, other]), reference_dir)
    cartpole, walker = fig.axes[:2]
    assert cartpole.get_title() == "cartpole_swingup"
    assert [t.get_text() for t in cartpole.get_legend().get_texts()] == [
        "pixax drqv2 (4 seeds)",
        "official DrQ-v2 (2 seeds)",
    ]
    reference_line = cartpole.get_lines()[1]
    np.testing.assert_array_equal(reference_line.get_xdata(), [0, 1000, 2000])  # cut to the runs' range
    np.testing.assert_allclose(reference_line.get_ydata(), [150.0, 160.0, 170.0])
    assert cartpole.get_xlabel() == "frames" and cartpole.get_ylabel() == "episode return"
    assert [t.get_text() for t in walker.get_legend().get_texts()] == ["pixax drqv2 (1 seed)"]
    plot.plt.close(fig)


def test_main_writes_png(two_runs, reference_dir, tmp_path):
    out = tmp_path / "figs" / "plot.png"
    plot.main([str(d) for d in two_runs] + ["--out", str(out), "--reference-dir", str(reference_dir),
                                             "--max-frames", "1000", "--title", "test"])
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_script_runs_from_command_line(two_runs, tmp_path):
    out = tmp_path / "cli.png"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "plot.py"), str(two_runs[0]), "--out", str(out),
         "--reference-dir", str(tmp_path)],  # an existing folder without dmc_cartpole_swingup.csv
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


@pytest.mark.skipif(not REAL_REFERENCE.is_file(), reason=f"{REAL_REFERENCE} is not on this machine")
def test_load_reference_on_official_cartpole_swingup():
    curves = plot.load_reference(REAL_REFERENCE)
    assert sorted(curves) == list(range(1, 11))  # 10 official seeds, numbered 1..10
    assert all(sorted(c) == list(range(0, 1_000_000, 20_000)) for c in curves.values())
    assert curves[1][0] == pytest.approx(10.202357600247634)  # first data line of the file
    assert curves[1][60000] == pytest.approx(506.1902836714295)


def test_bad_run_dir_names_path_and_missing_files(tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(SystemExit) as error:
        plot.main([str(empty), "--out", str(tmp_path / "x.png")])
    message = str(error.value)
    assert str(empty) in message and "eval.csv" in message and "config.json" in message

    (empty / "eval.csv").write_text(",".join(EVAL_HEADER) + "\n0,0,0,1.0,1000,0.0\n")
    with pytest.raises(SystemExit, match="has no config.json"):
        plot.load_run(empty)

    with pytest.raises(SystemExit, match="does not exist"):
        plot.load_run(tmp_path / "missing")
    assert not (tmp_path / "x.png").exists()


def test_eval_csv_without_reward_column_is_reported(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"agent": "drqv2", "task": "cartpole_swingup"}))
    (run / "eval.csv").write_text("seed,step,frame\n0,0,0\n")
    with pytest.raises(SystemExit, match="episode_reward") as error:
        plot.load_run(run)
    assert str(run / "eval.csv") in str(error.value)


def test_reference_with_missing_columns_names_file_and_expected_columns(tmp_path):
    bad = tmp_path / "dmc_cartpole_swingup.csv"
    bad.write_text(",agent,task,seed,step,return\n0,DrQ-v2,cartpole_swingup,1,0,1.0\n")
    with pytest.raises(SystemExit) as error:
        plot.load_reference(bad)
    message = str(error.value)
    assert str(bad) in message and "frame" in message and "episode_reward" in message
