"""Shared test settings for CI's workers (three, on two cores: README).

* XLA's CPU compiler runs without LLVM's optimizations (FAST_COMPILE_XLA_FLAGS): most tests spend more time
  compiling their programs than running them, and this compiles them in ~60% of the time (the programs,
  and what they compute, are the same). Tests marked `optimized` (the learning checks, which spend minutes
  running a few programs) run in a subprocess with XLA's default flags instead, as a user's run does.
* The learning tests start first, so that the many short tests fill the other worker around them instead
  of the run ending on one long test.
* JAX's persistent compilation cache (in the checkout's .pytest_cache, so every fresh checkout starts
  cold): the two workers, and the launchers the tests start in subprocesses, reuse each other's
  compiled programs instead of compiling the same update again (XLA's flags are part of its key).
* JAX's in-memory caches are cleared after each test file. Every compiled CPU program keeps ~3 memory
  maps alive for as long as JAX caches it; a worker that runs half the suite compiles thousands of
  programs, and at Linux's default limit of 65,530 maps per process (vm.max_map_count) XLA's compiler
  segfaults on the next compile (two CI runs lost a worker that way, in the last test files).
"""

import gc
import os
import subprocess
import sys

import jax
import pytest

from multidevice import FAST_COMPILE_XLA_FLAGS  # tests/multidevice.py

IN_OPTIMIZED_SUBPROCESS = "PIXAX_TEST_OPTIMIZED_SUBPROCESS"


def pytest_configure(config):
    config.addinivalue_line("markers", "optimized: runs in a subprocess with XLA's default (optimizing) CPU "
                                       "compiler flags, not the suite's fast-compile ones (tests/conftest.py)")
    if IN_OPTIMIZED_SUBPROCESS not in os.environ:
        # Read by XLA when jax creates its CPU client, which no test file has done yet at this point.
        os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), FAST_COMPILE_XLA_FLAGS]))
    cache = str(config.rootpath / ".pytest_cache" / "jax-compilation-cache")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)  # inherited by subprocess launchers
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # every program: see below
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: 0 if item.get_closest_marker("optimized") else 1)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """An `optimized` test runs as `pytest <its node id>` in a subprocess with the flags this process had
    before pytest_configure added the fast-compile ones."""
    if pyfuncitem.get_closest_marker("optimized") is None or IN_OPTIMIZED_SUBPROCESS in os.environ:
        return None
    flags = os.environ["XLA_FLAGS"].replace(FAST_COMPILE_XLA_FLAGS, "").strip()
    env = {**os.environ, IN_OPTIMIZED_SUBPROCESS: "1", "XLA_FLAGS": flags}
    done = subprocess.run([sys.executable, "-m", "pytest", pyfuncitem.nodeid, "-q", "-s", "-p", "no:xdist"],
                          cwd=str(pyfuncitem.config.rootpath), env=env,
                          capture_output=True, text=True)
    print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
    if done.returncode != 0:
        # its output, printed above, is in the report's captured stdout
        pytest.fail(f"{pyfuncitem.nodeid} failed in its optimized subprocess (exit code {done.returncode})",
                    pytrace=False)
    return True


def pytest_runtest_teardown(item, nextitem):
    if nextitem is None or nextitem.module is not item.module:
        jax.clear_caches()
        gc.collect()
