"""DQN (Dopamine's JAX DQN) from pixels on the Arcade Learning Environment, with the flatten,
tokenized or SoftMoE head of "Don't flatten, tokenize!".

    python experiments/dqn.py --config.task=atari_pong --config.seeds=0,1,2
    python experiments/dqn.py --config.task=atari_pong --config.agent.head=softmoe --config.agent.encoder=impala
    python experiments/dqn.py --config.task=toy_catch --config.agent.head=tokenize

Every `--config.agent.*` value defaults to Dopamine's (agents/dqn.py). Results go to
runs/dqn/<task>/<timestamp>/ (see core/logging.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import dqn  # noqa: E402
from core import launch  # noqa: E402

if __name__ == "__main__":
    launch.main(dqn, "dqn")
