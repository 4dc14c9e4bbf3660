"""Benchmark (not a test): DQN and Rainbow of pixax against Dopamine's JAX agents, side by side in one command,
for each encoder head of "Don't flatten, tokenize!" (flatten / tokenize / softmoe, networks/tokens.py).

    python scripts/benchmark_dqn.py --python /work/scratch/dopamine_venv/bin/python   # both agents, every head
    python scripts/benchmark_dqn.py --agents rainbow --heads softmoe --iters 3 --act-iters 20 --python PY

--python: an interpreter with Dopamine installed, in a virtual environment outside this repository:
`python -m venv DIR && DIR/bin/pip install dopamine-rl==4.1.2 chex` (dopamine-rl ships labs/moes but
does not declare chex, which labs/moes imports; measured with the jax 0.10.2, flax 0.12.8 and optax 0.2.8
that pip chose, the versions pixax uses, and tensorflow 2.21, tensorflow-probability 0.25). Nothing of
Dopamine's code is in this file: the official side is a small pixax driver (OFFICIAL_DRIVER below), run by
--python in a scratch folder (scripts/tables.DriverProcess), that builds the official agent with gin
bindings made from pixax's config and calls the agent's own methods.

No environment is built on either side (no ALE): Dopamine's agents need one only for the observation shape,
so both agents are built for Atari shapes (84x84 grayscale frames, a stack of 4, --num-actions actions) and
both replays are filled with the same synthetic transitions (--episodes episodes of --episode-length steps:
uniform random uint8 frames, uniform actions, rewards in {-1, 0, 1}, a termination at each episode end),
written once to an .npz that both sides read.

Rows: one per agent and head, pixax's config_for_task("atari_pong", ...) on one side and, where Dopamine has
the same network, the official agent built from the same values on the other:

  dqn      pixax agents/dqn.py, Nature CNN. Official: the MoE lab's DQNMoEAgent (labs/moes, the code of the
           SoftMoE / tokenization papers) with its NatureDQNMoE network: moe_type BASELINE for "flatten"
           (Dense 512), SOFTMOE for "softmoe" (8 experts, PER_PIXEL tokens, expert hidden 512). The agent's
           log_moe_statistics / log_dormant_statistics are set False: with their defaults (True; the lab's
           dqn.gin does not set them) its `train` stops in Dopamine 4.1.2 with AttributeError
           MoEType.DROPLESSMOE (a member it names but does not define), and pixax computes neither.
  rainbow  pixax agents/rainbow.py (full Rainbow: noisy nets, dueling, double DQN, C51 with 51 atoms,
           n = 3, prioritized replay). "softmoe": pixax's preset defaults (Impala encoder, SoftMoE with 4
           experts of hidden 512, a noise draw per sample) against the MoE lab's JaxFullRainbowMoEAgent with
           FullRainbowMoENetwork (encoder IMPALA, SOFTMOE, 4 experts; it also draws noise per sample).
           "flatten": the MoE network's BASELINE branch does not run in Dopamine 4.1.2 (it returns a
           hidden activation it never assigns), and Dopamine's own FullRainbowNetwork has only the Nature
           CNN, so this row is Nature CNN on both sides: Dopamine's JaxFullRainbowAgent (full_rainbow,
           one noise draw for the whole batch) against pixax with encoder "nature" and
           per_sample_noise False (the same single draw).
  tokenize Dopamine has no tokenized baseline (no such network in labs/moes at 5873f54 or in 4.1.2): the
           "tokenize" rows are pixax only (DQN: Nature CNN; Rainbow: Impala, per-sample noise).

What is timed (each side in its own process, one at a time):
  update   One gradient step on a batch of --batch-size (32) sampled from the side's own replay, as each
           training loop does it. pixax: FrameReplay / PrioritizedFrameReplay.sample (frames unstacked),
           the jitted step that stacks the frames on the device and calls `agent.update` (what
           core/offpolicy.py's update_one does for one seed), then, with prioritized replay,
           update_priorities with the returned priorities. Official: `agent._training_step_update()`
           (samples Dopamine's jax ReplayBuffer, runs the jitted `train`, and for prioritized replay
           writes the new priorities back). The clock stops after jax.block_until_ready of the online
           parameters. The target-network copy is left out on the official side (Dopamine copies outside
           the step, by reference, every 8000 steps); pixax's update includes its masked copy.
  act      One training-time action for one stacked observation, returned to the host: pixax
           `agent.act(state, obs[None], step, key, eval_mode=False)` with np.asarray; official the agent's
           jitted `select_action` (DQN: epsilon-greedy at epsilon_train; Rainbow: noisy network, epsilon 0)
           on `agent.state`, with np.asarray, as the agent's `step` calls it (storing and training left out).
Setup comes before any timing: every official driver starts first and compiles in its own process while
pixax builds and compiles its sides (so the "setup" seconds printed overlap one another); each side runs
--warmup updates and 2 acts after compiling. Then the rows are timed one after the other. Interleaving:
--rounds rounds per row, each timing --iters updates and --act-iters acts of every side while the other
waits (all other processes of the command are idle then); the order alternates from round to round. A rate
is the calls over the summed seconds of a side's rounds; the ratio is pixax / official. The per-round ratios
are printed too, to show the spread.

Compatibility shims on the official side (the installed files are not edited; the driver prints those used):
(1) dopamine.discrete_domains.atari_lib imports OpenAI baselines' atari_wrappers, which dopamine-rl does not
install and which only environment construction uses: when it is missing the driver puts empty stand-in
modules in its place; (2) tensorflow-probability 0.25's JAX substrate fails to import under jax 0.10.2
(it reads jax.interpreters.xla.pytype_aval_mappings), and Dopamine's jax/networks.py imports it for its SAC
and PPO networks only: the driver then puts an empty stand-in module in its place; (3) the MoE Rainbow agent
calls `self._replay.set_priority(keys, priorities)`, a name Dopamine's jax ReplayBuffer (4.1.2) does not
have: the driver adds it as ReplayBuffer.update(keys, priorities=...), the call JaxFullRainbowAgent makes.

--device cpu (default): both sides on JAX's CPU backend, which uses every CPU of the process (set XLA_FLAGS
before the command to change that; it applies to both processes). --device cuda: both on the GPU (each JAX
process preallocates 75% of it unless XLA_PYTHON_CLIENT_PREALLOCATE=false: set it for two processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from agents import dqn, rainbow  # noqa: E402
from data.prioritized import PrioritizedFrameReplay  # noqa: E402
from data.replay import FrameReplay, merge_frames  # noqa: E402
from scripts import tables  # noqa: E402
from scripts.benchmark_drm import comma_list, rate, rate_per_round  # noqa: E402
from scripts.benchmark_heads import count_params, parse_per_agent  # noqa: E402
from scripts.tables import markdown_table  # noqa: E402

AGENTS = ("dqn", "rainbow")
HEADS = ("flatten", "tokenize", "softmoe")  # networks/tokens.HEADS, in table order
DEVICES = ("cpu", "cuda")
ATARI_TASK = "atari_pong"  # every atari_* task has the same config tier
FRAME_SIDE, FRAME_STACK = 84, 4
# Agent steps start past Dopamine's min_replay_history and epsilon decay (20 000 + 250 000), so DQN acts
# at epsilon_train on both sides; updates advance by update_every_steps from here.
FIRST_STEP = 300_000

# The official side: pixax's own driver, run by --python in a scratch folder. It builds the agent from gin
# bindings made by the parent, fills its replay with the shared transitions, warms up, then answers one JSON
# line per command ("update N": N timed updates; "act N": N timed acts; "finish": last facts).
OFFICIAL_DRIVER = r'''
import json, os, sys, time, types
answers = os.fdopen(os.dup(1), "w")  # the protocol; anything the official code prints goes to stderr
os.dup2(2, 1)
params = json.load(open(sys.argv[1]))
shims = []


def stand_in(dotted, children=()):
    """Empty modules for `dotted` and its parents, each linked to the next, plus `children` of the last whose
    every attribute is an empty class (so that an unused `class X(child.Base)` still defines)."""
    names = dotted.split(".")
    modules = [types.ModuleType(".".join(names[:i + 1])) for i in range(len(names))]
    for parent, child, name in zip(modules, modules[1:], names[1:]):
        setattr(parent, name, child)
    for child in children:
        module = types.ModuleType(f"{dotted}.{child}")
        module.__getattr__ = lambda name: type(name, (), {})
        setattr(modules[-1], child, module)
    sys.modules.update({module.__name__: module for module in modules})


import jax
if params["device"] == "cpu":
    jax.config.update("jax_platforms", "cpu")
elif jax.default_backend() != "gpu":
    raise SystemExit(f"--device cuda: the official side's JAX backend is {jax.default_backend()!r}")
try:
    import baselines.common.atari_wrappers  # noqa: F401  (atari_lib imports it; only environments use it)
except ImportError:
    stand_in("baselines.common.atari_wrappers")
    shims.append("empty stand-in baselines.common.atari_wrappers")
try:
    from tensorflow_probability.substrates import jax as tfp  # only Dopamine's SAC / PPO networks use it
    tfp.distributions  # a lazy module: this loads it
except (ImportError, AttributeError) as error:
    for name in [name for name in sys.modules if name.startswith("tensorflow_probability")]:
        del sys.modules[name]
    stand_in("tensorflow_probability.substrates.jax", children=("distributions", "bijectors"))
    shims.append(f"empty stand-in tensorflow_probability.substrates.jax (it fails to import: "
                 f"{type(error).__name__}: {error})")

import gin
import numpy as np
from importlib import metadata
from dopamine.jax.agents.full_rainbow import full_rainbow_agent
from dopamine.jax.replay_memory import replay_buffer
from dopamine.labs.moes.agents import dqn_moe_agent, full_rainbow_moe_agent
from dopamine.labs.moes.architectures import networks as moe_networks  # noqa: F401  (registers gin names)
from dopamine.jax import networks  # noqa: F401  (registers gin names)

agent_classes = {"DQNMoEAgent": dqn_moe_agent.DQNMoEAgent,
                 "JaxFullRainbowAgent": full_rainbow_agent.JaxFullRainbowAgent,
                 "JaxFullRainbowMoEAgent": full_rainbow_moe_agent.JaxFullRainbowMoEAgent}
agent_class = agent_classes[params["agent_class"]]
if agent_class is full_rainbow_moe_agent.JaxFullRainbowMoEAgent and not hasattr(replay_buffer.ReplayBuffer,
                                                                                 "set_priority"):
    def set_priority(self, keys, priorities):
        self.update(keys, priorities=priorities)

    replay_buffer.ReplayBuffer.set_priority = set_priority
    shims.append("ReplayBuffer.set_priority(keys, p) = ReplayBuffer.update(keys, priorities=p)")

gin.parse_config(params["gin_bindings"])
setup_start = time.perf_counter()
agent = agent_class(num_actions=params["num_actions"])
agent.eval_mode = False

data = np.load(params["data"])
frames, actions, rewards = data["frames"], data["actions"], data["rewards"]
for episode in range(actions.shape[0]):  # Dopamine's loop stores (observation, action, reward, terminal)
    last = actions.shape[1] - 1
    for t in range(last + 1):
        agent._store_transition(frames[episode, t], int(actions[episode, t]), float(rewards[episode, t]),
                                t == last, episode_end=t == last)
agent._reset_state()
for frame in frames[0, :params["frame_stack"]]:
    agent._record_observation(frame)
agent.training_steps = params["step"]
is_rainbow = params["agent_class"] != "DQNMoEAgent"


def update_round(count):
    start = time.perf_counter()
    for _ in range(count):
        agent._training_step_update()
        agent.training_steps += params["update_period"]
    jax.block_until_ready(agent.online_params)
    return {"seconds": time.perf_counter() - start, "count": count}


def act_round(count):
    start = time.perf_counter()
    for _ in range(count):  # the call of the agent's step(), without storing or training
        if is_rainbow:
            agent._rng, action = full_rainbow_agent.select_action(
                agent.network_def, agent.online_params, agent.preprocess_fn(agent.state), agent._rng,
                agent.num_actions, agent.eval_mode, agent.epsilon_eval, agent.epsilon_train,
                agent.epsilon_decay_period, agent.training_steps, agent.min_replay_history, agent.epsilon_fn,
                agent._support)
        else:
            agent._rng, action = dqn_moe_agent.select_action(
                agent.network_def, agent.online_params, agent.preprocess_fn(agent.state), agent._rng,
                agent.num_actions, agent.eval_mode, agent.epsilon_eval, agent.epsilon_train,
                agent.epsilon_decay_period, agent.training_steps, agent.min_replay_history, agent.epsilon_fn)
        np.asarray(action)
    return {"seconds": time.perf_counter() - start, "count": count}


def answer(record):
    answers.write(json.dumps(record) + "\n")
    answers.flush()


fill_seconds = time.perf_counter() - setup_start
update_round(max(params["warmup"], 1))
act_round(2)
network = agent.network_def.func if hasattr(agent.network_def, "func") else type(agent.network_def)
answer({"setup_seconds": time.perf_counter() - setup_start, "fill_seconds": fill_seconds, "shims": shims,
        "dopamine": metadata.version("dopamine-rl"), "jax": jax.__version__,
        "jax_device": str(jax.devices()[0]), "agent": type(agent).__name__,
        "network": getattr(network, "__name__", str(network)),
        "params": int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(agent.online_params))),
        "replay_transitions": int(agent._replay.add_count), "cumulative_gamma": agent.cumulative_gamma,
        "log_statistics": {name: getattr(agent, name) for name in ("log_moe_statistics", "log_dormant_statistics",
                                                                   "log_network_statistics") if hasattr(agent, name)},
        "frames_sum": int(frames.sum(dtype=np.int64))})

commands = {"update": update_round, "act": act_round}  # each takes the count of timed calls
for line in sys.stdin:
    command, *argument = line.split()
    if command == "finish":
        answer({"training_steps": int(agent.training_steps)})
        break
    if command not in commands:
        raise SystemExit(f"unknown command {line!r}; valid: {sorted(commands)} N, finish")
    answer(commands[command](int(argument[0])))
'''


# ----------------------------------------------------------------------------------------------
# Settings of both sides
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One agent and head: pixax's config, and the official agent (None: no official counterpart)."""

    agent: str
    head: str
    config: Any
    official_class: Optional[str]
    gin_bindings: List[str]
    note: str


def pixax_config(agent: str, head: str, batch_size: int):
    """pixax's config of the row (module docstring)."""
    if agent == "dqn":
        return dqn.config_for_task(ATARI_TASK, encoder="nature", head=head, batch_size=batch_size)
    if head == "flatten":  # Dopamine's full_rainbow network: Nature CNN, one noise draw per batch
        return rainbow.config_for_task(ATARI_TASK, head=head, encoder="nature", per_sample_noise=False,
                                       batch_size=batch_size)
    return rainbow.config_for_task(ATARI_TASK, head=head, batch_size=batch_size)


def gin_bindings(agent: str, head: str, config) -> List[str]:
    """The official agent's gin bindings, every value taken from pixax's config (the same hyperparameters
    under Dopamine's names); the replay sizes Dopamine's jax ReplayBuffer needs."""
    bindings = [
        f"JaxDQNAgent.gamma = {config.discount}",
        f"JaxDQNAgent.update_horizon = {config.nstep}",
        f"JaxDQNAgent.min_replay_history = {config.warmup_steps}",
        f"JaxDQNAgent.update_period = {config.update_every_steps}",
        f"JaxDQNAgent.target_update_period = {config.target_update_period}",
        f"JaxDQNAgent.epsilon_train = {config.epsilon_train}",
        f"JaxDQNAgent.epsilon_eval = {config.epsilon_eval}",
        f"JaxDQNAgent.epsilon_decay_period = {config.epsilon_decay_period}",
        "JaxDQNAgent.optimizer = 'adam'",
        "JaxDQNAgent.seed = 0",
        f"create_optimizer.learning_rate = {config.lr}",
        f"create_optimizer.eps = {config.adam_eps}",
        f"ReplayBuffer.max_capacity = {config.replay_capacity}",
        f"ReplayBuffer.batch_size = {config.batch_size}",
    ]
    moe_type = "SOFTMOE" if head == "softmoe" else "BASELINE"
    if agent == "dqn":
        hidden = config.expert_hidden if head == "softmoe" else config.hidden_dim
        return bindings + [
            f"JaxDQNAgent.loss_type = '{config.loss_type}'",
            "JaxDQNAgent.network = @NatureDQNMoE",
            f"NatureDQNMoE.moe_type = '{moe_type}'",
            f"NatureDQNMoE.num_experts = {config.num_experts}",
            f"NatureDQNMoE.expert_hidden_units = {hidden}",
            "NatureDQNMoE.routing_type = 'PER_PIXEL'",
            f"NatureDQNMoE.use_extra_linear_layer = {config.extra_dense}",
            "DQNMoEAgent.num_updates_per_train_step = 1",
            # Their defaults (True) stop the update in Dopamine 4.1.2 (module docstring); pixax logs neither.
            "DQNMoEAgent.log_moe_statistics = False",
            "DQNMoEAgent.log_dormant_statistics = False",
        ]
    bindings += [
        f"JaxFullRainbowAgent.noisy = {config.noisy}",
        f"JaxFullRainbowAgent.dueling = {config.dueling}",
        f"JaxFullRainbowAgent.double_dqn = {config.double_dqn}",
        f"JaxFullRainbowAgent.num_atoms = {config.num_atoms}",
        f"JaxFullRainbowAgent.vmax = {float(config.v_max)}",
        f"JaxFullRainbowAgent.replay_scheme = '{'prioritized' if config.prioritized else 'uniform'}'",
        "JaxFullRainbowAgent.num_updates_per_train_step = 1",
        f"PrioritizedSamplingDistribution.max_capacity = {config.replay_capacity}",
    ]
    if head == "flatten":
        return bindings + ["JaxFullRainbowAgent.network = @FullRainbowNetwork"]
    return bindings + [
        "JaxFullRainbowAgent.network = @FullRainbowMoENetwork",
        f"FullRainbowMoENetwork.moe_type = '{moe_type}'",
        f"FullRainbowMoENetwork.encoder_type = '{'IMPALA' if config.encoder == 'impala' else 'CNN'}'",
        f"FullRainbowMoENetwork.num_experts = {config.num_experts}",
        f"FullRainbowMoENetwork.expert_hidden_units = {config.expert_hidden}",
        "FullRainbowMoENetwork.routing_type = 'PER_PIXEL'",
        "FullRainbowMoENetwork.expert_type = 'SMALL'",
        "FullRainbowMoENetwork.scale_hidden_layer = False",
        f"FullRainbowMoENetwork.use_extra_linear_layer = {config.extra_dense}",
        "FullRainbowMoENetwork.nn_scale = 1",
    ]


def make_row(agent: str, head: str, batch_size: int) -> Row:
    config = pixax_config(agent, head, batch_size)
    if head == "tokenize":
        return Row(agent, head, config, None, [], "no official tokenized baseline in Dopamine")
    official_class = {"dqn": "DQNMoEAgent", "rainbow": "JaxFullRainbowMoEAgent" if head == "softmoe"
                      else "JaxFullRainbowAgent"}[agent]
    note = ("labs/moes" if official_class.endswith("MoEAgent") else "jax/agents/full_rainbow")
    return Row(agent, head, config, official_class, gin_bindings(agent, head, config), note)


def describe_pixax(config) -> str:
    """The pixax settings that shape the cost of an update, one line."""
    fields = ["encoder", "head", "batch_size", "nstep", "lr", "adam_eps", "loss_type", "hidden_dim"]
    if config.head != "flatten":
        fields += ["tokenizer", "num_experts", "expert_hidden", "aggregate"]
    fields += [name for name in ("noisy", "dueling", "double_dqn", "num_atoms", "v_max", "prioritized",
                                 "per_sample_noise") if hasattr(config, name)]
    fields += ["replay_capacity", "update_every_steps", "target_update_period"]
    return ", ".join(f"{name} {getattr(config, name)}" for name in fields)


# ----------------------------------------------------------------------------------------------
# Shared data
# ----------------------------------------------------------------------------------------------


def synthetic_episodes(episodes: int, length: int, num_actions: int, seed: int) -> Dict[str, np.ndarray]:
    """frames (E, L+1, 84, 84) uint8 (reset frame, then one per step), actions (E, L) int32, rewards (E, L)
    float32 in {-1, 0, 1}; every episode terminates at its last step."""
    rng = np.random.default_rng(seed)
    return {"frames": rng.integers(0, 256, (episodes, length + 1, FRAME_SIDE, FRAME_SIDE), dtype=np.uint8),
            "actions": rng.integers(0, num_actions, (episodes, length), dtype=np.int32),
            "rewards": rng.integers(-1, 2, (episodes, length)).astype(np.float32)}


# ----------------------------------------------------------------------------------------------
# The two sides
# ----------------------------------------------------------------------------------------------


class PixaxSide:
    """pixax's agent on its own replay: sampled updates and single acts, as core/offpolicy.py runs them."""

    def __init__(self, row: Row, data: Dict[str, np.ndarray], num_actions: int, warmup: int, seed: int):
        self.config = row.config
        self.module = {"dqn": dqn, "rainbow": rainbow}[row.agent]
        prioritized = getattr(self.config, "prioritized", False)
        replay_type = PrioritizedFrameReplay if prioritized else FrameReplay
        self.replay = replay_type(self.config.replay_capacity, (FRAME_SIDE, FRAME_SIDE, 1), np.uint8, (),
                                  frame_stack=self.config.frame_stack, nstep=self.config.nstep,
                                  discount=self.config.discount, pad_first_frame="zeros", check_memory=False)
        frames = data["frames"][..., None]
        for episode in range(data["actions"].shape[0]):
            self.replay.add_first(frames[episode, 0])
            last = data["actions"].shape[1] - 1
            for t in range(last + 1):
                self.replay.add(frames[episode, t + 1], np.float32(data["actions"][episode, t]),
                                data["rewards"][episode, t], 0.0 if t == last else 1.0, terminated=t == last,
                                truncated=False)
        self.sampler = np.random.default_rng([seed, 1])
        self.key = jax.random.PRNGKey(seed)
        obs_shape = (FRAME_SIDE, FRAME_SIDE, self.config.frame_stack)
        self.state = self.module.create(self.key, obs_shape, num_actions, self.config)
        self.params = count_params(self.state)
        self.step = FIRST_STEP
        self.one_obs = np.ascontiguousarray(np.moveaxis(data["frames"][0, :self.config.frame_stack], 0, -1))[None]
        module = self.module

        # core/offpolicy.py's act_one and update_one for one seed: the key is folded in inside the jitted call.
        def act_one(state, obs, step, key):
            return module.act(state, obs, step, jax.random.fold_in(key, 2 * step), eval_mode=False)

        def update_one(state, batch, step, key):
            batch = {**batch, "obs": merge_frames(batch["obs"]), "next_obs": merge_frames(batch["next_obs"])}
            return module.update(state, batch, step, jax.random.fold_in(key, 2 * step + 1))

        self.act_fn, self.update_fn = jax.jit(act_one), jax.jit(update_one)
        self.metrics: Dict[str, Any] = {}
        start = time.perf_counter()
        self.update_round(max(warmup, 1))
        self.act_round(2)
        self.setup_seconds = time.perf_counter() - start

    def update_round(self, count: int) -> Dict[str, Any]:
        start = time.perf_counter()
        for _ in range(count):
            self.step += self.config.update_every_steps
            batch = self.replay.sample(self.sampler, self.config.batch_size, stacked=False)
            indices = batch.pop("indices", None)
            self.state, self.metrics = self.update_fn(self.state, batch, np.int32(self.step), self.key)
            if indices is not None:
                self.replay.update_priorities(indices, np.asarray(self.metrics["priorities"]))
        jax.block_until_ready((self.state, self.metrics))
        return {"seconds": time.perf_counter() - start, "count": count}

    def act_round(self, count: int) -> Dict[str, Any]:
        start = time.perf_counter()
        for _ in range(count):
            self.step += 1  # acting advances the agent step (updates add update_every_steps)
            np.asarray(self.act_fn(self.state, self.one_obs, np.int32(self.step), self.key))
        return {"seconds": time.perf_counter() - start, "count": count}

    def loss(self) -> float:
        return float(self.metrics["loss"])


class OfficialSide(tables.DriverProcess):
    """Dopamine's agent in a --python subprocess (OFFICIAL_DRIVER), idle while the other side is timed."""

    def __init__(self, row: Row, data_file: pathlib.Path, num_actions: int, args: argparse.Namespace):
        params = {"agent_class": row.official_class, "gin_bindings": row.gin_bindings, "num_actions": num_actions,
                  "data": str(data_file), "frame_stack": row.config.frame_stack, "step": FIRST_STEP,
                  "update_period": row.config.update_every_steps, "warmup": args.warmup, "device": args.device}
        super().__init__(args.python, OFFICIAL_DRIVER, params, prefix=f"dopamine_{row.agent}_{row.head}_")

    def update_round(self, count: int) -> Dict[str, Any]:
        return self.command(f"update {count}")

    def act_round(self, count: int) -> Dict[str, Any]:
        return self.command(f"act {count}")


# ----------------------------------------------------------------------------------------------
# Measuring one row
# ----------------------------------------------------------------------------------------------


def set_up_sides(rows: Sequence[Row], data: Dict[str, np.ndarray], data_file: pathlib.Path,
                 args: argparse.Namespace, officials: Dict[int, Any]) -> List[PixaxSide]:
    """Every side, before any timing: the official drivers start first, each in a thread that waits for its
    setup line, so Dopamine's compiles overlap pixax's; `officials` gets row index -> OfficialSide as they come
    (the caller kills them). Returns the pixax sides, one per row."""
    frames_sum = int(data["frames"].sum(dtype=np.int64))
    with ThreadPoolExecutor(max_workers=max(len(rows), 1)) as pool:
        pending = {index: pool.submit(OfficialSide, row, data_file, args.num_actions, args)
                   for index, row in enumerate(rows) if row.official_class}
        pixax_sides = []
        try:
            for row in rows:
                pixax = PixaxSide(row, data, args.num_actions, args.warmup, args.seed)
                pixax_sides.append(pixax)
                print(f"set up pixax {row.agent} / {row.head}: {pixax.params:,} parameters, {len(pixax.replay)} "
                      f"replay entries; compile + {max(args.warmup, 1)} warm-up updates + 2 acts "
                      f"{pixax.setup_seconds:.1f} s", flush=True)
        finally:  # every driver that started goes to the caller, which ends it
            failures = []
            for index, future in pending.items():
                try:
                    officials[index] = future.result()
                except BaseException as failure:  # DriverProcess stops with SystemExit and the driver's stderr
                    failures.append(failure)
    if failures:
        raise failures[0]
    for index, official in officials.items():
        if official.setup["frames_sum"] != frames_sum:
            raise SystemExit(f"the official side of {rows[index].agent} / {rows[index].head} read different frames")
    return pixax_sides


def measure_row(row: Row, pixax: PixaxSide, official: Optional[OfficialSide], args: argparse.Namespace,
                iters: int) -> Dict[str, Any]:
    """Both sides of one row, interleaved round by round: `iters` timed updates per side and round."""
    print(f"\n{row.agent} / {row.head}", flush=True)
    print(f"  pixax: {describe_pixax(row.config)}, num_actions {args.num_actions}; {pixax.params:,} parameters",
          flush=True)
    if official:
        setup = official.setup
        print(f"  official: {setup['agent']} + {setup['network']} ({row.note}), dopamine {setup['dopamine']}, "
              f"jax {setup['jax']} on {setup['jax_device']}; {setup['params']:,} parameters, "
              f"{setup['replay_transitions']} replay transitions, log flags {setup['log_statistics']}; setup "
              f"{setup['setup_seconds']:.1f} s (overlapping the other setups); shims: "
              f"{'; '.join(setup['shims']) or 'none'}", flush=True)
        print("  official gin bindings: " + "; ".join(row.gin_bindings), flush=True)
    else:
        print(f"  official: none ({row.note})", flush=True)
    sides = [("pixax", pixax)] + ([("official", official)] if official else [])
    updates: Dict[str, List[Dict[str, Any]]] = {name: [] for name, _ in sides}
    acts: Dict[str, List[Dict[str, Any]]] = {name: [] for name, _ in sides}
    for round_index in range(args.rounds):
        for name, side in (sides if round_index % 2 == 0 else sides[::-1]):
            updates[name].append(side.update_round(iters))
            acts[name].append(side.act_round(args.act_iters))
        print(f"  round {round_index}: " + ", ".join(
            f"{name} {iters / updates[name][-1]['seconds']:.2f} updates/s "
            f"{args.act_iters / acts[name][-1]['seconds']:.1f} acts/s" for name, _ in sides), flush=True)
    result = {"agent": row.agent, "head": row.head, "official": row.official_class, "note": row.note,
              "pixax_settings": describe_pixax(row.config), "gin_bindings": row.gin_bindings,
              "pixax_params": pixax.params, "pixax_setup_seconds": pixax.setup_seconds, "pixax_loss": pixax.loss()}
    for name, _ in sides:
        result[f"{name}_updates_per_s"] = rate(updates[name])
        result[f"{name}_acts_per_s"] = rate(acts[name])
        result[f"{name}_update_rounds"] = rate_per_round(updates[name])
        result[f"{name}_act_rounds"] = rate_per_round(acts[name])
    if official:
        result["official_setup"] = official.setup
        official.finish()
        for kind in ("update", "act"):
            result[f"{kind}_ratio"] = result[f"pixax_{kind}s_per_s"] / result[f"official_{kind}s_per_s"]
            result[f"{kind}_round_ratios"] = [p / o for p, o in zip(result[f"pixax_{kind}_rounds"],
                                                                    result[f"official_{kind}_rounds"])]
    return result


def format_table(results: Sequence[Dict[str, Any]]) -> str:
    table = [["agent", "head", "official agent", "pixax updates/s", "official updates/s", "pixax / official",
              "pixax acts/s", "official acts/s", "pixax / official (act)"]]
    for r in results:
        official = r["official"] is not None
        table.append([r["agent"], r["head"], r["official"] or "-", f"{r['pixax_updates_per_s']:.2f}",
                      f"{r['official_updates_per_s']:.2f}" if official else "-",
                      f"{r['update_ratio']:.2f}x" if official else "-", f"{r['pixax_acts_per_s']:.1f}",
                      f"{r['official_acts_per_s']:.1f}" if official else "-",
                      f"{r['act_ratio']:.2f}x" if official else "-"])
    return markdown_table(table, text_columns=3)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", default="dqn,rainbow", help="comma-separated: dqn, rainbow")
    p.add_argument("--heads", default=",".join(HEADS), help="comma-separated: flatten, tokenize, softmoe")
    p.add_argument("--python", default=sys.executable, help="interpreter with dopamine-rl for the official side")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where both sides run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-actions", type=int, default=18, help="18 = the full Atari action set")
    p.add_argument("--episodes", type=int, default=4, help="synthetic episodes in each replay")
    p.add_argument("--episode-length", type=int, default=250, help="steps per synthetic episode")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the side order alternates")
    p.add_argument("--iters", default="dqn=20,rainbow=2",
                   help="timed updates per side and round: one int, or agent=int pairs")
    p.add_argument("--act-iters", type=int, default=50, help="timed acts per side and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates per side after compiling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    args.agents = comma_list(p, args.agents, AGENTS, "--agents")
    args.heads = [head for head in HEADS if head in comma_list(p, args.heads, HEADS, "--heads")]
    try:
        args.iters = parse_per_agent(args.iters, {"dqn": 20, "rainbow": 2}, "iters")
    except ValueError as error:
        p.error(str(error))
    for name in ("batch_size", "num_actions", "episodes", "rounds", "act_iters"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if shutil.which(args.python) is None:
        p.error(f"--python {args.python!r} is not an executable: pass the interpreter that has dopamine-rl")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.episode_length < 4:  # Rainbow's 3-step windows need a few steps per episode
        p.error(f"--episode-length must be >= 4, got {args.episode_length}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    tables.select_jax_device(args.device)
    load_start = os.getloadavg()
    print(f"device: jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); "
          f"{len(os.sched_getaffinity(0))} CPUs; {platform.processor() or platform.machine()}; load average "
          f"{', '.join(f'{x:.1f}' for x in load_start)}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; official "
          f"python {args.python}", flush=True)
    print(f"shapes: {FRAME_SIDE}x{FRAME_SIDE}x{FRAME_STACK} uint8, batch {args.batch_size}, {args.num_actions} "
          f"actions; replays: {args.episodes} synthetic episodes x {args.episode_length} steps; {args.rounds} rounds "
          f"of {args.iters} updates and {args.act_iters} acts per side", flush=True)
    data = synthetic_episodes(args.episodes, args.episode_length, args.num_actions, args.seed)
    rows = [make_row(agent, head, args.batch_size) for agent in args.agents for head in args.heads]
    officials: Dict[int, OfficialSide] = {}
    with tempfile.TemporaryDirectory(prefix="dqn_bench_data_") as folder:
        data_file = pathlib.Path(folder) / "episodes.npz"
        np.savez(data_file, **data)
        try:
            pixax_sides = set_up_sides(rows, data, data_file, args, officials)
            results = [measure_row(row, pixax, officials.get(index), args, args.iters[row.agent])
                       for index, (row, pixax) in enumerate(zip(rows, pixax_sides))]
        finally:
            for official in officials.values():
                official.kill()
    load_end = os.getloadavg()
    print(f"\nload average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end; rates are calls over "
          f"summed seconds of {args.rounds} interleaved rounds; ratio = pixax / official")
    print(format_table(results))
    for r in results:
        if r["official"]:
            print(f"per-round pixax / official, {r['agent']} {r['head']}: updates "
                  + ", ".join(f"{x:.2f}" for x in r["update_round_ratios"]) + "; acts "
                  + ", ".join(f"{x:.2f}" for x in r["act_round_ratios"]))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"args": vars(args), "load_start": load_start,
                                                       "load_end": load_end, "rows": results}, indent=2, default=str))
    return {"rows": results}


if __name__ == "__main__":
    main()
