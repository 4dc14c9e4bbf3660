"""Benchmark (not a test): DrQ-v2 (or DrM) update throughput and environment steps/s.

    python scripts/benchmark_drqv2.py                       # paper size, 1 seed, float32
    python scripts/benchmark_drqv2.py --seeds 1,8 --strategies map,vmap --dtypes float32,bfloat16
    python scripts/benchmark_drqv2.py --agent drm --seeds 1,8 --strategies map,unroll   # DrM's update
    python scripts/benchmark_drqv2.py --image-size 32 --hidden-dim 64 --batch-size 64 --seeds 1,4   # CPU-sized

Updates run on random device-resident batches (what the accelerator does per update); the
environment part steps dm_control from pixels in one process and in N subprocesses. Numbers on a
shared machine are noisy: compare the rows of one run with each other, not with another day's run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from agents import drm, drqv2  # noqa: E402
from core import seeds as seeding  # noqa: E402


def random_batch(key, num_seeds, config, action_dim):
    k1, k2, k3 = jax.random.split(key, 3)
    shape = (num_seeds, config.batch_size, config.image_size, config.image_size, 3 * config.frame_stack)
    obs = jax.random.randint(k1, shape, 0, 256, jnp.int32).astype(jnp.uint8)
    return {"obs": obs, "next_obs": jnp.flip(obs, axis=1),
            "action": jax.random.uniform(k2, (num_seeds, config.batch_size, action_dim), minval=-1, maxval=1),
            "reward": jax.random.uniform(k3, (num_seeds, config.batch_size)),
            "discount": jnp.full((num_seeds, config.batch_size), 0.99 ** 3)}


AGENTS = {"drqv2": drqv2, "drm": drm}


def time_updates(num_seeds, strategy, config, action_dim, iters, warmup=3, agent=drqv2):
    """Updates/s of `agent.update` over `num_seeds` stacked seeds (one jitted call per update); step 10,000 (past
    exploration; not a DrM perturbation step)."""
    obs_shape = (config.image_size, config.image_size, 3 * config.frame_stack)
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    states = seeding.stack([agent.create(k, obs_shape, action_dim, config) for k in keys])
    batch = random_batch(jax.random.PRNGKey(1), num_seeds, config, action_dim)
    step = jnp.full((num_seeds,), 10_000, jnp.int32)
    update = jax.jit(seeding.over_seeds(agent.update, strategy, jit=False), donate_argnums=0)
    for _ in range(warmup):
        states, metrics = update(states, batch, step, keys)
    jax.block_until_ready(states)
    start = time.perf_counter()
    for _ in range(iters):
        states, metrics = update(states, batch, step, keys)
    jax.block_until_ready((states, metrics))
    return iters / (time.perf_counter() - start)


def time_envs(task, procs, steps, image_size):
    import envs

    env = envs.make_vector(task, list(range(procs)), asynchronous=procs > 1, image_size=image_size)
    env.reset(seed=list(range(procs)))
    action = np.zeros((procs,) + env.single_action_space.shape, np.float32)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(action)
        if (term | trunc).any():
            env.reset(seed=list(range(procs)))
    rate = steps * procs / (time.perf_counter() - start)
    env.close()
    return rate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default="drqv2", choices=sorted(AGENTS), help="whose update is timed")
    p.add_argument("--seeds", default="1", help="comma-separated seed counts, e.g. 1,8")
    p.add_argument("--strategies", default="map,vmap", help="comma-separated: map, vmap")
    p.add_argument("--dtypes", default="float32", help="comma-separated compute dtypes: float32, bfloat16")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--feature-dim", type=int, default=50)
    p.add_argument("--action-dim", type=int, default=6, help="6 = cheetah_run")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--env-task", default="cheetah_run")
    p.add_argument("--env-procs", default="1", help="comma-separated process counts; empty to skip")
    p.add_argument("--env-steps", type=int, default=200)
    args = p.parse_args(argv)

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    agent = AGENTS[args.agent]
    print(f"{'DrM' if args.agent == 'drm' else 'DrQ-v2'} update, batch {args.batch_size}, {args.image_size}x{args.image_size}x9, "
          f"feature {args.feature_dim}, hidden {args.hidden_dim}, action dim {args.action_dim}")
    print(f"{'seeds':>5} {'strategy':>8} {'dtype':>9} {'updates/s':>10} {'seed-updates/s':>15}")
    for dtype in args.dtypes.split(","):
        config = agent.config_for_task("cheetah_run", batch_size=args.batch_size, image_size=args.image_size,
                                       hidden_dim=args.hidden_dim, feature_dim=args.feature_dim,
                                       compute_dtype=dtype)
        for n in [int(s) for s in args.seeds.split(",")]:
            for strategy in args.strategies.split(",") if n > 1 else ["-"]:  # one seed: the plain update
                rate = time_updates(n, "map" if strategy == "-" else strategy, config, args.action_dim, args.iters,
                                    agent=agent)
                print(f"{n:>5} {strategy:>8} {dtype:>9} {rate:>10.2f} {rate * n:>15.2f}", flush=True)

    if args.env_procs:
        print(f"\nenvironment: {args.env_task} from pixels {args.image_size}x{args.image_size}, action repeat 2")
        print(f"{'processes':>9} {'agent steps/s':>14} {'frames/s':>9}")
        for procs in [int(s) for s in args.env_procs.split(",")]:
            rate = time_envs(args.env_task, procs, args.env_steps, args.image_size)
            print(f"{procs:>9} {rate:>14.1f} {2 * rate:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
