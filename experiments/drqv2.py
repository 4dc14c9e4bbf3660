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

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from agents import drqv2  # noqa: E402
from core import launch  # noqa: E402

_CONFIG = config_flags.DEFINE_config_dict("config", launch.base_config(drqv2.Config))
_RESUME = flags.DEFINE_string("resume", "", "a run directory to continue exactly where it stopped")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --config.<name>=<value>)")
    launch.run(drqv2, "drqv2", _CONFIG.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
