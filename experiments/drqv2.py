"""DrQ-v2 from pixels (or states) on the DeepMind Control Suite.

    python experiments/drqv2.py --config.task=cartpole_swingup --config.seeds=0,1,2,3
    python experiments/drqv2.py --config.task=walker_walk --config.obs=states --config.agent.num_train_frames=100000
    python experiments/drqv2.py --resume=runs/drqv2/cartpole_swingup/<timestamp>

Every `--config.agent.*` value defaults to the official one for the task (tier and per-task overrides);
see agents/drqv2.py. Results go to runs/drqv2/<task>/<timestamp>/ (see core/logging.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import drqv2  # noqa: E402
from core import launch  # noqa: E402

if __name__ == "__main__":
    launch.main(drqv2, "drqv2")
