"""core/devices.py: the (seed, data) layout that --config.devices asks for, and its errors.

The programs on a mesh are checked against one device in subprocesses with forced CPU devices:
tests/test_devices_loops.py, test_devices_offline.py, test_devices_onpolicy.py, test_distributed.py.
"""

import jax
import pytest

from core import devices
from core.devices import Layout


@pytest.mark.parametrize("available, seeds, batch, expected", [
    (1, 3, 256, Layout(1, 1)),   # one device: no mesh
    (8, 8, 256, Layout(8, 1)),   # seeds first
    (8, 4, 256, Layout(4, 2)),   # then the data axis with what is left
    (8, 3, 256, Layout(1, 8)),   # 3 seeds do not split over 8 devices: all 8 on data
    (8, 2, 12, Layout(2, 4)),    # gcd(2, 8) = 2 on seeds; 4 left and 12 % 4 == 0
    (6, 4, 9, Layout(2, 3)),     # gcd(4, 6) = 2 on seeds; 3 left, 9 % 3 == 0
    (6, 4, 8, Layout(2, 1)),     # 3 left, 8 % 3 != 0: the data axis stays 1 (those devices idle)
])
def test_auto_layout(available, seeds, batch, expected):
    assert devices.plan("auto", seeds, batch, available=available) == expected


@pytest.mark.parametrize("spec, seeds, batch, expected", [
    ("1", 3, 256, Layout(1, 1)),
    ("4", 2, 256, Layout(2, 2)),
    ("4", 3, 256, Layout(1, 4)),
    ("2x4", 4, 256, Layout(2, 4)),
    (" 1X2 ", 1, 8, Layout(1, 2)),
])
def test_explicit_layout(spec, seeds, batch, expected):
    assert devices.plan(spec, seeds, batch, available=8) == expected


@pytest.mark.parametrize("spec, seeds, batch, words", [
    ("16", 2, 256, ["16 devices", "8 are available"]),
    ("3x1", 2, 256, ["3 devices on the seed axis", "2 seeds"]),
    ("1x3", 2, 256, ["3 devices on the data axis", "batch of 256"]),
    ("6", 3, 255, ["2 devices on the data axis", "batch of 255"]),  # 6 = 3 seed x 2 data; 2 does not divide 255
    ("two", 2, 256, ["'two' is not valid", "'2x4'"]),
    ("0", 2, 256, [">= 1"]),
])
def test_bad_layouts_name_the_numbers(spec, seeds, batch, words):
    with pytest.raises(ValueError) as error:
        devices.plan(spec, seeds, batch, available=8)
    for word in words:
        assert word in str(error.value)


def test_one_device_layout_makes_no_mesh_and_placing_is_the_identity():
    assert devices.make_mesh(Layout(1, 1)) is None
    tree = {"a": jax.numpy.ones((2, 3))}
    for put in (devices.put_seeds, devices.put_batch, devices.put_replicated):
        assert put(tree, None) is tree
    assert devices.shard_batch(tree) is tree  # outside any mesh: nothing to lay out


def test_mesh_over_one_process_devices():
    mesh = devices.make_mesh(Layout(1, 1), jax.devices())
    assert mesh is None
    if len(jax.devices()) >= 2:  # a machine with several devices: a real mesh
        mesh = devices.make_mesh(Layout(1, 2))
        assert dict(mesh.shape) == {"seed": 1, "data": 2}


def test_initialize_without_coordinator_is_single_process(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert devices.initialize() is False
    with pytest.raises(ValueError, match="need --config.coordinator"):
        devices.initialize(num_processes=2, process_id=0)
    with pytest.raises(ValueError, match="0 <= --config.process_id < num_processes"):
        devices.initialize("localhost:1", num_processes=2, process_id=2)
