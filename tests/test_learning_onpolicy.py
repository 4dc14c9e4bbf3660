"""Learning check of PPO (agents/ppo.py) through the on-policy loop (core/onpolicy.py `run`, the
launcher's path): 2 seeds learn to balance InvertedPendulum-v5 (CPU, well under a minute of training).

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
Pass: the mean over both seeds > 500 and each seed > 200, far out of reach of a policy that does not
learn (random ~5, untrained ~15-40), with margin below the 1000 measured.
"""

import numpy as np
import pytest

from agents import ppo
from core import onpolicy

TASK = "InvertedPendulum-v5"
FRAMES = 30_720
THRESHOLD_MEAN, THRESHOLD_EACH = 500.0, 200.0
UNTRAINED_MAX = 100.0


@pytest.mark.slow
def test_ppo_learns_inverted_pendulum(tmp_path):
    c = onpolicy.base_config(ppo.Config, TASK)
    c.root, c.seeds, c.progress = str(tmp_path), "0,1", False
    c.agent.num_steps, c.agent.lr, c.agent.num_train_frames = 1024, 1e-3, FRAMES
    c.agent.num_eval_episodes, c.agent.eval_every_updates = 5, 1000  # evaluations at 0 and at the end
    summary = onpolicy.run(ppo, "ppo", c)
    assert summary["step"] == FRAMES

    rows = np.genfromtxt(f"{summary['run_dir']}/eval.csv", delimiter=",", names=True)
    first, last = rows[rows["frame"] == 0]["episode_reward"], rows[rows["frame"] == FRAMES]["episode_reward"]
    print(f"evaluation returns at 0 and {FRAMES} frames: {first} {last}")
    assert len(first) == len(last) == 2
    assert first.max() < UNTRAINED_MAX  # the untrained policy really is far below
    assert last.mean() > THRESHOLD_MEAN and last.min() > THRESHOLD_EACH, last

    metrics = np.genfromtxt(f"{summary['run_dir']}/metrics.csv", delimiter=",", names=True)
    assert len(metrics) == 2 * FRAMES // 1024  # one row per update and seed
    assert np.all(np.isfinite(metrics["loss"]))
