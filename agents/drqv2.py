"""DrQ-v2 (Yarats, Fergus, Lazaric, Pinto 2021): DDPG-style actor-critic on pixels.

Random-shift augmentation, clipped double Q, n-step returns, and a scheduled (not learned) Gaussian
exploration std. Spec: shared/spec/pixel-agents.md §1. Read top to bottom:

  1. Config, the official task tiers and per-task overrides, config_for_task
  2. networks and the agent state (DrQV2State), create
  3. the pieces of an update as pure functions (sampling, targets, losses, one optimizer step each)
  4. act and update (jitted)

Reuse (DrM builds on this file): every function that takes `state` reads only the fields of
DrQV2State (encoder/actor/critic params, critic target, three optimizer states, config,
action_dim, obs_shape) and writes them back with `state.replace`, so a state class that has these
fields plus its own (DrM's V network, dormant ratio, ...) can call them unchanged. `update` is a composition of
`augment_batch`, `encode_with_pullback`, `encode`, `target_q_values`, `critic_target`,
`update_critic`, `update_actor` and `soft_update_target`; DrM composes the same pieces in its order.

Network options for DrM's other domains (spec §2.6, §2.7), read by `networks` from a Config subclass that
defines them (DrQ-v2's own Config does not, so its networks are the official ones): `proprio_dim`
(Adroit proprioception fusion) and `critic_hidden_dropout` / `critic_hidden_layer_norm` (Meta-World
Q heads). The pieces take the matching optional inputs as keyword arguments: `proprio` /
`next_proprio` (ignored when the config fuses none) and `dropout_key` (None: the critic runs without
dropout, as in eval mode; a key: train-mode dropout drawn from it). With their defaults every piece
computes exactly what it did without them.
"""

import dataclasses
import functools
import math
import typing
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from core import augment, schedules
from networks import actor_critic, encoders, tokens

Params = Any
Metrics = Dict[str, jnp.ndarray]

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------

OBS_TYPES = ("pixels", "states")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Config:
    """Every default is the official DrQ-v2 value (S1 = facebookresearch/drqv2 cfgs/config.yaml,
    cfgs/task/medium.yaml, drqv2.py), unless the comment says otherwise. Step counts are AGENT steps
    (one policy decision, repeated `action_repeat` times); frame counts are environment steps."""

    # Observation: "pixels" (DrQ-v2) or "states" (pixax's own MLP encoder for quick checks).
    obs_type: str = "pixels"
    # Optimization: three Adam optimizers (encoder, actor, critic), PyTorch defaults otherwise.
    lr: float = 1e-4  # S1 config.yaml lr; 8e-5 for humanoid_* (TASK_OVERRIDES)
    # Networks.
    feature_dim: int = 50  # S1 config.yaml feature_dim; 100 for humanoid_*
    hidden_dim: int = 1024  # S1 agent hidden_dim
    state_encoder_dim: int = 256  # pixax's choice: StateEncoder width for obs_type="states"
    # Trunk head ("Don't flatten, tokenize!", spec §4.7 [DESIGN SUGGESTION], not in DrQ-v2): "flatten"
    # is DrQ-v2; "tokenize" / "softmoe" tokenize the encoder's 35x35x32 map inside each trunk.
    head: str = "flatten"
    head_tokenizer: str = "patch"  # §4.7: patch 5 -> 7x7 = 49 tokens of head_embed_dim
    head_patch_size: int = 5
    head_embed_dim: int = 64
    head_num_experts: int = 1  # §4.7: SoftMoE-1
    head_slots: int = 16  # §4.7: total slots, head_slots / head_num_experts per expert
    head_expert_hidden: int = 256  # §4.7
    head_aggregate: str = "flatten"  # 49 x 64 = 3136 features into the trunk's Dense
    # Critic.
    critic_target_tau: float = 0.01  # S1 agent critic_target_tau (EMA of all critic params)
    # Exploration / policy noise.
    stddev_schedule: str = "linear(1.0,0.1,500000)"  # S1 medium.yaml (agent steps); see TIERS
    stddev_clip: float = 0.3  # S1 agent stddev_clip: noise clip in target and actor-loss actions
    clip_when_acting: bool = False  # S1 drqv2.py act: no clip when acting (drqv2 issue #13)
    num_expl_steps: int = 2000  # S1 agent num_expl_steps: uniform actions before this step
    augment_pad: int = 4  # S1 drqv2.py RandomShiftsAug(pad=4)
    # Mixed precision: params stay float32; "bfloat16" computes the networks in bfloat16.
    compute_dtype: str = "float32"  # pixax's option; the official code is float32
    # Loop settings, read by the launcher (kept here so one object holds a run's hyperparameters).
    update_every_steps: int = 2  # S1 agent update_every_steps
    nstep: int = 3  # S1 config.yaml nstep; 1 for walker_*
    batch_size: int = 256  # S1 config.yaml batch_size; 512 for walker_*
    discount: float = 0.99  # S1 config.yaml discount
    replay_capacity: int = 1_000_000  # S1 replay_buffer_size (transitions); 100k for quadruped_run
    action_repeat: int = 2  # S1 config.yaml action_repeat
    frame_stack: int = 3  # S1 config.yaml frame_stack
    image_size: int = 84  # S1 dmc.py render size (84x84)
    num_seed_frames: int = 4000  # S1 config.yaml num_seed_frames (no updates before)
    num_train_frames: int = 3_100_000  # S1 medium.yaml; see TIERS
    eval_every_frames: int = 10_000  # S1 config.yaml eval_every_frames
    num_eval_episodes: int = 10  # S1 config.yaml num_eval_episodes

    def __post_init__(self):
        _check_field_types(self)  # first: the schedule must be a string before it is parsed
        try:
            schedules.parse(self.stddev_schedule)
            schedule_problems = []
        except ValueError as error:
            schedule_problems = [f"stddev_schedule: {error}"]
        validate_config(self, schedule_problems)

    def _rules(self):
        """(field, valid?, rule) triples; a subclass extends this list with its own fields."""
        return [
            ("obs_type", self.obs_type in OBS_TYPES, f"one of {OBS_TYPES}"),
            ("compute_dtype", self.compute_dtype in COMPUTE_DTYPES, f"one of {tuple(COMPUTE_DTYPES)}"),
            ("lr", self.lr > 0, "> 0"),
            ("feature_dim", self.feature_dim >= 1, ">= 1"),
            ("hidden_dim", self.hidden_dim >= 1, ">= 1"),
            ("state_encoder_dim", self.state_encoder_dim >= 1, ">= 1"),
            ("head", self.head in tokens.HEADS and (self.head == "flatten" or self.obs_type == "pixels"),
             f"one of {tokens.HEADS}; token heads need obs_type='pixels' (an encoder feature map)"),
            ("head_tokenizer", self.head_tokenizer in tokens.TOKENIZERS, f"one of {tokens.TOKENIZERS}"),
            ("head_aggregate", self.head_aggregate in tokens.AGGREGATES, f"one of {tokens.AGGREGATES}"),
            ("head_patch_size", self.head_patch_size >= 1, ">= 1"),
            ("head_embed_dim", self.head_embed_dim >= 1, ">= 1"),
            ("head_num_experts", self.head_num_experts >= 1, ">= 1"),
            ("head_slots", self.head_slots >= self.head_num_experts and self.head_slots % self.head_num_experts == 0,
             f"a positive multiple of head_num_experts={self.head_num_experts}"),
            ("head_expert_hidden", self.head_expert_hidden >= 1, ">= 1"),
            ("critic_target_tau", 0 < self.critic_target_tau <= 1, "in (0, 1]"),
            ("stddev_clip", self.stddev_clip >= 0, ">= 0"),
            ("num_expl_steps", self.num_expl_steps >= 0, ">= 0"),
            ("augment_pad", self.augment_pad >= 0, ">= 0"),
            ("update_every_steps", self.update_every_steps >= 1, ">= 1"),
            ("nstep", self.nstep >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("discount", 0 <= self.discount <= 1, "in [0, 1]"),
            ("replay_capacity", self.replay_capacity >= 1, ">= 1"),
            ("action_repeat", self.action_repeat >= 1, ">= 1"),
            ("frame_stack", self.frame_stack >= 1, ">= 1"),
            ("image_size", self.image_size > 2 * self.augment_pad, "> 2 * augment_pad"),
            ("num_seed_frames", self.num_seed_frames >= 0, ">= 0"),
            ("num_train_frames", self.num_train_frames >= 1, ">= 1"),
            ("eval_every_frames", self.eval_every_frames >= 1, ">= 1"),
            ("num_eval_episodes", self.num_eval_episodes >= 0, ">= 0"),
        ]


def _check_field_types(config) -> None:
    """Reject values of the wrong type (e.g. a string for lr); ints are accepted for float fields."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        expected, value = hints[field.name], getattr(config, field.name)
        if not isinstance(expected, type):
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, field.name, float(value))
            continue
        wrong_bool = isinstance(value, bool) and expected is not bool
        if wrong_bool or not isinstance(value, expected):
            raise ValueError(
                f"{type(config).__name__}.{field.name} must be a {expected.__name__}, "
                f"got {type(value).__name__} {value!r}"
            )



def validate_config(config, extra_problems: Sequence[str] = ()) -> None:
    """The checks every agent Config runs in __post_init__: field types, then its `_rules()` triples
    (field, valid?, rule); one ValueError lists every problem with the rule it breaks."""
    _check_field_types(config)
    problems = [f"{name}={getattr(config, name)!r} (must be {rule})" for name, ok, rule in config._rules() if not ok]
    problems += list(extra_problems)
    if problems:
        raise ValueError(f"invalid {type(config).__name__}: " + "; ".join(problems))

# Task tiers (S1 cfgs/task/{easy,medium,hard}.yaml + one yaml per task). The std schedule duration
# is in agent steps; num_train_frames has +0.1 M frames so the last eval lands at 1 M / 3 M / 30 M.
TIERS: Dict[str, Dict[str, Any]] = {
    "easy": {
        "tasks": ("cartpole_balance", "cartpole_balance_sparse", "cartpole_swingup", "cup_catch",
                  "finger_spin", "hopper_stand", "pendulum_swingup", "walker_stand", "walker_walk"),
        "stddev_schedule": "linear(1.0,0.1,100000)",
        "num_train_frames": 1_100_000,
    },
    "medium": {
        "tasks": ("acrobot_swingup", "cartpole_swingup_sparse", "cheetah_run", "finger_turn_easy",
                  "finger_turn_hard", "hopper_hop", "quadruped_run", "quadruped_walk", "reach_duplo",
                  "reacher_easy", "reacher_hard", "walker_run"),
        "stddev_schedule": "linear(1.0,0.1,500000)",
        "num_train_frames": 3_100_000,
    },
    "hard": {
        "tasks": ("humanoid_stand", "humanoid_walk", "humanoid_run"),
        "stddev_schedule": "linear(1.0,0.1,2000000)",
        "num_train_frames": 30_100_000,
    },
}

# Per-task overrides (S1 cfgs/task/<task>.yaml). humanoid_run included: drqv2 issue #1.
_WALKER = {"nstep": 1, "batch_size": 512}
_HUMANOID = {"lr": 8e-5, "feature_dim": 100}
TASK_OVERRIDES: Dict[str, Dict[str, Any]] = {
    "walker_stand": _WALKER,
    "walker_walk": _WALKER,
    "walker_run": _WALKER,
    "quadruped_run": {"replay_capacity": 100_000},
    "humanoid_stand": _HUMANOID,
    "humanoid_walk": _HUMANOID,
    "humanoid_run": _HUMANOID,
}


def build_task_config(config_type: type, task: str, tiers: Dict[str, Dict[str, Any]],
                      task_overrides: Dict[str, Dict[str, Any]], user_overrides: Dict[str, Any]):
    """Resolve a config: defaults <- the task's tier <- the task's overrides <- the user's values.

    Generic over the config dataclass and the tables, so an agent with its own tiers (DrM) reuses it.
    """
    tier_of_task = {t: tier for tier, spec in tiers.items() for t in spec["tasks"]}
    if task not in tier_of_task:
        raise ValueError(f"unknown task {task!r}; valid tasks: {sorted(tier_of_task)}")
    valid_fields = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(user_overrides) - valid_fields)
    if unknown:
        raise ValueError(f"unknown {config_type.__name__} field(s) {unknown}; valid fields: {sorted(valid_fields)}")
    values = {k: v for k, v in tiers[tier_of_task[task]].items() if k != "tasks"}
    values.update(task_overrides.get(task, {}))
    values.update(user_overrides)
    return config_type(**values)


def config_for_task(task: str, **user_overrides) -> Config:
    """The official DrQ-v2 config of a DMC task (tier, then per-task overrides), then `user_overrides`."""
    return build_task_config(Config, task, TIERS, TASK_OVERRIDES, user_overrides)


# ----------------------------------------------------------------------------------------------
# 2. Networks and agent state
# ----------------------------------------------------------------------------------------------


class Networks(NamedTuple):
    encoder: Any  # PixelEncoder or StateEncoder
    actor: actor_critic.Actor
    critic: actor_critic.Critic


def proprio_dim(config: Config) -> int:
    """Entries of the proprioceptive vector the networks fuse (0: none; a Config subclass may set it)."""
    return getattr(config, "proprio_dim", 0)


def trunk_head(config: Config) -> Tuple[Tuple[str, Any], ...]:
    """The tokens.Head settings of every trunk, as (name, value) pairs; () for DrQ-v2's flat features."""
    if config.head == "flatten":
        return ()
    return (("kind", config.head), ("tokenizer", config.head_tokenizer), ("patch_size", config.head_patch_size),
            ("embed_dim", config.head_embed_dim), ("num_experts", config.head_num_experts),
            ("slots_per_expert", config.head_slots // config.head_num_experts),
            ("expert_hidden", config.head_expert_hidden), ("aggregate", config.head_aggregate))


def networks(config: Config, action_dim: int) -> Networks:
    """The flax modules (stateless descriptions; params live in the agent state)."""
    dtype = COMPUTE_DTYPES[config.compute_dtype]
    head = trunk_head(config)
    if config.obs_type == "pixels":
        encoder = encoders.PixelEncoder(dtype=dtype, flatten=not head)
    else:
        encoder = encoders.StateEncoder(hidden_dim=config.state_encoder_dim, dtype=dtype)
    fusion = proprio_dim(config)
    actor = actor_critic.Actor(action_dim, config.feature_dim, config.hidden_dim, dtype=dtype, proprio_dim=fusion,
                               head=head)
    critic = actor_critic.Critic(config.feature_dim, config.hidden_dim, dtype=dtype,
                                 hidden_dropout=getattr(config, "critic_hidden_dropout", 0.0),
                                 hidden_layer_norm=getattr(config, "critic_hidden_layer_norm", False),
                                 proprio_dim=fusion, head=head)
    return Networks(encoder, actor, critic)


def proprio_kwargs(config: Config, proprio: Optional[jnp.ndarray]) -> Dict[str, jnp.ndarray]:
    """{"proprio": proprio} for a network apply when the config fuses proprioception, else {} (a proprio
    vector given to networks without fusion is not used, so one loop serves every agent)."""
    return {"proprio": proprio} if proprio_dim(config) else {}


def dummy_proprio(config: Config) -> Dict[str, jnp.ndarray]:
    """proprio_kwargs of a zero vector (batch 1), for init and shape-only calls."""
    return proprio_kwargs(config, jnp.zeros((1, proprio_dim(config)), jnp.float32))


def optimizer(config: Config) -> optax.GradientTransformation:
    """Adam with PyTorch's defaults (b1 0.9, b2 0.999, eps 1e-8, no weight decay, no clipping)."""
    return optax.adam(config.lr, b1=0.9, b2=0.999, eps=1e-8)


class DrQV2State(struct.PyTreeNode):
    """Everything an update changes. A pytree: stack it over seeds, save it with orbax.

    Params are flax variable dicts ({"params": ...}). `config`, `action_dim` and `obs_shape` are
    static (not leaves): they are part of the tree structure and must be equal across stacked seeds.
    """

    encoder_params: Params
    actor_params: Params
    critic_params: Params
    critic_target_params: Params  # copy of the whole critic (trunk + Q1 + Q2); no target encoder
    encoder_opt_state: optax.OptState
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    config: Config = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    obs_shape: Tuple[int, ...] = struct.field(pytree_node=False)  # without the batch axis


def _dummy_obs(obs_shape: Tuple[int, ...], config: Config) -> jnp.ndarray:
    if config.obs_type == "pixels":
        if len(obs_shape) != 3:
            raise ValueError(f"pixel observations must be (H, W, C) channel-last, got obs_shape {obs_shape}")
        return jnp.zeros((1, *obs_shape), jnp.uint8)
    if len(obs_shape) != 1:
        raise ValueError(f"state observations must be a vector (D,), got obs_shape {obs_shape}")
    return jnp.zeros((1, *obs_shape), jnp.float32)


def init_params(key: jax.Array, obs_shape: Tuple[int, ...], action_dim: int, config: Config
                ) -> Tuple[Params, Params, Params]:
    """Freshly initialized (encoder, actor, critic) params, one key each (§1.4 init).

    Also what DrM's shrink-and-perturb blends towards.
    """
    nets = networks(config, action_dim)
    key_encoder, key_actor, key_critic = jax.random.split(key, 3)
    dummy_obs = _dummy_obs(tuple(obs_shape), config)
    encoder_params = nets.encoder.init(key_encoder, dummy_obs)
    features = jnp.zeros(jax.eval_shape(nets.encoder.apply, encoder_params, dummy_obs).shape)
    actor_params = nets.actor.init(key_actor, features, **dummy_proprio(config))
    critic_params = nets.critic.init(key_critic, features, jnp.zeros((1, action_dim)), **dummy_proprio(config))
    return encoder_params, actor_params, critic_params


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _create(key: jax.Array, obs_shape: Tuple[int, ...], action_dim: int, config: Config) -> DrQV2State:
    encoder_params, actor_params, critic_params = init_params(key, obs_shape, action_dim, config)
    opt = optimizer(config)
    return DrQV2State(
        encoder_params=encoder_params,
        actor_params=actor_params,
        critic_params=critic_params,
        critic_target_params=critic_params,
        encoder_opt_state=opt.init(encoder_params),
        actor_opt_state=opt.init(actor_params),
        critic_opt_state=opt.init(critic_params),
        config=config,
        action_dim=action_dim,
        obs_shape=obs_shape,
    )


def create(key: jax.Array, obs_shape: Sequence[int], action_dim: int, config: Config) -> DrQV2State:
    """Fresh agent: networks initialized as in §1.4, critic target = critic, fresh Adam states.

    obs_shape excludes the batch axis: (H, W, C) channel-last for pixels (84, 84, 9), (D,) for states.
    """
    if not isinstance(action_dim, int) or action_dim < 1:
        raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
    return _create(key, tuple(int(d) for d in obs_shape), action_dim, config)


# ----------------------------------------------------------------------------------------------
# 3. Pieces of an update (pure functions)
# ----------------------------------------------------------------------------------------------


def stddev(config: Config, step) -> jnp.ndarray:
    """Exploration std sigma(step) from the schedule string (step in agent steps; jit-safe)."""
    return jnp.asarray(schedules.parse(config.stddev_schedule)(step), jnp.float32)


def encode(state: DrQV2State, obs: jnp.ndarray) -> jnp.ndarray:
    """Encoder features of a batch of observations with the current encoder."""
    return networks(state.config, state.action_dim).encoder.apply(state.encoder_params, obs)


def encode_with_pullback(state: DrQV2State, obs: jnp.ndarray) -> Tuple[jnp.ndarray, Callable]:
    """Features and the encoder's VJP: pullback(d loss/d features) -> (d loss/d encoder_params,).

    The features are computed once and shared by the critic loss (through the pullback), the actor
    loss (detached) and, in DrM, the dormant ratio and the V loss.
    """
    encoder = networks(state.config, state.action_dim).encoder
    return jax.vjp(lambda params: encoder.apply(params, obs), state.encoder_params)


def augment_batch(config: Config, obs: jnp.ndarray, next_obs: jnp.ndarray, key: jax.Array
                  ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Independent random shifts of obs and next_obs for pixels (float32 in [0, 255]); states unchanged."""
    if config.obs_type != "pixels":
        return obs, next_obs
    key_obs, key_next_obs = jax.random.split(key)
    return (augment.random_shift(key_obs, obs, config.augment_pad),
            augment.random_shift(key_next_obs, next_obs, config.augment_pad))


def sample_action(mu: jnp.ndarray, std, clip: Optional[float], key: jax.Array) -> jnp.ndarray:
    """TruncatedNormal sample (§1.5): mu + clip(std * eps, -clip, clip), then clamped to [-1+1e-6, 1-1e-6]
    with a straight-through gradient (forward clamped, d action / d mu = 1 everywhere). clip=None: no clip."""
    noise = jax.random.normal(key, mu.shape, mu.dtype) * std
    if clip is not None:
        noise = jnp.clip(noise, -clip, clip)
    action = mu + noise
    clamped = jnp.clip(action, -1.0 + 1e-6, 1.0 - 1e-6)
    # (a - sg(a)) is exactly 0 forward and carries the identity gradient; the value is exactly `clamped`.
    return action - jax.lax.stop_gradient(action) + jax.lax.stop_gradient(clamped)


def normal_log_prob(action: jnp.ndarray, mu: jnp.ndarray, std) -> jnp.ndarray:
    """log N(action; mu, std) summed over action dims, shape (B,). Logged only (as in the official code)."""
    log_std = jnp.log(std)
    per_dim = -0.5 * jnp.square((action - mu) / std) - log_std - 0.5 * math.log(2 * math.pi)
    return per_dim.sum(axis=-1)


def critic_target(reward: jnp.ndarray, discount: jnp.ndarray, target_q1: jnp.ndarray,
                  target_q2: jnp.ndarray) -> jnp.ndarray:
    """y = R + Gamma * min(Q1_tgt, Q2_tgt); R and Gamma are the n-step reward and discount, shape (B,)."""
    return reward.reshape(-1) + discount.reshape(-1) * jnp.minimum(target_q1, target_q2)


def critic_loss(q1: jnp.ndarray, q2: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """mean((Q1 - y)^2) + mean((Q2 - y)^2)."""
    return jnp.mean(jnp.square(q1 - target)) + jnp.mean(jnp.square(q2 - target))


def actor_loss(q1: jnp.ndarray, q2: jnp.ndarray) -> jnp.ndarray:
    """-mean(min(Q1, Q2)) at the actor's sampled actions."""
    return -jnp.mean(jnp.minimum(q1, q2))


def soft_update(target_params: Params, online_params: Params, tau: float) -> Params:
    """target <- tau * online + (1 - tau) * target."""
    return optax.incremental_update(online_params, target_params, tau)


def actor_mean(state: DrQV2State, actor_params: Params, features: jnp.ndarray,
               proprio: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """mu of the actor with `actor_params` (proprio used only when the config fuses it)."""
    actor = networks(state.config, state.action_dim).actor
    return actor.apply(actor_params, features, **proprio_kwargs(state.config, proprio))


def critic_values(state: DrQV2State, critic_params: Params, features: jnp.ndarray, action: jnp.ndarray,
                  proprio: Optional[jnp.ndarray] = None, dropout_key: Optional[jax.Array] = None
                  ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """(Q1, Q2) of the critic with `critic_params`. dropout_key None: no dropout (eval mode); a key:
    the critic's dropout layers (if any) drop units with masks drawn from it (train mode)."""
    critic = networks(state.config, state.action_dim).critic
    kwargs = proprio_kwargs(state.config, proprio)
    if dropout_key is not None:
        kwargs.update(deterministic=False, rngs={"dropout": dropout_key})
    return critic.apply(critic_params, features, action, **kwargs)


def target_q_values(state: DrQV2State, next_features: jnp.ndarray, std, key: jax.Array, *,
                    next_proprio: Optional[jnp.ndarray] = None, dropout_key: Optional[jax.Array] = None
                    ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Target critic's (Q1, Q2) at (h', a'), a' ~ pi(h', std) with clip `stddev_clip`. No gradients."""
    next_features = jax.lax.stop_gradient(next_features)
    mu = actor_mean(state, state.actor_params, next_features, next_proprio)
    next_action = sample_action(mu, std, state.config.stddev_clip, key)
    q1, q2 = critic_values(state, state.critic_target_params, next_features, next_action, next_proprio, dropout_key)
    return jax.lax.stop_gradient(q1), jax.lax.stop_gradient(q2)


def update_critic(state: DrQV2State, features: jnp.ndarray, encoder_pullback: Callable,
                  action: jnp.ndarray, target: jnp.ndarray, *, proprio: Optional[jnp.ndarray] = None,
                  dropout_key: Optional[jax.Array] = None) -> Tuple[DrQV2State, Metrics]:
    """One Adam step of the critic AND the encoder on critic_loss(Q1(h, a), Q2(h, a), y).

    `features, encoder_pullback = encode_with_pullback(state, augmented_obs)`; `target` is y (no grad).
    """
    config = state.config
    target = jax.lax.stop_gradient(target)

    def loss_fn(critic_params, features):
        q1, q2 = critic_values(state, critic_params, features, action, proprio, dropout_key)
        return critic_loss(q1, q2, target), (q1, q2)

    (loss, (q1, q2)), (critic_grads, feature_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.critic_params, features)
    (encoder_grads,) = encoder_pullback(feature_grads)

    opt = optimizer(config)
    critic_updates, critic_opt_state = opt.update(critic_grads, state.critic_opt_state, state.critic_params)
    encoder_updates, encoder_opt_state = opt.update(encoder_grads, state.encoder_opt_state, state.encoder_params)
    state = state.replace(
        critic_params=optax.apply_updates(state.critic_params, critic_updates),
        critic_opt_state=critic_opt_state,
        encoder_params=optax.apply_updates(state.encoder_params, encoder_updates),
        encoder_opt_state=encoder_opt_state,
    )
    metrics = {
        "critic_loss": loss,
        "critic_q1": q1.mean(),
        "critic_q2": q2.mean(),
        "critic_target_q": target.mean(),
    }
    return state, metrics


def update_actor(state: DrQV2State, features: jnp.ndarray, std, key: jax.Array, *,
                 proprio: Optional[jnp.ndarray] = None, dropout_key: Optional[jax.Array] = None
                 ) -> Tuple[DrQV2State, Metrics]:
    """One Adam step of the actor only, on actor_loss with the state's (already updated) critic.

    `features` are detached here: the actor never sends gradients into the encoder (or the critic).
    """
    config = state.config
    features = jax.lax.stop_gradient(features)

    def loss_fn(actor_params):
        mu = actor_mean(state, actor_params, features, proprio)
        action = sample_action(mu, std, config.stddev_clip, key)
        q1, q2 = critic_values(state, state.critic_params, features, action, proprio, dropout_key)
        return actor_loss(q1, q2), (mu, action)

    (loss, (mu, action)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.actor_params)
    opt = optimizer(config)
    updates, actor_opt_state = opt.update(grads, state.actor_opt_state, state.actor_params)
    state = state.replace(actor_params=optax.apply_updates(state.actor_params, updates),
                          actor_opt_state=actor_opt_state)
    std = jnp.asarray(std, jnp.float32)
    entropy_per_dim = 0.5 + 0.5 * math.log(2 * math.pi) + jnp.log(std)
    metrics = {
        "actor_loss": loss,
        "actor_logprob": normal_log_prob(action, mu, std).mean(),
        "actor_ent": entropy_per_dim * state.action_dim,
        "actor_stddev": std,
    }
    return state, metrics


def soft_update_target(state: DrQV2State) -> DrQV2State:
    """EMA of all critic params into the target (tau = critic_target_tau)."""
    return state.replace(critic_target_params=soft_update(
        state.critic_target_params, state.critic_params, state.config.critic_target_tau))


# ----------------------------------------------------------------------------------------------
# 4. act and update
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("eval_mode",))
def act(state: DrQV2State, obs: jnp.ndarray, step, key: jax.Array, eval_mode: bool,
        proprio: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """Actions (B, A) for a batch of observations (no augmentation).

    eval_mode: mu. Training: mu + sigma(step) * eps, unclipped (issue #13; `clip_when_acting` to
    change), clamped to [-1+1e-6, 1-1e-6]; i.i.d. U(-1, 1) while step < num_expl_steps.
    proprio: (B, P) proprioceptive vectors, used only when the config fuses them.
    """
    return act_with_stddev(state, obs, stddev(state.config, step), step, key, eval_mode, proprio)


def act_with_stddev(state: DrQV2State, obs: jnp.ndarray, std, step, key: jax.Array, eval_mode: bool,
                    proprio: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """The body of `act` with the exploration std given (DrM passes its dormant-ratio-driven sigma)."""
    config = state.config
    mu = actor_mean(state, state.actor_params, encode(state, obs), proprio)
    if eval_mode:
        return mu
    key_noise, key_uniform = jax.random.split(key)
    clip = config.stddev_clip if config.clip_when_acting else None
    noisy = sample_action(mu, std, clip, key_noise)
    uniform = jax.random.uniform(key_uniform, mu.shape, mu.dtype, minval=-1.0, maxval=1.0)
    return jnp.where(step < config.num_expl_steps, uniform, noisy)


@jax.jit
def update(state: DrQV2State, batch: Dict[str, jnp.ndarray], step, key: jax.Array
           ) -> Tuple[DrQV2State, Metrics]:
    """One DrQ-v2 update (§1.6). batch: obs, action, reward, discount, next_obs (n-step tuple).

    Keys: split(key, 3) -> augmentation (itself split into obs / next_obs), target action noise,
    actor action noise.
    """
    config = state.config
    key_augment, key_target, key_actor = jax.random.split(key, 3)
    obs, next_obs = augment_batch(config, batch["obs"], batch["next_obs"], key_augment)
    std = stddev(config, step)

    # h with the encoder's pullback (critic loss trains the encoder); h' detached, same online encoder.
    features, encoder_pullback = encode_with_pullback(state, obs)
    next_features = jax.lax.stop_gradient(encode(state, next_obs))

    target_q1, target_q2 = target_q_values(state, next_features, std, key_target)
    target = critic_target(batch["reward"], batch["discount"], target_q1, target_q2)
    state, critic_metrics = update_critic(state, features, encoder_pullback, batch["action"], target)
    # The actor uses the pre-update features h (detached) and the post-update critic.
    state, actor_metrics = update_actor(state, features, std, key_actor)
    state = soft_update_target(state)

    metrics = {"batch_reward": jnp.mean(batch["reward"]), **critic_metrics, **actor_metrics}
    return state, {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
