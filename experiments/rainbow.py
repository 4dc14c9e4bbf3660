"""Rainbow and Data-Efficient Rainbow (DER; Dopamine's full Rainbow) from pixels on the Arcade Learning
Environment, with the flatten, tokenized or SoftMoE head of "Don't flatten, tokenize!".

    python experiments/rainbow.py --config.task=atari_pong --config.seeds=0,1,2
    python experiments/rainbow.py --config.task=atari_ms_pacman --config.agent.preset=der --config.agent.head=softmoe

Every `--config.agent.*` value defaults to Dopamine's (agents/rainbow.py). Results go to
runs/rainbow/<task>/<timestamp>/ (see core/logging.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import rainbow  # noqa: E402
from core import launch  # noqa: E402

if __name__ == "__main__":
    launch.main(rainbow, "rainbow")
