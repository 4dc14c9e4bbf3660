"""TD3 (Fujimoto et al. 2018, the official sfujim/TD3 settings) on gymnasium's MuJoCo v5 tasks, from states.

    python experiments/td3.py --config.task=HalfCheetah-v5 --config.seeds=0,1,2,3,4
    python experiments/td3.py --config.task=InvertedPendulum-v5 --config.agent.num_train_frames=50000
    python experiments/td3.py --resume=runs/td3/HalfCheetah-v5/<timestamp>

Every `--config.agent.*` value defaults to the official one for the task (its tier); see agents/td3.py.
TD3 takes states only: --config.obs defaults to "states" here. Results go to runs/td3/<task>/<timestamp>/
(see core/logging.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import td3  # noqa: E402
from core import launch  # noqa: E402

if __name__ == "__main__":
    launch.main(td3, "td3")
