"""The on-policy loops (PPO, PROPS) on a device mesh (issue 8; core/devices.py): seeds spread over the
"seed" devices, each update's minibatches over the "data" devices.

Each part runs in a subprocess with four forced CPU devices (XLA_FLAGS must be set before jax is
imported; the pytest process has one device): this file run as a script, `python
tests/test_devices_onpolicy.py <part>`, prints one JSON line per comparison. The reference is always the
same program on one device, without a mesh; a layout must reproduce it to float rounding (measured:
<= 1e-6 absolute). TOLERANCE is far below what a broken layout gives: normalizing the advantages over
each data shard instead of over the whole minibatch (PPO's and PROPS's `norm_adv`) moves the outputs of
the updates in part (a) by 0.09 to 0.26 (measured on 1x2, 1x4 and 2x2).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import multidevice  # tests/multidevice.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5  # absolute, on every parameter, optimizer moment, metric and evaluation return
TASK = "InvertedPendulum-v5"
NUM_SEEDS = 2


def run_part(part: str) -> list[dict]:
    """This file as a script in a subprocess with four CPU devices (jax reads XLA_FLAGS when it starts,
    so the module-level import below sees them there); its JSON lines."""
    proc = multidevice.run_python([os.path.abspath(__file__), part], devices=4, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, f"part {part!r} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


# ----------------------------------------------------------------------------------------- tests

@pytest.mark.slow
def test_ppo_and_props_updates_on_a_mesh_equal_the_one_device_update():
    """(a) agent.update (PPO; PROPS with a PPO target update and a behaviour update whose last minibatch
    is padded) for 2 seeds on a fixed rollout: data parallel on 1x2 and 1x4, seeds and data on 2x2,
    against one device. The compiled mesh programs hold all-reduces: the minibatches were split."""
    rows = run_part("update")
    layouts = ("1x2", "1x4", "2x2")
    assert {(r["agent"], r["layout"]) for r in rows} == {(a, spec) for a in ("ppo", "props") for spec in layouts}
    for r in rows:
        assert r["abs"] < TOLERANCE, r
        assert r["all_reduce"], r  # a data axis of 2 or 4 that XLA really split
        # the comparison is not vacuous: the update moved the parameters and took every step
        assert r["params_moved"] > 1e-3 and r["gradient_steps"] == r["expected_steps"], r


@pytest.mark.slow
def test_host_loop_on_2x2_equals_one_device_and_bad_devices_stop_before_a_run_directory():
    """(b) A short PPO run of the host loop (core/onpolicy.py, gymnasium InvertedPendulum, 2 seeds x 2
    environments, 2 updates, evaluations) with --config.devices=1 and =2x2; the 2x2 run crashes after
    its first checkpoint and is resumed (the restored states go back onto the mesh). Same final
    parameters, update metrics and evaluation returns. A data axis that does not divide the minibatch
    (1x3 for minibatches of 8) stops with devices.plan's message before any run directory, on the
    host-loop and on the MJX path."""
    rows = {r["case"]: r for r in run_part("trainer")}
    assert rows["2x2"]["layout"] == "2x2" and rows["2x2"]["resumed_from"] == 8, rows["2x2"]
    assert rows["2x2"]["abs"] < TOLERANCE, rows["2x2"]
    assert rows["2x2"]["params_moved"] > 1e-3 and rows["2x2"]["evaluations"] == 3, rows["2x2"]
    for case in ("bad_devices", "bad_devices_mjx"):
        r = rows[case]
        assert "3 devices on the data axis do not divide the batch of 8" in r["message"], r
        assert "ppo's minibatches hold 8 samples" in r["message"], r
        assert not r["run_dirs"], r


@pytest.mark.slow
def test_mjx_loop_on_2x2_equals_one_device():
    """(c) core/onpolicy_jax.py's jitted loop (2 fused iterations - collect then learn - and 3 evaluations)
    on a tiny pure-JAX environment with the MJX interface, 2 seeds, on 2x2 (seeds sharded, the learn step's
    minibatches split: the compiled iteration holds all-reduces) against one device: same states, metrics
    and evaluation returns. (An MJX task's programs take 6-16 s of CPU each to compile here; the
    environment is a closed-over function of the same programs.)"""
    (r,) = run_part("mjx")
    assert r["layout"] == "2x2" and r["abs"] < TOLERANCE and r["all_reduce"] and r["params_moved"] > 1e-3, r


def test_minibatch_sizes_name_every_fill_level():
    """The minibatch sizes the loop checks the data axis against, by hand: PPO (b = 1: one size);
    PPO-BUFFER and PROPS (T = m, 2m, ... b*n: PPO's on multiples of n, the behaviour update's
    (b*n - m) * E // props_num_minibatches, capped by the samples after the m about to leave)."""
    from agents import ppo, props
    from core import onpolicy

    assert ppo.minibatch_sizes(ppo.Config(num_steps=2048, num_minibatches=32)) == (64,)
    assert ppo.minibatch_sizes(ppo.Config(num_steps=8, buffer_batches=2, num_envs=2, num_minibatches=1)) == (16, 32)
    # n = 8, m = 4, b = 2, E = 2: PPO (32 // 4 = 8 at T = 8 and 16); behaviour 24 // 2 = 12, capped at 8 for T = 4
    config = props.Config(num_steps=8, props_num_steps=4, buffer_batches=2, num_envs=2, num_minibatches=4,
                          props_num_minibatches=2)
    assert props.minibatch_sizes(config) == (8, 12)
    assert onpolicy.update_batch_sizes(props, config) == (8, 12)
    assert onpolicy.plan_devices(props, config, "1", 2).size == 1
    too_many = len(jax.devices()) + 1
    with pytest.raises(ValueError, match=rf"asks for {too_many} devices"):
        onpolicy.plan_devices(props, config, f"1x{too_many}", 2)


# ----------------------------------------------------------------------------------------- subprocess parts

def max_abs_difference(a, b) -> float:
    """Largest |a - b| over the leaves (NaN where both are NaN counts as equal)."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape and np.array_equal(np.isnan(x), np.isnan(y)), (x, y)
        worst = max(worst, float(np.nan_to_num(np.abs(x - y)).max(initial=0.0)))
    return worst


def part_update() -> None:
    from agents import ppo, props
    from core import devices
    from core import seeds as seeding

    E, obs_dim, action_dim = 2, 3, 2

    def rollout(seed: int, T: int) -> ppo.Rollout:
        k = jax.random.split(jax.random.PRNGKey(100 + seed), 5)
        return ppo.Rollout(obs=jax.random.normal(k[0], (T, E, obs_dim)),
                           actions=jax.random.normal(k[1], (T, E, action_dim)), rewards=jax.random.normal(k[2], (T, E)),
                           dones=(jax.random.uniform(k[3], (T, E)) < 0.2).astype(jnp.float32),
                           last_obs=jax.random.normal(k[4], (E, obs_dim)))

    small = dict(hidden_dim=8, num_steps=8, num_envs=E, update_epochs=2, lr=1e-2, num_train_frames=64)
    cases = {  # agent, config, rollout steps T, env_steps before the call, gradient steps (PPO, behaviour)
        "ppo": (ppo, ppo.Config(num_minibatches=2, **small), 8, None, {"gradient_steps": 4}),
        # T = 8 of a 16-step buffer, n = 8: a PPO target update (2 x 2 minibatches of 8), then the behaviour
        # update on 16 samples in minibatches of 12 (the second one padded), 2 epochs.
        "props": (props, props.Config(props_num_steps=4, buffer_batches=2, num_minibatches=4, props_num_minibatches=2,
                                      props_epochs=2, props_lr=1e-2, **small), 8, 4,
                  {"gradient_steps": 4, "props_gradient_steps": 4}),
    }
    for name, (agent, config, T, env_steps, expected_steps) in cases.items():
        keys = jax.random.split(jax.random.PRNGKey(0), NUM_SEEDS)
        states = seeding.stack([agent.create(k, obs_dim, action_dim, config) for k in keys])
        if env_steps is not None:
            states = states.replace(env_steps=jnp.full((NUM_SEEDS,), env_steps, jnp.int32))
        args = (states, seeding.stack([rollout(seed, T) for seed in range(NUM_SEEDS)]),
                jax.random.split(jax.random.PRNGKey(1), NUM_SEEDS))
        # "vmap": the accelerators' strategy for these dense agents, and the MJX loop's
        reference = jax.device_get(seeding.over_seeds(agent.update, "vmap")(*args))
        moved = max_abs_difference(reference[0].params, states.params)
        for spec in ("1x2", "1x4", "2x2"):
            mesh = devices.make_mesh(devices.plan(spec, NUM_SEEDS, math.gcd(*agent.minibatch_sizes(config))))
            program = jax.jit(seeding.over_seeds(agent.update, "vmap", jit=False, mesh=mesh))
            placed = devices.put_seeds(args, mesh)
            compiled = program.lower(*placed).compile()
            out = jax.device_get(compiled(*placed))
            steps = {key: float(out[1][key].min()) for key in expected_steps}
            print(json.dumps({"agent": name, "layout": spec, "abs": max_abs_difference(out, reference),
                              "all_reduce": "all-reduce" in compiled.as_text(), "params_moved": moved,
                              "gradient_steps": steps, "expected_steps": expected_steps}), flush=True)


def ppo_launcher_config(root: str, devices_spec: str, task: str = TASK):
    from agents import ppo
    from core import onpolicy

    c = onpolicy.base_config(ppo.Config, task)
    c.seeds, c.root, c.devices, c.progress, c.async_envs = "0,1", root, devices_spec, False, "false"
    c.checkpoint_every_frames = 16  # one window of 8 steps x 2 environments: a checkpoint before update 1
    agent = dict(hidden_dim=8, num_steps=8, num_envs=2, num_minibatches=2, update_epochs=2, lr=1e-2,
                 num_train_frames=32, eval_every_updates=1, num_eval_episodes=1)
    for name, value in agent.items():
        c.agent[name] = value
    return c


def part_trainer() -> None:
    from agents import ppo
    from core import devices, onpolicy

    def train(devices_spec: str, run_dir: str, crash_at_update: int | None = None):
        """(trainer, initial states, final states, last metrics rows, evaluation returns, resumed from step)"""
        agent_config, loop = onpolicy.resolve(ppo, ppo_launcher_config(run_dir, devices_spec))
        trainer = onpolicy.OnPolicyTrainer(ppo, agent_config, loop, run_dir)
        initial, resumed_from = devices.to_host(trainer.states), None
        if crash_at_update is not None:
            update = trainer.update

            def crashing_update():
                if trainer.num_updates == crash_at_update:
                    raise RuntimeError("crash")
                return update()
            trainer.update = crashing_update
        try:
            trainer.train()
        except RuntimeError:
            trainer.close()
            trainer = onpolicy.OnPolicyTrainer(ppo, agent_config, loop, run_dir)
            resumed_from = trainer.checkpointer.latest_step()
            trainer.train(resume=True)
        trainer.close()
        with open(os.path.join(run_dir, "metrics.csv")) as f:
            metrics = [{k: float(v) for k, v in row.items() if k not in ("fps", "wall_time") and v != ""}
                       for row in csv.DictReader(f)]
        with open(os.path.join(run_dir, "eval.csv")) as f:
            evaluations = [float(row["episode_reward"]) for row in csv.DictReader(f)]
        return trainer, initial, devices.to_host(trainer.states), metrics[-NUM_SEEDS:], evaluations, resumed_from

    with tempfile.TemporaryDirectory() as tmp:
        _, initial, one, one_metrics, one_evals, _ = train("1", os.path.join(tmp, "one"))
        mesh_trainer, _, mesh, mesh_metrics, mesh_evals, resumed_from = train("2x2", os.path.join(tmp, "mesh"),
                                                                              crash_at_update=1)
        print(json.dumps({"case": "2x2", "layout": str(mesh_trainer.layout), "resumed_from": resumed_from,
                          "abs": max(max_abs_difference(mesh, one), max_abs_difference(mesh_metrics, one_metrics),
                                     max_abs_difference(mesh_evals, one_evals)),
                          "params_moved": max_abs_difference(one.params, initial.params),
                          "evaluations": len(one_evals) // NUM_SEEDS}), flush=True)

    for case, task in (("bad_devices", TASK), ("bad_devices_mjx", "mjx_" + TASK)):
        with tempfile.TemporaryDirectory() as root:
            try:
                onpolicy.run(ppo, "ppo", ppo_launcher_config(root, "1x3", task))
                message = "no error"
            except SystemExit as e:
                message = str(e.code)
            print(json.dumps({"case": case, "message": message, "run_dirs": os.listdir(root)}), flush=True)


class PointState(struct.PyTreeNode):
    x: jax.Array  # (2,) position
    obs: jax.Array
    final_obs: jax.Array  # the observation the step reached (terminal where the episode ended)
    t: jax.Array
    key: jax.Array


class PointEnv:
    """A tiny pure-JAX environment with the MJX environments' interface (envs/mjx.py): a point
    x += 0.5 * clip(a, -1, 1) in the plane, reward 1 - x0^2 + 0.3 a1, terminated when |x0| > 0.8, a time
    limit of 5 steps, same-step auto-reset from x ~ U(-0.5, 0.5)^2."""

    task = "point"
    obs_dim, action_dim, max_episode_steps = 2, 2, 5

    def reset(self, key):
        key, noise = jax.random.split(key)
        x = jax.random.uniform(noise, (2,), jnp.float32, -0.5, 0.5)
        return PointState(x=x, obs=x, final_obs=x, t=jnp.zeros((), jnp.int32), key=key)

    def step(self, state, action):
        a = jnp.clip(action, -1.0, 1.0)
        x = state.x + 0.5 * a
        reward = 1.0 - x[0] ** 2 + 0.3 * a[1]
        terminated, t = jnp.abs(x[0]) > 0.8, state.t + 1
        truncated = t >= self.max_episode_steps
        stepped = PointState(x=x, obs=x, final_obs=x, t=t, key=state.key)
        restarted = self.reset(state.key).replace(final_obs=x)
        state = jax.tree.map(lambda new, old: jnp.where(terminated | truncated, new, old), restarted, stepped)
        return state, state.obs, reward, terminated, truncated


def part_mjx() -> None:
    from agents import ppo
    from core import devices
    from core import onpolicy_jax as oj

    env = PointEnv()
    # One window of 4 steps x 2 environments per update (the fused iteration program), minibatches of 4.
    config = ppo.Config(hidden_dim=8, num_steps=4, num_envs=2, num_minibatches=2, update_epochs=2, lr=1e-2,
                        target_kl=0.0, num_train_frames=16, eval_every_updates=1, num_eval_episodes=2)
    settings = oj.LoopSettings.from_agent_config(config)

    def train(spec: str):
        result = oj.train(ppo, config, env, seeds=[0, 1], num_iterations=2, devices_spec=spec)
        return jax.device_get(result.states), result.metrics, result.eval_returns

    one_states, one_metrics, one_returns = train("1")
    states, metrics, returns = train("2x2")
    initial = oj.init_seeds(ppo, config, env, [0, 1])
    mesh = devices.make_mesh(devices.plan("2x2", NUM_SEEDS, 4))
    iteration = oj.make_iteration(ppo, env, settings, 4, 4, mesh)  # the program train ran: compiled already
    text = iteration.lower(devices.put_seeds(initial, mesh)).compile().as_text()
    print(json.dumps({"layout": "2x2", "abs": max(max_abs_difference(states, one_states),
                                                  max_abs_difference(metrics, one_metrics),
                                                  max_abs_difference(returns, one_returns)),
                      "all_reduce": "all-reduce" in text,
                      "params_moved": max_abs_difference(one_states.agent.params, initial.agent.params)}), flush=True)


if __name__ == "__main__":
    {"update": part_update, "trainer": part_trainer, "mjx": part_mjx}[sys.argv[1]]()
