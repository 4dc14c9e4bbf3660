"""Learning check of PPO (agents/ppo.py) and PROPS (agents/props.py) through the on-policy loop (core/onpolicy.py `run`, the
launcher's path): seed 0 learns to balance InvertedPendulum-v5 (CPU, well under a minute of training).

InvertedPendulum-v5 (4 states, 1 action, reward 1 per step the pole stays up, at most 1000 steps):
uniform random actions return ~5, the untrained PPO policy (mean action ~0) 13-37 on the seeds
tried; holding the pole up for the whole episode returns 1000.

Test-only settings (everything else is agents/ppo.py's PPOROS default: 10 epochs x 32 minibatches,
clip 0.2, entropy 0.01, target KL 0.03 checked before each step, obs/reward normalization, +-10 clips):
n = 1024 steps per update and lr 1e-3 (annealed to 0 over the run's 30 updates), 30,720 frames;
5 evaluation episodes at the end.

Measured here (2 shared CPU cores): seeds 0,1 -> 1000 / 1000 at 30,720 frames (seeds 2,3,4 in one
run: 1000 / 1000 / 1000); 24,576 frames also gave 1000 / 1000, 20,480 frames with n = 1024 ~360-510.
The whole test: 30-33 s of CPU time (JAX compilation included), 70-91 s wall clock on the shared
2-core machine (31 s wall when it was idle).
PROPS (test-only: b = 2, m = 512, the same n and lr; its other settings agents/props.py's defaults):
seeds 0,1 -> 1000 / 1000 at 30,720 frames, ~3 min wall clock on the loaded machine (4 buffer lengths
compiled while the buffer fills).
The test runs seed 0 alone (CI time; 1000 for both PPO and PROPS, 20 s and 31 s on the idle machine).
Pass: the mean over the seeds > 500 and each seed > 200, far out of reach of a policy that does not
learn (random ~5, untrained ~15-40), with margin below the 1000 measured.
"""

import numpy as np
import pytest

from agents import ppo, props
from core import onpolicy

# Minutes of training each: run with XLA's optimizing compiler (tests/conftest.py).
pytestmark = pytest.mark.optimized

TASK = "InvertedPendulum-v5"
FRAMES = 30_720
THRESHOLD_MEAN, THRESHOLD_EACH = 500.0, 200.0
UNTRAINED_MAX = 100.0
SEEDS = (0,)


def train_and_check(agent, name: str, tmp_path, window: int, **agent_settings) -> None:
    c = onpolicy.base_config(agent.Config, TASK)
    c.root, c.seeds, c.progress = str(tmp_path), ",".join(map(str, SEEDS)), False
    c.agent.num_steps, c.agent.lr, c.agent.num_train_frames = 1024, 1e-3, FRAMES
    c.agent.num_eval_episodes, c.agent.eval_every_updates = 5, 1000  # evaluations at 0 and at the end
    for field, value in agent_settings.items():
        c.agent[field] = value
    summary = onpolicy.run(agent, name, c)
    assert summary["step"] == FRAMES

    rows = np.genfromtxt(f"{summary['run_dir']}/eval.csv", delimiter=",", names=True)
    first, last = rows[rows["frame"] == 0]["episode_reward"], rows[rows["frame"] == FRAMES]["episode_reward"]
    print(f"{name}: evaluation returns at 0 and {FRAMES} frames: {first} {last}")
    assert len(first) == len(last) == len(SEEDS)
    assert first.max() < UNTRAINED_MAX  # the untrained policy really is far below
    assert last.mean() > THRESHOLD_MEAN and last.min() > THRESHOLD_EACH, last

    metrics = np.genfromtxt(f"{summary['run_dir']}/metrics.csv", delimiter=",", names=True)
    assert len(metrics) == len(SEEDS) * FRAMES // window  # one row per update call and seed
    return metrics


@pytest.mark.slow
def test_ppo_learns_inverted_pendulum(tmp_path):
    metrics = train_and_check(ppo, "ppo", tmp_path, window=1024)
    assert np.all(np.isfinite(metrics["loss"]))  # a PPO update on every call


@pytest.mark.slow
def test_props_learns_inverted_pendulum(tmp_path):
    """PROPS with b = 2 batches of n = 1024 and a behaviour update every m = 512 steps: a PPO update on
    every second call (its metrics are NaN on the others), a behaviour update on every call."""
    metrics = train_and_check(props, "props", tmp_path, window=512, props_num_steps=512, buffer_batches=2)
    target_calls = metrics["target_update"] == 1
    assert target_calls.sum() == FRAMES // 1024 * len(SEEDS)
    assert np.all(np.isfinite(metrics["loss"][target_calls])) and np.all(np.isnan(metrics["loss"][~target_calls]))
    assert np.all(metrics["props_gradient_steps"] >= 0) and metrics["props_gradient_steps"].max() > 0
