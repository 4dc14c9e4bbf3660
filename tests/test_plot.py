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
REAL_PROPS_HOPPER = Path("/work/shared/reference/props-curves/Hopper.csv")
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


# --- any logged metric (--metric, --bin-frames, --events) -------------------------------------------

UPDATES_HEADER = ["seed", "step", "frame", "dormant_ratio", "dormant_ratio/encoder", "stddev", "lambda", "alpha",
                  "awaken_step", "perturbed"]
METRICS_HEADER = ["seed", "step", "frame", "episode", "episode_reward", "episode_length", "fps", "critic_loss"]


def write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    """Writes rows as the logger does: missing cells blank."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def drm_and_drqv2(tmp_path):
    """A DrM run (updates.csv, metrics.csv, events.csv) and a DrQ-v2 run (metrics.csv without dormant_ratio),
    both on cartpole_swingup with seeds 0 and 1."""
    drm = write_run(tmp_path / "runs/drm/cartpole_swingup/a", "drm", "cartpole_swingup",
                    {0: {0: 1.0, 20000: 2.0}, 1: {0: 1.0, 20000: 3.0}})
    # dormant_ratio per update, bins of 10000 frames:
    #   seed 0: frames 4000, 8000 -> (0.1 + 0.3) / 2 = 0.2 at 10000; frames 12000, 16000 -> 0.6 at 20000
    #   seed 1: 0.4 at 10000, 0.8 at 20000
    updates = [
        {"seed": seed, "step": frame // 2, "frame": frame, "dormant_ratio": value, "dormant_ratio/encoder": 0.0,
         "stddev": 0.5, "lambda": 0.6, "alpha": 0.9, "awaken_step": -1, "perturbed": perturbed}
        for seed, values in ((0, (0.1, 0.3, 0.5, 0.7)), (1, (0.3, 0.5, 0.7, 0.9)))
        for frame, value, perturbed in zip((4000, 8000, 12000, 16000), values, (False, True, False, True))
    ]
    updates.append({"seed": 1, "step": 3000, "frame": 6000, "dormant_ratio": float("nan")})  # left out of the mean
    write_csv(drm / "updates.csv", UPDATES_HEADER, updates)
    # metrics.csv also has dormant_ratio (per-episode means): a wrong source would give 0.99.
    # critic_loss is blank before updates start (frame 2000); seed 0: 2 and 4 in bin 20000 -> 3.
    write_csv(drm / "metrics.csv", METRICS_HEADER + ["dormant_ratio"], [
        {"seed": 0, "step": 1000, "frame": 2000, "episode": 1, "episode_reward": 1.0, "fps": 100.0},
        {"seed": 0, "step": 6000, "frame": 12000, "episode": 6, "episode_reward": 5.0, "fps": 100.0,
         "critic_loss": 2.0, "dormant_ratio": 0.99},
        {"seed": 0, "step": 9000, "frame": 18000, "episode": 9, "episode_reward": 7.0, "fps": 100.0,
         "critic_loss": 4.0, "dormant_ratio": 0.99},
    ])
    # Perturbations at 8000 (both seeds, drawn once) and 16000; 50000 lies beyond the curves;
    # "awaken" is no perturbation.
    write_csv(drm / "events.csv", ["seed", "step", "frame", "event", "alpha", "awaken_step"], [
        {"seed": 0, "step": 4000, "frame": 8000, "event": "perturb", "alpha": 0.9},
        {"seed": 1, "step": 4000, "frame": 8000, "event": "perturb", "alpha": 0.8},
        {"seed": 0, "step": 6000, "frame": 12000, "event": "awaken", "awaken_step": 6000},
        {"seed": 0, "step": 8000, "frame": 16000, "event": "perturb", "alpha": 0.7},
        {"seed": 0, "step": 25000, "frame": 50000, "event": "perturb", "alpha": 0.7},
    ])

    drqv2 = write_run(tmp_path / "runs/drqv2/cartpole_swingup/b", "drqv2", "cartpole_swingup",
                      {0: {0: 1.0, 20000: 4.0}})
    write_csv(drqv2 / "metrics.csv", METRICS_HEADER, [
        {"seed": 0, "step": 3000, "frame": 6000, "episode": 3, "episode_reward": 2.0, "fps": 90.0, "critic_loss": 1.0},
        {"seed": 0, "step": 7000, "frame": 14000, "episode": 7, "episode_reward": 3.0, "fps": 90.0, "critic_loss": 5.0},
    ])
    return drm, drqv2


def test_bin_by_frames_against_hand_computed_means():
    points = [(0, 0, 5.0),  # frame 0 is a bin of its own, drawn at 0
              (0, 1, 1.0), (0, 4000, 2.0), (0, 10000, 6.0),  # bin (0, 10000] -> 3.0, drawn at 10000
              (0, 10001, 10.0), (0, 15000, 20.0),  # bin (10000, 20000] -> 15.0 at 20000
              (1, 25000, 7.0)]  # seed 1, bin (20000, 30000] -> 7.0 at 30000
    assert plot.bin_by_frames(points, 10000) == {0: {0: 5.0, 10000: 3.0, 20000: 15.0}, 1: {30000: 7.0}}
    # bins of 5000: seed 0's (0, 10000] splits into (1 + 2) / 2 and 6
    assert plot.bin_by_frames(points, 5000)[0] == {0: 5.0, 5000: 1.5, 10000: 6.0, 15000: 15.0}
    with pytest.raises(ValueError, match="positive"):
        plot.bin_by_frames(points, 0)


def test_metric_is_read_from_updates_csv_before_metrics_csv(drm_and_drqv2):
    drm, drqv2 = drm_and_drqv2
    assert plot.find_metric_file(drm, "dormant_ratio") == drm / "updates.csv"
    agent, task, curves = plot.load_metric(drm, "dormant_ratio", bin_frames=10000)
    assert (agent, task) == ("drm", "cartpole_swingup")
    assert curves.keys() == {0, 1}
    assert curves[0] == pytest.approx({10000: 0.2, 20000: 0.6})
    assert curves[1] == pytest.approx({10000: 0.4, 20000: 0.8})
    # a column only in metrics.csv comes from there; its blank cells (before updates) are left out
    assert plot.find_metric_file(drm, "critic_loss") == drm / "metrics.csv"
    assert plot.load_metric(drm, "critic_loss")[2] == {0: {20000: 3.0}}
    # True/False cells count as 1/0: seed 0 was perturbed at 8000 and 16000 of 4000, 8000 | 12000, 16000
    assert plot.load_metric(drm, "perturbed")[2][0] == {10000: 0.5, 20000: 0.5}
    # pooled over seeds: means 0.3 and 0.7, half width 1.96 * std(0.2, 0.4) / sqrt(2) = 0.196
    x, mean, lo, hi = plot.mean_and_band(plot.collect_runs([drm], "dormant_ratio")["cartpole_swingup"]["drm"])
    np.testing.assert_array_equal(x, [10000, 20000])
    np.testing.assert_allclose(mean, [0.3, 0.7])
    np.testing.assert_allclose(hi - mean, [0.196, 0.196])


def test_missing_metric_everywhere_is_a_clear_error(drm_and_drqv2, tmp_path):
    drm, drqv2 = drm_and_drqv2
    out = tmp_path / "x.png"
    with pytest.raises(SystemExit) as error:
        plot.main([str(drm), str(drqv2), "--metric", "no_such_metric", "--out", str(out)])
    message = str(error.value)
    assert "no_such_metric" in message and str(drm) in message and str(drqv2) in message
    assert "updates.csv" in message and "metrics.csv" in message
    assert "'dormant_ratio/encoder'" in message and "'critic_loss'" in message  # the columns there are
    assert "updates.csv (absent)" in message  # the DrQ-v2 run has none
    assert not out.exists()
    with pytest.raises(plot.MetricNotLogged, match="metrics.csv"):
        plot.find_metric_file(drqv2, "dormant_ratio")


def test_runs_lacking_the_metric_are_skipped_with_a_note(drm_and_drqv2, capsys):
    drm, drqv2 = drm_and_drqv2
    by_task = plot.collect_runs([drm, drqv2], "dormant_ratio")
    assert list(by_task["cartpole_swingup"]) == ["drm"]
    stderr = capsys.readouterr().err
    assert "skipping" in stderr and str(drqv2) in stderr and str(drm) not in stderr
    # a metric both log is plotted for both: DrQ-v2's critic_loss 1 (frame 6000) and 5 (frame 14000)
    both = plot.collect_runs([drm, drqv2], "critic_loss")["cartpole_swingup"]
    assert list(both) == ["drm", "drqv2"]
    assert list(both["drqv2"].values()) == [{10000: 1.0, 20000: 5.0}]
    assert capsys.readouterr().err == ""


def test_metric_figure_lines_labels_and_event_lines(drm_and_drqv2, reference_dir):
    drm, drqv2 = drm_and_drqv2
    runs = plot.collect_runs([drm, drqv2], "dormant_ratio")
    fig = plot.plot_tasks(runs, reference_dir, metric="dormant_ratio")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 1  # the DrM curve only: no reference curve for a non-return metric
    assert ax.get_ylabel() == "dormant_ratio" and ax.get_xlabel() == "frames"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pixax drm (2 seeds)"]
    plot.plt.close(fig)

    perturb_frames = plot.collect_perturb_frames([drm, drqv2])  # the DrQ-v2 run has no events.csv
    assert perturb_frames == {"cartpole_swingup": {"drm": [8000, 16000, 50000]}}
    fig = plot.plot_tasks(runs, None, metric="dormant_ratio", perturb_frames_by_task=perturb_frames)
    curve, *events = fig.axes[0].get_lines()
    assert len(events) == 2  # 8000 and 16000; 50000 lies beyond the curve's last frame (20000)
    assert [line.get_xdata()[0] for line in events] == [8000, 16000]
    assert all(line.get_linestyle() == ":" and line.get_color() == curve.get_color() for line in events)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["pixax drm (2 seeds)", "drm perturbation"]
    plot.plt.close(fig)

    # events of an agent without a curve in the task have no colour to be drawn in
    with_drqv2 = {"cartpole_swingup": {**perturb_frames["cartpole_swingup"], "drqv2": [4000]}}
    fig = plot.plot_tasks(runs, None, metric="dormant_ratio", perturb_frames_by_task=with_drqv2)
    assert len(fig.axes[0].get_lines()) == 3
    plot.plt.close(fig)

    # both agents log critic_loss: two curves, and the DrM events in DrM's colour only
    runs = plot.collect_runs([drm, drqv2], "critic_loss")
    fig = plot.plot_tasks(runs, None, metric="critic_loss", perturb_frames_by_task=perturb_frames)
    drm_curve, drqv2_curve, *events = fig.axes[0].get_lines()
    assert len(events) == 2 and drm_curve.get_color() != drqv2_curve.get_color()
    assert all(line.get_color() == drm_curve.get_color() for line in events)
    plot.plt.close(fig)


def test_main_plots_metric_with_events_to_png(drm_and_drqv2, tmp_path, capsys):
    drm, drqv2 = drm_and_drqv2
    out = tmp_path / "beta.png"
    plot.main([str(drm), str(drqv2), "--metric", "dormant_ratio", "--out", str(out),
               "--bin-frames", "5000", "--events"])
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert str(drqv2) in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--bin-frames must be a positive"):
        plot.main([str(drm), "--metric", "dormant_ratio", "--out", str(out), "--bin-frames", "0"])


# --- PPO / PROPS beside the PROPS paper's curves (--props-reference-dir, --final-table) ------------

PROPS_HEADER = ["arm", "timestep", "mean_return", "ci95", "n_seeds"]


def write_props_reference(path: Path, rows_by_arm: dict[str, list[tuple[int, float, float, int]]]) -> Path:
    """Writes a PROPS-paper curve file: one (timestep, mean_return, ci95, n_seeds) row per evaluation and arm."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PROPS_HEADER)
        for arm, rows in rows_by_arm.items():
            writer.writerows([arm, *row] for row in rows)
    return path


@pytest.fixture
def props_reference_dir(tmp_path):
    """Hopper.csv with PPO at 0..3000 (beyond the runs' 2000), PROPS on its own grid, and a PPO-BUFFER arm."""
    folder = tmp_path / "props-curves"
    write_props_reference(folder / "Hopper.csv", {
        "PPO": [(0, 100.0, 5.0, 3), (1000, 200.0, 6.0, 3), (2000, 300.0, 7.0, 3), (3000, 400.0, 8.0, 3)],
        "PPO-BUFFER": [(0, 1.0, 1.0, 3), (3000, 2.0, 1.0, 3)],
        "PROPS": [(0, 50.0, 1.0, 2), (1500, 60.0, 2.0, 2), (2500, 90.0, 4.5, 2)],
    })
    return folder


@pytest.fixture
def ppo_and_props(tmp_path):
    """A ppo run (2 seeds, last evaluated at 2000) and a props run whose seeds stop at 1000 and 2000, on Hopper-v5."""
    ppo = write_run(tmp_path / "runs/ppo/Hopper-v5/a", "ppo", "Hopper-v5",
                    {0: {0: 10.0, 1000: 30.0, 2000: 50.0}, 1: {0: 20.0, 1000: 40.0, 2000: 70.0}})
    props = write_run(tmp_path / "runs/props/Hopper-v5/b", "props", "Hopper-v5",
                      {0: {0: 5.0, 1000: 15.0}, 1: {0: 7.0, 1000: 9.0, 2000: 21.0}})
    return ppo, props


def test_props_reference_path_drops_the_version_suffix(tmp_path):
    assert plot.props_reference_path(tmp_path, "Hopper-v5") == tmp_path / "Hopper.csv"
    assert plot.props_reference_path(tmp_path, "HalfCheetah-v4") == tmp_path / "HalfCheetah.csv"
    assert plot.props_reference_path(tmp_path, "Walker2d") == tmp_path / "Walker2d.csv"
    assert [plot.reference_kind(a) for a in ("ppo", "props", "drqv2")] == ["props", "props", "drqv2"]


def test_load_props_reference_reads_one_arm(props_reference_dir):
    curve = plot.load_props_reference(props_reference_dir / "Hopper.csv", "PROPS")
    assert curve.arm == "PROPS"
    np.testing.assert_array_equal(curve.timestep, [0, 1500, 2500])
    np.testing.assert_allclose(curve.mean_return, [50.0, 60.0, 90.0])
    np.testing.assert_allclose(curve.ci95, [1.0, 2.0, 4.5])
    np.testing.assert_array_equal(curve.n_seeds, [2, 2, 2])
    cut = curve.up_to(1500)
    np.testing.assert_array_equal(cut.timestep, [0, 1500])
    np.testing.assert_allclose(cut.ci95, [1.0, 2.0])


def test_props_reference_errors_name_the_file_and_what_is_valid(props_reference_dir, tmp_path):
    path = props_reference_dir / "Hopper.csv"
    with pytest.raises(SystemExit) as error:
        plot.load_props_reference(path, "PPO-PRIVILEGED")
    message = str(error.value)
    assert str(path) in message and "'PPO-PRIVILEGED'" in message
    assert "['PPO', 'PPO-BUFFER', 'PROPS']" in message  # the arms the file has

    no_ci = tmp_path / "NoCi.csv"
    no_ci.write_text("arm,timestep,mean_return,n_seeds\nPPO,0,1.0,3\n")
    with pytest.raises(SystemExit) as error:
        plot.load_props_reference(no_ci, "PPO")
    message = str(error.value)
    assert str(no_ci) in message and "['ci95']" in message and "n_seeds" in message

    bad_number = tmp_path / "Bad.csv"
    bad_number.write_text("arm,timestep,mean_return,ci95,n_seeds\nPPO,0,1.0,0.5,3\nPPO,10,oops,0.5,3\n")
    with pytest.raises(SystemExit, match="line 3") as error:
        plot.load_props_reference(bad_number, "PPO")
    assert str(bad_number) in str(error.value) and "'oops'" in str(error.value)


def test_ppo_and_props_are_drawn_beside_their_official_arms(ppo_and_props, props_reference_dir, reference_dir):
    ppo, props = ppo_and_props
    runs = plot.collect_runs([ppo, props])
    fig = plot.plot_tasks(runs, reference_dir, props_reference_dir=props_reference_dir)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "pixax ppo (2 seeds)",
        "pixax props (2 seeds)",
        "official PPO (PROPS paper, -v4)",
        "official PROPS (PROPS paper, -v4)",
    ]  # no DrQ-v2 curve (and no PPO-BUFFER) beside on-policy agents
    pixax_ppo, pixax_props, official_ppo, official_props = ax.get_lines()
    # cut to the runs' last frame, 2000: PPO's 3000 and PROPS' 2500 are left out
    np.testing.assert_array_equal(official_ppo.get_xdata(), [0, 1000, 2000])
    np.testing.assert_allclose(official_ppo.get_ydata(), [100.0, 200.0, 300.0])
    np.testing.assert_array_equal(official_props.get_xdata(), [0, 1500])
    np.testing.assert_allclose(official_props.get_ydata(), [50.0, 60.0])
    assert official_ppo.get_color() == pixax_ppo.get_color() and official_ppo.get_linestyle() == "--"
    assert official_props.get_color() == pixax_props.get_color() and official_props.get_linestyle() == "--"
    # the last two bands are the official ci95 bands: PPO spans 100 - 5 .. 300 + 7, PROPS 50 - 1 .. 60 + 2
    ppo_band, props_band = ax.collections[-2:]
    ppo_y, props_y = ppo_band.get_paths()[0].vertices[:, 1], props_band.get_paths()[0].vertices[:, 1]
    assert (ppo_y.min(), ppo_y.max()) == pytest.approx((95.0, 307.0))
    assert (props_y.min(), props_y.max()) == pytest.approx((49.0, 62.0))
    plot.plt.close(fig)

    # ppo alone gets the PPO arm only; without the folder no official curve is drawn
    fig = plot.plot_tasks(plot.collect_runs([ppo]), None, props_reference_dir=props_reference_dir)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [
        "pixax ppo (2 seeds)", "official PPO (PROPS paper, -v4)"]
    plot.plt.close(fig)
    fig = plot.plot_tasks(plot.collect_runs([ppo]), reference_dir, props_reference_dir=None)
    assert len(fig.axes[0].get_lines()) == 1
    plot.plt.close(fig)


def table_rows(text: str) -> list[list[str]]:
    """The cells of a markdown table's body rows (the lines after the |---| line, up to the first non-table line)."""
    lines = text.splitlines()
    body = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip("|").split("|")])
    return body


def test_final_table_against_hand_computed_values(ppo_and_props, props_reference_dir, two_runs):
    ppo, props = ppo_and_props
    text = plot.final_table(plot.collect_runs([ppo, props, two_runs[0]]), props_reference_dir)
    assert text.splitlines()[0].split("|")[1].strip() == "task"
    assert table_rows(text) == [
        # ppo: last evaluations 50, 70 -> mean 60, std sqrt(200), half width 1.96 * sqrt(200) / sqrt(2) = 19.6;
        # over training (10 + 30 + 50) / 3 = 30 and (20 + 40 + 70) / 3 = 43.33 -> 36.67.
        # official PPO: last row 400 +- 8 (3 seeds, 3000); rows (100 + 200 + 300 + 400) / 4 = 250.
        ["Hopper-v5", "ppo", "PPO", "60.0 ± 19.6", "2", "2000", "400.0 ± 8.0", "3", "3000", "36.7", "250.0"],
        # props: last evaluations 15 (at 1000), 21 (at 2000) -> mean 18, std sqrt(18), half width 1.96 * 3 = 5.88;
        # over training (5 + 15) / 2 = 10 and (7 + 9 + 21) / 3 = 12.33 -> 11.17.
        # official PROPS: last row 90 +- 4.5 (2 seeds, 2500); rows (50 + 60 + 90) / 3 = 66.67.
        ["Hopper-v5", "props", "PROPS", "18.0 ± 5.9", "2", "1000-2000", "90.0 ± 4.5", "2", "2500", "11.2", "66.7"],
        # drqv2 has no PROPS-paper arm: last evaluations 5, 9 -> 7 +- 1.96 * sqrt(8) / sqrt(2) = 3.92; over
        # training (1 + 3 + 5) / 3 = 3 and (3 + 7 + 9) / 3 = 6.33 -> 4.67.
        ["cartpole_swingup", "drqv2", "-", "7.0 ± 3.9", "2", "2000", "-", "-", "-", "4.7", "-"],
    ]
    assert "at most 60 evaluations" in text and "approximate" in text
    # without the reference folder the official cells are "-"
    assert table_rows(plot.final_table(plot.collect_runs([ppo]), None))[0][2:] == [
        "-", "60.0 ± 19.6", "2", "2000", "-", "-", "-", "36.7", "-"]


def test_main_prints_final_table_and_rejects_it_for_other_metrics(ppo_and_props, props_reference_dir, tmp_path,
                                                                 capsys):
    ppo, props = ppo_and_props
    out = tmp_path / "onpolicy.png"
    plot.main([str(ppo), str(props), "--out", str(out), "--props-reference-dir", str(props_reference_dir),
               "--final-table"])
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    printed = capsys.readouterr().out
    wrote, table = printed.split("\n\n", 1)
    assert wrote == f"wrote {out}"
    assert [row[:4] for row in table_rows(table)] == [["Hopper-v5", "ppo", "PPO", "60.0 ± 19.6"],
                                                      ["Hopper-v5", "props", "PROPS", "18.0 ± 5.9"]]
    with pytest.raises(SystemExit, match="--final-table"):
        plot.main([str(ppo), "--out", str(out), "--metric", "critic_loss", "--final-table"])
    with pytest.raises(SystemExit, match="--props-reference-dir .* is not a folder"):
        plot.main([str(ppo), "--out", str(out), "--props-reference-dir", str(tmp_path / "missing")])


@pytest.mark.skipif(not REAL_PROPS_HOPPER.is_file(), reason=f"{REAL_PROPS_HOPPER} is not on this machine")
def test_official_props_hopper_last_rows_match_spec_table():
    # spec model-offline-onpolicy-agents.md section 8.5, Hopper (1M): PPO 3121 +- 158, PROPS 3181 +- 163
    for arm, (mean, ci) in {"PPO": (3121, 158), "PROPS": (3181, 163)}.items():
        curve = plot.load_props_reference(REAL_PROPS_HOPPER, arm)
        assert (round(curve.mean_return[-1]), round(curve.ci95[-1])) == (mean, ci)
        assert curve.timestep[0] == 0 and curve.timestep[-1] == 983_040 and curve.n_seeds[-1] == 50
