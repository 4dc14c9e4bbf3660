"""TD-MPC (Hansen, Wang, Su 2022): temporal-difference learning for model-predictive control.

A latent world model (TOLD: encoder, latent dynamics, reward, twin Q, policy prior) is trained on
H-step sequences from a prioritized replay; actions come from an MPPI planner in latent space that
scores sampled action sequences by H predicted rewards plus a terminal Q value. States or pixels.
Spec: shared/spec/model-offline-onpolicy-agents.md §2 (and the TD-MPC rows of §10); defaults are the
official code's (S1 = nicklashansen/tdmpc at f4d85ec: cfgs/*.yaml, src/algorithm/tdmpc.py,
src/algorithm/helper.py, src/train.py). Read top to bottom:

  1. Config, the per-domain overrides (cfgs/tasks/*.yaml) and config_for_task
  2. the model (networks/world_model.py) and the agent state (TDMPCState), create
  3. the pieces of an update as pure functions: the truncated-normal action noise, TD targets, the
     rho-weighted sequence losses, the model loss, the policy loss, the EMA
  4. the planner: `mppi` on an abstract value function, then `plan` for one observation
  5. update (jitted): one model step, one policy step, EMA on even steps

Layouts. Time-major inside the losses, as the official code: (H, B, ...). The replay's batch is
batch-major: obs (B, H+1, *obs_shape), action (B, H, A), reward (B, H), weights (B,). Pixels are
channel-last uint8 (h, w, frame_stack * C) in the batch and in `plan`'s observation, pixax's layout
(envs/dmc.py, data/sequence_replay.py) and the one flax's convolutions and core/augment.py take; the
official code is channel-first, which matters only for the flatten order when loading its weights.

Step accounting: every step here is an AGENT step (one decision, action_repeat frames). The loop calls
`plan` with the agent step at the START of the current episode (so the planning horizon and the seed
phase change only between episodes) and `update(state, batch, step + i, key)` for the i-th update of
an update round; `update` stores std_schedule(step) in the state as the planner's std floor (S1).

Where this differs from the official code (a spec decision): the planner's executed action is clamped
to [-1, 1] (`clip_final_action=True`; S1 steps and stores the unclamped elite action + noise, spec §10
#8; False reproduces S1).

Token heads (pixax's option, "Don't flatten, tokenize!", pixel-agents spec §4): the `head_*` fields (DrQ-v2's
names, rules and `drqv2.trunk_head`) put a networks/tokens.py Head where the pixel encoder flattens its last
feature map; the default "flatten" is the official encoder, parameter tree included.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import chex
import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from agents import drqv2  # generic config helpers (field types, validation), the token-head settings
from core import augment, schedules
from networks import world_model
from networks.world_model import TOLD

Params = Dict[str, Any]
Metrics = Dict[str, jnp.ndarray]

DEFAULT_TASK = "quadruped_run"  # S1 cfgs/default.yaml task: quadruped-run
DEFAULT_OBS = "states"  # S1 cfgs/default.yaml modality: state
OBS_TYPES = ("states", "pixels")

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Every default is the official TD-MPC value for states on a default-domain task (S1
    cfgs/default.yaml + cfgs/tasks/default.yaml), unless the comment says otherwise. Step counts in
    the planner/learner are AGENT steps; frame counts (the loop's fields) are environment steps."""

    obs_type: str = "states"  # S1 modality ("state" there); "pixels" applies PIXEL_OVERRIDES
    # Architecture (S1 default.yaml / pixels.yaml).
    latent_dim: int = 50  # S1 latent_dim; 100 for humanoid and dog
    enc_dim: int = 256  # S1 enc_dim: hidden width of the state encoder
    mlp_dim: int = 512  # S1 mlp_dim: dynamics, reward, Q and policy widths
    num_channels: int = 32  # S1 pixels.yaml num_channels (pixel encoder)
    # Token head of the pixel encoder ("Don't flatten, tokenize!", pixel-agents spec §4; pixax's option,
    # not in TD-MPC): the fields, rules and meaning of agents/drqv2.py's, set where the encoder flattens
    # its last feature map (3x3x32 at 84^2) before the Linear to the latent. "flatten" is TD-MPC.
    head: str = "flatten"  # networks.tokens.HEADS; "tokenize" / "softmoe" need obs_type="pixels"
    head_tokenizer: str = "perconv"  # one token per position (spec §4.2's best): 9 tokens of 32 at 84^2
    head_patch_size: int = 1  # "patch" / "pool" only; at most the feature map's side (3 at 84^2)
    head_embed_dim: int = 32  # "patch" only: the tokens' width
    head_num_experts: int = 1  # SoftMoE-1 (pixel-agents spec §4.4, §4.7)
    head_slots: int = 9  # total slots (head_slots / head_num_experts per expert): one per 84^2 token
    head_expert_hidden: int = 256  # spec §4.7's expert width (also TD-MPC's enc_dim)
    head_aggregate: str = "flatten"  # 9 x 32 = 288: the same Linear(288 -> latent) as the flatten head
    # Learning (S1 default.yaml).
    lr: float = 1e-3  # S1 lr (Adam, PyTorch defaults); 3e-4 for pixels and dog
    grad_clip_norm: float = 10.0  # S1 grad_clip_norm (model and policy steps)
    horizon: int = 5  # S1 horizon: sequence length of the losses and maximal planning horizon
    rho: float = 0.5  # S1 rho: weight rho^t of time step t in every loss
    consistency_coef: float = 2.0  # S1 consistency_coef
    reward_coef: float = 0.5  # S1 reward_coef
    value_coef: float = 0.1  # S1 value_coef
    loss_clamp: float = 1e4  # S1 tdmpc.py update: per-sample loss sums and priorities clamped at 1e4
    tau: float = 0.01  # S1 tau: EMA rate of the whole target model
    update_freq: int = 2  # S1 update_freq: EMA on updates with step % update_freq == 0
    discount: float = 0.99  # S1 discount
    # Noise of the policy prior (S1 helper.py TruncatedNormal, tdmpc.py TOLD.pi).
    min_std: float = 0.05  # S1 min_std: std of every policy-prior sample
    noise_clip: float = 0.3  # S1 TOLD.pi: sample(clip=0.3)
    # Planner (S1 default.yaml; tdmpc.py plan).
    iterations: int = 6  # S1 iterations; 12 humanoid, 8 dog
    num_samples: int = 512  # S1 num_samples: Gaussian action sequences per iteration
    num_elites: int = 64  # S1 num_elites
    mixture_coef: float = 0.05  # S1 mixture_coef: int(0.05 * 512) = 25 policy-prior sequences
    temperature: float = 0.5  # S1 temperature; it MULTIPLIES value gaps (an inverse temperature, §10 #16)
    momentum: float = 0.1  # S1 momentum of the sampling mean (the std has none)
    max_std: float = 2.0  # S1 plan: initial sampling std and upper clamp of the std
    std_schedule: str = "linear(0.5,0.05,25000)"  # S1 std_schedule: lower clamp of the std (agent steps)
    horizon_schedule: str = "linear(1,5,25000)"  # S1 horizon_schedule: planning horizon (agent steps)
    clip_final_action: bool = True  # spec §2.7 / §10 #8; S1 does not clamp (False reproduces it)
    # Prioritized replay (S1 default.yaml), read by the sequence replay.
    per_alpha: float = 0.6  # S1 per_alpha
    per_beta: float = 0.4  # S1 per_beta
    # Loop settings, read by the launcher (kept here so one object holds a run's hyperparameters).
    action_repeat: int = 4  # S1 tasks/default.yaml; per domain in DOMAIN_OVERRIDES
    frame_stack: int = 1  # states are not stacked; pixels.yaml frame_stack 3
    image_size: int = 84  # S1 pixels.yaml img_size (random-shift pad = int(image_size / 21))
    num_train_frames: int = 500_000  # S1 train_steps x action_repeat; 3M pixels and humanoid, 5M dog
    num_seed_frames: int = 20_000  # S1 seed_steps 5000 agent steps x action_repeat (config_for_task rederives it)
    update_every_steps: int = 1  # S1 train.py: episode_length updates after each episode (1 per agent step)
    nstep: int = 1  # one-step TD targets
    batch_size: int = 512  # S1 batch_size; 256 pixels, 2048 dog
    replay_capacity: int = 125_000  # S1 min(train_steps, 1e6) agent steps (config_for_task rederives it)
    eval_every_frames: int = 20_000  # S1 eval_freq (environment steps)
    num_eval_episodes: int = 10  # S1 eval_episodes

    def __post_init__(self):
        problems = []
        for name in ("std_schedule", "horizon_schedule"):
            try:
                schedules.parse(getattr(self, name))
            except ValueError as error:
                problems.append(f"{name}: {error}")
        drqv2.validate_config(self, problems)

    def _rules(self):
        """(field, valid?, rule) triples checked by drqv2.validate_config."""
        num_candidates = self.num_samples + num_policy_trajectories(self)
        return [
            ("obs_type", self.obs_type in OBS_TYPES, f"one of {OBS_TYPES}"),
            ("latent_dim", self.latent_dim >= 1, ">= 1"),
            ("enc_dim", self.enc_dim >= 1, ">= 1"),
            ("mlp_dim", self.mlp_dim >= 1, ">= 1"),
            ("num_channels", self.num_channels >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("grad_clip_norm", self.grad_clip_norm > 0, "> 0"),
            ("horizon", self.horizon >= 1, ">= 1"),
            ("rho", 0 < self.rho <= 1, "in (0, 1]"),
            ("consistency_coef", self.consistency_coef >= 0, ">= 0"),
            ("reward_coef", self.reward_coef >= 0, ">= 0"),
            ("value_coef", self.value_coef >= 0, ">= 0"),
            ("loss_clamp", self.loss_clamp > 0, "> 0"),
            ("tau", 0 < self.tau <= 1, "in (0, 1]"),
            ("update_freq", self.update_freq >= 1, ">= 1"),
            ("discount", 0 <= self.discount <= 1, "in [0, 1]"),
            ("min_std", self.min_std >= 0, ">= 0"),
            ("noise_clip", self.noise_clip >= 0, ">= 0"),
            ("iterations", self.iterations >= 1, ">= 1"),
            ("num_samples", self.num_samples >= 1, ">= 1"),
            ("mixture_coef", 0 <= self.mixture_coef <= 1, "in [0, 1]"),
            ("num_elites", 1 <= self.num_elites <= num_candidates,
             f"in [1, num_samples + int(mixture_coef * num_samples)] = [1, {num_candidates}]"),
            ("temperature", self.temperature > 0, "> 0"),
            ("momentum", 0 <= self.momentum <= 1, "in [0, 1]"),
            ("max_std", self.max_std > 0, "> 0"),
            ("per_alpha", self.per_alpha >= 0, ">= 0"),
            ("per_beta", self.per_beta >= 0, ">= 0"),
            ("action_repeat", self.action_repeat >= 1, ">= 1"),
            ("frame_stack", self.frame_stack >= 1, ">= 1"),
            ("image_size", self.obs_type != "pixels" or self.image_size >= world_model.MIN_IMAGE_SIZE,
             f">= {world_model.MIN_IMAGE_SIZE} for pixels (four stride-2 VALID convs)"),
            *head_rules(self),
            ("num_train_frames", self.num_train_frames >= 1, ">= 1"),
            ("num_seed_frames", self.num_seed_frames >= 0, ">= 0"),
            ("update_every_steps", self.update_every_steps >= 1, ">= 1"),
            ("nstep", self.nstep == 1, "1 (TD-MPC's TD targets are one-step)"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("replay_capacity", self.replay_capacity >= 1, ">= 1"),
            ("eval_every_frames", self.eval_every_frames >= 1, ">= 1"),
            ("num_eval_episodes", self.num_eval_episodes >= 0, ">= 0"),
        ]

    def feature_map_size(self) -> int:
        """Side of the pixel encoder's last feature map, the one a token head tokenizes (3 at 84^2)."""
        return world_model.feature_map_size(self.image_size)


HEAD_FIELDS = ("head", "head_tokenizer", "head_patch_size", "head_embed_dim", "head_num_experts", "head_slots",
               "head_expert_hidden", "head_aggregate")


def head_rules(config: Config) -> List[Tuple[str, bool, str]]:
    """The (field, valid?, rule) triples of the token-head fields: agents/drqv2.py's own rules (the same
    fields, read from drqv2.Config._rules on a view of drqv2's defaults with this config's obs_type and
    head fields, so both agents check them alike), plus: a "patch" / "pool" tokenizer's patch fits in
    the encoder's feature map."""
    view = types.SimpleNamespace(**{field.name: field.default for field in dataclasses.fields(drqv2.Config)})
    view.__dict__.update({name: getattr(config, name) for name in ("obs_type", *HEAD_FIELDS)})
    rules = [rule for rule in drqv2.Config._rules(view) if rule[0] in HEAD_FIELDS]
    side = config.feature_map_size()
    patch_fits = (config.head == "flatten" or config.head_tokenizer not in ("patch", "pool")
                  or config.head_patch_size <= side)
    return rules + [("head_patch_size", patch_fits,
                     f"<= {side}, the side of the encoder's {side}x{side} feature map at image_size="
                     f"{config.image_size}, with the {config.head_tokenizer!r} tokenizer")]


SEED_STEPS = 5000  # S1 seed_steps (agent steps of uniform random actions, then 5000 updates at once)
MAX_BUFFER_SIZE = 1_000_000  # S1 max_buffer_size (agent steps); the buffer holds min(train_steps, this)

# S1 merges default.yaml <- pixels.yaml (if pixels) <- tasks/<domain>.yaml (tasks/default.yaml for
# any other domain), so a domain's values beat the pixel ones (dog pixels keep batch 2048).
PIXEL_OVERRIDES: Dict[str, Any] = {  # S1 cfgs/pixels.yaml
    "lr": 3e-4, "batch_size": 256, "frame_stack": 3, "image_size": 84, "num_train_frames": 3_000_000,
}
DOMAIN_OVERRIDES: Dict[str, Dict[str, Any]] = {  # S1 cfgs/tasks/<domain>.yaml
    "cartpole": {"action_repeat": 8},
    "finger": {"action_repeat": 2},
    "walker": {"action_repeat": 2},
    "humanoid": {"action_repeat": 2, "iterations": 12, "latent_dim": 100, "num_train_frames": 3_000_000},
    "dog": {"action_repeat": 2, "iterations": 8, "latent_dim": 100, "batch_size": 2048, "lr": 3e-4,
            "num_train_frames": 5_000_000},
}
DEFAULT_DOMAIN_OVERRIDES: Dict[str, Any] = {"action_repeat": 4}  # S1 cfgs/tasks/default.yaml
# dm_control domains as pixax names tasks ("<domain>_<task>"; "cup" is DrQ-v2's ball_in_cup alias).
DMC_DOMAINS = ("acrobot", "ball_in_cup", "cartpole", "cheetah", "cup", "dog", "finger", "fish", "hopper",
               "humanoid", "humanoid_CMU", "manipulator", "pendulum", "point_mass", "quadruped", "reacher",
               "stacker", "swimmer", "walker")


def domain_of(task: str) -> str:
    """The dm_control domain of a pixax task name (longest matching domain prefix): 'humanoid' for
    'humanoid_walk', 'humanoid_CMU' for 'humanoid_CMU_run' (S1 would give it tasks/default.yaml)."""
    matches = [d for d in DMC_DOMAINS if isinstance(task, str) and task.startswith(d + "_") and len(task) > len(d) + 1]
    if not matches:
        raise ValueError(f"unknown task {task!r}: TD-MPC runs dm_control tasks named '<domain>_<task>' "
                         f"(e.g. 'walker_walk') with a domain in {DMC_DOMAINS}")
    return max(matches, key=len)


def config_for_task(task: str, **user_overrides) -> Config:
    """The official TD-MPC config of a dm_control task: defaults <- pixels.yaml (obs_type="pixels") <-
    the domain's yaml <- `user_overrides`. num_seed_frames (5000 agent steps) and replay_capacity
    (min(train agent steps, 1e6)) are derived from the resolved action_repeat / num_train_frames
    unless given."""
    domain = domain_of(task)
    valid_fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(user_overrides) - valid_fields)
    if unknown:
        raise ValueError(f"unknown Config field(s) {unknown}; valid fields: {sorted(valid_fields)}")
    values: Dict[str, Any] = {}
    if user_overrides.get("obs_type", Config.obs_type) == "pixels":
        values.update(PIXEL_OVERRIDES)
    values.update(DOMAIN_OVERRIDES.get(domain, DEFAULT_DOMAIN_OVERRIDES))
    values.update(user_overrides)
    action_repeat = values.get("action_repeat", Config.action_repeat)
    num_train_frames = values.get("num_train_frames", Config.num_train_frames)
    if isinstance(action_repeat, int) and isinstance(num_train_frames, int) and action_repeat >= 1:
        values.setdefault("num_seed_frames", SEED_STEPS * action_repeat)
        values.setdefault("replay_capacity", max(1, min(num_train_frames // action_repeat, MAX_BUFFER_SIZE)))
    return Config(**values)


def seed_steps(config: Config) -> int:
    """Agent steps of uniform random actions (S1 seed_steps = num_seed_frames / action_repeat)."""
    return config.num_seed_frames // config.action_repeat


def num_policy_trajectories(config: Config) -> int:
    """Policy-prior action sequences among the planner's candidates: int(mixture_coef * num_samples)."""
    return int(config.mixture_coef * config.num_samples)


def planning_horizon(config: Config, step: int) -> int:
    """int(min(H, horizon_schedule(step))), a Python int for `plan`'s static `horizon` (host side)."""
    return int(min(config.horizon, schedules.parse(config.horizon_schedule)(int(step))))


def std_floor(config: Config, step) -> jnp.ndarray:
    """The planner's lower std clamp std_schedule(step) (jit-safe), float32 scalar."""
    return jnp.asarray(schedules.parse(config.std_schedule)(step), jnp.float32)


def augment_pad(config: Config) -> int:
    """Random-shift padding in pixels: int(image_size / 21) (S1 RandomShiftsAug); 0 for states."""
    return int(config.image_size / 21) if config.obs_type == "pixels" else 0


# ----------------------------------------------------------------------------------------------
# 2. Model and agent state
# ----------------------------------------------------------------------------------------------


def model(config: Config, action_dim: int) -> TOLD:
    """The TOLD modules (stateless descriptions; params live in the agent state). The pixel encoder's
    token head is DrQ-v2's `trunk_head` of the config's head fields (() for "flatten")."""
    return world_model.make_told(config.obs_type, action_dim, config.latent_dim, config.enc_dim,
                                 config.mlp_dim, config.num_channels, head=drqv2.trunk_head(config))


MODEL_KEYS = ("encoder", "dynamics", "reward", "q")  # what the model step trains (pi has its own step)


def model_params(params: Params) -> Params:
    """The model step's parameters: everything but the policy prior."""
    return {name: params[name] for name in MODEL_KEYS}


def model_optimizer(config: Config) -> optax.GradientTransformation:
    """Global grad-norm clip, then Adam with PyTorch's defaults (S1 clip_grad_norm_ + torch.optim.Adam)."""
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optax.adam(config.lr))


def pi_optimizer(config: Config) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optax.adam(config.lr))


class TDMPCState(struct.PyTreeNode):
    """Everything an update changes. A pytree: stack it over seeds, save it with orbax.

    `config`, `action_dim` and `obs_shape` are static (not leaves) and must agree across stacked seeds.
    """

    params: Params  # {"encoder", "dynamics", "reward", "q", "pi"}
    target_params: Params  # EMA of the whole model (only the encoder and Q are read)
    model_opt_state: optax.OptState  # over model_params(params)
    pi_opt_state: optax.OptState  # over params["pi"]
    std_floor: jnp.ndarray  # float32 scalar: std_schedule(step) of the last update (S1 self.std)
    config: Config = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    obs_shape: Tuple[int, ...] = struct.field(pytree_node=False)  # (D,) or channel-last (h, w, C)


def to_model_obs(config: Config, obs: jnp.ndarray) -> jnp.ndarray:
    """Observations as the model takes them: states as float32, pixels unchanged (uint8, channel-last)."""
    if config.obs_type != "pixels":
        return obs.astype(jnp.float32)
    return obs


def _check_obs_shape(obs_shape: Tuple[int, ...], config: Config) -> None:
    if config.obs_type == "states":
        if len(obs_shape) != 1:
            raise ValueError(f"state observations must be a vector (D,), got obs_shape {obs_shape}")
        return
    if len(obs_shape) != 3 or obs_shape[0] != obs_shape[1] or obs_shape[0] != config.image_size:
        raise ValueError(f"pixel observations must be channel-last ({config.image_size}, {config.image_size}, C) "
                         f"(image_size={config.image_size}), got obs_shape {obs_shape}")


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _create(key: jax.Array, obs_shape: Tuple[int, ...], action_dim: int, config: Config) -> TDMPCState:
    dtype = jnp.uint8 if config.obs_type == "pixels" else jnp.float32
    obs = to_model_obs(config, jnp.zeros((1, *obs_shape), dtype))
    params = model(config, action_dim).init(key, obs, action_dim)
    return TDMPCState(
        params=params,
        target_params=params,  # S1: deepcopy of the fresh model
        model_opt_state=model_optimizer(config).init(model_params(params)),
        pi_opt_state=pi_optimizer(config).init(params["pi"]),
        std_floor=std_floor(config, 0),  # S1: linear_schedule(std_schedule, 0) before any update
        config=config,
        action_dim=action_dim,
        obs_shape=obs_shape,
    )


def create(key: jax.Array, obs_shape: Sequence[int], action_dim: int, config: Config) -> TDMPCState:
    """Fresh agent: orthogonal init, zero last layers of reward and Q, target = online, fresh Adams.

    obs_shape excludes the batch axis: (D,) for states, channel-last (h, w, frame_stack * C) for pixels.
    """
    if not isinstance(action_dim, int) or isinstance(action_dim, bool) or action_dim < 1:
        raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
    obs_shape = tuple(int(d) for d in obs_shape)
    _check_obs_shape(obs_shape, config)
    return _create(key, obs_shape, action_dim, config)


# ----------------------------------------------------------------------------------------------
# 3. Pieces of an update (pure functions)
# ----------------------------------------------------------------------------------------------


def truncated_noise_action(mu: jnp.ndarray, std, eps: jnp.ndarray, clip: float = 0.3) -> jnp.ndarray:
    """The policy prior's sample (spec §2.4): clamp(mu + clip(std * eps, -clip, clip), -1+1e-6, 1-1e-6).

    Straight-through: the value is exactly the clamped one, the gradient is that of the unclamped
    mu + clip(std * eps) (d action / d mu = 1 everywhere). eps: standard normal of mu's shape."""
    action = mu + jnp.clip(std * eps, -clip, clip)
    clamped = jnp.clip(action, -1.0 + 1e-6, 1.0 - 1e-6)
    return action - jax.lax.stop_gradient(action) + jax.lax.stop_gradient(clamped)


def policy_action(model: TOLD, params: Params, z: jnp.ndarray, eps: jnp.ndarray, config: Config) -> jnp.ndarray:
    """pi(z) + truncated noise with std min_std: the sample used in targets, losses and planning."""
    return truncated_noise_action(model.pi(params, z), config.min_std, eps, config.noise_clip)


def td_targets(model: TOLD, params: Params, target_params: Params, next_obs: jnp.ndarray, reward: jnp.ndarray,
               eps: jnp.ndarray, config: Config) -> jnp.ndarray:
    """y = r + gamma * min(Q1, Q2)_target(z', pi(z') + noise), z' = h(next_obs) with the ONLINE encoder.

    Spec §2.2 / §10 #12: the online encoder of the (augmented) next observation, not the latent rollout
    nor the target encoder; the online policy with min_std noise; the target Q heads. No done mask
    (fixed-length episodes). next_obs (N, *model_obs_shape), reward (N,), eps (N, A) -> y (N,), no gradient.
    """
    next_z = model.encode(params, next_obs)
    next_action = policy_action(model, params, next_z, eps, config)
    q1, q2 = model.q(target_params, next_z, next_action)
    chex.assert_equal_shape([q1, q2, reward])
    return jax.lax.stop_gradient(reward + config.discount * jnp.minimum(q1, q2))


def rho_weights(rho: float, horizon: int) -> jnp.ndarray:
    """(rho^0, ..., rho^{H-1}), float32 (H,)."""
    return jnp.asarray(rho, jnp.float32) ** jnp.arange(horizon, dtype=jnp.float32)


class ModelLosses(NamedTuple):
    """Per-sample (B,) terms of the model loss (S1 tdmpc.py update), and the scalar the step descends."""

    consistency: jnp.ndarray  # sum_t rho^t mean_latent (z_{t+1} - h_target(o_{t+1}))^2, unclamped
    reward: jnp.ndarray  # sum_t rho^t (r_hat_t - r_t)^2, unclamped
    value: jnp.ndarray  # sum_t rho^t [(Q1_t - y_t)^2 + (Q2_t - y_t)^2], unclamped
    priorities: jnp.ndarray  # clamp(sum_t rho^t [|Q1_t - y_t| + |Q2_t - y_t|], 1e4): new PER priorities
    total: jnp.ndarray  # c_cons clamp(consistency) + c_rew clamp(reward) + c_val clamp(value)
    weighted: jnp.ndarray  # scalar: mean_b(total_b * w_b)


def sequence_losses(z_pred: jnp.ndarray, z_target: jnp.ndarray, reward_pred: jnp.ndarray, reward: jnp.ndarray,
                    q1: jnp.ndarray, q2: jnp.ndarray, td_target: jnp.ndarray, weights: jnp.ndarray,
                    config: Config) -> ModelLosses:
    """The rho^t-weighted per-sample losses of spec §2.2 steps 2-4 from the model's predictions.

    Time-major: z_pred, z_target (H, B, L); reward_pred, reward, q1, q2, td_target (H, B); weights (B,)
    (PER importance weights). The 1/H gradient scale is applied by model_loss, not here.
    """
    horizon, batch = reward.shape
    chex.assert_shape([reward_pred, q1, q2, td_target], (horizon, batch))
    chex.assert_equal_shape([z_pred, z_target])
    chex.assert_shape(z_pred, (horizon, batch, None))
    chex.assert_shape(weights, (batch,))
    rho = rho_weights(config.rho, horizon)[:, None]  # (H, 1)
    td_target = jax.lax.stop_gradient(td_target)
    z_target = jax.lax.stop_gradient(z_target)

    consistency = jnp.sum(rho * jnp.mean(jnp.square(z_pred - z_target), axis=-1), axis=0)
    reward_loss = jnp.sum(rho * jnp.square(reward_pred - reward), axis=0)
    value = jnp.sum(rho * (jnp.square(q1 - td_target) + jnp.square(q2 - td_target)), axis=0)
    priority = jnp.sum(rho * (jnp.abs(q1 - td_target) + jnp.abs(q2 - td_target)), axis=0)
    chex.assert_shape([consistency, reward_loss, value, priority], (batch,))

    clamp = config.loss_clamp
    total = (config.consistency_coef * jnp.minimum(consistency, clamp)
             + config.reward_coef * jnp.minimum(reward_loss, clamp)
             + config.value_coef * jnp.minimum(value, clamp))
    chex.assert_shape(total, (batch,))  # a (B, 1) here would broadcast with weights to (B, B) (§10 #10)
    weighted = jnp.mean(total * weights)
    return ModelLosses(consistency, reward_loss, value, jax.lax.stop_gradient(jnp.minimum(priority, clamp)),
                       total, weighted)


def model_loss(model: TOLD, params: Params, target_params: Params, obs: jnp.ndarray, next_obs: jnp.ndarray,
               action: jnp.ndarray, reward: jnp.ndarray, weights: jnp.ndarray, td_eps: jnp.ndarray,
               config: Config) -> Tuple[jnp.ndarray, Tuple[ModelLosses, jnp.ndarray]]:
    """The TOLD model loss of one batch (spec §2.2), time-major, observations already augmented.

    obs (B, *model_obs_shape): o_i; next_obs (H, B, *model_obs_shape): o_{i+1..i+H}; action (H, B, A);
    reward (H, B); weights (B,); td_eps (H, B, A) standard normal noise of the TD-target actions.
    Returns (weighted / H, (ModelLosses, latents)): the scalar to differentiate (S1 scales the gradient
    of the weighted loss by 1/H) and the rollout latents z_0..z_H (H+1, B, L), detached, for the policy.
    """
    horizon, batch = reward.shape
    chex.assert_shape(action, (horizon, batch, None))
    chex.assert_shape(td_eps, action.shape)
    next_flat = next_obs.reshape(horizon * batch, *next_obs.shape[2:])

    z0 = model.encode(params, obs)
    z_target = jax.lax.stop_gradient(model.encode(target_params, next_flat)).reshape(horizon, batch, -1)
    td_target = td_targets(model, params, target_params, next_flat, reward.reshape(-1),
                           td_eps.reshape(horizon * batch, -1), config).reshape(horizon, batch)

    def rollout_step(z, action_t):
        q1, q2 = model.q(params, z, action_t)
        next_z, reward_pred = model.next(params, z, action_t)
        return next_z, (next_z, reward_pred, q1, q2)

    _, (z_pred, reward_pred, q1, q2) = jax.lax.scan(rollout_step, z0, action)
    losses = sequence_losses(z_pred, z_target, reward_pred, reward, q1, q2, td_target, weights, config)
    latents = jax.lax.stop_gradient(jnp.concatenate([z0[None], z_pred], axis=0))
    return losses.weighted / horizon, (losses, latents)


def policy_loss(model: TOLD, params: Params, latents: jnp.ndarray, eps: jnp.ndarray, config: Config) -> jnp.ndarray:
    """L_pi = sum_t rho^t * (-mean_b min(Q1, Q2)(z_t, pi(z_t) + noise)) over latents z_0..z_H (spec §2.3).

    latents (T, B, L), eps (T, B, A). Only params["pi"] receives a gradient: the latents and every other
    module are held fixed (S1 track_q_grad(False), zs detached)."""
    frozen = jax.lax.stop_gradient({name: value for name, value in params.items() if name != "pi"})
    params = {**frozen, "pi": params["pi"]}
    latents = jax.lax.stop_gradient(latents)
    chex.assert_shape(eps, (*latents.shape[:2], None))

    def per_step(z, eps_t):
        q1, q2 = model.q(params, z, policy_action(model, params, z, eps_t, config))
        return -jnp.mean(jnp.minimum(q1, q2))

    per_time = jax.vmap(per_step)(latents, eps)
    chex.assert_shape(per_time, (latents.shape[0],))
    return jnp.sum(rho_weights(config.rho, latents.shape[0]) * per_time)


def ema(target_params: Params, online_params: Params, tau: float) -> Params:
    """target <- (1 - tau) * target + tau * online (S1 helper.ema, lerp_)."""
    return optax.incremental_update(online_params, target_params, tau)


def augment_observations(config: Config, obs: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """Random shift (pad int(image_size/21)) of every (sample, time) frame with its own offset; states
    unchanged. obs (B, T, *model_obs_shape) -> float32 of the same shape (pixels stay in [0, 255]).

    S1 calls its augmentation once on o_i and once per next observation, each drawing independent
    offsets per sample: the same distribution as independent offsets for all B*T frames at once."""
    if config.obs_type != "pixels":
        return obs.astype(jnp.float32)
    flat = obs.reshape(-1, *obs.shape[2:])
    return augment.random_shift(key, flat, augment_pad(config)).reshape(obs.shape)


# ----------------------------------------------------------------------------------------------
# 4. Planner
# ----------------------------------------------------------------------------------------------


class MPPIResult(NamedTuple):
    mean: jnp.ndarray  # (H, A): the final (momentum-averaged) sampling mean, kept for the warm start
    std: jnp.ndarray  # (H, A): sigma' of the last iteration, clamped to [std_floor, max_std]
    elite_actions: jnp.ndarray  # (K, H, A) of the last iteration
    elite_logits: jnp.ndarray  # (K,) temperature * (G_k - max G): log of the unnormalized scores
    elite_values: jnp.ndarray  # (K,)


def mppi(value_fn: Callable[[jnp.ndarray, jax.Array], jnp.ndarray], key: jax.Array, init_mean: jnp.ndarray,
         std_min, *, policy_actions: Optional[jnp.ndarray] = None, num_samples: int = 512, num_elites: int = 64,
         iterations: int = 6, temperature: float = 0.5, momentum: float = 0.1, max_std: float = 2.0) -> MPPIResult:
    """The MPPI iterations of spec §2.7 step 4 on an abstract value function.

    value_fn(actions (N', H, A), key) -> returns (N',); the key is for value_fn's own noise (TD-MPC's
    terminal policy action), fresh each iteration. init_mean (H, A); std starts at max_std.
    policy_actions (N_pi, H, A) are appended to the Gaussian samples in every iteration (fixed).
    Each iteration: A = clip(mean + std * eps, -1, 1); G = nan_to_num(value_fn(A)); top-K elites;
    s_k = exp(temperature * (G_k - max G)); mean' and std' = s-weighted mean and std of the elites;
    std' clamped to [std_min, max_std]; mean <- momentum * mean + (1 - momentum) * mean'; std <- std'.
    """
    horizon, action_dim = init_mean.shape
    if policy_actions is None:
        policy_actions = jnp.zeros((0, horizon, action_dim), init_mean.dtype)
    chex.assert_shape(policy_actions, (None, horizon, action_dim))
    if not 1 <= num_elites <= num_samples + policy_actions.shape[0]:
        raise ValueError(f"num_elites={num_elites} must be in [1, num_samples + policy sequences = "
                         f"{num_samples + policy_actions.shape[0]}]")

    def iteration(carry, key):
        mean, std, *_ = carry
        key_sample, key_value = jax.random.split(key)
        eps = jax.random.normal(key_sample, (num_samples, horizon, action_dim), mean.dtype)
        actions = jnp.concatenate([jnp.clip(mean + std * eps, -1.0, 1.0), policy_actions], axis=0)
        values = jnp.nan_to_num(value_fn(actions, key_value), nan=0.0)  # S1 nan_to_num_(0), §10 #9
        chex.assert_shape(values, (actions.shape[0],))
        elite_values, elite_idx = jax.lax.top_k(values, num_elites)
        elites = actions[elite_idx]
        logits = temperature * (elite_values - jnp.max(elite_values))
        score = jnp.exp(logits)
        score = score / jnp.sum(score)
        total = jnp.sum(score) + 1e-9
        new_mean = jnp.einsum("k,kha->ha", score, elites) / total
        new_std = jnp.sqrt(jnp.einsum("k,kha->ha", score, jnp.square(elites - new_mean)) / total)
        new_std = jnp.clip(new_std, std_min, max_std)
        mean = momentum * mean + (1.0 - momentum) * new_mean
        return (mean, new_std, elites, logits, elite_values), None

    init = (init_mean, jnp.full_like(init_mean, max_std), jnp.zeros((num_elites, horizon, action_dim), init_mean.dtype),
            jnp.zeros((num_elites,), init_mean.dtype), jnp.zeros((num_elites,), init_mean.dtype))
    final, _ = jax.lax.scan(iteration, init, jax.random.split(key, iterations))
    return MPPIResult(*final)


def warm_start_mean(prev_mean: jnp.ndarray, horizon: int, first_step) -> jnp.ndarray:
    """The initial planner mean (horizon, A): zeros on an episode's first step, else the previous final
    mean shifted one step earlier (mean[:-1] = prev_mean[1:horizon]; the last row 0). prev_mean (H_max, A)."""
    shifted = jnp.zeros((horizon, prev_mean.shape[-1]), prev_mean.dtype).at[:-1].set(prev_mean[1:horizon])
    return jnp.where(first_step, jnp.zeros_like(shifted), shifted)


def trajectory_values(model: TOLD, params: Params, z: jnp.ndarray, actions: jnp.ndarray, key: jax.Array,
                      config: Config) -> jnp.ndarray:
    """G = sum_{t<h} gamma^t R(z_t, a_t) + gamma^h min(Q1, Q2)(z_h, pi(z_h) + noise) for every sequence.

    z: the latent (L,) of the current observation; actions (N, h, A) -> (N,)."""
    num, horizon, action_dim = actions.shape
    discounts = config.discount ** jnp.arange(horizon + 1, dtype=jnp.float32)

    def step(carry, inputs):
        z, value = carry
        action_t, discount_t = inputs
        z, reward = model.next(params, z, action_t)
        return (z, value + discount_t * reward), None

    init = (jnp.broadcast_to(z, (num, z.shape[-1])), jnp.zeros((num,), jnp.float32))
    (z_final, value), _ = jax.lax.scan(step, init, (jnp.swapaxes(actions, 0, 1), discounts[:horizon]))
    eps = jax.random.normal(key, (num, action_dim), jnp.float32)
    q1, q2 = model.q(params, z_final, policy_action(model, params, z_final, eps, config))
    return value + discounts[horizon] * jnp.minimum(q1, q2)


def policy_trajectories(model: TOLD, params: Params, z: jnp.ndarray, num: int, horizon: int, action_dim: int,
                        key: jax.Array, config: Config) -> jnp.ndarray:
    """`num` action sequences (num, horizon, A) of the policy prior (min_std noise) rolled out in latent
    space from the latent z (L,); drawn once per plan call and reused by every MPPI iteration (S1)."""

    def step(z, key_t):
        eps = jax.random.normal(key_t, (num, action_dim), jnp.float32)
        action = policy_action(model, params, z, eps, config)
        next_z, _ = model.next(params, z, action)
        return next_z, action

    _, actions = jax.lax.scan(step, jnp.broadcast_to(z, (num, z.shape[-1])), jax.random.split(key, horizon))
    return jnp.swapaxes(actions, 0, 1)


def plan_from_latent(state: TDMPCState, told: TOLD, z: jnp.ndarray, key: jax.Array, prev_mean: jnp.ndarray, *,
                     horizon: int, first_step, eval_mode: bool) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """MPPI (spec §2.7) from the latent z of one observation, with any TOLD-shaped model (MoDem passes its
    fused one): the policy-prior sequences, J iterations, one elite drawn with probabilities proportional
    to exp(temperature * G); its first action, plus sigma'_0 * N(0, 1) in training, clamped to [-1, 1]
    when clip_final_action. Returns (action (A,), the final mean (H_max, A), rows from `horizon` on 0)."""
    config, action_dim, params = state.config, state.action_dim, state.params
    key_pi, key_mppi, key_elite, key_noise = jax.random.split(key, 4)
    num_pi = num_policy_trajectories(config)
    pi_actions = (policy_trajectories(told, params, z, num_pi, horizon, action_dim, key_pi, config)
                  if num_pi else None)
    result = mppi(lambda actions, k: trajectory_values(told, params, z, actions, k, config), key_mppi,
                  warm_start_mean(prev_mean, horizon, first_step), state.std_floor,
                  policy_actions=pi_actions, num_samples=config.num_samples, num_elites=config.num_elites,
                  iterations=config.iterations, temperature=config.temperature, momentum=config.momentum,
                  max_std=config.max_std)
    chosen = jax.random.categorical(key_elite, result.elite_logits)
    action = result.elite_actions[chosen, 0]
    if not eval_mode:
        action = action + result.std[0] * jax.random.normal(key_noise, (action_dim,), jnp.float32)
        if config.clip_final_action:
            action = jnp.clip(action, -1.0, 1.0)
    return action, jnp.zeros_like(prev_mean).at[:horizon].set(result.mean)


@functools.partial(jax.jit, static_argnames=("horizon", "eval_mode"))
def plan(state: TDMPCState, obs: jnp.ndarray, key: jax.Array, prev_mean: jnp.ndarray, *, step, horizon: int,
         first_step, eval_mode: bool) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """One action (A,) for ONE observation (no batch axis; pixels channel-last uint8), and the planner's
    final mean (H_max, A) for the next step's warm start (rows from `horizon` on are 0).

    step: the agent step at the start of the episode (training) or the training step (evaluation).
    horizon: static planning horizon in [1, H] (planning_horizon(config, step)). first_step: bool, no
    warm start on an episode's first step. prev_mean: the mean this returned on the previous step.
    Training while step < seed_steps: Uniform(-1, 1), prev_mean returned unchanged. Otherwise MPPI
    (spec §2.7); one elite drawn with probabilities proportional to exp(temperature * G); its first
    action, plus sigma'_0 * N(0, 1) in training, clamped to [-1, 1] when clip_final_action.
    """
    config = state.config
    action_dim = state.action_dim
    if not 1 <= horizon <= config.horizon:
        raise ValueError(f"horizon must be in [1, {config.horizon}] (config.horizon), got {horizon}")
    if tuple(obs.shape) != state.obs_shape:
        raise ValueError(f"plan takes one observation of shape {state.obs_shape} (no batch axis), got {obs.shape}")
    chex.assert_shape(prev_mean, (config.horizon, action_dim))
    key_uniform, key_plan = jax.random.split(key)

    def planned(_):
        told = model(config, action_dim)
        z = told.encode(state.params, to_model_obs(config, obs[None]))[0]
        return plan_from_latent(state, told, z, key_plan, prev_mean, horizon=horizon, first_step=first_step,
                                eval_mode=eval_mode)

    if eval_mode:
        return planned(None)

    def seeding(_):
        return jax.random.uniform(key_uniform, (action_dim,), jnp.float32, -1.0, 1.0), prev_mean

    return jax.lax.cond(jnp.asarray(step) < seed_steps(config), seeding, planned, None)


# ----------------------------------------------------------------------------------------------
# 5. update
# ----------------------------------------------------------------------------------------------


@jax.jit
def update(state: TDMPCState, batch: Dict[str, jnp.ndarray], step, key: jax.Array) -> Tuple[TDMPCState, Metrics]:
    """One TD-MPC update (S1 TDMPC.update): a model step, then a policy step, then the EMA on even steps.

    batch (batch-major, from the sequence replay): obs (B, H+1, *obs_shape) (pixels channel-last
    uint8), action (B, H, A), reward (B, H), weights (B,). step: the agent step of this update.
    metrics: float32 scalars, plus "priorities" (B,): the new PER priorities (before the replay's +1e-6).
    The policy step uses the model step's updated Q and the pre-update rollout latents (S1 order).
    """
    config = state.config
    told = model(config, state.action_dim)
    obs, action, reward, weights = batch["obs"], batch["action"], batch["reward"], batch["weights"]
    batch_size, horizon = reward.shape
    if horizon != config.horizon:
        raise ValueError(f"batch sequences have H={horizon} steps, config.horizon={config.horizon}")
    chex.assert_shape(obs, (batch_size, horizon + 1, *state.obs_shape))
    chex.assert_shape(action, (batch_size, horizon, state.action_dim))
    chex.assert_shape(weights, (batch_size,))
    key_augment, key_learn = jax.random.split(key)
    # Augmented views, time-major: one shift per frame, shared by the target encoder and the TD target.
    views = jnp.swapaxes(augment_observations(config, to_model_obs(config, obs), key_augment), 0, 1)
    return update_on_views(state, told, views, action, reward, weights, step, key_learn)


def update_on_views(state: TDMPCState, told: TOLD, views: jnp.ndarray, action: jnp.ndarray, reward: jnp.ndarray,
                    weights: jnp.ndarray, step, key: jax.Array) -> Tuple[TDMPCState, Metrics]:
    """The learning part of `update`, with any TOLD-shaped model (MoDem passes its fused one): views are the
    model's (augmented) inputs, time-major (H+1, B, ...); action (B, H, A), reward (B, H), weights (B,)."""
    config = state.config
    batch_size, horizon = reward.shape
    key_td, key_pi = jax.random.split(key)
    action_t, reward_t = jnp.swapaxes(action, 0, 1), jnp.swapaxes(reward, 0, 1).astype(jnp.float32)
    td_eps = jax.random.normal(key_td, action_t.shape, jnp.float32)

    # Model step (encoder, dynamics, reward, Q).
    def loss_fn(trained):
        params = {**trained, "pi": state.params["pi"]}
        return model_loss(told, params, state.target_params, views[0], views[1:], action_t, reward_t,
                          weights.astype(jnp.float32), td_eps, config)

    (_, (losses, latents)), grads = jax.value_and_grad(loss_fn, has_aux=True)(model_params(state.params))
    updates, model_opt_state = model_optimizer(config).update(grads, state.model_opt_state,
                                                              model_params(state.params))
    params = {**optax.apply_updates(model_params(state.params), updates), "pi": state.params["pi"]}

    # Policy step on the updated model, through the detached rollout latents.
    pi_eps = jax.random.normal(key_pi, (horizon + 1, batch_size, state.action_dim), jnp.float32)
    pi_loss, pi_grads = jax.value_and_grad(
        lambda pi: policy_loss(told, {**params, "pi": pi}, latents, pi_eps, config))(params["pi"])
    pi_updates, pi_opt_state = pi_optimizer(config).update(pi_grads, state.pi_opt_state, params["pi"])
    params = {**params, "pi": optax.apply_updates(params["pi"], pi_updates)}

    # EMA of the whole model on updates whose step is a multiple of update_freq (S1 step % 2 == 0).
    do_ema = jnp.asarray(step) % config.update_freq == 0
    target_params = jax.tree.map(lambda new, old: jnp.where(do_ema, new, old),
                                 ema(state.target_params, params, config.tau), state.target_params)

    state = state.replace(params=params, target_params=target_params, model_opt_state=model_opt_state,
                          pi_opt_state=pi_opt_state, std_floor=std_floor(config, step))
    metrics = {
        "consistency_loss": jnp.mean(losses.consistency),
        "reward_loss": jnp.mean(losses.reward),
        "value_loss": jnp.mean(losses.value),
        "pi_loss": pi_loss,
        "total_loss": jnp.mean(losses.total),
        "weighted_loss": losses.weighted,
        "grad_norm": optax.tree.norm(grads),  # of the 1/H-scaled gradient, before clipping (S1)
        "std_floor": state.std_floor,
        "batch_reward": jnp.mean(reward_t),
    }
    metrics = {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
    metrics["priorities"] = losses.priorities.astype(jnp.float32)
    return state, metrics
