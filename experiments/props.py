"""PROPS (spec §8): PPO whose data is collected by a behaviour policy that is updated every m steps to
correct the sampling error of a buffer of the last b batches; gymnasium's MuJoCo v5 tasks, from states.

    python experiments/props.py --config.task=Hopper-v5 --config.seeds=0,1,2
    python experiments/props.py --config.task=Hopper-v5 --config.agent.behaviour=none    # PPO-BUFFER (b = 2)
    python experiments/props.py --config.task=Hopper-v5 --config.agent.behaviour=ros     # ROS baseline
    python experiments/props.py --config.task=Hopper-v5 --config.agent.se_every_updates=20  # log the sampling error
    python experiments/props.py --resume=runs/props/Hopper-v5/<timestamp>

Every `--config.agent.*` value defaults to the PROPS paper's run for the task (agents/props.py
config_for_task, spec §8.4; the PPO-BUFFER column with behaviour=none). Results go to
runs/props/<task>/<timestamp>/ (see core/onpolicy.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import props  # noqa: E402
from core import onpolicy  # noqa: E402

if __name__ == "__main__":
    onpolicy.main(props, "props")
