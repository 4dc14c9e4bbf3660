"""What the tests that need several (forced) CPU devices share: jax reads XLA_FLAGS once, when it starts,
so those tests run their JAX work in a subprocess started with the flags set.

    done = run_python([__file__, "part"], devices=4)      # -> subprocess.CompletedProcess
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Cheaper CPU code generation (LLVM at -O0, no expensive passes): the HLO programs and their partitioning
# over devices are the same, and a test compiles in ~60% of the time. Dropped where XLA does not know them.
FAST_COMPILE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def subprocess_env(devices: int = 1, fast_compile: bool = True) -> dict:
    """os.environ for a JAX subprocess on the CPU with `devices` forced host devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    flags = [f"--xla_force_host_platform_device_count={devices}" if devices > 1 else "",
             FAST_COMPILE_XLA_FLAGS if fast_compile else ""]
    env["XLA_FLAGS"] = " ".join(filter(None, flags))
    return env


def run_python(args: Sequence[str], devices: int = 1, timeout: float = 600, cwd: Optional[str] = None
               ) -> subprocess.CompletedProcess:
    """`python args...` with `devices` forced CPU devices (and the fast-compile flags where XLA knows them)."""
    for fast_compile in (True, False):
        done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd or REPO, capture_output=True, text=True,
                              env=subprocess_env(devices, fast_compile), timeout=timeout)
        if "Unknown flag in XLA_FLAGS" not in done.stderr:
            break
    return done


def start_python(args: Sequence[str], devices: int = 1, cwd: Optional[str] = None) -> subprocess.Popen:
    """`python args...` started in the background (several processes that must run at once)."""
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd or REPO, env=subprocess_env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
