"""TD3 (Fujimoto, van Hoof, Meger 2018): twin delayed deep deterministic policy gradients, on states.

The online agent of the gymnasium MuJoCo tasks (envs/gym_mujoco.py), and the one whose runs give
the D4RL-protocol datasets (spec §9.1). Defaults are the official code's (S1 = sfujim/TD3 at
34770cc, TD3.py and main.py). Read top to bottom:

  1. Config, the task tiers (the official run_experiments.sh) and config_for_task
  2. networks (PyTorch's nn.Linear initialization) and the agent state (TD3State), create
  3. the pieces of an update as pure functions: target policy smoothing, the clipped double-Q
     target, the critic and actor losses, the soft target update, one optimizer step each
  4. act and update (jitted)

Actions: the agent acts in [-max_action, max_action] with max_action = 1, the action space pixax's
gymnasium MuJoCo environments expose; they rescale to each task's own (symmetric) bounds, which is
the official agent's scaling of its noise by max_action (S1 main.py). Exploration and target noise
are therefore in units of max_action, as in the official code.

Step accounting: `act` and the loop count agent steps (= environment steps, action_repeat 1); the
agent acts uniformly at random for the first `num_seed_frames` (S1 start_timesteps) and the loop
makes no update before then. The policy delay counts UPDATES, not environment steps: the state's
`num_updates` is S1's `total_it`, incremented at the start of every update, and the actor and both
target networks move on the updates where it is a multiple of `policy_delay` (the 2nd, 4th, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, NamedTuple, Sequence, Tuple

import flax.linen as nn
import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from agents import drqv2  # generic config helpers (field types, tier resolution)

Params = Any
Metrics = Dict[str, jnp.ndarray]

DEFAULT_TASK = "HalfCheetah-v5"  # the launcher's default --config.task
DEFAULT_OBS = "states"  # the launcher's default --config.obs (these tasks have states only)
OBS_TYPES = ("states",)

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Every default is the official TD3 value (S1 = sfujim/TD3 TD3.py, main.py, utils.py) unless the
    comment says otherwise. Step counts are agent steps = environment steps (action_repeat 1)."""

    obs_type: str = "states"  # TD3 acts on state vectors only
    # Networks and optimization.
    hidden_dim: int = 256  # S1 TD3.py: actor and both critics are MLP(256, 256) with ReLU
    actor_lr: float = 3e-4  # S1 TD3.py Adam(lr=3e-4), PyTorch's other defaults
    critic_lr: float = 3e-4  # S1 TD3.py Adam(lr=3e-4)
    tau: float = 0.005  # S1 main.py --tau: soft target update of actor and critic targets
    # Noise, in units of max_action (S1 main.py multiplies each by max_action).
    max_action: float = 1.0  # the agent's action bound; pixax's environments expose [-1, 1]
    policy_noise: float = 0.2  # S1 main.py --policy_noise: std of the target policy smoothing noise
    noise_clip: float = 0.5  # S1 main.py --noise_clip: the smoothing noise is clipped to +-noise_clip
    policy_delay: int = 2  # S1 main.py --policy_freq: actor + target updates every 2nd critic update
    exploration_noise: float = 0.1  # S1 main.py --expl_noise: Gaussian std when acting
    # Loop settings, read by the launcher (kept here so one object holds a run's hyperparameters).
    action_repeat: int = 1  # S1: one action per environment step
    frame_stack: int = 1  # states are not stacked
    image_size: int = 84  # unused by states; the environment's default render size
    num_train_frames: int = 1_000_000  # S1 main.py --max_timesteps
    num_seed_frames: int = 25_000  # S1 main.py --start_timesteps: uniform actions and no updates before
    update_every_steps: int = 1  # S1 main.py: one update per environment step
    batch_size: int = 256  # S1 main.py --batch_size
    replay_capacity: int = 1_000_000  # S1 utils.py ReplayBuffer max_size
    nstep: int = 1  # S1: one-step TD targets
    discount: float = 0.99  # S1 main.py --discount
    eval_every_frames: int = 5_000  # S1 main.py --eval_freq
    num_eval_episodes: int = 10  # S1 main.py eval_policy(eval_episodes=10)

    def __post_init__(self):
        drqv2.validate_config(self)

    def _rules(self):
        """(field, valid?, rule) triples; a subclass (TD3+BC) extends this list with its own fields."""
        return [
            ("obs_type", self.obs_type in OBS_TYPES,
             f"one of {OBS_TYPES}: TD3 acts on state vectors (launch with --config.obs=states)"),
            ("hidden_dim", self.hidden_dim >= 1, ">= 1"),
            ("actor_lr", self.actor_lr > 0, "> 0"),
            ("critic_lr", self.critic_lr > 0, "> 0"),
            ("tau", 0 < self.tau <= 1, "in (0, 1]"),
            ("max_action", self.max_action > 0, "> 0"),
            ("policy_noise", self.policy_noise >= 0, ">= 0"),
            ("noise_clip", self.noise_clip >= 0, ">= 0"),
            ("policy_delay", self.policy_delay >= 1, ">= 1"),
            ("exploration_noise", self.exploration_noise >= 0, ">= 0"),
            ("action_repeat", self.action_repeat >= 1, ">= 1"),
            ("frame_stack", self.frame_stack >= 1, ">= 1"),
            ("image_size", self.image_size >= 1, ">= 1"),
            ("num_train_frames", self.num_train_frames >= 1, ">= 1"),
            ("num_seed_frames", self.num_seed_frames >= 0, ">= 0"),
            ("update_every_steps", self.update_every_steps >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("replay_capacity", self.replay_capacity >= 1, ">= 1"),
            ("nstep", self.nstep >= 1, ">= 1"),
            ("discount", 0 <= self.discount <= 1, "in [0, 1]"),
            ("eval_every_frames", self.eval_every_frames >= 1, ">= 1"),
            ("num_eval_episodes", self.num_eval_episodes >= 0, ">= 0"),
        ]


# Task tiers: S1 run_experiments.sh passes --start_timesteps 1000 for the small pendulum and reacher
# tasks and keeps main.py's 25k elsewhere. Swimmer, Pusher and HumanoidStandup are not in that script;
# they get main.py's defaults.
TIERS: Dict[str, Dict[str, Any]] = {
    "locomotion": {
        "tasks": ("Ant-v5", "HalfCheetah-v5", "Hopper-v5", "Humanoid-v5", "HumanoidStandup-v5",
                  "Pusher-v5", "Swimmer-v5", "Walker2d-v5"),
        "num_seed_frames": 25_000,
    },
    "small": {
        "tasks": ("InvertedDoublePendulum-v5", "InvertedPendulum-v5", "Reacher-v5"),
        "num_seed_frames": 1_000,
    },
}
TASK_OVERRIDES: Dict[str, Dict[str, Any]] = {}  # S1 has no other per-task setting


def config_for_task(task: str, **user_overrides) -> Config:
    """The official TD3 config of a gymnasium MuJoCo task (its tier), then `user_overrides`."""
    return drqv2.build_task_config(Config, task, TIERS, TASK_OVERRIDES, user_overrides)


# ----------------------------------------------------------------------------------------------
# 2. Networks and agent state
# ----------------------------------------------------------------------------------------------


def torch_linear(x: jnp.ndarray, features: int, name: str) -> jnp.ndarray:
    """A Dense layer initialized as PyTorch's nn.Linear (S1's layers): weights and biases
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Call inside a compact module."""
    bound = 1.0 / math.sqrt(x.shape[-1])

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.Dense(features, kernel_init=init, bias_init=init, name=name)(x)


class Actor(nn.Module):
    """pi(s) = max_action * tanh(MLP(s)), MLP = Linear-ReLU-Linear-ReLU-Linear (S1 TD3.py Actor)."""

    action_dim: int
    hidden_dim: int
    max_action: float

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = nn.relu(torch_linear(obs, self.hidden_dim, "l1"))
        x = nn.relu(torch_linear(x, self.hidden_dim, "l2"))
        return self.max_action * jnp.tanh(torch_linear(x, self.action_dim, "l3"))


class Critic(nn.Module):
    """Two independent Q MLPs on [s, a] (S1 TD3.py Critic); returns (Q1, Q2), each of shape (B,)."""

    hidden_dim: int

    @nn.compact
    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        sa = jnp.concatenate([obs, action], axis=-1)
        qs = []
        for head in ("q1", "q2"):
            x = nn.relu(torch_linear(sa, self.hidden_dim, f"{head}_l1"))
            x = nn.relu(torch_linear(x, self.hidden_dim, f"{head}_l2"))
            qs.append(torch_linear(x, 1, f"{head}_l3")[..., 0])
        return qs[0], qs[1]


class Networks(NamedTuple):
    actor: Actor
    critic: Critic


def networks(config: Config, action_dim: int) -> Networks:
    """The flax modules (stateless descriptions; params live in the agent state)."""
    return Networks(Actor(action_dim, config.hidden_dim, config.max_action), Critic(config.hidden_dim))


def actor_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam with PyTorch's defaults (b1 0.9, b2 0.999, eps 1e-8)."""
    return optax.adam(config.actor_lr, b1=0.9, b2=0.999, eps=1e-8)


def critic_optimizer(config: Config) -> optax.GradientTransformation:
    return optax.adam(config.critic_lr, b1=0.9, b2=0.999, eps=1e-8)


class TD3State(struct.PyTreeNode):
    """Everything an update changes. A pytree: stack it over seeds, save it with orbax.

    `config`, `action_dim` and `obs_shape` are static (not leaves) and must agree across stacked seeds.
    """

    actor_params: Params
    critic_params: Params  # both Q heads
    actor_target_params: Params
    critic_target_params: Params
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    num_updates: jnp.ndarray  # int32 scalar: updates done so far (S1 total_it)
    config: Config = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    obs_shape: Tuple[int, ...] = struct.field(pytree_node=False)  # (state_dim,)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _create(key: jax.Array, obs_shape: Tuple[int, ...], action_dim: int, config: Config) -> TD3State:
    nets = networks(config, action_dim)
    key_actor, key_critic = jax.random.split(key)
    obs = jnp.zeros((1, *obs_shape), jnp.float32)
    actor_params = nets.actor.init(key_actor, obs)
    critic_params = nets.critic.init(key_critic, obs, jnp.zeros((1, action_dim), jnp.float32))
    return TD3State(
        actor_params=actor_params,
        critic_params=critic_params,
        actor_target_params=actor_params,  # S1: deep copies of the fresh networks
        critic_target_params=critic_params,
        actor_opt_state=actor_optimizer(config).init(actor_params),
        critic_opt_state=critic_optimizer(config).init(critic_params),
        num_updates=jnp.zeros((), jnp.int32),
        config=config,
        action_dim=action_dim,
        obs_shape=obs_shape,
    )


def create(key: jax.Array, obs_shape: Sequence[int], action_dim: int, config: Config) -> TD3State:
    """Fresh agent: PyTorch-initialized actor and critic, targets equal to them, fresh Adam states."""
    if not isinstance(action_dim, int) or isinstance(action_dim, bool) or action_dim < 1:
        raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
    obs_shape = tuple(int(d) for d in obs_shape)
    if len(obs_shape) != 1:
        raise ValueError(f"TD3 takes state vectors: obs_shape must be (state_dim,), got {obs_shape}")
    return _create(key, obs_shape, action_dim, config)


# ----------------------------------------------------------------------------------------------
# 3. Pieces of an update (pure functions)
# ----------------------------------------------------------------------------------------------


def smoothed_target_action(next_action: jnp.ndarray, eps: jnp.ndarray, config: Config) -> jnp.ndarray:
    """Target policy smoothing: clip(pi'(s') + clip(policy_noise * eps, +-noise_clip), +-max_action),
    noise scaled by max_action; eps is standard normal noise of the action's shape."""
    m = config.max_action
    noise = jnp.clip(config.policy_noise * m * eps, -config.noise_clip * m, config.noise_clip * m)
    return jnp.clip(next_action + noise, -m, m)


def critic_target(reward: jnp.ndarray, discount: jnp.ndarray, target_q1: jnp.ndarray,
                  target_q2: jnp.ndarray) -> jnp.ndarray:
    """y = r + discount * min(Q1', Q2'), with discount = gamma * (1 - terminated) as the replay gives it
    (0 after a true termination; a time-limit truncation keeps gamma). All of shape (B,)."""
    return reward.reshape(-1) + discount.reshape(-1) * jnp.minimum(target_q1, target_q2)


def critic_loss(q1: jnp.ndarray, q2: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """MSE(Q1, y) + MSE(Q2, y), each a mean over the batch (S1 F.mse_loss)."""
    return jnp.mean(jnp.square(q1 - target)) + jnp.mean(jnp.square(q2 - target))


def actor_loss(q1: jnp.ndarray) -> jnp.ndarray:
    """-mean_b Q1(s, pi(s)): the first critic only (S1 critic.Q1)."""
    return -jnp.mean(q1)


def soft_update(target_params: Params, online_params: Params, tau: float) -> Params:
    """target <- tau * online + (1 - tau) * target."""
    return optax.incremental_update(online_params, target_params, tau)


def target_values(state: TD3State, batch: Dict[str, jnp.ndarray], key: jax.Array) -> jnp.ndarray:
    """The critic's regression target y for a batch (no gradient): smoothed target action, target twin Q."""
    nets = networks(state.config, state.action_dim)
    next_obs = batch["next_obs"]
    next_action = nets.actor.apply(state.actor_target_params, next_obs)
    eps = jax.random.normal(key, next_action.shape, next_action.dtype)
    next_action = smoothed_target_action(next_action, eps, state.config)
    target_q1, target_q2 = nets.critic.apply(state.critic_target_params, next_obs, next_action)
    return jax.lax.stop_gradient(critic_target(batch["reward"], batch["discount"], target_q1, target_q2))


def update_critic(state: TD3State, batch: Dict[str, jnp.ndarray], target: jnp.ndarray
                  ) -> Tuple[TD3State, Metrics]:
    """One Adam step of both Q heads on critic_loss(Q1(s, a), Q2(s, a), y)."""
    critic = networks(state.config, state.action_dim).critic

    def loss_fn(critic_params):
        q1, q2 = critic.apply(critic_params, batch["obs"], batch["action"])
        return critic_loss(q1, q2, target), (q1, q2)

    (loss, (q1, q2)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
    updates, opt_state = critic_optimizer(state.config).update(grads, state.critic_opt_state, state.critic_params)
    state = state.replace(critic_params=optax.apply_updates(state.critic_params, updates),
                          critic_opt_state=opt_state)
    metrics = {"critic_loss": loss, "critic_q1": q1.mean(), "critic_q2": q2.mean(),
               "critic_target_q": target.mean()}
    return state, metrics


def actor_loss_of(state: TD3State, actor_params: Params, obs: jnp.ndarray) -> jnp.ndarray:
    """actor_loss of `actor_params` on a batch of states, through the state's (current) critic."""
    nets = networks(state.config, state.action_dim)
    q1, _ = nets.critic.apply(state.critic_params, obs, nets.actor.apply(actor_params, obs))
    return actor_loss(q1)


def update_actor(state: TD3State, obs: jnp.ndarray) -> Tuple[TD3State, jnp.ndarray]:
    """One Adam step of the actor on actor_loss (the critic is not changed). Returns (state, loss)."""
    loss, grads = jax.value_and_grad(lambda params: actor_loss_of(state, params, obs))(state.actor_params)
    updates, opt_state = actor_optimizer(state.config).update(grads, state.actor_opt_state, state.actor_params)
    return state.replace(actor_params=optax.apply_updates(state.actor_params, updates),
                         actor_opt_state=opt_state), loss


def update_targets(state: TD3State) -> TD3State:
    """Soft update of both target networks with tau (S1: only on actor steps)."""
    tau = state.config.tau
    return state.replace(critic_target_params=soft_update(state.critic_target_params, state.critic_params, tau),
                         actor_target_params=soft_update(state.actor_target_params, state.actor_params, tau))


def is_actor_update(num_updates, policy_delay: int) -> jnp.ndarray:
    """Whether update number `num_updates` (1 = the first update) also steps the actor and the targets:
    S1 `total_it % policy_freq == 0`, i.e. the 2nd, 4th, ... updates for a delay of 2."""
    return jnp.asarray(num_updates) % policy_delay == 0


# ----------------------------------------------------------------------------------------------
# 4. act and update
# ----------------------------------------------------------------------------------------------


def seed_steps(config: Config) -> int:
    """Agent steps of uniform random actions (and of no updates in the loop): S1 start_timesteps."""
    return config.num_seed_frames // config.action_repeat


@functools.partial(jax.jit, static_argnames=("eval_mode",))
def act(state: TD3State, obs: jnp.ndarray, step, key: jax.Array, eval_mode: bool) -> jnp.ndarray:
    """Actions (B, A) for a batch of states.

    eval_mode: pi(s). Training: U(-max_action, max_action) while step < seed_steps (S1 samples the
    action space); then clip(pi(s) + N(0, (exploration_noise * max_action)^2), +-max_action).
    """
    config = state.config
    mu = networks(config, state.action_dim).actor.apply(state.actor_params, obs)
    if eval_mode:
        return mu
    m = config.max_action
    key_noise, key_uniform = jax.random.split(key)
    noisy = jnp.clip(mu + config.exploration_noise * m * jax.random.normal(key_noise, mu.shape, mu.dtype), -m, m)
    uniform = jax.random.uniform(key_uniform, mu.shape, mu.dtype, minval=-m, maxval=m)
    return jnp.where(step < seed_steps(config), uniform, noisy)


@jax.jit
def update(state: TD3State, batch: Dict[str, jnp.ndarray], step, key: jax.Array) -> Tuple[TD3State, Metrics]:
    """One TD3 update (S1 TD3.train). batch: obs, action, reward, discount (= gamma * (1 - terminated)),
    next_obs. `step` (the loop's agent step) is not used: the policy delay counts updates.

    The critic steps every call; on the calls where num_updates (incremented first) is a multiple of
    policy_delay the actor steps on -Q1(s, pi(s)) with the just-updated critic, then both targets move
    by tau. "actor_loss" is reported on every call: -mean Q1(s, pi(s)) on this batch with the updated
    critic and the actor before its step (the loss the step descends, or would), so the loop's average
    over updates is not diluted by the calls without an actor step; "actor_updated" is 1.0 on actor steps.
    """
    del step
    state = state.replace(num_updates=state.num_updates + 1)
    target = target_values(state, batch, key)
    state, metrics = update_critic(state, batch, target)

    def actor_step(state):
        state, loss = update_actor(state, batch["obs"])
        return update_targets(state), loss

    def no_actor_step(state):
        return state, actor_loss_of(state, state.actor_params, batch["obs"])

    actor_turn = is_actor_update(state.num_updates, state.config.policy_delay)
    state, loss = jax.lax.cond(actor_turn, actor_step, no_actor_step, state)
    metrics = {"batch_reward": jnp.mean(batch["reward"]), **metrics, "actor_loss": loss,
               "actor_updated": actor_turn}
    return state, {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
