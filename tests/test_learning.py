"""Learning check: DrQ-v2 from states learns to balance a cartpole (CPU, a few minutes).

cartpole_balance, action repeat 4: a random policy scores ~360, pushing the cart at full force ~136,
doing nothing ~760; balancing actively scores > 900. The threshold (850, mean of two seeds) is out of
reach of an agent that does not learn, whatever constant or random actions it takes.

Test-only settings, to learn in ~30k frames on two cores: smaller networks (256 units), lr 3e-4,
discount 0.95 and one update per agent step. They are not the paper's settings.
"""

import numpy as np
import pytest

from agents import drqv2
from core.offpolicy import LoopConfig, OffPolicyTrainer

FRAMES = 32_000
THRESHOLD = 850.0


@pytest.mark.slow
def test_drqv2_states_learns_cartpole_balance(tmp_path):
    agent_config = drqv2.config_for_task(
        "cartpole_balance", obs_type="states", hidden_dim=256, lr=3e-4, discount=0.95, update_every_steps=1,
        num_expl_steps=500, stddev_schedule="linear(1.0,0.1,4000)")
    loop = LoopConfig(task="cartpole_balance", seeds=(0, 1), obs_type="states", action_repeat=4,
                      num_train_frames=FRAMES + 4, num_seed_frames=2000, update_every_steps=1, batch_size=256,
                      replay_capacity=100_000, nstep=3, discount=0.95, eval_every_frames=FRAMES,
                      num_eval_episodes=3, checkpoint_every_frames=10**9, save_video=False, progress=False)
    trainer = OffPolicyTrainer(drqv2, agent_config, loop, str(tmp_path))
    try:
        trainer.train()
    finally:
        trainer.close()
    rows = np.genfromtxt(tmp_path / "eval.csv", delimiter=",", names=True)
    first, last = rows[rows["frame"] == 0], rows[rows["frame"] == FRAMES]
    assert len(last) == 2
    print("eval returns at 0 and", FRAMES, "frames:", first["episode_reward"], last["episode_reward"])
    assert last["episode_reward"].mean() > THRESHOLD, last["episode_reward"]
    assert first["episode_reward"].mean() < 500  # the untrained policy really is far below
