"""MoDem (Hansen et al. 2023; facebookresearch/modem settings) on DeepMind Control, Meta-World and Adroit
from pixels + a proprioceptive state:
behaviour cloning on a few demos, seeding with the BC policy, then TD-MPC with demos oversampled.

    # 1. demos: pixax/<task>/demos-v0 under --root (data/demos.py), e.g. from a trained TD-MPC run
    python scripts/collect_demos.py --run runs/tdmpc/walker_walk/<timestamp> --episodes 5 --root demos
    python scripts/collect_demos.py --scripted --task mw_assembly --episodes 5 --root demos  # Meta-World's experts
    # 2. train (the demos must have this run's image_size and action_repeat: MoDem's 224 and 2)
    python experiments/modem.py --config.task=walker_walk --config.demos_root=demos --config.seeds=0,1,2
    python experiments/modem.py --resume=runs/modem/walker_walk/<timestamp>

Launcher flags of its own: --config.demos (the demos' dataset id under demos_root, or a dataset folder;
default pixax/<task>/demos-v0) and --config.demos_root (default: MINARI_DATASETS_PATH, else
~/.minari/datasets). Every `--config.agent.*` value defaults to MoDem's for the task's suite
(agents/modem.py). The loop is core/modem_loop.py; results go to runs/modem/<task>/<timestamp>/, whose
metrics.csv and eval.csv log agent steps (`step`, the paper's x axis) and environment steps (`frame`,
S2's env_step); eval.csv also logs `episode_success` (the latched success; Meta-World and Adroit learn from the
sparse reward success - 1, agents/modem.py env_options_for_task).

    python experiments/modem.py --config.task=mw_assembly --config.demos_root=demos --config.seeds=0,1,2
"""

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from agents import modem  # noqa: E402
from core import launch  # noqa: E402
from core import logging as runlog  # noqa: E402
from core.modem_loop import MoDemTrainer  # noqa: E402

DEFAULT_TASK = "walker_walk"  # the loop runs DeepMind Control (agents/modem.py's own default is Adroit's door)


def defaults():
    """core/launch.py's flags plus where the demos are."""
    config = launch.base_config(modem.Config, DEFAULT_TASK, modem.DEFAULT_OBS)
    config.demos = ""  # dataset id under demos_root, or a dataset folder; "": pixax/<task>/demos-v0
    config.demos_root = ""  # "": MINARI_DATASETS_PATH, else ~/.minari/datasets
    return config


def run(config, resume: str = "") -> dict:
    """launch.run with MoDemTrainer reading the demos the flags (or the resumed run's config.json) name."""
    if resume:  # the resumed run's own demos, as launch.run takes the rest of its flags from config.json
        try:
            config = runlog.read_config(runlog.check_run_dir(resume))["launcher"]
        except (ValueError, OSError, KeyError) as error:
            sys.exit(f"pixax: --resume={resume!r}: {error}")
    trainer_cls = functools.partial(MoDemTrainer, demos=config["demos"] or None,
                                    demos_root=config["demos_root"] or None)
    try:
        return launch.run(modem, "modem", config, resume=resume, trainer_cls=trainer_cls)
    except FileNotFoundError as error:  # missing demos: the message says where it looked and what to run
        sys.exit(f"pixax: {error}")


if __name__ == "__main__":
    launch.command_line(defaults(), run)
