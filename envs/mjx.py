"""JAX-native gymnasium MuJoCo v5 tasks, simulated with MJX (mujoco.mjx) from gymnasium's own XML files.

    env = make_mjx("mjx_Hopper-v5")
    state = env.reset(jax.random.PRNGKey(0))
    state, obs, reward, terminated, truncated = env.step(state, action)   # pure, jittable, vmappable

Each task reproduces its gymnasium v5 environment as pixax's `envs.gym_mujoco.GymMujocoEnv` exposes it
(actions in [-1, 1], the task's registered time limit), so that a policy trained here runs there:

- model: gymnasium's XML asset (`gymnasium/envs/mujoco/assets/<file>.xml`) loaded by MuJoCo and put on
  the device by `mjx.put_model`; the simulator's own options (timestep, integrator, solver) unchanged;
- actions: clipped to [-1, 1] (gymnasium's ClipAction, as the on-policy loops apply it) and rescaled
  to the task's actuator bounds as `GymMujocoEnv.task_action` does (InvertedPendulum: +-3; the others
  are already [-1, 1]); the control cost is computed on the rescaled action, as gymnasium does;
- one step = `frame_skip` simulator steps with the action held (InvertedPendulum 2, Hopper 4,
  HalfCheetah 5);
- observation, reward and termination: the formulas of gymnasium's `*_v5.py` at their default
  arguments (listed per task below), computed in float32;
- reset: qpos = init_qpos + U(-s, s), qvel = init_qvel + U(-s, s) (HalfCheetah: s * N(0, 1)), with
  s the task's reset_noise_scale; the simulator data otherwise fresh (`mj_resetData`);
- time limit: `max_episode_steps` = gymnasium's registered limit (1000). Reaching it sets
  `truncated` (also on a step that terminates, as gymnasium's TimeLimit does);
- auto-reset in the same step: on a step that terminates or truncates, the returned state and
  observation are already those of the next episode (its initial noise drawn from the state's key),
  and the flags say that the episode ended. `state.final_obs` holds the observation the step
  reached (the terminal one on such a step), like gymnasium's `info["final_obs"]`.

Task names follow envs/__init__.py's `<suite>_<name>` convention: `mjx_` + the gymnasium id.

Numerics: MJX runs in float32 where gymnasium's MuJoCo runs in float64. From the same qpos/qvel and
actions, observations agree to ~1e-6 over tens of steps, contacts included (tests/test_mjx.py); long
rollouts of chaotic systems drift apart as any two float precisions do.

Compile time: MJX programs are large (a CPU compiles Hopper's step in tens of seconds). mjx.step's
RK4 integrator unrolls its four forward passes; `physics_step` runs the same computation with the
four passes in one rolled loop, which compiles about twice as fast (measured: Hopper's step 31 s
instead of 66 s of wall clock here); Euler tasks (HalfCheetah) use mjx.step itself.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable, Optional, Tuple

import flax.struct as struct
import gymnasium as gym
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx
from mujoco.mjx._src import forward as mjx_forward  # RK4 pieces (mujoco-mjx 3.3.0), see physics_step
from mujoco.mjx._src import scan as mjx_scan

TASK_PREFIX = "mjx_"
ASSETS_DIR = os.path.join(os.path.dirname(gym.__file__), "envs", "mujoco", "assets")


# ----------------------------------------------------------------------------------------------
# 1. The tasks: gymnasium v5's formulas at their default arguments
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What differs between tasks. `observe(data)`, `reward_and_termination(data_before, data_after,
    ctrl, obs, dt)` are pure functions of MJX data (float32)."""

    gym_id: str
    xml_file: str
    frame_skip: int
    reset_noise_scale: float
    qvel_noise: str  # "uniform": U(-s, s); "normal": s * N(0, 1)
    observe: Callable[[mjx.Data], jax.Array]
    reward_and_termination: Callable[..., Tuple[jax.Array, jax.Array]]


def _inverted_pendulum_obs(data: mjx.Data) -> jax.Array:
    return jnp.concatenate([data.qpos, data.qvel])


def _inverted_pendulum_reward(before: mjx.Data, after: mjx.Data, ctrl: jax.Array, obs: jax.Array,
                              dt: float) -> Tuple[jax.Array, jax.Array]:
    """inverted_pendulum_v5.py: terminated when the observation is not finite or |angle| > 0.2;
    reward 1 while not terminated, else 0."""
    terminated = ~jnp.all(jnp.isfinite(obs)) | (jnp.abs(obs[1]) > 0.2)
    return jnp.where(terminated, 0.0, 1.0), terminated


HOPPER_HEALTHY_STATE = (-100.0, 100.0)
HOPPER_HEALTHY_Z = (0.7, math.inf)
HOPPER_HEALTHY_ANGLE = (-0.2, 0.2)


def _hopper_obs(data: mjx.Data) -> jax.Array:
    """hopper_v5.py: qpos without x, then qvel clipped to +-10."""
    return jnp.concatenate([data.qpos[1:], jnp.clip(data.qvel, -10.0, 10.0)])


def _hopper_reward(before: mjx.Data, after: mjx.Data, ctrl: jax.Array, obs: jax.Array,
                   dt: float) -> Tuple[jax.Array, jax.Array]:
    """hopper_v5.py: reward = forward velocity + 1 (only while healthy) - 1e-3 |a|^2; terminated when
    not healthy: every entry of (qpos, qvel)[2:] in (-100, 100), z in (0.7, inf), angle in (-0.2, 0.2)
    (strict inequalities; a NaN is unhealthy)."""
    x_velocity = (after.qpos[0] - before.qpos[0]) / dt
    z, angle = after.qpos[1], after.qpos[2]
    state = jnp.concatenate([after.qpos, after.qvel])[2:]
    healthy = (jnp.all((HOPPER_HEALTHY_STATE[0] < state) & (state < HOPPER_HEALTHY_STATE[1]))
               & (HOPPER_HEALTHY_Z[0] < z) & (z < HOPPER_HEALTHY_Z[1])
               & (HOPPER_HEALTHY_ANGLE[0] < angle) & (angle < HOPPER_HEALTHY_ANGLE[1]))
    reward = 1.0 * x_velocity + 1.0 * healthy - 1e-3 * jnp.sum(jnp.square(ctrl))
    return reward, ~healthy


def _half_cheetah_obs(data: mjx.Data) -> jax.Array:
    """half_cheetah_v5.py: qpos without x, then qvel (unclipped)."""
    return jnp.concatenate([data.qpos[1:], data.qvel])


def _half_cheetah_reward(before: mjx.Data, after: mjx.Data, ctrl: jax.Array, obs: jax.Array,
                         dt: float) -> Tuple[jax.Array, jax.Array]:
    """half_cheetah_v5.py: reward = forward velocity - 0.1 |a|^2; never terminates."""
    x_velocity = (after.qpos[0] - before.qpos[0]) / dt
    return 1.0 * x_velocity - 0.1 * jnp.sum(jnp.square(ctrl)), jnp.asarray(False)


SPECS = {
    spec.gym_id: spec for spec in (
        TaskSpec("InvertedPendulum-v5", "inverted_pendulum.xml", frame_skip=2, reset_noise_scale=0.01,
                 qvel_noise="uniform", observe=_inverted_pendulum_obs,
                 reward_and_termination=_inverted_pendulum_reward),
        TaskSpec("Hopper-v5", "hopper.xml", frame_skip=4, reset_noise_scale=5e-3, qvel_noise="uniform",
                 observe=_hopper_obs, reward_and_termination=_hopper_reward),
        TaskSpec("HalfCheetah-v5", "half_cheetah.xml", frame_skip=5, reset_noise_scale=0.1,
                 qvel_noise="normal", observe=_half_cheetah_obs, reward_and_termination=_half_cheetah_reward),
    )
}
TASKS: tuple[str, ...] = tuple(TASK_PREFIX + gym_id for gym_id in SPECS)


def gym_id_of(task: str) -> str:
    """The gymnasium id of an MJX task, e.g. 'Hopper-v5' for 'mjx_Hopper-v5'."""
    if task not in TASKS:
        hint = (f" (the MJX version of {task!r} is {TASK_PREFIX + task!r})"
                if TASK_PREFIX + task in TASKS else "")
        raise ValueError(f"Unknown MJX task {task!r}{hint}. Valid tasks: {', '.join(TASKS)}")
    return task[len(TASK_PREFIX):]


def domain_of(task: str) -> str:
    """The lowercase task name without prefix and version, e.g. 'hopper' for 'mjx_Hopper-v5'."""
    return gym_id_of(task).rsplit("-", 1)[0].lower()


# ----------------------------------------------------------------------------------------------
# 2. Physics: one simulator step
# ----------------------------------------------------------------------------------------------

# Butcher tableau of MuJoCo's RK4 (mjx forward._RK4_A/_RK4_B): stage i starts from the initial state
# moved by STAGE_A[i] * dt along stage i-1's derivative, at time t + STAGE_T[i] * dt, and contributes
# STAGE_B[i] of the final derivative.
STAGE_A = np.array([0.0, 0.5, 0.5, 1.0], np.float32)
STAGE_T = np.array([0.0, 0.5, 0.5, 1.0], np.float32)
STAGE_B = np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6], np.float32)


def _rk4_step(model: mjx.Model, data: mjx.Data) -> mjx.Data:
    """mjx.step for an RK4 model (forward at the current state, then mjx.rungekutta4), with the four
    forward passes in one rolled lax.scan instead of mjx's unrolled first pass + 3-stage scan.

    Same computation as mjx.step: stage 0 is the plain forward pass (its data, with the velocity and
    acceleration sums, is what mjx's `_advance` integrates from); stages 1-3 evaluate the dynamics at
    the intermediate states. Measured against mjx.step: qpos/qvel within 1.5e-6 after 200 steps of
    InvertedPendulum and of Hopper (float32 rounding of the reordered sums); against gymnasium in
    tests/test_mjx.py.
    """
    dt = model.opt.timestep
    start = data

    def integrate_positions(qpos, qvel):
        fn = lambda *args: mjx_forward._integrate_pos(*args, dt=dt)
        return mjx_scan.flat(model, fn, "jqv", "q", model.jnt_type, qpos, qvel)

    def stage(carry, tableau):
        previous, first_pass, qvel_sum, qacc_sum, act_dot_sum, stage_qvel = carry
        index, a, t, b = tableau
        is_first = index == 0
        qpos = jnp.where(is_first, start.qpos, integrate_positions(start.qpos, a * stage_qvel))
        qvel = jnp.where(is_first, start.qvel, start.qvel + a * previous.qacc * dt)
        act = jnp.where(is_first, start.act, start.act + a * previous.act_dot * dt)
        current = mjx.forward(model, previous.replace(qpos=qpos, qvel=qvel, act=act, time=start.time + t * dt))
        first_pass = jax.tree.map(lambda new, old: jnp.where(is_first, new, old), current, first_pass)
        carry = (current, first_pass, qvel_sum + b * qvel, qacc_sum + b * current.qacc,
                 act_dot_sum + b * current.act_dot, qvel)
        return carry, None

    zeros = jnp.zeros_like
    init = (data, data, zeros(data.qvel), zeros(data.qacc), zeros(data.act_dot), zeros(data.qvel))
    tableau = (jnp.arange(4), jnp.asarray(STAGE_A), jnp.asarray(STAGE_T), jnp.asarray(STAGE_B))
    (_, first_pass, qvel_sum, qacc_sum, act_dot_sum, _), _ = jax.lax.scan(stage, init, tableau)
    return mjx_forward._advance(model, first_pass, act_dot_sum, qacc_sum, qvel_sum)


def physics_step(model: mjx.Model, data: mjx.Data) -> mjx.Data:
    """One simulator step (mj_step): the rolled RK4 above for RK4 models, mjx.step otherwise."""
    if model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4:
        return _rk4_step(model, data)
    return mjx.step(model, data)


# ----------------------------------------------------------------------------------------------
# 3. The environment
# ----------------------------------------------------------------------------------------------


class MJXState(struct.PyTreeNode):
    """One environment's state (a pytree: vmap it over environments and seeds)."""

    data: mjx.Data  # the simulator state
    obs: jax.Array  # (obs_dim,) float32: the current observation (a reset one after an episode end)
    final_obs: jax.Array  # (obs_dim,): the observation the last step reached (terminal one if it ended)
    steps: jax.Array  # int32: steps taken in the current episode
    key: jax.Array  # PRNG key of the next reset's initial-state noise


class MJXEnv:
    """A gymnasium MuJoCo v5 task in MJX (module doc). Build it with make_mjx(task).

    Attributes: task, gym_id, obs_dim, action_dim, max_episode_steps, frame_skip, dt (seconds per
    step), action_low / action_high (the task's actuator bounds; the agent acts in [-1, 1]).
    """

    def __init__(self, task: str, max_episode_steps: Optional[int] = None):
        self.task = task
        self.gym_id = gym_id_of(task)
        self.spec = SPECS[self.gym_id]
        self.domain = domain_of(task)
        self.mj_model = mujoco.MjModel.from_xml_path(os.path.join(ASSETS_DIR, self.spec.xml_file))
        self.model = mjx.put_model(self.mj_model)
        self.frame_skip = self.spec.frame_skip
        self.dt = float(self.mj_model.opt.timestep) * self.frame_skip
        registered = gym.spec(self.gym_id).max_episode_steps
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool)
                                              or not isinstance(max_episode_steps, int) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
        self.max_episode_steps = int(registered if max_episode_steps is None else max_episode_steps)
        bounds = self.mj_model.actuator_ctrlrange.astype(np.float32)
        self.action_low, self.action_high = bounds[:, 0].copy(), bounds[:, 1].copy()
        self.action_dim = int(self.mj_model.nu)
        # mj_resetData's state: qpos0 (init_qpos), zero velocities, everything else zero.
        self.init_qpos = np.asarray(self.mj_model.qpos0, np.float32).copy()
        self.init_qvel = np.zeros(self.mj_model.nv, np.float32)
        self._fresh_data = mjx.make_data(self.model)
        self.obs_dim = int(self.spec.observe(self._fresh_data).shape[0])

    def __repr__(self) -> str:
        return f"MJXEnv({self.task!r}, obs_dim={self.obs_dim}, action_dim={self.action_dim})"

    # ------------------------------------------------------------------ pure functions

    def reset(self, key: jax.Array) -> MJXState:
        """A new episode: initial-state noise from `key` (module doc); the state keeps a key for later resets."""
        key, noise_key = jax.random.split(key)
        return self.state_at(*self.initial_qpos_qvel(noise_key), key)

    def initial_qpos_qvel(self, key: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """An episode's initial (qpos, qvel): init_qpos + U(-s, s), init_qvel + U(-s, s) (or s * N(0, 1))."""
        qpos_key, qvel_key = jax.random.split(key)
        scale = self.spec.reset_noise_scale
        qpos = self.init_qpos + jax.random.uniform(qpos_key, self.init_qpos.shape, jnp.float32, -scale, scale)
        if self.spec.qvel_noise == "normal":
            qvel = self.init_qvel + scale * jax.random.normal(qvel_key, self.init_qvel.shape, jnp.float32)
        else:
            qvel = self.init_qvel + jax.random.uniform(qvel_key, self.init_qvel.shape, jnp.float32, -scale, scale)
        return qpos, qvel

    def state_at(self, qpos: jax.Array, qvel: jax.Array, key: jax.Array) -> MJXState:
        """The episode start at a given (qpos, qvel), as gymnasium's reset + set_state (used by tests
        to start both simulators from the same state)."""
        data = self._fresh_data.replace(qpos=jnp.asarray(qpos, jnp.float32), qvel=jnp.asarray(qvel, jnp.float32))
        obs = self.spec.observe(data)
        return MJXState(data=data, obs=obs, final_obs=obs, steps=jnp.zeros((), jnp.int32), key=key)

    def task_action(self, action: jax.Array) -> jax.Array:
        """The actuator controls: `action` clipped to [-1, 1] (ClipAction), rescaled to the bounds."""
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        return self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)

    def step(self, state: MJXState, action: jax.Array
             ) -> Tuple[MJXState, jax.Array, jax.Array, jax.Array, jax.Array]:
        """One agent step: (state, obs, reward, terminated, truncated) with same-step auto-reset
        (module doc); obs is the next episode's first observation when the episode ended."""
        if action.shape != (self.action_dim,):
            raise ValueError(f"{self.task}: action must have shape ({self.action_dim},), got {action.shape}")
        ctrl = self.task_action(action)
        before = state.data.replace(ctrl=ctrl)
        after = jax.lax.fori_loop(0, self.frame_skip, lambda _, data: physics_step(self.model, data), before)
        obs = self.spec.observe(after)
        reward, terminated = self.spec.reward_and_termination(before, after, ctrl, obs, self.dt)
        steps = state.steps + 1
        truncated = steps >= self.max_episode_steps
        done = terminated | truncated

        stepped = MJXState(data=after, obs=obs, final_obs=obs, steps=steps, key=state.key)
        restarted = self.reset(state.key).replace(final_obs=obs)
        state = jax.tree.map(lambda new, old: jnp.where(done, new, old), restarted, stepped)
        return state, state.obs, jnp.asarray(reward, jnp.float32), terminated, truncated


@functools.lru_cache(maxsize=None)
def make_mjx(task: str, max_episode_steps: Optional[int] = None) -> MJXEnv:
    """The MJX environment of `task` (one of TASKS, e.g. 'mjx_Hopper-v5'); cached, so jitted
    functions that close over it are compiled once per process."""
    return MJXEnv(task, max_episode_steps)
