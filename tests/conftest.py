"""Shared test settings for CI's two workers.

* The learning tests (minutes each) start first, so that the many short tests fill the other worker
  around them instead of the run ending on one long test.
* JAX's persistent compilation cache (in the checkout's .pytest_cache, so every fresh checkout starts
  cold): the two workers, and the launchers the tests start in subprocesses, reuse each other's
  compiled programs instead of compiling the same update again.
"""

import os

import jax


def pytest_configure(config):
    cache = str(config.rootpath / ".pytest_cache" / "jax-compilation-cache")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)  # inherited by subprocess launchers
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: 0 if item.module.__name__.split(".")[-1].startswith("test_learning") else 1)
