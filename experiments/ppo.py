"""PPO (the CleanRL-style variant PROPS builds on, spec §7) on gymnasium's MuJoCo v5 tasks, from states.

    python experiments/ppo.py --config.task=Hopper-v5 --config.seeds=0,1,2
    python experiments/ppo.py --config.task=InvertedPendulum-v5 --config.agent.num_train_frames=50000
    python experiments/ppo.py --config.task=Hopper-v5 --config.agent.buffer_batches=2 --config.agent.num_steps=1024 \
        --config.agent.lr=1e-4      # PPO-BUFFER (spec §8.4)
    python experiments/ppo.py --resume=runs/ppo/Hopper-v5/<timestamp>

Every `--config.agent.*` value defaults to the PROPS paper's PPO run for the task (agents/ppo.py
config_for_task, spec §8.4). Results go to runs/ppo/<task>/<timestamp>/ (see core/onpolicy.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import ppo  # noqa: E402
from core import onpolicy  # noqa: E402

if __name__ == "__main__":
    onpolicy.main(ppo, "ppo")
