"""PRDC offline on a Minari dataset (make one with scripts/make_dataset.py), evaluated on its
gymnasium MuJoCo task, optionally with HUBL relabeling.

    python experiments/prdc.py --config.task=Hopper-v5 --config.dataset=pixax/hopper/medium-v0 --config.seeds=0,1,2,3,4
    python experiments/prdc.py --config.task=Hopper-v5 --config.dataset=pixax/hopper/medium-v0 --config.hubl=rank
    python experiments/prdc.py --resume=runs/prdc/Hopper-v5/<timestamp>

Every `--config.agent.*` value defaults to the official one for the dataset's family (agents/prdc.py).
Results go to runs/prdc/<task>/<timestamp>/: eval.csv holds the return and the normalized score
(the dataset's own random and expert reference returns).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import prdc  # noqa: E402
from core import offline  # noqa: E402

if __name__ == "__main__":
    offline.main(prdc, "prdc", task="Hopper-v5", dataset="pixax/hopper/medium-v0")
