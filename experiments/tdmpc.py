"""TD-MPC (Hansen, Wang, Su 2022; the official nicklashansen/tdmpc settings) on DeepMind Control, from
states or pixels: the TOLD world model, MPPI planning with the policy prior, prioritized sequence replay.

    python experiments/tdmpc.py --config.task=cartpole_swingup --config.obs=states --config.seeds=0,1,2
    python experiments/tdmpc.py --config.task=walker_walk --config.obs=pixels
    python experiments/tdmpc.py --resume=runs/tdmpc/cartpole_swingup/<timestamp>

Every `--config.agent.*` value defaults to the official one for the task (agents/tdmpc.py). The loop
is core/episodic.py: whole episodes are planned step by step, then the episode's updates run as one
jitted program. Results go to runs/tdmpc/<task>/<timestamp>/ (see core/logging.py); metrics.csv and
eval.csv log agent steps (`step`) and simulator steps (`frame`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import tdmpc  # noqa: E402
from core import launch  # noqa: E402
from core.episodic import EpisodicTrainer  # noqa: E402

if __name__ == "__main__":
    launch.main(tdmpc, "tdmpc", trainer_cls=EpisodicTrainer)
