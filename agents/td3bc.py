"""TD3+BC (Fujimoto & Gu 2021): TD3 with a behaviour-cloning term in the actor loss, offline.

Spec: shared/spec/model-offline-onpolicy-agents.md §4 (and §6.1: the per-sample discount HUBL needs).
Read top to bottom:

  1. Config, the per-family overrides, config_for_task
  2. networks (PyTorch-default init, as the official nn.Linear), the agent state, create,
     dataset_arrays (state normalization of the whole dataset, once)
  3. the pieces of an update as pure functions (targets, losses, one optimizer step each)
  4. act, update, update_many (a `lax.scan` of sample + update, entirely on the device)

Reuse (PRDC builds on this file): only the BC target of the actor loss differs. `train_step` takes
the function that gives it, `bc_target_fn(state, obs) -> (B, A)`; TD3+BC's is the batch's dataset
action, PRDC's the action of the nearest dataset key. `sample_and_scan` runs any such step in chunks.

Step counting as the official code: `state.step` counts updates done; update number n = step + 1
updates the critic, and also the actor and both targets (soft, tau) when n % policy_freq == 0
(the official `total_it` is incremented before its `total_it % policy_freq == 0` test), so with
policy_freq 2 the actor moves on updates 2, 4, 6, ...
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from core import devices

Params = Any
Metrics = Dict[str, jnp.ndarray]
Batch = Dict[str, jnp.ndarray]
BATCH_KEYS = ("obs", "action", "reward", "discount", "next_obs", "terminal")

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Every default is the official TD3+BC value (S = sfujim/TD3_BC 8791ad7: TD3_BC.py, main.py,
    utils.py) unless the comment says otherwise. Steps are gradient updates (offline: no env steps)."""

    alpha: float = 2.5  # S main.py --alpha (lambda = alpha / mean|Q|)
    actor_lr: float = 3e-4  # S TD3_BC.py Adam lr (actor)
    critic_lr: float = 3e-4  # S TD3_BC.py Adam lr (critic)
    batch_size: int = 256  # S main.py --batch_size
    discount: float = 0.99  # S main.py --discount; HUBL replaces it per sample (batch["discount"])
    tau: float = 0.005  # S main.py --tau; targets move only on actor updates
    policy_noise: float = 0.2  # S main.py, multiplied by max_action (target policy smoothing std)
    noise_clip: float = 0.5  # S main.py, multiplied by max_action
    policy_freq: int = 2  # S main.py --policy_freq (actor + targets every 2nd update)
    hidden_dims: Tuple[int, ...] = (256, 256)  # S TD3_BC.py Actor / Critic l1, l2
    normalize_states: bool = True  # S main.py --normalize; off for AntMaze (TD3_BC issue #2)
    normalize_eps: float = 1e-3  # S utils.py normalize_states: (s - mean) / (std + 1e-3)
    max_action: float = 1.0  # S main.py: env.action_space.high[0]; 1 on the D4RL MuJoCo tasks
    reward_scale: float = 1.0  # pixax: r' = scale * r + shift in dataset_arrays (PRDC AntMaze: 10000)
    reward_shift: float = 0.0  # pixax (PRDC AntMaze: -1); identity for TD3+BC
    num_updates: int = 1_000_000  # S main.py --max_timesteps (gradient updates)
    eval_every_updates: int = 5000  # S main.py --eval_freq (updates)
    num_eval_episodes: int = 10  # S main.py eval_policy eval_episodes
    eval_seed_offset: int = 100  # S main.py eval_policy: eval env seeded seed + 100

    def __post_init__(self):
        _check_field_types(self)
        problems = [f"{name}={getattr(self, name)!r} (must be {rule})" for name, ok, rule in self._rules() if not ok]
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def _rules(self):
        """(field, valid?, rule) triples; a subclass extends this list with its own fields."""
        return [
            ("alpha", self.alpha >= 0, ">= 0"),
            ("actor_lr", self.actor_lr > 0, "> 0"),
            ("critic_lr", self.critic_lr > 0, "> 0"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("discount", 0 <= self.discount <= 1, "in [0, 1]"),
            ("tau", 0 < self.tau <= 1, "in (0, 1]"),
            ("policy_noise", self.policy_noise >= 0, ">= 0"),
            ("noise_clip", self.noise_clip >= 0, ">= 0"),
            ("policy_freq", self.policy_freq >= 1, ">= 1"),
            ("hidden_dims", len(self.hidden_dims) >= 1 and all(
                isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in self.hidden_dims),
             "a non-empty tuple of positive ints"),
            ("normalize_eps", self.normalize_eps >= 0, ">= 0"),
            ("max_action", self.max_action > 0, "> 0"),
            ("reward_scale", math.isfinite(self.reward_scale), "finite"),
            ("reward_shift", math.isfinite(self.reward_shift), "finite"),
            ("num_updates", self.num_updates >= 1, ">= 1"),
            ("eval_every_updates", self.eval_every_updates >= 1, ">= 1"),
            ("num_eval_episodes", self.num_eval_episodes >= 1, ">= 1"),
            ("eval_seed_offset", self.eval_seed_offset >= 0, ">= 0"),
        ]


def _check_field_types(config) -> None:
    """Reject values of the wrong type (a string for alpha: TD3_BC main.py parses --alpha untyped, spec
    §10 #25); ints are accepted for float fields, a list for a tuple field."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        expected, value = hints[field.name], getattr(config, field.name)
        expected = typing.get_origin(expected) or expected
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, field.name, float(value))
            continue
        if expected is tuple and isinstance(value, list):
            object.__setattr__(config, field.name, tuple(value))
            continue
        if (isinstance(value, bool) and expected is not bool) or not isinstance(value, expected):
            raise ValueError(f"{type(config).__name__}.{field.name} must be a {expected.__name__}, "
                             f"got {type(value).__name__} {value!r}")


# Per-family overrides (data, not branches). A dataset name's family is its first word:
# "hopper-medium-v2", "pixax/hopper/medium-v0" and "local/hopper/medium-v0" are all "hopper".
# Families without overrides (other gymnasium tasks, e.g. "pixax/invertedpendulum/...") take the defaults.
FAMILIES = ("halfcheetah", "hopper", "walker2d", "ant", "antmaze")
FAMILY_OVERRIDES: Dict[str, Dict[str, Any]] = {
    "antmaze": {"normalize_states": False},  # TD3_BC issue #2: the paper's AntMaze runs do not normalize
}
_NAMESPACES = ("local", "pixax")


def dataset_family(dataset: str) -> str:
    """The family of a dataset name (first word, lower case), e.g. "antmaze-umaze-v2" -> "antmaze"."""
    parts = [p for p in dataset.lower().replace("_", "-").replace("/", "-").split("-") if p]
    while parts and parts[0] in _NAMESPACES:
        parts = parts[1:]
    if not parts:
        raise ValueError(f"no dataset family in {dataset!r} (e.g. 'hopper-medium-v2' or 'pixax/hopper/medium-v0')")
    return parts[0]


def build_family_config(config_type: type, dataset: str, family_overrides: Dict[str, Dict[str, Any]],
                        user_overrides: Dict[str, Any]):
    """defaults <- the dataset family's overrides <- the user's values (generic: PRDC reuses it)."""
    family = dataset_family(dataset)
    valid_fields = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(user_overrides) - valid_fields)
    if unknown:
        raise ValueError(f"unknown {config_type.__name__} field(s) {unknown}; valid fields: {sorted(valid_fields)}")
    return config_type(**{**family_overrides.get(family, {}), **user_overrides})


def config_for_task(dataset: str, **user_overrides) -> Config:
    """The TD3+BC config of a dataset (family overrides, then `user_overrides`)."""
    return build_family_config(Config, dataset, FAMILY_OVERRIDES, user_overrides)


# ----------------------------------------------------------------------------------------------
# 2. Networks, agent state, dataset arrays
# ----------------------------------------------------------------------------------------------


def _torch_uniform(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch nn.Linear's default for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class TorchDense(nn.Module):
    """Dense with PyTorch nn.Linear's default initialization (the official networks use it)."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        init = _torch_uniform(x.shape[-1])
        return nn.Dense(self.features, kernel_init=init, bias_init=init, name="dense")(x)


class MLP(nn.Module):
    hidden_dims: Tuple[int, ...]
    output_dim: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i, width in enumerate(self.hidden_dims):
            x = nn.relu(TorchDense(width, name=f"hidden_{i}")(x))
        return TorchDense(self.output_dim, name="output")(x)


class Actor(nn.Module):
    """pi(s) = max_action * tanh(MLP(s))."""

    action_dim: int
    hidden_dims: Tuple[int, ...]
    max_action: float

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        return self.max_action * jnp.tanh(MLP(self.hidden_dims, self.action_dim, name="mlp")(obs))


class Critic(nn.Module):
    """Twin Q on [s, a]: returns (Q1, Q2), each (B,)."""

    hidden_dims: Tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        obs_action = jnp.concatenate([obs, action], axis=-1)
        q1 = MLP(self.hidden_dims, 1, name="q1")(obs_action)[..., 0]
        q2 = MLP(self.hidden_dims, 1, name="q2")(obs_action)[..., 0]
        return q1, q2


def networks(config: Config, action_dim: int) -> Tuple[Actor, Critic]:
    return (Actor(action_dim, tuple(config.hidden_dims), config.max_action), Critic(tuple(config.hidden_dims)))


def optimizer(lr: float) -> optax.GradientTransformation:
    """Adam with PyTorch's defaults (b1 0.9, b2 0.999, eps 1e-8)."""
    return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)


class TD3BCState(struct.PyTreeNode):
    """Everything an update changes, plus the dataset's state statistics act needs. A pytree.

    obs_mean / obs_std are the RAW dataset statistics (population std, no eps); normalization is
    (s - obs_mean) / (obs_std + config.normalize_eps), only when config.normalize_states.
    """

    actor_params: Params
    critic_params: Params
    actor_target_params: Params
    critic_target_params: Params
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    step: jnp.ndarray  # int32 scalar: updates done
    obs_mean: jnp.ndarray  # (obs_dim,)
    obs_std: jnp.ndarray  # (obs_dim,)
    config: Config = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)


def state_statistics(observations: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, population std) over axis 0, in float64 then float32, as the official utils.py computes them."""
    observations = np.asarray(observations, np.float64)
    return observations.mean(axis=0).astype(np.float32), observations.std(axis=0).astype(np.float32)


def normalize(obs: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray, config: Config) -> jnp.ndarray:
    """(obs - mean) / (std + eps) when config.normalize_states, else obs unchanged."""
    if not config.normalize_states:
        return obs
    return (obs - mean) / (std + config.normalize_eps)


def dataset_arrays(observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                   next_observations: np.ndarray, terminals: np.ndarray, config: Config,
                   discounts: Optional[np.ndarray] = None) -> Tuple[Batch, np.ndarray, np.ndarray]:
    """The dataset as device arrays in the batch layout, and its raw (mean, std) for `create`.

    obs and next_obs are normalized with the statistics of `observations` (when normalize_states),
    reward <- reward_scale * reward + reward_shift (rewards only: spec §10 #18), discount = the
    per-transition discount (HUBL's gamma~) or config.discount everywhere when None; terminal 0/1.
    """
    observations = np.asarray(observations)
    count = observations.shape[0]
    columns = {"action": actions, "reward": rewards, "next_obs": next_observations, "terminal": terminals}
    for name, values in columns.items():
        if np.shape(values)[0] != count:
            raise ValueError(f"{name} has {np.shape(values)[0]} rows but observations has {count}")
    if observations.ndim != 2 or np.ndim(actions) != 2:
        raise ValueError(f"observations and actions must be (N, dim), got {observations.shape} and {np.shape(actions)}")
    mean, std = state_statistics(observations)
    if not config.normalize_states:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    if discounts is None:
        discounts = np.full((count,), config.discount, np.float32)
    elif np.shape(discounts) != (count,):
        raise ValueError(f"discounts must be ({count},), got {np.shape(discounts)}")
    arrays = {
        "obs": normalize(observations.astype(np.float32), mean, std, config),
        "action": np.asarray(actions, np.float32),
        "reward": (config.reward_scale * np.asarray(rewards, np.float64).reshape(-1) + config.reward_shift),
        "discount": np.asarray(discounts, np.float32),
        "next_obs": normalize(np.asarray(next_observations, np.float32), mean, std, config),
        "terminal": np.asarray(terminals, np.float32).reshape(-1),
    }
    return {name: jnp.asarray(value, jnp.float32) for name, value in arrays.items()}, mean, std


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _create(key, obs_dim, action_dim, config, obs_mean, obs_std) -> TD3BCState:
    actor, critic = networks(config, action_dim)
    key_actor, key_critic = jax.random.split(key)
    obs = jnp.zeros((1, obs_dim))
    actor_params = actor.init(key_actor, obs)
    critic_params = critic.init(key_critic, obs, jnp.zeros((1, action_dim)))
    return TD3BCState(
        actor_params=actor_params,
        critic_params=critic_params,
        actor_target_params=actor_params,
        critic_target_params=critic_params,
        actor_opt_state=optimizer(config.actor_lr).init(actor_params),
        critic_opt_state=optimizer(config.critic_lr).init(critic_params),
        step=jnp.zeros((), jnp.int32),
        obs_mean=obs_mean,
        obs_std=obs_std,
        config=config,
        action_dim=action_dim,
    )


def create(key: jax.Array, obs_dim: int, action_dim: int, config: Config,
           obs_mean: Optional[np.ndarray] = None, obs_std: Optional[np.ndarray] = None) -> TD3BCState:
    """Fresh agent (targets = copies, fresh Adam states, step 0) holding the dataset's raw state
    statistics (from `dataset_arrays`). With normalize_states=False, leave them None."""
    for name, value in (("obs_dim", obs_dim), ("action_dim", action_dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if config.normalize_states and (obs_mean is None or obs_std is None):
        raise ValueError("config.normalize_states=True: create needs the dataset's obs_mean and obs_std "
                         "(see dataset_arrays)")
    obs_mean = np.zeros(obs_dim, np.float32) if obs_mean is None else np.asarray(obs_mean, np.float32)
    obs_std = np.ones(obs_dim, np.float32) if obs_std is None else np.asarray(obs_std, np.float32)
    if obs_mean.shape != (obs_dim,) or obs_std.shape != (obs_dim,):
        raise ValueError(f"obs_mean and obs_std must be ({obs_dim},), got {obs_mean.shape} and {obs_std.shape}")
    return _create(key, obs_dim, action_dim, config, jnp.asarray(obs_mean), jnp.asarray(obs_std))


# ----------------------------------------------------------------------------------------------
# 3. Pieces of an update (pure functions)
# ----------------------------------------------------------------------------------------------


def critic_target(reward: jnp.ndarray, discount: jnp.ndarray, terminal: jnp.ndarray,
                  target_q1: jnp.ndarray, target_q2: jnp.ndarray) -> jnp.ndarray:
    """y = r + gamma~ * (1 - terminal) * min(Q1', Q2'); gamma~ (B,) is per sample (HUBL), all (B,)."""
    for name, value in (("discount", discount), ("terminal", terminal), ("target_q1", target_q1),
                        ("target_q2", target_q2)):
        if value.shape != reward.shape:
            raise ValueError(f"{name} must have the reward's shape {reward.shape}, got {value.shape}")
    return reward + discount * (1.0 - terminal) * jnp.minimum(target_q1, target_q2)


def critic_loss(q1: jnp.ndarray, q2: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """mean((Q1 - y)^2) + mean((Q2 - y)^2)."""
    return jnp.mean(jnp.square(q1 - target)) + jnp.mean(jnp.square(q2 - target))


def bc_lambda(q: jnp.ndarray, alpha: float) -> jnp.ndarray:
    """lambda = alpha / mean|Q1(s, pi(s))| over the minibatch, without gradient (spec §4)."""
    return alpha / jax.lax.stop_gradient(jnp.mean(jnp.abs(q)))


def actor_loss(q: jnp.ndarray, pi: jnp.ndarray, target_action: jnp.ndarray, lam) -> jnp.ndarray:
    """-lambda * mean_b Q1(s, pi(s)) + mean over batch AND action dims of (pi - target_action)^2.

    The MSE is F.mse_loss's mean reduction, i.e. (1/A) mean_b ||pi - a||^2 (spec §4)."""
    if pi.shape != target_action.shape:
        raise ValueError(f"pi {pi.shape} and target_action {target_action.shape} must have the same shape")
    return -lam * jnp.mean(q) + jnp.mean(jnp.square(pi - target_action))


def soft_update(target_params: Params, online_params: Params, tau: float) -> Params:
    """target <- tau * online + (1 - tau) * target."""
    return optax.incremental_update(online_params, target_params, tau)


def policy(state: TD3BCState, actor_params: Params, obs: jnp.ndarray) -> jnp.ndarray:
    """pi(obs) with `actor_params`; obs already normalized."""
    return networks(state.config, state.action_dim)[0].apply(actor_params, obs)


def q_values(state: TD3BCState, critic_params: Params, obs: jnp.ndarray, action: jnp.ndarray
             ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    return networks(state.config, state.action_dim)[1].apply(critic_params, obs, action)


def target_policy_action(state: TD3BCState, next_obs: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """clip(pi'(s') + clip(N(0, policy_noise * max_a), +-noise_clip * max_a), +-max_a) (main.py scales by max_a)."""
    config = state.config
    noise = jax.random.normal(key, (next_obs.shape[0], state.action_dim)) * config.policy_noise * config.max_action
    noise = jnp.clip(noise, -config.noise_clip * config.max_action, config.noise_clip * config.max_action)
    action = policy(state, state.actor_target_params, next_obs) + noise
    return jnp.clip(action, -config.max_action, config.max_action)


def update_critic(state: TD3BCState, batch: Batch, key: jax.Array) -> Tuple[TD3BCState, Metrics]:
    """One Adam step of the twin critic on critic_loss against the target networks' y."""
    next_action = target_policy_action(state, batch["next_obs"], key)
    target_q1, target_q2 = q_values(state, state.critic_target_params, batch["next_obs"], next_action)
    target = jax.lax.stop_gradient(critic_target(batch["reward"], batch["discount"], batch["terminal"],
                                                 target_q1, target_q2))

    def loss_fn(critic_params):
        q1, q2 = q_values(state, critic_params, batch["obs"], batch["action"])
        return critic_loss(q1, q2, target), (q1, q2)

    (loss, (q1, q2)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
    updates, opt_state = optimizer(state.config.critic_lr).update(grads, state.critic_opt_state, state.critic_params)
    state = state.replace(critic_params=optax.apply_updates(state.critic_params, updates), critic_opt_state=opt_state)
    return state, {"critic_loss": loss, "q1": q1.mean(), "q2": q2.mean(), "target_q": target.mean()}


def update_actor(state: TD3BCState, obs: jnp.ndarray, bc_target: jnp.ndarray) -> Tuple[TD3BCState, Metrics]:
    """One Adam step of the actor on actor_loss with the (already updated) critic's Q1 and the BC target
    `bc_target` (B, A): the dataset action (TD3+BC) or the nearest key's action (PRDC); no gradient."""
    bc_target = jax.lax.stop_gradient(bc_target)

    def loss_fn(actor_params):
        pi = policy(state, actor_params, obs)
        q, _ = q_values(state, state.critic_params, obs, pi)
        lam = bc_lambda(q, state.config.alpha)
        return actor_loss(q, pi, bc_target, lam), (q, lam, jnp.mean(jnp.square(pi - bc_target)))

    (loss, (q, lam, bc_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.actor_params)
    updates, opt_state = optimizer(state.config.actor_lr).update(grads, state.actor_opt_state, state.actor_params)
    state = state.replace(actor_params=optax.apply_updates(state.actor_params, updates), actor_opt_state=opt_state)
    return state, {"actor_loss": loss, "bc_loss": bc_loss, "lambda": lam, "q_pi": q.mean()}


def soft_update_targets(state: TD3BCState) -> TD3BCState:
    """Both targets (actor and critic) move towards the online networks by tau."""
    tau = state.config.tau
    return state.replace(actor_target_params=soft_update(state.actor_target_params, state.actor_params, tau),
                         critic_target_params=soft_update(state.critic_target_params, state.critic_params, tau))


BCTargetFn = Callable[[TD3BCState, Batch], jnp.ndarray]
ACTOR_METRICS = ("actor_loss", "bc_loss", "lambda", "q_pi")


def dataset_action_target(state: TD3BCState, batch: Batch) -> jnp.ndarray:
    """TD3+BC's BC target: the batch's own dataset action."""
    return batch["action"]


def train_step(state: TD3BCState, batch: Batch, key: jax.Array, bc_target_fn: BCTargetFn
               ) -> Tuple[TD3BCState, Metrics]:
    """One update (module docstring): critic always; actor + targets on every policy_freq-th update.

    Metrics: critic ones every update; actor ones are 0 on updates without an actor step, and
    `actor_updated` (0/1) says which.
    """
    _check_batch(batch, state)
    state, metrics = update_critic(state, batch, key)
    is_actor_update = (state.step + 1) % state.config.policy_freq == 0

    def actor_step(state):
        state, actor_metrics = update_actor(state, batch["obs"], bc_target_fn(state, batch))
        return soft_update_targets(state), actor_metrics

    def skip(state):
        return state, {name: jnp.zeros((), jnp.float32) for name in ACTOR_METRICS}

    state, actor_metrics = jax.lax.cond(is_actor_update, actor_step, skip, state)
    state = state.replace(step=state.step + 1)
    metrics = {**metrics, **actor_metrics, "actor_updated": is_actor_update, "batch_reward": batch["reward"].mean()}
    return state, {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}


def _check_batch(batch: Batch, state: TD3BCState) -> None:
    missing = sorted(set(BATCH_KEYS) - set(batch))
    if missing:
        raise ValueError(f"batch is missing {missing}; a batch has {BATCH_KEYS} (see dataset_arrays)")
    size = batch["obs"].shape[0]
    for name in ("reward", "discount", "terminal"):
        if batch[name].shape != (size,):
            raise ValueError(f"batch[{name!r}] must be ({size},), got {batch[name].shape}")
    if batch["action"].shape != (size, state.action_dim):
        raise ValueError(f"batch['action'] must be ({size}, {state.action_dim}), got {batch['action'].shape}")


def sample_batch(arrays: Batch, key: jax.Array, batch_size: int) -> Batch:
    """A minibatch of rows drawn uniformly with replacement (as the official np.random.randint).
    On a device mesh (core/devices.py) its rows are split over the "data" devices, so the update that
    follows runs data parallel on the global batch; without one, `shard_batch` changes nothing."""
    count = arrays["obs"].shape[0]
    rows = jax.random.randint(key, (batch_size,), 0, count)
    return devices.shard_batch({name: values[rows] for name, values in arrays.items()})


def sample_and_scan(state: TD3BCState, arrays: Batch, key: jax.Array, num_updates: int,
                    step_fn: Callable[[TD3BCState, Batch, jax.Array], Tuple[TD3BCState, Metrics]]
                    ) -> Tuple[TD3BCState, Metrics]:
    """`num_updates` of (sample a batch, step_fn) in one `lax.scan`. Metrics are chunk means: critic
    ones over all updates, actor ones over the updates with an actor step (0 when there were none)."""

    def body(state, step_key):
        key_sample, key_update = jax.random.split(step_key)
        return step_fn(state, sample_batch(arrays, key_sample, state.config.batch_size), key_update)

    state, history = jax.lax.scan(body, state, jax.random.split(key, num_updates))
    actor_updates = history["actor_updated"].sum()
    metrics = {}
    for name, values in history.items():
        if name in ACTOR_METRICS:
            metrics[name] = values.sum() / jnp.maximum(actor_updates, 1.0)
        elif name == "actor_updated":
            metrics["actor_updates"] = actor_updates
        else:
            metrics[name] = values.mean()
    return state, metrics


# ----------------------------------------------------------------------------------------------
# 4. act, update, update_many
# ----------------------------------------------------------------------------------------------


@jax.jit
def act(state: TD3BCState, obs: jnp.ndarray, key: Optional[jax.Array] = None, eval_mode: bool = True
        ) -> jnp.ndarray:
    """pi(normalized obs) for RAW observations (B, obs_dim) -> (B, A). Deterministic: offline TD3+BC has
    no exploration, so `key` and `eval_mode` are accepted for the loops' common signature and unused."""
    return policy(state, state.actor_params, normalize(obs, state.obs_mean, state.obs_std, state.config))


@jax.jit
def update(state: TD3BCState, batch: Batch, key: jax.Array) -> Tuple[TD3BCState, Metrics]:
    """One TD3+BC update. batch: obs (normalized), action, reward, discount (per sample), next_obs
    (normalized), terminal; the layout of `dataset_arrays`."""
    return train_step(state, batch, key, dataset_action_target)


@functools.partial(jax.jit, static_argnames=("num_updates",))
def update_many(state: TD3BCState, arrays: Batch, key: jax.Array, num_updates: int) -> Tuple[TD3BCState, Metrics]:
    """`num_updates` updates on batches sampled on the device from `arrays` (from dataset_arrays)."""
    return sample_and_scan(state, arrays, key, num_updates,
                           lambda state, batch, key: train_step(state, batch, key, dataset_action_target))
