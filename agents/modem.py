"""MoDem (Hansen, Lin, Su, Wang, Kumar, Rajeswaran 2023): TD-MPC accelerated by a few demonstrations.

MoDem is TD-MPC (agents/tdmpc.py) trained in three phases on pixels fused with a proprioceptive state:

  1. policy pretraining: behaviour cloning of the demos into encoder + policy prior (`bc_loss`, `bc_update`),
     2 x demos x episode_length iterations (`bc_iterations`);
  2. seeding: the BC policy (+ min_std noise) acts for seed_steps agent steps (`plan` in the seed phase),
     then seed_steps TD-MPC updates on interaction + demo data at once;
  3. interactive learning: TD-MPC planning and updates; every update draws a demo sub-batch of
     floor(ratio(step) * 256) sequences and the rest from the interaction buffer (`batch_split`, `update`).

Spec: shared/spec/model-offline-onpolicy-agents.md §3 (and §2 for everything inherited), pitfalls §10 #1-7.
Official code: S2 = facebookresearch/modem at 6cee94d (cfgs/config.yaml, cfgs/suite/*.yaml,
algorithm/tdmpc.py, algorithm/helper.py, train.py). Everything not named below is TD-MPC's, imported from
agents/tdmpc.py (losses, planner pieces, optimizers, EMA, schedules). What differs, top to bottom:

  1. Config: MoDem's defaults (lr 3e-4, batch 256, std floor linear(0.1, 0.05, 12.5k), 2 frames of 224^2,
     action repeat 2, eval every 2000 env steps on 30 episodes, 5 demos), per-suite planning iterations
     and demo-ratio schedules (`SUITE_OVERRIDES`), `config_for_task`.
  2. The model: TD-MPC's TOLD with MoDem's encoder, `x = img_enc(pixels) + MLP_s(state); z = MLP_f(x)`
     (spec §3.2 table / §2.1). networks/world_model.py cannot express it (its pixel encoder has four
     convolutions and takes one array), so the fused encoder is a small flax module here; the other four
     TOLD modules are world_model's. The image encoder takes TD-MPC's optional token head (head_* fields)
     where it flattens; MoDem's default head_slots is 4, one per token of its 2x2 map at 224^2. The agent state adds the BC optimizer (`MoDemState`).
  3. Observations are dicts {"pixels": uint8 (..., h, w, frame_stack * 3) channel-last, "state": float32
     (..., S)}. TD-MPC's loss functions take one observation array, so the fused model reads a packed
     float32 vector [pixels.ravel(), state] (`pack_observations`); this is internal to this file.
  4. Phase 1: `bc_loss`, `bc_update`, `bc_iterations`.
  5. The demo ratio: `demo_batch_size`, `batch_split` (host side, Python ints), `traced_demo_batch_size`
     (the same value inside jit, from a traced step) and `demo_rows` (which rows of a batch are demos).
  6. `plan`: in the seed phase (training, step < seed_steps) the BC policy pi(z) + clipped min_std noise
     instead of TD-MPC's uniform actions; otherwise TD-MPC's MPPI on the fused model.
  7. `combine_batches(interaction_batch, demo_batch, is_demo)` + `update(state, batch, is_demo, step, key)`:
     ONE TD-MPC update on a batch of batch_size rows, each row a demo sequence where `is_demo` else an
     interaction sequence, each sub-batch's PER weights normalized by the max over its own used rows
     (spec §2.6). The split is a traced mask, so one compiled update serves every split (S2 recomputes
     the split at every update); it is never a batch size written into a shared config (spec §10 #4).
     metrics["priorities"] has all batch_size rows; the caller writes each buffer's rows back.

Step accounting (spec §10 #1): every step here is an AGENT step; S2 logs env steps = 2 x agent steps and
the paper plots agent steps. Schedules (std floor, horizon, demo ratio) read agent steps.

Left to the caller: sampling batch_size sequences from each buffer and writing the priorities of the rows
it used back to each (core/modem_loop.py). As in S2, BC leaves the target model at its initial copy (S2
copies it at construction, before BC); the EMA of phases 2-3 moves it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, Mapping, Sequence, Tuple

import chex
import flax.linen as nn
import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from agents import drqv2, tdmpc
from core import schedules
from networks import world_model
from networks.encoders import conv_kernel_init
from networks.mlp import dense

Params = Dict[str, Any]
Metrics = Dict[str, jnp.ndarray]
Batch = Dict[str, Any]

DEFAULT_TASK = "adroit_door"  # S2 cfgs/config.yaml: suite adroit (task required there)
DEFAULT_OBS = "pixels"  # MoDem always sees pixels (+ the proprioceptive state)

# The loop's schedule helpers are TD-MPC's (same fields, same units).
planning_horizon = tdmpc.planning_horizon
seed_steps = tdmpc.seed_steps
std_floor = tdmpc.std_floor

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------

# MoDem's pixel encoder (S2 helper.enc): Conv(k7, s2), Conv(k5, s2), then 3x3 stride-2 convs; VALID.
# 224 -> 109 -> 53 -> 26 -> 12 -> 5 -> 2 with all six; `num_convs` < 6 keeps the first ones (small test images).
CONV_LAYERS = ((7, 2), (5, 2), (3, 2), (3, 2), (3, 2), (3, 2))


def min_image_size(num_convs: int) -> int:
    """The smallest square image the first `num_convs` VALID convs of CONV_LAYERS map to at least 1x1."""
    size = 1
    for kernel, stride in reversed(CONV_LAYERS[:num_convs]):
        size = (size - 1) * stride + kernel
    return size


@dataclasses.dataclass(frozen=True)
class Config(tdmpc.Config):
    """TD-MPC's Config with MoDem's values (S2 cfgs/config.yaml); only the differing fields are listed.
    Fields not named here keep TD-MPC's official defaults (spec §3.4 "everything else")."""

    obs_type: str = "pixels"  # MoDem: pixels + proprioceptive state, always
    lr: float = 3e-4  # S2 lr (TD-MPC states: 1e-3); model, policy and BC Adams
    batch_size: int = 256  # S2 batch_size: interaction + demo sequences per update
    std_schedule: str = "linear(0.1,0.05,12500)"  # S2 std_schedule (TD-MPC: linear(0.5, 0.05, 25000))
    iterations: int = 6  # S2 suite/*.yaml: Adroit 8, Meta-World 4, DMControl 6 (SUITE_OVERRIDES)
    clip_final_action: bool = True  # S2 plan: a.clamp_(-1, 1) before stepping and storing
    action_repeat: int = 2  # S2 action_repeat, every suite
    frame_stack: int = 2  # S2 frame_stack (TD-MPC pixels: 3)
    image_size: int = 224  # S2 img_size; random-shift pad int(224 / 21) = 10
    num_train_frames: int = 200_000  # S2 train_steps 100k AGENT steps x action_repeat 2
    num_seed_frames: int = 10_000  # S2 seed_steps 5000 agent steps x 2 (BC-policy actions, spec §3.1)
    # S2 allocates 2 * train_steps + 1 (spec §10 #5); train_steps agent steps hold the whole run but its
    # very last episode, which overwrites the oldest one.
    replay_capacity: int = 100_000
    eval_every_frames: int = 2000  # S2 eval_freq (env steps)
    num_eval_episodes: int = 30  # S2 eval_episodes
    # MoDem-only fields.
    num_convs: int = 6  # S2 helper.enc: six VALID convs for 224^2 (CONV_LAYERS); fewer for small test images
    # Token head of the image encoder (TD-MPC's head_* fields; pixax's option): its map is 2x2x32 at 224^2.
    head_slots: int = 4  # one slot per token of the 2x2 map (TD-MPC's 9 are its 3x3 map's)
    demos: int = 5  # S2 demos: sets the BC iteration count 2 x demos x episode_length
    demo_schedule: str = "linear(0.75,0.25,50000)"  # S2 suite/*.yaml demo_schedule (agent steps); per suite

    def _rules(self):
        """TD-MPC's rules with MoDem's image-size rule (its encoder has num_convs convs, not four)."""
        rules = [rule for rule in super()._rules() if rule[0] not in ("obs_type", "image_size")]
        ratio_ok, ratio_rule = _check_ratio_schedule(self.demo_schedule)
        convs_ok = 1 <= self.num_convs <= len(CONV_LAYERS)
        smallest = min_image_size(self.num_convs) if convs_ok else "?"
        return rules + [
            ("obs_type", self.obs_type == "pixels", "'pixels' (MoDem learns from pixels + proprioceptive state)"),
            ("num_convs", convs_ok, f"in [1, {len(CONV_LAYERS)}]"),
            ("image_size", convs_ok and self.image_size >= smallest,
             f">= {smallest} for num_convs={self.num_convs} stride-2 VALID convs"),
            ("demos", self.demos >= 0, ">= 0"),
            ("demo_schedule", ratio_ok, ratio_rule),
        ]

    def feature_map_size(self) -> int:
        """Side of the image encoder's last feature map (2 at 224^2 with six convs; 0 for a bad num_convs)."""
        if not 1 <= self.num_convs <= len(CONV_LAYERS):
            return 0
        return world_model.feature_map_size(self.image_size, CONV_LAYERS[:self.num_convs])


def _check_ratio_schedule(text: str) -> Tuple[bool, str]:
    """(valid?, rule) for a demo-ratio schedule: a schedule string whose start and end lie in [0, 1]."""
    rule = f"one of {schedules.VALID_FORMS} with values in [0, 1]"
    try:
        schedule = schedules.parse(text)
    except (ValueError, TypeError):
        return False, rule
    return all(0.0 <= schedule(step) <= 1.0 for step in (0, 10**12)), rule


SUITE_OVERRIDES: Dict[str, Dict[str, Any]] = {  # S2 cfgs/suite/<suite>.yaml
    "adroit": {"iterations": 8, "demo_schedule": "linear(0.75,0.25,50000)"},
    "metaworld": {"iterations": 4, "demo_schedule": "linear(0.5,0.25,50000)"},
    "dmc": {"iterations": 6, "demo_schedule": "linear(0.75,0.25,50000)"},
}
# pixax task names: "adroit_door", "mw_assembly", "<dm_control domain>_<task>" (envs/).
SUITE_PREFIXES = {"adroit_": "adroit", "mw_": "metaworld"}


def suite_of(task: str) -> str:
    """'adroit', 'metaworld' or 'dmc' for a pixax task name (ValueError for anything else)."""
    for prefix, suite in SUITE_PREFIXES.items():
        if isinstance(task, str) and task.startswith(prefix) and len(task) > len(prefix):
            return suite
    try:
        tdmpc.domain_of(task)
    except ValueError:
        raise ValueError(f"unknown task {task!r}: MoDem runs Adroit ('adroit_door'), Meta-World ('mw_assembly') "
                         f"or dm_control ('<domain>_<task>', e.g. 'quadruped_run') tasks") from None
    return "dmc"


# Episode lengths in AGENT steps (action repeat 2; S2 cfgs/suite/*.yaml episode_length / action_repeat, spec §3.3):
# Adroit door 100, hammer 125, pen 50; every Meta-World task 100. DMControl keeps its 1000 frames (500 steps).
EPISODE_STEPS: Dict[str, int] = {"adroit_door": 100, "adroit_hammer": 125, "adroit_pen": 50, "metaworld": 100}


def episode_steps(task: str) -> int | None:
    """MoDem's episode length of a Meta-World or Adroit task in agent steps; None for DMControl (its own)."""
    suite = suite_of(task)
    if suite == "dmc":
        return None
    if suite == "adroit":
        if task not in EPISODE_STEPS:
            raise ValueError(f"unknown Adroit task {task!r}: MoDem runs "
                             f"{', '.join(t for t in EPISODE_STEPS if t.startswith('adroit_'))}")
        return EPISODE_STEPS[task]
    return EPISODE_STEPS["metaworld"]


def env_options_for_task(task: str) -> Dict[str, Any]:
    """envs.make keyword arguments that give MoDem's observations and rewards (spec §3.2-3.3).

    DMControl: proprio=True (info["proprio"] = the flattened task observation), dense reward.
    Meta-World / Adroit: info["modem_state"] = the suite's proprioceptive slice, the sparse reward
    success - 1, MoDem's episode length; the frame stack filled with the first frame at reset (S2's frame
    buffer, and what the replay rebuilds); a dropped Adroit pen does not end the fixed-length episode."""
    suite = suite_of(task)
    if suite == "dmc":
        return {"proprio": True}
    options: Dict[str, Any] = {"modem_state": True, "sparse_reward": True, "max_episode_steps": episode_steps(task)}
    if suite == "metaworld":
        options["zero_fill_stack"] = False
    else:
        options["terminate_on_drop"] = False
    return options


def state_key(task: str) -> str:
    """The info key of MoDem's proprioceptive state: "proprio" (DMControl) or "modem_state" (Meta-World, Adroit)."""
    return "proprio" if suite_of(task) == "dmc" else "modem_state"


def config_for_task(task: str, **user_overrides) -> Config:
    """MoDem's config of a task: defaults <- its suite's yaml (SUITE_OVERRIDES) <- `user_overrides`.
    num_seed_frames (5000 agent steps) and replay_capacity (train agent steps) follow the resolved
    action_repeat / num_train_frames unless given."""
    suite = suite_of(task)
    valid_fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(user_overrides) - valid_fields)
    if unknown:
        raise ValueError(f"unknown Config field(s) {unknown}; valid fields: {sorted(valid_fields)}")
    values: Dict[str, Any] = {**SUITE_OVERRIDES[suite], **user_overrides}
    action_repeat = values.get("action_repeat", Config.action_repeat)
    num_train_frames = values.get("num_train_frames", Config.num_train_frames)
    if isinstance(action_repeat, int) and isinstance(num_train_frames, int) and action_repeat >= 1:
        values.setdefault("num_seed_frames", tdmpc.SEED_STEPS * action_repeat)
        values.setdefault("replay_capacity", max(1, num_train_frames // action_repeat))
    return Config(**values)


def bc_iterations(config: Config, episode_length: int) -> int:
    """Phase-1 BC updates: 2 x demos x episode_length (S2 init_bc; door: 2 x 5 x 100 = 1000)."""
    return 2 * config.demos * int(episode_length)


def demo_batch_size(config: Config, step: int) -> int:
    """Demo sequences in the update at agent step `step`: floor(demo_schedule(step) * batch_size) (S2
    int(...)); e.g. Adroit 192, 128, 64, 64 of 256 at steps 0, 25k, 50k, 100k. Host side (a Python int)."""
    ratio = schedules.parse(config.demo_schedule)(int(step))
    return int(math.floor(ratio * config.batch_size))


def traced_demo_batch_size(config: Config, step: jax.Array) -> jax.Array:
    """demo_batch_size for a traced agent step (jit-safe): int32 floor(demo_schedule(step) * batch_size),
    in float32 (equal to the host value at every step 0..120k of the suites' schedules, see the tests)."""
    ratio = schedules.parse(config.demo_schedule)(jnp.asarray(step, jnp.int32))
    return jnp.floor(ratio * config.batch_size).astype(jnp.int32)


def demo_rows(batch_size: int, n_demo: jax.Array) -> jax.Array:
    """(batch_size,) bool: which rows of an update's batch are demo sequences, the last n_demo (interaction
    rows first, as S2's concatenation). Each buffer's sample fills its rows from its first row on, so the
    interaction rows used are the first n_interaction of its draw (Gumbel top-k draws without replacement
    come in order: only a prefix of them is a sample of that size)."""
    return jnp.arange(batch_size) >= batch_size - jnp.asarray(n_demo, jnp.int32)


def batch_split(config: Config, step: int) -> Tuple[int, int]:
    """(n_interaction, n_demo) of the update at agent step `step`; they add up to batch_size. Pass these
    to the two samplers; never write them into a config (spec §10 #4)."""
    n_demo = demo_batch_size(config, step)
    return config.batch_size - n_demo, n_demo


# ----------------------------------------------------------------------------------------------
# 2. Model and agent state
# ----------------------------------------------------------------------------------------------


def pack_observations(pixels: jnp.ndarray, state: jnp.ndarray) -> jnp.ndarray:
    """pixels (..., h, w, C) in [0, 255] and state (..., S) -> float32 (..., h*w*C + S): the one array per
    observation that TD-MPC's loss functions pass to the model's encoder (unpacked by FusedEncoder)."""
    lead = state.shape[:-1]
    chex.assert_equal(pixels.shape[:len(lead)], lead)
    flat_pixels = pixels.reshape(*lead, -1).astype(jnp.float32)
    return jnp.concatenate([flat_pixels, state.astype(jnp.float32)], axis=-1)


def unpack_observations(packed: jnp.ndarray, pixel_shape: Tuple[int, ...]) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """The inverse of pack_observations: (pixels (..., *pixel_shape) float32, state (..., S))."""
    num_pixels = math.prod(pixel_shape)
    lead = packed.shape[:-1]
    return packed[..., :num_pixels].reshape(*lead, *pixel_shape), packed[..., num_pixels:]


class PixelEncoder(nn.Module):
    """MoDem's image encoder (S2 helper.enc): x / 255, `num_convs` VALID convs of CONV_LAYERS with ReLU,
    flatten, Linear(latent). Channel-last; the flatten order is (h, w, C) (PyTorch: (C, h, w)).
    `head`: a token head in place of the flatten, as world_model.PixelEncoder's (() is S2's encoder)."""

    num_channels: int
    num_convs: int
    latent_dim: int
    head: world_model.HeadSettings = ()

    @nn.compact
    def __call__(self, pixels: jnp.ndarray) -> jnp.ndarray:
        x = pixels.astype(jnp.float32) / 255.0
        for i, (kernel, stride) in enumerate(CONV_LAYERS[:self.num_convs]):
            x = nn.Conv(self.num_channels, (kernel, kernel), strides=(stride, stride), padding="VALID",
                        kernel_init=conv_kernel_init, bias_init=nn.initializers.zeros, name=f"conv_{i}")(x)
            x = nn.relu(x)
        return dense(self.latent_dim, jnp.float32, "dense_0")(world_model.flatten_or_tokenize(x, self.head))


class FusedEncoder(nn.Module):
    """h(pixels, state) = MLP_f(img_enc(pixels) + MLP_s(state)) (spec §3.2; S2 TOLD.h, helper.state_enc).

    MLP_s = Linear(S, enc_dim) ELU Linear(enc_dim, latent); MLP_f = Linear(latent, enc_dim) ELU
    Linear(enc_dim, latent): both have world_model.StateEncoder's shape. Input: packed observations
    (N, h*w*C + S) from pack_observations. `head`: the image encoder's token head (() flattens)."""

    pixel_shape: Tuple[int, ...]
    num_channels: int
    num_convs: int
    enc_dim: int
    latent_dim: int
    head: world_model.HeadSettings = ()

    @nn.compact
    def __call__(self, packed: jnp.ndarray) -> jnp.ndarray:
        pixels, state = unpack_observations(packed, self.pixel_shape)
        image_features = PixelEncoder(self.num_channels, self.num_convs, self.latent_dim, self.head,
                                      name="pixels")(pixels)
        state_features = world_model.StateEncoder(self.enc_dim, self.latent_dim, name="state")(state)
        return world_model.StateEncoder(self.enc_dim, self.latent_dim, name="fuse")(image_features + state_features)


def model(config: Config, action_dim: int, pixel_shape: Tuple[int, ...]) -> world_model.TOLD:
    """TD-MPC's TOLD with the fused encoder (dynamics, reward, Q and policy as world_model.make_told); the
    image encoder's token head is DrQ-v2's `trunk_head` of the config's head fields (() for "flatten")."""
    return world_model.TOLD(
        encoder_net=FusedEncoder(tuple(pixel_shape), config.num_channels, config.num_convs, config.enc_dim,
                                 config.latent_dim, head=drqv2.trunk_head(config)),
        dynamics_net=world_model.MLP(config.mlp_dim, config.latent_dim),
        reward_net=world_model.MLP(config.mlp_dim, 1, zero_last=True),
        q_net=world_model.TwinQ(config.mlp_dim),
        pi_net=world_model.MLP(config.mlp_dim, action_dim),
    )


BC_KEYS = ("encoder", "pi")  # what behaviour cloning trains (S2 bc_optim covers all params; only these get gradients)


def bc_params(params: Params) -> Params:
    return {name: params[name] for name in BC_KEYS}


def bc_optimizer(config: Config) -> optax.GradientTransformation:
    """S2 bc_optim: its own Adam (lr), grad clip grad_clip_norm; separate from the model's Adam."""
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optax.adam(config.lr))


class MoDemState(tdmpc.TDMPCState):
    """TD-MPC's state plus the BC optimizer. obs_shape (static) is the pixel shape (h, w, frame_stack * 3);
    state_dim (static) the proprioceptive state's size."""

    bc_opt_state: optax.OptState  # over bc_params(params)
    state_dim: int = struct.field(pytree_node=False)


def _check_obs_shape(obs_shape: Mapping[str, Sequence[int]], config: Config) -> Tuple[Tuple[int, ...], int]:
    if not isinstance(obs_shape, Mapping) or set(obs_shape) != {"pixels", "state"}:
        raise ValueError(f"MoDem observations are a dict {{'pixels': (h, w, C), 'state': (S,)}}; obs_shape must be "
                         f"a mapping with exactly those keys, got {obs_shape!r}")
    pixel_shape = tuple(int(d) for d in obs_shape["pixels"])
    state_shape = tuple(int(d) for d in obs_shape["state"])
    if len(pixel_shape) != 3 or pixel_shape[:2] != (config.image_size, config.image_size):
        raise ValueError(f"pixel observations must be channel-last ({config.image_size}, {config.image_size}, C) "
                         f"(image_size={config.image_size}), got {pixel_shape}")
    if len(state_shape) != 1 or state_shape[0] < 1:
        raise ValueError(f"the proprioceptive state must be a vector (S,) with S >= 1, got {state_shape}")
    return pixel_shape, state_shape[0]


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _create(key: jax.Array, pixel_shape: Tuple[int, ...], state_dim: int, action_dim: int,
            config: Config) -> MoDemState:
    packed = pack_observations(jnp.zeros((1, *pixel_shape), jnp.uint8), jnp.zeros((1, state_dim), jnp.float32))
    params = model(config, action_dim, pixel_shape).init(key, packed, action_dim)
    return MoDemState(
        params=params,
        target_params=params,  # S2: deepcopy at construction (before BC)
        model_opt_state=tdmpc.model_optimizer(config).init(tdmpc.model_params(params)),
        pi_opt_state=tdmpc.pi_optimizer(config).init(params["pi"]),
        std_floor=std_floor(config, 0),
        config=config,
        action_dim=action_dim,
        obs_shape=pixel_shape,
        bc_opt_state=bc_optimizer(config).init(bc_params(params)),
        state_dim=state_dim,
    )


def create(key: jax.Array, obs_shape: Mapping[str, Sequence[int]], action_dim: int, config: Config) -> MoDemState:
    """Fresh agent. obs_shape = {"pixels": (h, w, frame_stack * 3), "state": (S,)} (no batch axis)."""
    if not isinstance(config, Config):
        raise ValueError(f"config must be an agents.modem.Config, got {type(config).__name__}")
    if not isinstance(action_dim, int) or isinstance(action_dim, bool) or action_dim < 1:
        raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
    pixel_shape, state_dim = _check_obs_shape(obs_shape, config)
    return _create(key, pixel_shape, state_dim, action_dim, config)


def _model_of(state: MoDemState) -> world_model.TOLD:
    return model(state.config, state.action_dim, state.obs_shape)


def augmented_packed(config: Config, obs: Mapping[str, jnp.ndarray], key: jax.Array) -> jnp.ndarray:
    """Random shift of every (sample, time) pixel frame (TD-MPC's augment_observations; pad int(img/21)),
    packed with the state: obs {"pixels": (B, T, h, w, C), "state": (B, T, S)} -> (B, T, h*w*C + S)."""
    return pack_observations(tdmpc.augment_observations(config, obs["pixels"], key), obs["state"])


# ----------------------------------------------------------------------------------------------
# 3. Phase 1: behaviour cloning
# ----------------------------------------------------------------------------------------------


def bc_loss(model: world_model.TOLD, params: Params, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    """L_BC = mean over batch AND action dims of (pi(h(obs)) - a)^2, the deterministic tanh policy (no noise)
    (spec §3.1; S2 init_bc: mse(..., reduce=True)). obs: the model's input (B, ...); action (B, A)."""
    prediction = model.pi(params, model.encode(params, obs))
    chex.assert_equal_shape([prediction, action])
    return jnp.mean(jnp.square(prediction - action))


@jax.jit
def bc_update(state: MoDemState, batch: Batch, key: jax.Array) -> Tuple[MoDemState, Metrics]:
    """One BC step on encoder + policy (S2 init_bc): the first observation and first action of each sampled
    sequence, augmented pixels, PER weights ignored; own Adam, grad clip 10. Targets and the model/policy
    Adams are untouched. batch from the demo replay: obs {"pixels": (B, T, h, w, C), "state": (B, T, S)},
    action (B, T', A) (T, T' >= 1)."""
    config, told = state.config, _model_of(state)
    first_obs = {name: value[:, :1] for name, value in batch["obs"].items()}
    obs = augmented_packed(config, first_obs, key)[:, 0]
    action = batch["action"][:, 0].astype(jnp.float32)

    def loss_fn(trained):
        return bc_loss(told, {**state.params, **trained}, obs, action)

    loss, grads = jax.value_and_grad(loss_fn)(bc_params(state.params))
    updates, bc_opt_state = bc_optimizer(config).update(grads, state.bc_opt_state, bc_params(state.params))
    params = {**state.params, **optax.apply_updates(bc_params(state.params), updates)}
    metrics = {"bc_loss": loss, "bc_grad_norm": optax.tree.norm(grads)}
    return state.replace(params=params, bc_opt_state=bc_opt_state), {k: jnp.asarray(v, jnp.float32)
                                                                      for k, v in metrics.items()}


# ----------------------------------------------------------------------------------------------
# 4. Planner: the seed phase acts with the BC policy
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("horizon", "eval_mode"))
def plan(state: MoDemState, obs: Mapping[str, jnp.ndarray], key: jax.Array, prev_mean: jnp.ndarray, *, step,
         horizon: int, first_step, eval_mode: bool) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """tdmpc.plan for ONE fused observation {"pixels": (h, w, C) uint8, "state": (S,)} (no batch axis).

    Training while step < seed_steps (spec §3.1 phase 2; S2 plan -> act): pi(z) + clip(min_std * eps, +-0.3),
    clamped to +-(1 - 1e-6), with prev_mean returned unchanged. Otherwise (and always in eval_mode)
    TD-MPC's MPPI (spec §2.7) on the fused model; same arguments and outputs as tdmpc.plan."""
    config, action_dim = state.config, state.action_dim
    if not 1 <= horizon <= config.horizon:
        raise ValueError(f"horizon must be in [1, {config.horizon}] (config.horizon), got {horizon}")
    if tuple(obs["pixels"].shape) != state.obs_shape or tuple(obs["state"].shape) != (state.state_dim,):
        raise ValueError(f"plan takes one observation {{'pixels': {state.obs_shape}, 'state': ({state.state_dim},)}} "
                         f"(no batch axis), got pixels {obs['pixels'].shape} and state {obs['state'].shape}")
    chex.assert_shape(prev_mean, (config.horizon, action_dim))
    told, params = _model_of(state), state.params
    key_seed, key_plan = jax.random.split(key)
    z = told.encode(params, pack_observations(obs["pixels"][None], obs["state"][None]))[0]

    def bc_policy(_):
        eps = jax.random.normal(key_seed, (1, action_dim), jnp.float32)
        return tdmpc.policy_action(told, params, z[None], eps, config)[0], prev_mean

    def planned(_):  # TD-MPC's planner on the fused latent
        return tdmpc.plan_from_latent(state, told, z, key_plan, prev_mean, horizon=horizon, first_step=first_step,
                                      eval_mode=eval_mode)

    if eval_mode:
        return planned(None)
    return jax.lax.cond(jnp.asarray(step) < seed_steps(config), bc_policy, planned, None)


# ----------------------------------------------------------------------------------------------
# 5. update: one TD-MPC update on interaction + demo sequences
# ----------------------------------------------------------------------------------------------


def masked_normalized_weights(weights: jnp.ndarray, used: jnp.ndarray) -> jnp.ndarray:
    """w / max(w over the `used` rows): one sub-batch's PER weights normalized by the max over the rows that
    are trained on (S2 normalizes each sub-batch on its own). The unused rows' values are meaningless."""
    weights = weights.astype(jnp.float32)
    largest = jnp.max(jnp.where(used, weights, 0.0))
    return weights / jnp.where(largest > 0, largest, 1.0)  # no used row: nothing of it is kept anyway


def combine_batches(interaction_batch: Batch, demo_batch: Batch, is_demo: jnp.ndarray) -> Batch:
    """The update's batch: row i is demo_batch's row i where is_demo[i], else interaction_batch's row i (both
    batches and is_demo have batch_size rows; is_demo from demo_rows). Each sub-batch's PER weights are
    divided by the max over its own used rows (spec §2.6: sampled and weight-normalized separately)."""
    interaction_batch = {**interaction_batch,
                         "weights": masked_normalized_weights(interaction_batch["weights"], ~is_demo)}
    demo_batch = {**demo_batch, "weights": masked_normalized_weights(demo_batch["weights"], is_demo)}

    def pick(interaction_leaf, demo_leaf):
        chex.assert_equal_shape([interaction_leaf, demo_leaf])
        row_mask = is_demo.reshape(is_demo.shape + (1,) * (demo_leaf.ndim - 1))
        return jnp.where(row_mask, demo_leaf, interaction_leaf)

    return jax.tree.map(pick, interaction_batch, demo_batch)


def _td_mpc_update(state: MoDemState, batch: Batch, step, key: jax.Array) -> Tuple[MoDemState, Metrics]:
    """tdmpc.update on the fused model: only the observations differ (augmented pixels packed with the
    state); the model step, policy step, EMA and std floor are tdmpc.update_on_views."""
    config = state.config
    obs, action, reward, weights = batch["obs"], batch["action"], batch["reward"], batch["weights"]
    batch_size, horizon = reward.shape
    if horizon != config.horizon:
        raise ValueError(f"batch sequences have H={horizon} steps, config.horizon={config.horizon}")
    chex.assert_shape(obs["pixels"], (batch_size, horizon + 1, *state.obs_shape))
    chex.assert_shape(obs["state"], (batch_size, horizon + 1, state.state_dim))
    chex.assert_shape(action, (batch_size, horizon, state.action_dim))
    chex.assert_shape(weights, (batch_size,))
    key_augment, key_learn = jax.random.split(key)
    views = jnp.swapaxes(augmented_packed(config, obs, key_augment), 0, 1)  # (H+1, B, packed)
    return tdmpc.update_on_views(state, _model_of(state), views, action, reward, weights, step, key_learn)


@jax.jit
def update(state: MoDemState, batch: Batch, is_demo: jnp.ndarray, step, key: jax.Array) -> Tuple[MoDemState, Metrics]:
    """One MoDem update (S2 TDMPC.update): one TD-MPC update on interaction + demo sequences.

    batch: combine_batches' output, obs {"pixels": (B, H+1, h, w, C) uint8, "state": (B, H+1, S)},
    action (B, H, A), reward (B, H), weights (B,); is_demo (B,) bool marks its demo rows (demo_rows of
    traced_demo_batch_size(config, step) in the loop: a traced mask, so every split shares one program).
    metrics: TD-MPC's scalars, "demo_batch_size" (the number of demo rows) and "priorities" (B,), the new
    PER priorities of every row (before the buffers' +1e-6): the caller writes the demo rows' back to the
    demo buffer and the others' to the interaction buffer."""
    chex.assert_shape(is_demo, batch["reward"].shape[:1])
    state, metrics = _td_mpc_update(state, batch, step, key)
    metrics["demo_batch_size"] = jnp.sum(is_demo).astype(jnp.float32)
    return state, metrics
