"""DrM (dormant-ratio minimization, on top of DrQ-v2) from pixels (or states) on the DeepMind Control Suite.

    python experiments/drm.py --config.task=dog_walk --config.seeds=0,1,2,3
    python experiments/drm.py --config.task=cheetah_run --config.agent.stddev_type=drqv2 --config.agent.exploitation=False
    python experiments/drm.py --resume=runs/drm/cartpole_swingup/<timestamp>

Every `--config.agent.*` value defaults to the official one for the task (tier and per-task overrides);
see agents/drm.py (and agents/drqv2.py, which it builds on). Results go to runs/drm/<task>/<timestamp>/ (see core/logging.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import drm  # noqa: E402
from core import launch  # noqa: E402

if __name__ == "__main__":
    launch.main(drm, "drm")
