"""PPO for continuous control, the CleanRL-style variant that PROPS builds on (spec §7, §8.4).

Reference code (read to settle details, nothing copied): PPOROS = NicholasCorrado/PPOROS at a0c8708
(`PROPS/ppo_props_continuous.py` `update_ppo` and main loop, `PROPS/utils.py` `Agent`, `make_env`),
CleanRL = vwxyzjn/cleanrl `cleanrl/ppo_continuous_action.py`. Read top to bottom:

  1. Config, the per-task table of the PROPS NeurIPS runs (spec §8.4, PPO column), config_for_task
  2. networks (tanh MLPs with orthogonal init) as pure functions of a params dict, the Gaussian
     policy's log-prob and entropy, the agent state (PPOState), create
  3. the pieces of an update as pure functions: GAE, prepare (old log-probs, values, advantages of
     the whole buffer under the current policy), the PPO loss, the learning-rate schedule, the
     minibatch layout, ppo_update (epochs x minibatches with the KL early stop, inside one jit), the
     sampling-error metric (spec §8.3; core/sampling_error.py), off unless se_every_updates > 0
  4. act, window_steps / buffer_steps, update (jitted)

What the loop does and the agent does not (core/onpolicy.py): the environments and their wrappers
(ClipAction, observation and reward normalization with core/running_stats.py, the +-10 clips), the
ring buffer of the last `buffer_steps` steps per environment, and evaluation. The agent sees
normalized observations and rewards only, and never clips actions (the environment's ClipAction does).

Step accounting: `num_steps` (n) environment steps per environment between two updates; one update
(= one call of `update`) is one "target update" in PROPS's terms; the state's `num_updates` counts
them and drives the linear learning-rate annealing over K = num_train_frames // (num_steps * num_envs)
updates (PPOROS `num_updates = total_timesteps // batch_size`).

Episode ends: `Rollout.dones[t]` is 1 when the episode ended after step t, by termination OR
truncation; GAE does not bootstrap through either (CleanRL/PPOROS convention: a time-limit
truncation is treated as terminal, spec §7 "GAE").
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, NamedTuple, Sequence, Tuple

import chex
import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from agents import drqv2  # generic config helper (field types)
from core import devices
from core import sampling_error

Params = Any
Batch = Dict[str, jnp.ndarray]
Metrics = Dict[str, jnp.ndarray]

DEFAULT_TASK = "Hopper-v5"  # a launcher's default task
DEFAULT_OBS = "states"
OBS_TYPES = ("states",)
KL_CHECKS = ("before_step", "after_step", "after_epoch")
ADVANTAGE_EPS = 1e-8  # PPOROS / CleanRL: (A - mean) / (std + 1e-8)

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults: PPOROS `PROPS/ppo_props_continuous.py` argparse values as used by the NeurIPS PPO
    runs (spec §7, §8.4); per-task n, lr and budget come from config_for_task. Steps are environment
    steps (no action repeat)."""

    obs_type: str = "states"  # PPO here acts on state vectors only
    # Networks.
    hidden_dim: int = 64  # actor mean and critic: MLP(64, 64) with tanh (PPOROS utils.Agent)
    tanh_mean: bool = True  # PPOROS squashes the action mean with tanh; CleanRL / PROPS-2025 do not
    # Optimization.
    lr: float = 1e-4  # PPOROS --learning-rate default; per task see TASK_OVERRIDES
    adam_eps: float = 1e-5  # PPOROS / CleanRL Adam(eps=1e-5); PyTorch's other defaults (b1 .9, b2 .999)
    anneal_lr: bool = True  # lr * (1 - k / K) at the update after k updates (PPOROS, CleanRL)
    num_steps: int = 2048  # n: environment steps per environment between two updates (PPOROS default)
    buffer_batches: int = 1  # b: the update sees the last b * n steps; 1 = on-policy PPO, 2 = PPO-BUFFER
    update_epochs: int = 10  # PPOROS --update-epochs (0: no gradient step, as PPOROS's fixed-target runs)
    num_minibatches: int = 32  # minibatches of a FULL buffer: minibatch size = b * n * num_envs / 32
    clip_coef: float = 0.2  # epsilon of the clipped surrogate and of the clipped value loss
    clip_vloss: bool = True  # CleanRL/PPOROS clipped value loss
    vf_coef: float = 0.5
    ent_coef: float = 0.01  # PROPS runs (CleanRL's default is 0)
    max_grad_norm: float = 0.5  # global-norm gradient clip over actor, log-std and critic together
    target_kl: float = 0.03  # approx-KL early stop threshold; <= 0 disables the early stop
    kl_check: str = "before_step"  # PPOROS; "after_epoch" = CleanRL, "after_step" = PROPS-2025 ppo_discrete.py
    gamma: float = 0.99
    gae_lambda: float = 0.95
    norm_adv: bool = True  # per-minibatch advantage normalization
    # Environment wrappers, applied by the loop (spec §7 "env wrappers").
    normalize_obs: bool = True
    normalize_reward: bool = True
    obs_clip: float = 10.0
    reward_clip: float = 10.0
    # Loop settings, read by the launcher.
    num_envs: int = 1  # PROPS runs use one environment
    num_train_frames: int = 1_000_000  # total environment steps over all environments
    eval_every_updates: int = 10  # PPOROS --eval-freq: evaluate every 10 updates
    num_eval_episodes: int = 20  # PPOROS --eval-episodes
    # Sampling error metric (spec §8.3, core/sampling_error.py), computed inside `update` before the
    # target update whose 1-based index is a multiple of se_every_updates (PPOROS: global_step %
    # (num_steps * se_freq) == 0, before update_ppo). 0 = off (PPOROS --se 0); the NeurIPS runs that
    # computed it used se_freq 20 (5 for Swimmer PPO-BUFFER, 50 for some PROPS runs).
    se_every_updates: int = 0
    se_epochs: int = 1000  # most NeurIPS configs (PPOROS argparse default 250; PROPS-2025: 2000 full-batch)
    se_lr: float = 1e-3  # Adam lr of the empirical-policy fit (PPOROS --se-lr)
    se_minibatch_per_batch: int = 512  # minibatch = 512 * samples // (num_steps * num_envs); 0 = full batch
    se_max_grad_norm: float = 1.0  # PPOROS clip_grad_norm_(..., 1); 0 = no clip (PROPS-2025)
    se_clamp_log_std: bool = True  # log-std clamped to [-3, 1] in both log-probs (PPOROS get_action_and_info)
    se_freeze_hidden_biases: bool = False  # PPOROS freezes the hidden weights only; True = PROPS-2025
    se_advantage_weighted: bool = False  # PPOROS HEAD weights by |normalized A| (pitfall #31); paper: unweighted

    def __post_init__(self):
        drqv2.validate_config(self)

    def _rules(self):
        """(field, valid?, rule) triples; a subclass (PROPS) extends this list with its own fields."""
        buffer_samples = self.buffer_batches * self.num_steps * self.num_envs
        return [
            ("obs_type", self.obs_type in OBS_TYPES, f"one of {OBS_TYPES}: PPO acts on state vectors"),
            ("hidden_dim", self.hidden_dim >= 1, ">= 1"),
            ("lr", self.lr >= 0, ">= 0"),
            ("adam_eps", self.adam_eps > 0, "> 0"),
            ("num_steps", self.num_steps >= 1, ">= 1"),
            ("buffer_batches", self.buffer_batches >= 1, ">= 1"),
            ("update_epochs", self.update_epochs >= 0, ">= 0"),
            ("num_minibatches", self.num_minibatches >= 1, ">= 1"),
            ("num_minibatches", buffer_samples % self.num_minibatches == 0,
             f"a divisor of buffer_batches * num_steps * num_envs = {buffer_samples}, so that every "
             f"minibatch of a full buffer has the same size"),
            ("clip_coef", self.clip_coef > 0, "> 0"),
            ("vf_coef", self.vf_coef >= 0, ">= 0"),
            ("ent_coef", self.ent_coef >= 0, ">= 0"),
            ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
            ("kl_check", self.kl_check in KL_CHECKS, f"one of {KL_CHECKS}"),
            ("gamma", 0 <= self.gamma <= 1, "in [0, 1]"),
            ("gae_lambda", 0 <= self.gae_lambda <= 1, "in [0, 1]"),
            ("obs_clip", self.obs_clip > 0, "> 0"),
            ("reward_clip", self.reward_clip > 0, "> 0"),
            ("num_envs", self.num_envs >= 1, ">= 1"),
            ("num_train_frames", self.num_train_frames >= self.num_steps * self.num_envs,
             f">= num_steps * num_envs = {self.num_steps * self.num_envs} (at least one update)"),
            ("eval_every_updates", self.eval_every_updates >= 1, ">= 1"),
            ("num_eval_episodes", self.num_eval_episodes >= 0, ">= 0"),
            ("se_every_updates", self.se_every_updates >= 0, ">= 0 (0 = no sampling error)"),
            ("se_epochs", self.se_epochs >= 1, ">= 1"),
            ("se_lr", self.se_lr > 0, "> 0"),
            ("se_minibatch_per_batch", self.se_minibatch_per_batch >= 0, ">= 0 (0 = full batch)"),
            ("se_max_grad_norm", self.se_max_grad_norm >= 0, ">= 0 (0 = no clip)"),
        ]


# Spec §8.4, PPO column (computed from the PPOROS NeurIPS data configs, which ran the -v4 tasks):
# environment-step budget, n and lr per task. The v5 names get the same values.
PPO_RUNS: Dict[str, Dict[str, Any]] = {
    "Swimmer": {"num_train_frames": 1_000_000, "num_steps": 4096, "lr": 1e-3},
    "Hopper": {"num_train_frames": 1_000_000, "num_steps": 2048, "lr": 1e-3},
    "HalfCheetah": {"num_train_frames": 2_000_000, "num_steps": 1024, "lr": 1e-4},
    "Walker2d": {"num_train_frames": 2_000_000, "num_steps": 4096, "lr": 1e-3},
    "Ant": {"num_train_frames": 4_000_000, "num_steps": 1024, "lr": 1e-4},
    "Humanoid": {"num_train_frames": 6_000_000, "num_steps": 8192, "lr": 1e-4},
}
TASK_OVERRIDES: Dict[str, Dict[str, Any]] = {
    f"{name}-{version}": values for name, values in PPO_RUNS.items() for version in ("v4", "v5")
}


def config_for_task(task: str, **user_overrides) -> Config:
    """The PROPS-paper PPO config of `task` (TASK_OVERRIDES; any other task gets the Config defaults),
    then `user_overrides` (unknown field names raise ValueError naming the valid ones)."""
    valid_fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(user_overrides) - valid_fields)
    if unknown:
        raise ValueError(f"unknown Config field(s) {unknown}; valid fields: {sorted(valid_fields)}")
    return Config(**{**TASK_OVERRIDES.get(task, {}), **user_overrides})


# ----------------------------------------------------------------------------------------------
# 2. Networks, policy distribution, agent state
# ----------------------------------------------------------------------------------------------


def mlp_init(key: jax.Array, sizes: Sequence[int], output_scale: float) -> Params:
    """Dense layers sizes[0] -> sizes[1] -> ... as {"layer_i": {"kernel", "bias"}}: orthogonal kernels
    with gain sqrt(2) for hidden layers and `output_scale` for the last, zero biases (PPOROS/CleanRL
    `layer_init`)."""
    layers = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        scale = output_scale if i == len(sizes) - 2 else math.sqrt(2.0)
        kernel = jax.nn.initializers.orthogonal(scale)(keys[i], (fan_in, fan_out), jnp.float32)
        layers[f"layer_{i}"] = {"kernel": kernel, "bias": jnp.zeros((fan_out,), jnp.float32)}
    return layers


def mlp(layers: Params, x: jnp.ndarray) -> jnp.ndarray:
    """The MLP of mlp_init: tanh after every layer but the last."""
    for i in range(len(layers)):
        layer = layers[f"layer_{i}"]
        x = x @ layer["kernel"] + layer["bias"]
        if i < len(layers) - 1:
            x = jnp.tanh(x)
    return x


def policy(params: Params, obs: jnp.ndarray, tanh_mean: bool) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """(mean, log_std) of the Gaussian policy for obs (..., obs_dim): mean (..., A) from the actor MLP
    (tanh-squashed when tanh_mean, as PPOROS), log_std the state-independent parameter broadcast."""
    mean = mlp(params["actor"], obs)
    if tanh_mean:
        mean = jnp.tanh(mean)
    return mean, jnp.broadcast_to(params["log_std"], mean.shape)


def value(params: Params, obs: jnp.ndarray) -> jnp.ndarray:
    """V(obs) of shape (...) for obs (..., obs_dim)."""
    return mlp(params["critic"], obs)[..., 0]


def log_prob(mean: jnp.ndarray, log_std: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    """log N(action; mean, exp(log_std)^2) summed over the action dimensions (actions unsquashed)."""
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def entropy(log_std: jnp.ndarray) -> jnp.ndarray:
    """Entropy of the diagonal Gaussian, summed over the action dimensions: sum(0.5 + 0.5 log 2 pi + log_std)."""
    return jnp.sum(0.5 + 0.5 * math.log(2 * math.pi) + log_std, axis=-1)


def optimizer(config: Config) -> optax.GradientTransformation:
    """Global-norm clip, then Adam's direction (b1 .9, b2 .999, eps outside the sqrt, as PyTorch).
    The learning rate is applied in ppo_update, so annealing needs no optimizer state. (PyTorch's
    clip_grad_norm_ divides by norm + 1e-6, optax by the norm: a difference of ~1e-6 relative.)"""
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                       optax.scale_by_adam(b1=0.9, b2=0.999, eps=config.adam_eps))


class PPOState(struct.PyTreeNode):
    """Everything an update changes. A pytree: stack it over seeds, save it with orbax.

    params = {"actor": mean MLP, "log_std": (A,), "critic": value MLP}, one optimizer over all three
    (PPOROS's single Adam on agent.parameters()). `config` and `action_dim` are static.
    The observation/reward normalizers are not here: the loop owns them.
    """

    params: Params
    opt_state: optax.OptState
    num_updates: jnp.ndarray  # int32 scalar: updates (target updates) done so far
    config: Config = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)


def create(key: jax.Array, obs_dim: int, action_dim: int, config: Config) -> PPOState:
    """Fresh agent: orthogonally initialized actor (output gain 0.01) and critic (output gain 1),
    log_std = 0, fresh Adam state, num_updates = 0."""
    for name, dim in (("obs_dim", obs_dim), ("action_dim", action_dim)):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"{name} must be a positive int, got {dim!r}")
    key_actor, key_critic = jax.random.split(key)
    h = config.hidden_dim
    params = {
        "actor": mlp_init(key_actor, (obs_dim, h, h, action_dim), output_scale=0.01),
        "log_std": jnp.zeros((action_dim,), jnp.float32),
        "critic": mlp_init(key_critic, (obs_dim, h, h, 1), output_scale=1.0),
    }
    return PPOState(params=params, opt_state=optimizer(config).init(params),
                    num_updates=jnp.zeros((), jnp.int32), config=config, action_dim=action_dim)


# ----------------------------------------------------------------------------------------------
# 3. Pieces of an update (pure functions)
# ----------------------------------------------------------------------------------------------


class Rollout(NamedTuple):
    """What the loop hands to `update`: the buffer's valid steps, chronological (oldest first)."""

    obs: jnp.ndarray  # (T, E, obs_dim), normalized
    actions: jnp.ndarray  # (T, E, A), as sampled (unclipped)
    rewards: jnp.ndarray  # (T, E), normalized
    dones: jnp.ndarray  # (T, E): 1 if the episode ended after step t (terminated or truncated)
    last_obs: jnp.ndarray  # (E, obs_dim): normalized observation after the last step


def check_rollout(rollout: Rollout, action_dim: int) -> None:
    """Raise ValueError unless the rollout's arrays have the shapes Rollout documents."""
    if rollout.rewards.ndim != 2:
        raise ValueError(f"Rollout.rewards must be (T, E), got shape {rollout.rewards.shape}")
    T, E = rollout.rewards.shape
    obs_dim = rollout.obs.shape[-1]
    expected = {"obs": (T, E, obs_dim), "actions": (T, E, action_dim), "rewards": (T, E), "dones": (T, E),
                "last_obs": (E, obs_dim)}
    wrong = [f"{name} {getattr(rollout, name).shape} (expected {shape})" for name, shape in expected.items()
             if getattr(rollout, name).shape != shape]
    if wrong:
        raise ValueError("Rollout arrays have inconsistent shapes (T steps, E envs, obs_dim, action_dim = "
                         f"{T}, {E}, {obs_dim}, {action_dim}): " + "; ".join(wrong))


def gae(rewards: jnp.ndarray, values: jnp.ndarray, next_values: jnp.ndarray, dones: jnp.ndarray,
        gamma: float, lam: float) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Generalized advantage estimation over a chronological (T, E) trajectory.

    next_values[t] = V(observation after step t); an episode end after step t (dones[t] = 1) cuts both
    the bootstrap and the recursion:
        delta_t = r_t + gamma * (1 - d_t) * next_values_t - V_t
        A_t     = delta_t + gamma * lam * (1 - d_t) * A_{t+1},   A_T = 0
    Returns (advantages, returns = advantages + values), each (T, E).
    """
    chex.assert_equal_shape([rewards, values, next_values, dones])
    not_done = 1.0 - dones.astype(jnp.float32)
    deltas = rewards + gamma * not_done * next_values - values

    def backward(next_advantage, step):
        delta, nd = step
        advantage = delta + gamma * lam * nd * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, not_done), reverse=True)
    return advantages, advantages + values


def prepare(state: PPOState, rollout: Rollout, config: Config) -> Batch:
    """The update's batch under the CURRENT policy and critic (spec pitfall #29: never reuse the
    behaviour policy's log-probs): log pi_theta(a|s), V(s), GAE in chronological order over the
    whole buffer, then flattened over (T, E) to {obs, actions, log_probs, values, advantages, returns}."""
    check_rollout(rollout, state.action_dim)
    T, E = rollout.rewards.shape
    params = state.params
    mean, log_std = policy(params, rollout.obs, config.tanh_mean)
    log_probs = log_prob(mean, log_std, rollout.actions)
    values = value(params, rollout.obs)
    next_values = jnp.concatenate([values[1:], value(params, rollout.last_obs)[None]], axis=0)
    advantages, returns = gae(rollout.rewards, values, next_values, rollout.dones,
                              config.gamma, config.gae_lambda)
    flat = lambda x: x.reshape((T * E,) + x.shape[2:])
    batch = {"obs": rollout.obs, "actions": rollout.actions, "log_probs": log_probs, "values": values,
             "advantages": advantages, "returns": returns}
    return jax.tree.map(lambda x: jax.lax.stop_gradient(flat(x)), batch)


def normalize_advantages(advantages: jnp.ndarray) -> jnp.ndarray:
    """(A - mean) / (std + 1e-8) with the sample std (ddof 1: PyTorch's Tensor.std, as PPOROS)."""
    return (advantages - advantages.mean()) / (jnp.std(advantages, ddof=1) + ADVANTAGE_EPS)


def ppo_loss(params: Params, minibatch: Batch, config: Config) -> Tuple[jnp.ndarray, Metrics]:
    """loss = clipped surrogate - ent_coef * entropy + vf_coef * value loss, on one minibatch.

    r = pi(a|s) / pi_old(a|s) with pi_old = minibatch["log_probs"];
    policy_loss = mean(max(-A r, -A clip(r, 1 - eps, 1 + eps))) (A normalized per minibatch if norm_adv);
    value_loss = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, +-eps) - R)^2)) with clip_vloss,
    else 0.5 * mean((V - R)^2). Metrics (no gradient): approx_kl = mean((r - 1) - log r) (the KL of
    this minibatch at these params, what the early stop checks), clip_fraction = mean(|r - 1| > eps).
    """
    eps = config.clip_coef
    mean, log_std = policy(params, minibatch["obs"], config.tanh_mean)
    new_log_probs = log_prob(mean, log_std, minibatch["actions"])
    chex.assert_equal_shape([new_log_probs, minibatch["log_probs"]])
    log_ratio = new_log_probs - minibatch["log_probs"]
    ratio = jnp.exp(log_ratio)

    advantages = minibatch["advantages"]
    if config.norm_adv:
        advantages = normalize_advantages(advantages)
    policy_loss = jnp.mean(jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1 - eps, 1 + eps)))

    new_values = value(params, minibatch["obs"])
    chex.assert_equal_shape([new_values, minibatch["returns"], minibatch["values"]])
    unclipped = jnp.square(new_values - minibatch["returns"])
    if config.clip_vloss:
        clipped_values = minibatch["values"] + jnp.clip(new_values - minibatch["values"], -eps, eps)
        value_loss = 0.5 * jnp.mean(jnp.maximum(unclipped, jnp.square(clipped_values - minibatch["returns"])))
    else:
        value_loss = 0.5 * jnp.mean(unclipped)

    entropy_mean = jnp.mean(entropy(log_std))
    loss = policy_loss - config.ent_coef * entropy_mean + config.vf_coef * value_loss
    metrics = {
        "loss": loss, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy_mean,
        "approx_kl": jax.lax.stop_gradient(jnp.mean((ratio - 1) - log_ratio)),
        "clip_fraction": jax.lax.stop_gradient(jnp.mean((jnp.abs(ratio - 1) > eps).astype(jnp.float32))),
    }
    return loss, metrics


def num_target_updates(config: Config) -> int:
    """K: the updates of a whole run, num_train_frames // (num_steps * num_envs) (PPOROS num_updates)."""
    return config.num_train_frames // (config.num_steps * config.num_envs)


def learning_rate(config: Config, num_updates) -> jnp.ndarray:
    """The lr of the update that follows `num_updates` updates: lr * (1 - k / K) with anneal_lr
    (PPOROS/CleanRL frac = 1 - (update - 1) / K for the 1-based update = k + 1), floored at 0 in
    case a loop runs past K; lr otherwise."""
    if not config.anneal_lr:
        return jnp.asarray(config.lr, jnp.float32)
    frac = 1.0 - jnp.asarray(num_updates, jnp.float32) / num_target_updates(config)
    return config.lr * jnp.maximum(frac, 0.0)


def minibatch_layout(num_samples: int, config: Config) -> Tuple[int, int]:
    """(number of minibatches, minibatch size) for a batch of num_samples.

    The size is fixed at buffer_batches * num_steps * num_envs / num_minibatches, the size for a FULL
    buffer, so a partial buffer (PROPS/PPO-BUFFER's first updates) gets fewer minibatches (PPOROS
    update_ppo); a batch smaller than one minibatch is one minibatch (PPOROS min(size, batch)).
    """
    if num_samples < 1:
        raise ValueError(f"the batch is empty (num_samples={num_samples}); an update needs at least one step")
    size = config.buffer_batches * config.num_steps * config.num_envs // config.num_minibatches
    size = min(size, num_samples)
    if num_samples % size:
        raise ValueError(
            f"a batch of {num_samples} samples does not split into minibatches of {size} (= buffer_batches * "
            f"num_steps * num_envs / num_minibatches = {config.buffer_batches} * {config.num_steps} * "
            f"{config.num_envs} / {config.num_minibatches}); the batch must be a multiple of the minibatch size")
    return num_samples // size, size


def minibatch_sizes(config: Config) -> Tuple[int, ...]:
    """Every minibatch size an update of a run can use (sorted, distinct): minibatch_layout's size for
    each buffer fill level the loop passes (T = n, 2n, ..., b * n steps of num_envs environments). The
    loop checks that its data-parallel devices divide each (core/onpolicy.py plan_devices)."""
    full = config.buffer_batches * config.num_steps * config.num_envs // config.num_minibatches
    fills = range(config.num_steps, buffer_steps(config) + 1, window_steps(config))
    return tuple(sorted({min(full, steps * config.num_envs) for steps in fills}))


def explained_variance(predictions: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """1 - var(targets - predictions) / var(targets); NaN when the targets are constant (CleanRL)."""
    var_targets = jnp.var(targets)
    return jnp.where(var_targets == 0, jnp.nan, 1 - jnp.var(targets - predictions) / var_targets)


def early_stopped_steps(take_minibatch, loss_fn, params: Params, opt_state: optax.OptState,
                        tx: optax.GradientTransformation, lr, indices: jnp.ndarray, valid, is_epoch_end: jnp.ndarray,
                        *, kl_name: str, target_kl: float, kl_check: str, metric_names: Sequence[str],
                        grad_norm_name: str):
    """Adam steps over the minibatches given by the rows of `indices` (in order, inside one lax.scan),
    with the approx-KL early stop shared by PPO's and PROPS's updates.

    take_minibatch(minibatch_indices, minibatch_valid) -> minibatch (valid: the row of `valid`, or None)
    gathers a minibatch; loss_fn(params, minibatch) -> (loss, metrics). (The gather stays outside the
    early stop's lax.cond: jax 0.10 fails to vmap a gather inside a lax.cond within shard_map, the
    "vmap" seed strategy on a device mesh.)
    Each minibatch's metrics[kl_name] is measured at the current params; when target_kl > 0
    and it exceeds target_kl, the remaining minibatches are skipped:
      "before_step" (PPOROS): that minibatch takes no step;
      "after_step"  (PROPS-2025 ppo_discrete.py): it takes its step, then the update stops;
      "after_epoch" (CleanRL): checked only for an epoch's last minibatch, after its step.
    The step is p - lr * tx-update (tx without its own learning rate, so lr can be traced).
    Returns (params, opt_state, gradient steps taken, stopped early, the metric_names averaged over the
    minibatches evaluated: every one that took a step plus the one whose KL stopped the update)."""
    kl_enabled = target_kl > 0

    def slot(carry, xs):
        mb_indices, mb_valid, epoch_end = xs
        minibatch = take_minibatch(mb_indices, mb_valid)

        def evaluate(carry, minibatch):
            params, opt_state, stopped, steps, evaluated, sums = carry
            (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, minibatch)
            metrics[grad_norm_name] = optax.tree.norm(grads)
            exceeds = kl_enabled & (metrics[kl_name] > target_kl)
            if kl_check == "before_step":
                take_step, stop = ~exceeds, exceeds
            elif kl_check == "after_step":
                take_step, stop = jnp.asarray(True), exceeds
            else:  # "after_epoch"
                take_step, stop = jnp.asarray(True), exceeds & epoch_end
            updates, new_opt_state = tx.update(grads, opt_state, params)
            new_params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
            keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(take_step, n, o), new, old)
            sums = {name: sums[name] + metrics[name] for name in metric_names}
            return (keep(new_params, params), keep(new_opt_state, opt_state), stop,
                    steps + take_step.astype(jnp.int32), evaluated + 1, sums)

        skip = lambda carry, minibatch: carry  # noqa: E731  (stopped: skip the rest)
        return jax.lax.cond(carry[2], skip, evaluate, carry, minibatch), None

    zeros = {name: jnp.zeros((), jnp.float32) for name in metric_names}
    init = (params, opt_state, jnp.asarray(False), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), zeros)
    params, opt_state, stopped, steps, evaluated, sums = jax.lax.scan(slot, init, (indices, valid, is_epoch_end))[0]
    return params, opt_state, steps, stopped, {name: sums[name] / jnp.maximum(evaluated, 1) for name in metric_names}


@functools.partial(jax.jit, static_argnames=("config",))
def ppo_update(state: PPOState, batch: Batch, key: jax.Array, config: Config) -> Tuple[PPOState, Metrics]:
    """update_epochs epochs over the batch, each a fresh shuffle cut into minibatches of the fixed size,
    one clipped-gradient Adam step per minibatch at lr = learning_rate(config, num_updates); then
    num_updates += 1.

    KL early stop (target_kl > 0, kl_check): see early_stopped_steps. The first minibatch of an update has approx_kl = 0 when the batch's log-probs come from prepare
    (same params), so "before_step" always takes at least one step then.

    Metrics: policy_loss, value_loss, entropy, approx_kl, clip_fraction, loss, grad_norm are means over
    the minibatches evaluated (every one that took a step, plus the one whose KL stopped the update);
    gradient_steps, early_stopped (0/1), lr, and explained_variance of the batch's values vs returns.
    """
    num_samples = batch["obs"].shape[0]
    num_minibatches, minibatch_size = minibatch_layout(num_samples, config)
    num_slots = config.update_epochs * num_minibatches
    lr = learning_rate(config, state.num_updates)
    tx = optimizer(config)

    # Minibatch indices of every epoch: a fresh permutation each, cut into num_minibatches pieces.
    epoch_keys = jax.random.split(key, max(config.update_epochs, 1))[:config.update_epochs]
    permutations = jax.vmap(lambda k: jax.random.permutation(k, num_samples))(epoch_keys)
    indices = permutations.reshape(num_slots, minibatch_size)
    is_epoch_end = (jnp.arange(num_slots) % num_minibatches) == num_minibatches - 1

    metric_names = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm")

    def take_minibatch(mb_indices, mb_valid):
        del mb_valid  # every PPO minibatch is full (minibatch_layout)
        # On a device mesh the minibatch is split over the data devices (core/devices.py; a no-op
        # without one): its mean losses and advantage normalization stay the whole minibatch's.
        return devices.shard_batch(jax.tree.map(lambda x: x[mb_indices], batch), 0)

    params, opt_state, steps, stopped, metrics = early_stopped_steps(
        take_minibatch, functools.partial(ppo_loss, config=config), state.params, state.opt_state, tx, lr, indices,
        None, is_epoch_end, kl_name="approx_kl", target_kl=config.target_kl, kl_check=config.kl_check,
        metric_names=metric_names, grad_norm_name="grad_norm")
    metrics.update(gradient_steps=steps, early_stopped=stopped, lr=lr,
                   explained_variance=explained_variance(batch["values"], batch["returns"]))
    state = state.replace(params=params, opt_state=opt_state, num_updates=state.num_updates + 1)
    return state, {name: jnp.asarray(v, jnp.float32) for name, v in metrics.items()}


SAMPLING_ERROR_STREAM = 0x5E  # fold_in(update key, .): the fit's shuffles, apart from the update's own
SE_LOG_STD_CLAMP = (-3.0, 1.0)  # PPOROS utils.Agent.get_action_and_info(clamp=True)


def empirical_policy_trainable(params: Params, freeze_hidden_biases: bool) -> Params:
    """Which leaves of {"actor", "log_std"} the empirical-policy fit trains: the output layer and the
    log-std always, the hidden biases unless freeze_hidden_biases (PPOROS freezes only the hidden
    weight matrices; PROPS-2025 also their biases), never the hidden kernels."""
    last = len(params["actor"]) - 1
    actor = {name: {"kernel": name == f"layer_{last}",
                    "bias": name == f"layer_{last}" or not freeze_hidden_biases}
             for name in params["actor"]}
    return {"actor": actor, "log_std": True}


def sampling_error_metric(state: PPOState, batch: Batch, key: jax.Array, config: Config) -> jnp.ndarray:
    """The sampling error (spec §8.3) of the batch's (s, a) w.r.t. the current policy, or NaN when not
    due: due before the target update numbered num_updates + 1 when that number is a multiple of
    se_every_updates (never when 0). Computed on the whole batch, before the update (PPOROS order)."""
    if config.se_every_updates <= 0:
        return jnp.asarray(jnp.nan, jnp.float32)
    params = {"actor": state.params["actor"], "log_std": state.params["log_std"]}
    trainable = empirical_policy_trainable(params, config.se_freeze_hidden_biases)
    num_samples = batch["obs"].shape[0]
    minibatch_size = num_samples
    if config.se_minibatch_per_batch > 0:  # PPOROS: 512 * samples // num_steps (one environment)
        minibatch_size = max(1, config.se_minibatch_per_batch * num_samples // (config.num_steps * config.num_envs))

    def clamped_log_prob(p, obs, actions):
        mean, log_std = policy(p, obs, config.tanh_mean)
        if config.se_clamp_log_std:
            log_std = jnp.clip(log_std, *SE_LOG_STD_CLAMP)
        return log_prob(mean, log_std, actions)

    def compute():
        weights = sampling_error.advantage_weights(batch["advantages"]) if config.se_advantage_weighted else None
        se, _ = sampling_error.sampling_error(
            clamped_log_prob, params, trainable, batch["obs"], batch["actions"], key, epochs=config.se_epochs,
            minibatch_size=minibatch_size, lr=config.se_lr, max_grad_norm=config.se_max_grad_norm, weights=weights)
        return se.astype(jnp.float32)

    due = (state.num_updates + 1) % config.se_every_updates == 0
    return jax.lax.cond(due, compute, lambda: jnp.asarray(jnp.nan, jnp.float32))


# ----------------------------------------------------------------------------------------------
# 4. act and update
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("eval_mode",))
def act(state: PPOState, obs: jnp.ndarray, key: jax.Array, eval_mode: bool = False) -> jnp.ndarray:
    """Actions (..., A) for normalized observations (..., obs_dim): a sample of N(mean, std^2), or the
    mean in eval_mode. Not clipped: the environment clips (ClipAction), and the buffer keeps the sample."""
    mean, log_std = policy(state.params, obs, state.config.tanh_mean)
    if eval_mode:
        return mean
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)


def window_steps(config: Config) -> int:
    """Environment steps per environment between two `update` calls: n."""
    return config.num_steps


def buffer_steps(config: Config) -> int:
    """Length of the loop's ring buffer per environment: b * n."""
    return config.buffer_batches * config.num_steps


def target_update(state: PPOState, batch: Batch, key: jax.Array) -> Tuple[PPOState, Metrics]:
    """One target update on a prepared batch: the sampling error of the batch under the pre-update
    policy (sampling_error_metric; always in the metrics, NaN when not computed, so every metrics.csv
    row has the same columns), then ppo_update."""
    se = sampling_error_metric(state, batch, jax.random.fold_in(key, SAMPLING_ERROR_STREAM), state.config)
    state, metrics = ppo_update(state, batch, key, state.config)
    return state, {**metrics, "sampling_error": se}


@jax.jit
def update(state: PPOState, rollout: Rollout, key: jax.Array) -> Tuple[PPOState, Metrics]:
    """One PPO (target) update on the buffer's valid contents: prepare, then target_update."""
    return target_update(state, prepare(state, rollout, state.config), key)
