"""TD3+BC offline on a Minari dataset (make one with scripts/make_dataset.py), evaluated on its
gymnasium MuJoCo task, optionally with HUBL relabeling.

    python experiments/td3bc.py --config.task=Hopper-v5 --config.dataset=pixax/hopper/medium-v0 --config.seeds=0,1,2,3,4
    python experiments/td3bc.py --config.task=Hopper-v5 --config.dataset=pixax/hopper/medium-v0 --config.hubl=rank
    python experiments/td3bc.py --resume=runs/td3bc/Hopper-v5/<timestamp>

Every `--config.agent.*` value defaults to the official one for the dataset's family (agents/td3bc.py).
Results go to runs/td3bc/<task>/<timestamp>/: eval.csv holds the return and the normalized score
(the dataset's own random and expert reference returns).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import td3bc  # noqa: E402
from core import offline  # noqa: E402

if __name__ == "__main__":
    offline.main(td3bc, "td3bc", task="Hopper-v5", dataset="pixax/hopper/medium-v0")
