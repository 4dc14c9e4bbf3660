"""The off-policy loop end to end: exact resume, seeds in one process, run directory, bad input."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from ml_collections import config_dict

from agents import drqv2
from core import launch
from core.offpolicy import LoopConfig, OffPolicyTrainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny agent from states: 250 agent steps per episode (action repeat 4), updates after 100 steps.
TINY_AGENT = dict(obs_type="states", hidden_dim=32, feature_dim=8, batch_size=32, num_expl_steps=100,
                  stddev_schedule="linear(1.0,0.1,1000)")


def tiny_loop(seeds, frames=3000, **kw) -> LoopConfig:
    settings = dict(task="cartpole_swingup", seeds=tuple(seeds), obs_type="states", action_repeat=4,
                    num_train_frames=frames, num_seed_frames=400, batch_size=32, replay_capacity=5000, nstep=3,
                    eval_every_frames=1000, num_eval_episodes=1, checkpoint_every_frames=1000,
                    save_video=False, progress=False, async_envs=False)
    settings.update(kw)
    return LoopConfig(**settings)


def train(run_dir, loop, resume=False, interrupt_at=None):
    trainer = OffPolicyTrainer(drqv2, drqv2.config_for_task(loop.task, **TINY_AGENT), loop, str(run_dir))
    if interrupt_at is not None:
        original = trainer.update

        def update(totals):
            if trainer.step >= interrupt_at:
                raise KeyboardInterrupt("simulated crash")
            return original(totals)

        trainer.update = update
    try:
        trainer.train(resume=resume)
        return jax.device_get(trainer.states)
    finally:
        trainer.close()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def numeric(rows, drop=("fps", "wall_time")):
    return [{k: float(v) for k, v in r.items() if k not in drop and v != ""} for r in rows]


def test_resume_equals_uninterrupted(tmp_path):
    loop = tiny_loop([0])
    straight = train(tmp_path / "a", loop)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", loop, interrupt_at=600)  # checkpoints at steps 250 and 500
    resumed = train(tmp_path / "b", loop, resume=True)
    jax.tree.map(np.testing.assert_array_equal, straight, resumed)
    for name in ("metrics.csv", "eval.csv"):
        a, b = numeric(read_csv(tmp_path / "a" / name)), numeric(read_csv(tmp_path / "b" / name))
        assert len(a) == len(b) > 0
        for ra, rb in zip(a, b):
            assert ra == pytest.approx(rb), name


def test_seed_in_multiseed_run_equals_seed_alone(tmp_path):
    alone = train(tmp_path / "alone", tiny_loop([1], frames=2000))
    together = train(tmp_path / "together", tiny_loop([0, 1], frames=2000))
    # The same numbers up to float rounding: XLA fuses a 1-seed and a 2-seed program differently, and
    # rounding differences of ~1e-7 grow slowly over the ~400 updates of this run.
    max_diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a[0] - b[1]))), alone, together)))
    assert max_diff < 1e-3, max_diff
    rows = {r["seed"]: r for r in read_csv(tmp_path / "together" / "eval.csv")[-2:]}
    last_alone = read_csv(tmp_path / "alone" / "eval.csv")[-1]
    assert float(rows["1"]["episode_reward"]) == pytest.approx(float(last_alone["episode_reward"]), rel=1e-4)
    # The two seeds are independent runs, not copies.
    assert not np.allclose(jax.tree.leaves(together)[0][0], jax.tree.leaves(together)[0][1])


def test_run_directory(tmp_path):
    config = launch.base_config(drqv2.Config)
    config.task, config.obs, config.root = "cartpole_swingup", "states", str(tmp_path)
    config.checkpoint_every_frames, config.progress, config.video_size = 1000, False, 32
    for k, v in dict(TINY_AGENT, num_train_frames=2000, num_seed_frames=800, replay_capacity=2000, action_repeat=8,
                     eval_every_frames=1000, num_eval_episodes=1).items():
        if k != "obs_type":
            config.agent[k] = v
    summary = launch.run(drqv2, "drqv2", config)
    run_dir = summary["run_dir"]
    assert run_dir.startswith(str(tmp_path / "drqv2" / "cartpole_swingup"))
    saved = json.load(open(os.path.join(run_dir, "config.json")))
    assert saved["agent"] == "drqv2" and saved["agent_config"]["hidden_dim"] == 32
    assert saved["agent_config"]["lr"] == drqv2.Config().lr  # unset fields keep the paper's value
    evals = read_csv(os.path.join(run_dir, "eval.csv"))
    assert [int(r["frame"]) for r in evals] == [0, 1000]
    train_rows = read_csv(os.path.join(run_dir, "metrics.csv"))
    assert len(train_rows) == 2 and "critic_loss" in train_rows[-1]
    assert os.listdir(os.path.join(run_dir, "tb"))
    videos = sorted(os.listdir(os.path.join(run_dir, "videos")))
    assert videos and all(v.endswith(".mp4") for v in videos)
    assert os.listdir(os.path.join(run_dir, "checkpoints"))


def launcher(*args):
    return subprocess.run([sys.executable, "experiments/drqv2.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.parametrize("args, expected", [
    (["--config.task=cartpole_swingupp"], ["not a known task", "cartpole_swingup", "walker_walk"]),
    (["--config.obs=rgb"], ["--config.obs='rgb'", "pixels", "states"]),
    (["--config.seeds=0,a"], ["--config.seeds", "comma"]),
    (["--config.agent.replay_capacity=1000000000000"], ["GiB", "replay_capacity"]),
    (["--config.agent.stddev_schedule=cosine(1)"], ["linear"]),
    (["--config.nope=1"], ["nope"]),
])
def test_bad_input_stops_before_work(tmp_path, args, expected):
    result = launcher(*args, f"--config.root={tmp_path}")
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, result.stderr[-2000:]
    assert not os.path.exists(tmp_path / "drqv2")  # stopped before making a run directory


def test_resume_path_must_be_a_run_directory(tmp_path):
    result = launcher(f"--resume={tmp_path}")
    assert result.returncode != 0 and "not a pixax run directory" in result.stderr
    result = launcher(f"--resume={tmp_path / 'missing'}")
    assert result.returncode != 0 and "no such directory" in result.stderr


def test_pixels_end_to_end(tmp_path):
    """From pixels (32x32, so it runs on a CPU): frames stacked from the replay, updates run, resume works."""
    loop = tiny_loop([0], frames=2000, obs_type="pixels", image_size=32, action_repeat=8, num_seed_frames=800,
                     replay_capacity=1000, checkpoint_every_frames=1000)
    agent_config = drqv2.config_for_task("cartpole_swingup", obs_type="pixels", image_size=32, hidden_dim=32,
                                         feature_dim=8, batch_size=16, num_expl_steps=50)
    trainer = OffPolicyTrainer(drqv2, agent_config, loop, str(tmp_path))
    try:
        assert trainer.obs_shape == (32, 32, 9)
        trainer.train()
        params = jax.device_get(trainer.states.encoder_params)
    finally:
        trainer.close()
    rows = read_csv(tmp_path / "metrics.csv")
    assert len(rows) == 2 and np.isfinite(float(rows[-1]["critic_loss"]))
    assert [int(r["frame"]) for r in read_csv(tmp_path / "eval.csv")] == [0, 1000]
    fresh = drqv2.create(jax.random.split(jax.random.PRNGKey(0))[0], (32, 32, 9), 1, agent_config)
    moved = jax.tree.map(lambda a, b: float(np.abs(a[0] - b).max()), params, jax.device_get(fresh.encoder_params))
    assert max(jax.tree.leaves(moved)) > 0  # the critic's gradients reached the conv encoder
