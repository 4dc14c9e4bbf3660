"""PRDC (Ran et al. 2023): TD3+BC whose BC target is the nearest dataset sample in (beta*state, action) space.

Spec: shared/spec/model-offline-onpolicy-agents.md §5. Everything but the BC target is TD3+BC
(agents/td3bc.py: critic, target smoothing, delays, tau, optimizers, lambda = alpha / mean|Q|, state
normalization, the state class). What differs, read top to bottom:

  1. Config: beta, k, the nearest-neighbour backend; per-family alpha / beta / reward transform
  2. the dataset constraint: keys k_j = [beta * s^_j, a_j] over the whole (normalized) dataset
  3. the BC target: query q_b = [beta * s^_b, pi(s^_b)] (no gradient), target = the action of the
     k-th nearest key (k=1: the nearest; the official `query(k=[k])` returns only the k-th)
  4. update / update_many: td3bc.train_step with that target

Nearest-neighbour backends (core/neighbors.py), both exact and both usable inside jit / lax.scan:
"kdtree" (scipy on the host, through a callback; the official structure) and "brute_force" (blocked
matmul distances on the device). Measured on this 2-core CPU (2026-11-25, jax 0.10.2, scipy 1.17.1),
ms per batch of 256 queries [beta * s^, tanh(W s)], keys [beta * s^, a] of 17 + 6 = 23 dims, beta 2,
from HalfCheetah-v5 rollouts: "policy" data = actions tanh(W s) + N(0, 0.1) (a stand-in for the
medium / expert / replay datasets), "random" data = uniform actions (the random datasets):

  | data   | keys | kdtree (host) | brute force, block 4096 | block 16384 | block 65536 |
  | policy | 1e5  |    1.3 - 5.7  |         52 - 64         |   57 - 184  |      88     |
  | policy | 1e6  |       5.3     |          619            |     615     |     681     |
  | random | 1e5  |     157       |           60            |      65     |      -      |
  | random | 1e6  |    1091       |          573            |     572     |      -      |

(ranges: repeated runs on the shared machine; brute force with the default refine_margin 3, margin 0
was within +-15% and no faster overall.) Those queries used the behaviour policy itself, so they sit on
the dataset. During training the actor's queries can sit far from it, and there the KD-tree degrades:
scripts/benchmark_prdc.py (whole updates, actor queries from the training actor, synthetic HalfCheetah
data, same machine under load) measured 0.75 s per KD-tree lookup at 1e5 keys and 3.5 s at 1e6, where
brute force took 0.08 s and 1.7 s; on the Hopper medium dataset the two were within 15% (19.9 vs 17.2
updates/s). In the offline runs of docs/offline.md (3 seeds, 1e5 keys, 10k updates, loaded machine)
the KD-tree ran Hopper medium at ~16 updates/s, and HalfCheetah medium at 3.9 updates/s where brute
force ran at 3.6. So the KD-tree is at most ~15% faster on the real datasets measured and up to 10x
slower on far queries; brute force costs the same whatever the queries, and on an accelerator it is
one matmul per block inside the jitted scan with no host round trip. It is the default;
nn_backend="kdtree" (the official structure) can be chosen.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Tuple

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np

from agents import td3bc
from agents.td3bc import TD3BCState, act, create, dataset_arrays  # noqa: F401  (PRDC's state is TD3+BC's)
from core import neighbors

Batch = td3bc.Batch
Metrics = td3bc.Metrics

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config(td3bc.Config):
    """TD3+BC's fields (same defaults: P = LAMDA-RL/PRDC 9f38464 prdc.py / utils/config.py agree with
    TD3_BC) plus the dataset constraint. Per-family values (README commands) are in FAMILY_OVERRIDES."""

    beta: float = 2.0  # P README runs (argparse default 1.0 is never used there, spec §10 #19)
    k: int = 1  # P --k: the k-th nearest neighbour (not a mean of k)
    nn_backend: str = "brute_force"  # steady cost, on the device (module docstring); "kdtree" = official
    nn_block: int = neighbors.DEFAULT_BLOCK  # pixax: keys per matmul block of the brute force
    # Evaluation keeps TD3+BC's 10 episodes every 5000 updates; P evaluates 50 every 1000 (spec §10 #22,
    # slow): eval_every_updates=1000, num_eval_episodes=50 for the official protocol.

    def _rules(self):
        return super()._rules() + [
            ("beta", self.beta >= 0, ">= 0"),
            ("k", self.k >= 1, ">= 1"),
            ("nn_backend", self.nn_backend in neighbors.BACKENDS, f"one of {neighbors.BACKENDS}"),
            ("nn_block", self.nn_block >= 1, ">= 1"),
        ]


# PRDC README commands (spec §5.3). State normalization is on for every family, AntMaze included
# (PRDC's --normalize is store_false with default True), unlike TD3+BC's AntMaze runs.
FAMILY_OVERRIDES: Dict[str, Dict[str, Any]] = {
    "halfcheetah": {"alpha": 40.0, "beta": 2.0, "k": 1},
    "hopper": {"alpha": 2.5, "beta": 2.0, "k": 1},
    "walker2d": {"alpha": 2.5, "beta": 2.0, "k": 1},
    "antmaze": {"alpha": 7.5, "beta": 7.5, "k": 1, "reward_scale": 10000.0, "reward_shift": -1.0,
                "normalize_states": True},
}


def config_for_task(dataset: str, **user_overrides) -> Config:
    """The PRDC config of a dataset (family table, then `user_overrides`)."""
    return td3bc.build_family_config(Config, dataset, FAMILY_OVERRIDES, user_overrides)


# ----------------------------------------------------------------------------------------------
# 2. The dataset constraint
# ----------------------------------------------------------------------------------------------


def keys(obs: jnp.ndarray, action: jnp.ndarray, beta: float) -> jnp.ndarray:
    """[beta * s^, a] rows: beta scales the (normalized) states only, never the actions."""
    return jnp.concatenate([beta * obs, action], axis=-1)


class Constraint(struct.PyTreeNode):
    """The nearest-neighbour index over the dataset's keys and the dataset actions it returns.

    Built once from the normalized dataset (normalization first, spec §10 #21: new statistics need a
    new Constraint). A pytree: pass it to jitted functions as an argument, never as a closure constant.
    """

    index: Any  # neighbors.BruteForceIndex (device) or neighbors.KDTreeIndex (host)
    actions: jnp.ndarray  # (N, A) dataset actions, in key order


def build_constraint(arrays: Batch, config: Config) -> Constraint:
    """The Constraint over `arrays` (from dataset_arrays: obs already normalized) with config's beta and backend."""
    dataset_keys = np.asarray(keys(arrays["obs"], arrays["action"], config.beta))
    index = neighbors.build_index(dataset_keys, config.nn_backend, block=config.nn_block)
    return Constraint(index=index, actions=jnp.asarray(arrays["action"]))


# ----------------------------------------------------------------------------------------------
# 3. The BC target
# ----------------------------------------------------------------------------------------------


def nearest_dataset_action(state: TD3BCState, obs: jnp.ndarray, constraint: Constraint) -> jnp.ndarray:
    """a of the k-th nearest key to [beta * s^, pi(s^)] for each (normalized) obs; a constant (no gradient)."""
    config = state.config
    pi = td3bc.policy(state, state.actor_params, obs)
    queries = jax.lax.stop_gradient(keys(obs, pi, config.beta))
    nearest = constraint.index.query(queries, k=config.k)
    return constraint.actions[nearest]


# ----------------------------------------------------------------------------------------------
# 4. update, update_many (act and create are TD3+BC's)
# ----------------------------------------------------------------------------------------------


def train_step(state: TD3BCState, batch: Batch, key: jax.Array, constraint: Constraint
               ) -> Tuple[TD3BCState, Metrics]:
    """td3bc.train_step with the dataset-constraint BC target."""
    def bc_target(state, batch):
        return nearest_dataset_action(state, batch["obs"], constraint)

    return td3bc.train_step(state, batch, key, bc_target)


@jax.jit
def update(state: TD3BCState, batch: Batch, key: jax.Array, constraint: Constraint) -> Tuple[TD3BCState, Metrics]:
    """One PRDC update (batch layout as td3bc.update); the neighbour search runs only on actor updates."""
    return train_step(state, batch, key, constraint)


@functools.partial(jax.jit, static_argnames=("num_updates",))
def update_many(state: TD3BCState, arrays: Batch, constraint: Constraint, key: jax.Array, num_updates: int
                ) -> Tuple[TD3BCState, Metrics]:
    """`num_updates` PRDC updates in one `lax.scan`, batches sampled on the device from `arrays`."""
    return td3bc.sample_and_scan(state, arrays, key, num_updates,
                                 lambda state, batch, key: train_step(state, batch, key, constraint))
