"""One run over several processes (`jax.distributed`, `--config.coordinator/num_processes/process_id`).

* Two processes on localhost, one CPU device each, joined by jax.distributed (gloo CPU collectives, jax's
  default on the CPU), train one TD3+BC agent data parallel for 100 updates (`--config.devices=1x2`: each update's batch
  split over the two processes' devices) into ONE run directory, and end with the numbers of the same
  run in one process on two forced devices and on one device (final checkpoint, metrics.csv, eval.csv;
  tolerances of tests/test_devices_offline.py).
* A coordinator that nothing answers stops the launcher quickly, with the address and the process
  numbers, before a run directory exists.

The processes are this file run as a script:
    python tests/test_distributed.py run <dataset root> <runs root> <layout,layout...> [<coordinator> <process id>]
    python tests/test_distributed.py unreachable <coordinator> <runs root>
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time

import pytest

import multidevice  # tests/multidevice.py

from agents import td3bc
from core import offline
from test_devices_offline import assert_same_training, config, write_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPDATES = 100  # one jitted chunk: each update's all-reduces cross the processes through gloo's TCP
TIMEOUT_S = 3  # the unreachable coordinator's wait (the launchers' default is 60 s)


# ----------------------------------------------------------------------------------- the processes

def run_process(dataset_root: str, runs: str, layouts: str, coordinator: str = "", process_id: str = "-1") -> None:
    run_dirs = {}
    for layout in layouts.split(","):
        c = config(dataset_root, f"{runs}/{layout}", layout, seeds="0", agent_module=td3bc, updates=UPDATES)
        if coordinator:
            c.coordinator, c.num_processes, c.process_id = coordinator, 2, int(process_id)
        run_dirs[layout] = offline.run(td3bc, "td3bc", c)["run_dir"]
    import jax

    print(json.dumps({"run_dirs": run_dirs, "processes": jax.process_count(), "devices": jax.device_count(),
                      "local_devices": jax.local_device_count()}), flush=True)


def unreachable_process(coordinator: str, runs: str) -> None:
    from core import devices

    devices.initialize = functools.partial(devices.initialize, timeout_s=TIMEOUT_S)
    c = offline.base_config(td3bc.Config, "InvertedPendulum-v5", "pixax/invertedpendulum/random-v0")
    c.root, c.coordinator, c.num_processes, c.process_id = runs, coordinator, 2, 1
    offline.run(td3bc, "td3bc", c)


# ----------------------------------------------------------------------------------- the tests

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str, devices: int = 1) -> subprocess.Popen:
    return multidevice.start_python([os.path.abspath(__file__), *args], devices=devices, cwd=REPO)


def finish(process: subprocess.Popen, timeout: float = 600) -> dict:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_dataset(root)
    return root


@pytest.mark.slow
def test_two_processes_train_one_agent_like_one_process(dataset_root, tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    pair = [start("run", dataset_root, tmp_path / "two", "1x2", coordinator, i) for i in (0, 1)]
    single = start("run", dataset_root, tmp_path / "single", "1x2,1", devices=2)  # the "1" run uses one device
    results, single = [finish(p) for p in pair], finish(single)
    assert [(r["processes"], r["devices"], r["local_devices"]) for r in results] == [(2, 2, 1), (2, 2, 1)]
    assert (single["processes"], single["devices"]) == (1, 2)
    # one run directory, agreed by both processes; process 0 alone wrote the logs
    assert results[0]["run_dirs"] == results[1]["run_dirs"]
    two = results[0]["run_dirs"]["1x2"]
    assert [p.name for p in (tmp_path / "two" / "1x2" / "td3bc" / "InvertedPendulum-v5").iterdir()] == \
        [os.path.basename(two)]
    assert len(os.listdir(f"{two}/tb")) == 1
    with open(f"{two}/config.json") as f:
        assert json.load(f)["launcher"]["process_id"] == 0

    assert_same_training(two, single["run_dirs"]["1x2"], dataset_root, td3bc)
    assert_same_training(two, single["run_dirs"]["1"], dataset_root, td3bc)


def test_unreachable_coordinator_stops_quickly_with_the_numbers(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    process = start("unreachable", coordinator, tmp_path / "runs")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err[-2000:]  # sys.exit with a message, not a crash
    assert time.monotonic() - began < 60
    assert f"{coordinator} as process 1 of 2 within {TIMEOUT_S} s" in err, err[-2000:]
    assert not (tmp_path / "runs").exists()


if __name__ == "__main__":
    {"run": run_process, "unreachable": unreachable_process}[sys.argv[1]](*sys.argv[2:])
