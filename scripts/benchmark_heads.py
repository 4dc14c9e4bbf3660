"""Benchmark (not a test): update time of each encoder head (flatten / tokenize / softmoe) at the paper sizes.

    python scripts/benchmark_heads.py                                   # every agent, paper sizes
    python scripts/benchmark_heads.py --agents dqn,der --iters dqn=20,der=5 --out-json heads.json
    python scripts/benchmark_heads.py --agents drqv2,drm --iters 3 --warmup 1
    python scripts/benchmark_heads.py --image-size 36 --batch-size 8 --iters 2   # quick CPU smoke run

Rows ("Don't flatten, tokenize!", spec §4; every value not listed is the agent's Config default):

    dqn      Dopamine's DQN, 84x84x4, batch 32; encoder nature and impala (--dqn-encoders);
             softmoe = 8 experts, perconv tokens, expert hidden 512 (the MoE lab's defaults)
    rainbow  preset "rainbow": Impala encoder, SoftMoE 4 experts, prioritized replay, noisy + dueling + C51
    der      preset "der": Nature CNN, the same Rainbow network otherwise
             rainbow and der each with per_sample_noise True (the default, Dopamine's MoE lab: a
             noise draw, so a noisy weight matrix, per sample) and False (one draw for the batch)
    drqv2    DrQ-v2, 84x84x9, batch 256, hidden 1024, action dim 6 (cheetah_run); token heads with the
             spec §4.7 defaults of the Config (patch 5 -> 49 tokens of 64, SoftMoE-1, 16 slots, hidden 256)
    drm      DrM (cheetah_run's official values) with the softmoe head (--drm-heads)

Each row creates a fresh agent, compiles the agent's jitted `update` once ahead of time (the "compile s"
column), runs `--warmup` updates, then times `--iters` updates, threading the state through and
giving every update its own key and step (jax.block_until_ready before the clock stops). Batches
are random and device-resident (two of them, alternated), so replay sampling is not timed. The
ratio column is updates/s over the flatten row of the same agent, variant and noise setting.
Numbers on a shared machine are noisy: compare rows of one run with each other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from agents import dqn, drm, drqv2, rainbow  # noqa: E402
from networks import tokens  # noqa: E402

AGENTS = ("dqn", "rainbow", "der", "drqv2", "drm")
DEFAULT_ITERS = {"dqn": 20, "rainbow": 5, "der": 5, "drqv2": 3, "drm": 3}
ATARI_TASK = "atari_pong"  # any atari_* task: the tier is the same for all games
DMC_TASK = "cheetah_run"
# Steps start away from multiples of DQN's target period and DrM's perturbation interval, so the
# timed updates are ordinary ones (no perturbation branch taken).
FIRST_STEP = 10_001


@dataclasses.dataclass
class Case:
    """One row: an agent module, its config, and how to label it."""

    agent: str  # a key of AGENTS
    variant: str  # encoder / preset label
    head: str
    noise: str  # "per-sample", "shared" or "-" (no noisy network)
    module: Any  # the agent module: create, update
    config: Any
    obs_shape: tuple
    action_dim: int
    continuous: bool  # DrQ-v2 / DrM: (B, A) actions in [-1, 1]; else (B,) integer actions as float32
    prioritized: bool


def parse_per_agent(text: str, defaults: Dict[str, int], what: str) -> Dict[str, int]:
    """'5' -> every agent 5; 'dqn=20,drqv2=3' -> those agents, the rest from `defaults`."""
    def positive(number: str) -> int:
        if not number.isdigit() or int(number) < 1:
            raise ValueError(f"--{what}: expected a positive int or agent=int pairs (dqn=20,drqv2=3), got {text!r}")
        return int(number)

    values = dict(defaults)
    if not text:
        return values
    if "=" not in text:
        return {agent: positive(text) for agent in values}
    for item in text.split(","):
        name, _, number = item.partition("=")
        if name not in values:
            raise ValueError(f"--{what}: unknown agent {name!r}; valid agents: {', '.join(AGENTS)}")
        values[name] = positive(number)
    return values


def split_choices(text: str, valid: tuple, flag: str) -> List[str]:
    chosen = [item for item in text.split(",") if item]
    unknown = [item for item in chosen if item not in valid]
    if unknown:
        raise ValueError(f"{flag}: unknown value(s) {unknown}; valid values: {', '.join(valid)}")
    return chosen


def build_cases(args) -> List[Case]:
    agents = split_choices(args.agents, AGENTS, "--agents")
    heads = split_choices(args.heads, tokens.HEADS, "--heads")
    drm_heads = [h for h in split_choices(args.drm_heads, tokens.HEADS, "--drm-heads") if h in heads]
    noises = split_choices(args.noise, ("per-sample", "shared"), "--noise")
    sizes = {}  # user overrides that apply to every agent
    if args.batch_size:
        sizes["batch_size"] = args.batch_size
    if args.image_size:
        sizes["image_size"] = args.image_size
    cases = []
    if "dqn" in agents:
        for encoder in split_choices(args.dqn_encoders, dqn.ENCODERS, "--dqn-encoders"):
            for head in heads:
                config = dqn.config_for_task(ATARI_TASK, encoder=encoder, head=head, **sizes)
                cases.append(Case("dqn", encoder, head, "-", dqn, config,
                                  (config.image_size, config.image_size, config.frame_stack),
                                  args.num_actions, continuous=False, prioritized=False))
    for preset in ("rainbow", "der"):
        if preset not in agents:
            continue
        for noise in noises:
            for head in heads:
                config = rainbow.config_for_task(ATARI_TASK, preset=preset, head=head,
                                                 per_sample_noise=noise == "per-sample", **sizes)
                cases.append(Case(preset, f"{preset} ({config.encoder})", head, noise, rainbow, config,
                                  (config.image_size, config.image_size, config.frame_stack),
                                  args.num_actions, continuous=False, prioritized=config.prioritized))
    for name, module, agent_heads in (("drqv2", drqv2, heads), ("drm", drm, drm_heads)):
        if name not in agents:
            continue
        for head in agent_heads:
            config = module.config_for_task(DMC_TASK, head=head, **sizes)
            cases.append(Case(name, f"{DMC_TASK}", head, "-", module, config,
                              (config.image_size, config.image_size, 3 * config.frame_stack),
                              args.dmc_action_dim, continuous=True, prioritized=False))
    return cases


def random_batch(key: jax.Array, case: Case) -> Dict[str, jnp.ndarray]:
    """A replay batch of the shapes the loop sends, on the device."""
    batch_size = case.config.batch_size
    k_obs, k_next, k_action, k_reward, k_prob = jax.random.split(key, 5)
    shape = (batch_size, *case.obs_shape)
    batch = {
        "obs": jax.random.randint(k_obs, shape, 0, 256, jnp.int32).astype(jnp.uint8),
        "next_obs": jax.random.randint(k_next, shape, 0, 256, jnp.int32).astype(jnp.uint8),
        "reward": jax.random.uniform(k_reward, (batch_size,)),
        "discount": jnp.full((batch_size,), case.config.discount ** case.config.nstep, jnp.float32),
    }
    if case.continuous:
        batch["action"] = jax.random.uniform(k_action, (batch_size, case.action_dim), minval=-1, maxval=1)
    else:
        batch["action"] = jax.random.randint(k_action, (batch_size,), 0, case.action_dim).astype(jnp.float32)
    if case.prioritized:
        batch["probabilities"] = jax.random.uniform(k_prob, (batch_size,), minval=1e-3, maxval=1.0)
    return batch


def count_params(state) -> int:
    """Trainable (online) parameters: every *params field of the state except the target copies."""
    total = 0
    for field in dataclasses.fields(state):
        if field.name.endswith("params") and "target" not in field.name:
            total += sum(leaf.size for leaf in jax.tree.leaves(getattr(state, field.name)))
    return total


def time_case(case: Case, iters: int, warmup: int) -> Dict[str, Any]:
    key_create, key_batches, key_updates = jax.random.split(jax.random.PRNGKey(0), 3)
    state = case.module.create(key_create, case.obs_shape, case.action_dim, case.config)
    batches = [random_batch(k, case) for k in jax.random.split(key_batches, 2)]
    jax.block_until_ready((state, batches))
    params = count_params(state)

    def args_of(i):  # its own step, key and (alternating) batch for update i
        return batches[i % 2], jnp.asarray(FIRST_STEP + i, jnp.int32), jax.random.fold_in(key_updates, i)

    start = time.perf_counter()
    update: Callable = case.module.update.lower(state, *args_of(0)).compile()
    compile_s = time.perf_counter() - start

    for i in range(warmup):
        state, metrics = update(state, *args_of(i))
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(warmup, warmup + iters):
        state, metrics = update(state, *args_of(i))
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - start
    finite = bool(jnp.isfinite(metrics["loss"] if "loss" in metrics else metrics["critic_loss"]))
    return {"params": params, "compile_s": compile_s, "updates_per_s": iters / elapsed,
            "ms_per_update": 1000 * elapsed / iters, "iters": iters, "finite_loss": finite}


def describe(case: Case) -> Dict[str, Any]:
    config = case.config
    row = {"agent": case.agent, "variant": case.variant, "head": case.head, "noise": case.noise,
           "batch_size": config.batch_size, "obs_shape": list(case.obs_shape), "action_dim": case.action_dim}
    if case.agent in ("drqv2", "drm"):
        row.update(hidden_dim=config.hidden_dim, feature_dim=config.feature_dim)
        if case.head != "flatten":
            row.update(tokenizer=config.head_tokenizer, patch_size=config.head_patch_size,
                       embed_dim=config.head_embed_dim, num_experts=config.head_num_experts,
                       slots=config.head_slots, expert_hidden=config.head_expert_hidden,
                       aggregate=config.head_aggregate)
    elif case.head != "flatten":
        row.update(tokenizer=config.tokenizer, num_experts=config.num_experts,
                   expert_hidden=config.expert_hidden, aggregate=config.aggregate)
    return row


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", default=",".join(AGENTS), help=f"comma-separated subset of {','.join(AGENTS)}")
    p.add_argument("--heads", default=",".join(tokens.HEADS), help="comma-separated subset of flatten,tokenize,softmoe")
    p.add_argument("--drm-heads", default="softmoe", help="DrM's heads (also filtered by --heads)")
    p.add_argument("--dqn-encoders", default="nature,impala", help="DQN's encoders")
    p.add_argument("--noise", default="per-sample,shared",
                   help="Rainbow / DER: per_sample_noise True ('per-sample') and/or False ('shared')")
    p.add_argument("--iters", default="",
                   help=f"timed updates per row: one int for all, or agent=int pairs; defaults {DEFAULT_ITERS}")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates after compiling")
    p.add_argument("--batch-size", type=int, default=0, help="override every agent's batch size (0: paper sizes)")
    p.add_argument("--image-size", type=int, default=0, help="override every agent's image size (0: 84)")
    p.add_argument("--num-actions", type=int, default=18, help="Atari actions (18 = the full set)")
    p.add_argument("--dmc-action-dim", type=int, default=6, help="DrQ-v2 / DrM action dim (6 = cheetah_run)")
    p.add_argument("--out-json", default="", help="also write the rows (and the machine) to this file")
    args = p.parse_args(argv)
    iters = parse_per_agent(args.iters, DEFAULT_ITERS, "iters")
    cases = build_cases(args)

    load_before = os.getloadavg()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    header = (f"{'agent':<8} {'preset/encoder':<18} {'head':<9} {'noise':<10} {'batch':>5} {'obs':>9} "
              f"{'params':>10} {'compile s':>9} {'updates/s':>10} {'ms/update':>10} {'vs flatten':>10}")
    print(header)
    print("-" * len(header))
    rows, flatten_rate = [], {}
    for case in cases:
        row = describe(case)
        row.update(time_case(case, iters[case.agent], args.warmup))
        group = (case.agent, case.variant, case.noise)
        if case.head == "flatten":
            flatten_rate[group] = row["updates_per_s"]
        row["ratio_to_flatten"] = row["updates_per_s"] / flatten_rate[group] if group in flatten_rate else None
        rows.append(row)
        ratio = "-" if row["ratio_to_flatten"] is None else f"{row['ratio_to_flatten']:.2f}"
        obs = "x".join(str(d) for d in case.obs_shape)
        print(f"{case.agent:<8} {case.variant:<18} {case.head:<9} {case.noise:<10} {case.config.batch_size:>5} "
              f"{obs:>9} {row['params']:>10,} {row['compile_s']:>9.1f} {row['updates_per_s']:>10.2f} "
              f"{row['ms_per_update']:>10.1f} {ratio:>10}" + ("" if row["finite_loss"] else "  (loss not finite)"),
              flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")

    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump({"command": " ".join(["python", "scripts/benchmark_heads.py", *(argv or sys.argv[1:])]),
                       "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
                       "jax": jax.__version__, "cpus": os.cpu_count(), "load_before": load_before,
                       "load_after": load_after, "warmup": args.warmup, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
