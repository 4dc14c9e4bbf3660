"""DQN (Mnih et al. 2015) as Dopamine's JAX agent runs it in the SoftMoE papers (spec §4.5).

Dopamine's `JaxDQNAgent` / the MoE lab's `DQNMoEAgent` (google/dopamine 5873f54,
jax/agents/dqn/dqn_agent.py, labs/moes/agents/dqn_moe_agent.py, labs/moes/configs/dqn*.gin):
epsilon-greedy acting, one Adam step every `update_every_steps` agent steps on the TD error of
y = R + Gamma * max_a Q_target(s', a), and a hard target copy every `target_update_period` agent
steps. The network is `networks.atari.QNetwork`: Nature CNN or Impala encoder, then a
`tokens.Head` ("flatten" = Dopamine's baseline, "softmoe" = its SoftMoE, "tokenize" = the tokenized
baseline of "Don't flatten, tokenize!"). Read top to bottom:

  1. Config, task tiers as data, config_for_task
  2. the network and the agent state (DQNState), create
  3. pure pieces: epsilon schedule, epsilon-greedy, TD target, losses, one Adam step, target sync
  4. act and update (jitted)

Reuse (Rainbow / DER in agents/rainbow.py build on this file): `q_network` reads the Rainbow
fields (noisy, dueling, num_atoms, v_min/v_max) from a Config subclass that defines them, with
DQN's values when it does not; `apply_network`, `epsilon_greedy`, `train_epsilon`,
`apply_gradients`, `sync_target`, `resolve_config` and `DQNState` serve both agents.

Units: steps are AGENT steps (one decision = `action_repeat` = 4 frames); frame counts are
emulator frames. Dopamine's `min_replay_history` (20 000 agent steps) is `num_seed_frames` =
80 000 frames here, since the loop counts the seed phase in frames.

Rewards: Dopamine clips every agent step's reward to [-1, 1] before it enters the n-step sum. The
trainer does that (per step, with `reward_clip`); this file never clips. The batch holds the n-step
reward already summed and `discount` = gamma^n times the environment discounts (0 after a
termination), so the target needs no separate terminal flag.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from agents import drqv2
from networks import atari, tokens

Params = Any
Metrics = Dict[str, jnp.ndarray]

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------

OBS_TYPES = ("pixels",)  # the networks are convolutional (the ALE has no state observations anyway)
ENCODERS = tuple(atari.ENCODERS)
LOSS_TYPES = ("mse", "huber")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every default is Dopamine's DQN value in the MoE lab (G = labs/moes/configs/dqn.gin, A =
    jax/agents/dqn/dqn_agent.py defaults, N = labs/moes/architectures/networks.py NatureDQNMoE),
    unless the comment says otherwise. Steps are AGENT steps; frames are emulator frames."""

    obs_type: str = "pixels"
    # Network (N). head "flatten" is Dopamine's moe_type BASELINE; "softmoe" its SOFTMOE.
    encoder: str = "nature"  # G: NatureDQNMoE; dqn_impala.gin: "impala"
    head: str = "flatten"  # tokens.HEADS
    tokenizer: str = "perconv"  # N routing_type PER_PIXEL
    patch_size: int = 3  # N patch_size (3, 3), tokenizer "patch" / "pool" only
    embed_dim: int = 64  # N embedding_size ("patch" only; Dopamine's ImpalaMoE uses 32)
    num_experts: int = 8  # G NatureDQNMoE.num_experts
    slots_per_expert: Optional[int] = None  # None: ceil(tokens / experts), Dopamine's capacity factor 1
    expert_hidden: int = 512  # N expert_hidden_units
    normalize: bool = False  # Dopamine's SoftMoE has normalisation off
    aggregate: str = "flatten"  # N: the SoftMoE output is flattened before the Q layer
    hidden_dim: int = 512  # N: the baseline's Dense(512); Dopamine's scale_hidden_layer = 512 * experts
    extra_dense: bool = False  # G use_extra_linear_layer
    # Optimization: Adam (Dopamine create_optimizer: b1 0.9, b2 0.999).
    lr: float = 6.25e-5  # G create_optimizer.learning_rate
    adam_eps: float = 1.5e-4  # G create_optimizer.eps
    # A loss_type default 'mse' (squared error, no 1/2), not set by any moes gin file, so the MoE
    # papers' DQN used MSE; "huber" is Dopamine's Huber with delta 1 (the Nature DQN loss).
    loss_type: str = "mse"
    # DQN.
    target_update_period: int = 8000  # G (agent steps): hard copy online -> target
    epsilon_train: float = 0.01  # G
    epsilon_eval: float = 0.001  # G
    epsilon_decay_period: int = 250_000  # G (agent steps), after the seed phase (A linearly_decaying_epsilon)
    # Environment, read by the launcher / environment (not by this file).
    reward_clip: float = 1.0  # Dopamine clips each step's reward to [-1, 1]; inf: no clipping
    sticky_actions: bool = True  # G atari_lib.create_atari_environment.sticky_actions (p = 0.25)
    terminal_on_life_loss: bool = False  # Dopamine AtariPreprocessing default
    # Loop settings, read by the launcher.
    update_every_steps: int = 4  # G update_period
    nstep: int = 1  # G update_horizon
    batch_size: int = 32  # G OutOfGraphReplayBuffer.batch_size
    discount: float = 0.99  # G gamma
    replay_capacity: int = 1_000_000  # G replay_capacity (transitions)
    action_repeat: int = 4  # Dopamine AtariPreprocessing frame_skip
    frame_stack: int = 4  # Dopamine NATURE_DQN_STACK_SIZE
    image_size: int = 84  # Dopamine NATURE_DQN_OBSERVATION_SHAPE (84, 84)
    num_seed_frames: int = 80_000  # G min_replay_history 20 000 agent steps x 4
    # G: 200 iterations x 250 000 agent steps = 200 M frames; + 4 frames (one agent step) so the
    # evaluation after the last iteration runs.
    num_train_frames: int = 200_000_004
    eval_every_frames: int = 1_000_000  # G: one evaluation per iteration of 250 000 agent steps
    # pixax's choice: Dopamine evaluates for 125 000 agent steps per iteration, not a number of episodes.
    num_eval_episodes: int = 10

    def __post_init__(self):
        drqv2.validate_config(self)

    def _rules(self):
        """(field, valid?, rule) triples; a subclass extends this list with its own fields."""
        slots = self.slots_per_expert
        return [
            ("obs_type", self.obs_type in OBS_TYPES, f"one of {OBS_TYPES}"),
            ("encoder", self.encoder in ENCODERS, f"one of {ENCODERS}"),
            ("head", self.head in tokens.HEADS, f"one of {tokens.HEADS}"),
            ("tokenizer", self.tokenizer in tokens.TOKENIZERS, f"one of {tokens.TOKENIZERS}"),
            ("aggregate", self.aggregate in tokens.AGGREGATES, f"one of {tokens.AGGREGATES}"),
            ("loss_type", self.loss_type in self.valid_loss_types(), f"one of {self.valid_loss_types()}"),
            ("patch_size", self.patch_size >= 1, ">= 1"),
            ("embed_dim", self.embed_dim >= 1, ">= 1"),
            ("num_experts", self.num_experts >= 1, ">= 1"),
            ("slots_per_expert", slots is None or (isinstance(slots, int) and slots >= 1), "None or an int >= 1"),
            ("expert_hidden", self.expert_hidden >= 1, ">= 1"),
            ("hidden_dim", self.hidden_dim >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("adam_eps", self.adam_eps > 0, "> 0"),
            ("target_update_period", self.target_update_period >= 1, ">= 1"),
            ("epsilon_train", 0 <= self.epsilon_train <= 1, "in [0, 1]"),
            ("epsilon_eval", 0 <= self.epsilon_eval <= 1, "in [0, 1]"),
            ("epsilon_decay_period", self.epsilon_decay_period >= 1, ">= 1"),
            ("reward_clip", self.reward_clip > 0, "> 0 (inf: no clipping)"),
            ("update_every_steps", self.update_every_steps >= 1, ">= 1"),
            ("nstep", self.nstep >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("discount", 0 <= self.discount <= 1, "in [0, 1]"),
            ("replay_capacity", self.replay_capacity >= 1, ">= 1"),
            ("action_repeat", self.action_repeat >= 1, ">= 1"),
            ("frame_stack", self.frame_stack >= 1, ">= 1"),
            ("image_size", self.image_size >= 1, ">= 1"),
            ("num_seed_frames", self.num_seed_frames >= 0, ">= 0"),
            ("num_train_frames", self.num_train_frames >= 1, ">= 1"),
            ("eval_every_frames", self.eval_every_frames >= 1, ">= 1"),
            ("num_eval_episodes", self.num_eval_episodes >= 0, ">= 0"),
        ]

    def valid_loss_types(self) -> Tuple[str, ...]:
        return LOSS_TYPES

    @property
    def warmup_steps(self) -> int:
        """Dopamine's min_replay_history in agent steps: no updates, and epsilon 1, before it."""
        return self.num_seed_frames // self.action_repeat


# Task tiers: which tasks get which values. A tier names its tasks by a prefix (or a "tasks" list).
# "atari": the ALE games (envs/atari.py: atari_<game>) take the defaults above.
# "toy": pixax's own quick-check settings for envs/toy.py (toy_catch; no official source). Measured on
# the 2-core CPU with a plain loop (n = 1, uniform replay): DQN caught 50/50 greedy evaluation balls
# after 5 000 steps (32 s); Rainbow with a SoftMoE head and n = 1 after 4 000 steps (9 min: the
# per-sample noisy network is slow on a CPU).
TIERS: Dict[str, Dict[str, Any]] = {
    "atari": {"prefix": "atari_"},
    "toy": {
        "prefix": "toy_",
        "action_repeat": 1, "frame_stack": 1, "image_size": 20, "sticky_actions": False,
        "num_train_frames": 10_000, "num_seed_frames": 1_000, "update_every_steps": 1,
        "replay_capacity": 10_000, "target_update_period": 200, "epsilon_decay_period": 2_000,
        "lr": 5e-4, "eval_every_frames": 1_000, "num_eval_episodes": 20,
    },
}
TASK_OVERRIDES: Dict[str, Dict[str, Any]] = {}  # per-task values (none in Dopamine's gin files)


def tier_of(task: str, tiers: Dict[str, Dict[str, Any]]) -> str:
    """The name of the tier holding `task` (listed in "tasks", or starting with "prefix")."""
    for name, tier in tiers.items():
        if task in tier.get("tasks", ()) or ("prefix" in tier and task.startswith(tier["prefix"])):
            return name
    valid = [f"{t['prefix']}*" if "prefix" in t else ", ".join(t["tasks"]) for t in tiers.values()]
    raise ValueError(f"no configuration for task {task!r}; valid tasks: {', '.join(valid)} "
                     f"(discrete-action pixel tasks)")


def resolve_config(config_type: type, task: str, tiers: Dict[str, Dict[str, Any]],
                   task_overrides: Dict[str, Dict[str, Any]], user_overrides: Dict[str, Any],
                   base: Optional[Dict[str, Any]] = None):
    """defaults <- `base` (a preset) <- the task's tier <- the task's overrides <- the user's values."""
    valid_fields = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(user_overrides) - valid_fields)
    if unknown:
        raise ValueError(f"unknown {config_type.__name__} field(s) {unknown}; valid fields: {sorted(valid_fields)}")
    tier = tiers[tier_of(task, tiers)]
    values = dict(base or {})
    values.update({k: v for k, v in tier.items() if k not in ("tasks", "prefix")})
    values.update(task_overrides.get(task, {}))
    values.update(user_overrides)
    return config_type(**values)


def config_for_task(task: str, **user_overrides) -> Config:
    """The DQN config of a task (its tier, then per-task overrides), then `user_overrides`."""
    return resolve_config(Config, task, TIERS, TASK_OVERRIDES, user_overrides)


# ----------------------------------------------------------------------------------------------
# 2. Network and agent state
# ----------------------------------------------------------------------------------------------


def q_network(config: Config, action_dim: int) -> atari.QNetwork:
    """The flax module (a stateless description; params live in the agent state).

    Rainbow's fields (noisy, dueling, num_atoms, v_min, v_max) are read from a Config subclass that
    defines them; DQN's Config does not, so its network is a plain Q-network.
    """
    return atari.QNetwork(
        action_dim=action_dim, encoder=config.encoder, head=config.head, tokenizer=config.tokenizer,
        patch_size=config.patch_size, embed_dim=config.embed_dim, num_experts=config.num_experts,
        slots_per_expert=config.slots_per_expert, expert_hidden=config.expert_hidden,
        normalize=config.normalize, aggregate=config.aggregate, hidden_dim=config.hidden_dim,
        extra_dense=config.extra_dense, noisy=getattr(config, "noisy", False),
        dueling=getattr(config, "dueling", False), num_atoms=getattr(config, "num_atoms", 1),
        v_min=support_bounds(config)[0], v_max=support_bounds(config)[1])


def support_bounds(config: Config) -> Tuple[float, float]:
    """(v_min, v_max) of a distributional config; Dopamine's v_min None means -v_max."""
    v_max = float(getattr(config, "v_max", 10.0))
    v_min = getattr(config, "v_min", None)
    return (-v_max if v_min is None else float(v_min)), v_max


def optimizer(config: Config) -> optax.GradientTransformation:
    """Dopamine's create_optimizer('adam'): b1 0.9, b2 0.999, eps `adam_eps`, no clipping or decay."""
    return optax.adam(config.lr, b1=0.9, b2=0.999, eps=config.adam_eps)


class DQNState(struct.PyTreeNode):
    """Everything an update changes. A pytree: stack it over seeds, save it with orbax.

    `config`, `action_dim` and `obs_shape` are static (not leaves). The step counter lives in the
    loop, which passes it to `act` and `update`.
    """

    params: Params  # online network, {"params": ...}
    target_params: Params
    opt_state: optax.OptState
    config: Config = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    obs_shape: Tuple[int, ...] = struct.field(pytree_node=False)  # (H, W, stack), no batch axis


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _create(key: jax.Array, obs_shape: Tuple[int, ...], action_dim: int, config: Config) -> DQNState:
    key_params, key_noise = jax.random.split(key)
    dummy_obs = jnp.zeros((1, *obs_shape), jnp.uint8)
    params = q_network(config, action_dim).init({"params": key_params, "noise": key_noise}, dummy_obs)
    return DQNState(params=params, target_params=params, opt_state=optimizer(config).init(params),
                    config=config, action_dim=action_dim, obs_shape=obs_shape)


def create(key: jax.Array, obs_shape: Sequence[int], action_dim: int, config: Config) -> DQNState:
    """Fresh agent: Dopamine's inits (networks/atari.py), target = online, fresh Adam state.

    obs_shape: (H, W, frame_stack) uint8 pixels, channel-last; action_dim: the number of actions.
    """
    if isinstance(action_dim, bool) or not isinstance(action_dim, int) or action_dim < 1:
        raise ValueError(f"action_dim must be the number of discrete actions (an int >= 1), got {action_dim!r}")
    obs_shape = tuple(int(d) for d in obs_shape)
    if len(obs_shape) != 3:
        raise ValueError(f"pixel observations must be (H, W, frame_stack) channel-last, got obs_shape {obs_shape}")
    return _create(key, obs_shape, action_dim, config)


def apply_network(state: DQNState, params: Params, obs: jnp.ndarray, key: Optional[jax.Array] = None,
                  noise: bool = False, expert_noise: Optional[bool] = None) -> atari.QOutput:
    """QOutput of the network with `params` on a batch of pixels. `key` feeds the "noise" RNG stream
    (needed only when a noisy network draws noise: `noise` / `expert_noise`, see atari.QNetwork)."""
    rngs = {} if key is None else {"noise": key}
    return q_network(state.config, state.action_dim).apply(params, obs, noise=noise, expert_noise=expert_noise,
                                                           rngs=rngs)


# ----------------------------------------------------------------------------------------------
# 3. Pieces (pure functions)
# ----------------------------------------------------------------------------------------------


def linearly_decaying_epsilon(step, decay_period: int, warmup_steps: int, final_epsilon: float):
    """Dopamine's schedule: 1 until `warmup_steps`, then linear to `final_epsilon` over `decay_period`
    steps, then held: final + (1 - final) * clip((decay_period + warmup - step) / decay_period, 0, 1)."""
    steps_left = decay_period + warmup_steps - step
    bonus = jnp.clip((1.0 - final_epsilon) * steps_left / decay_period, 0.0, 1.0 - final_epsilon)
    return final_epsilon + bonus


def train_epsilon(config: Config, step) -> jnp.ndarray:
    """Training epsilon at agent step `step` (warm-up = Dopamine's min_replay_history)."""
    return jnp.asarray(linearly_decaying_epsilon(step, config.epsilon_decay_period, config.warmup_steps,
                                                 config.epsilon_train), jnp.float32)


def epsilon_greedy(key: jax.Array, q: jnp.ndarray, epsilon) -> jnp.ndarray:
    """Per row of q (B, A): a uniform random action with probability epsilon, else argmax; int32 (B,).

    Dopamine draws u ~ U[0, 1) and explores when u <= epsilon; here u < epsilon, so epsilon = 0 is
    exactly greedy (u = 0 has probability ~2^-24, the only difference).
    """
    key_explore, key_action = jax.random.split(key)
    batch, num_actions = q.shape
    explore = jax.random.uniform(key_explore, (batch,)) < epsilon
    random_action = jax.random.randint(key_action, (batch,), 0, num_actions)
    return jnp.where(explore, random_action, jnp.argmax(q, axis=-1)).astype(jnp.int32)


def dqn_target(reward: jnp.ndarray, discount: jnp.ndarray, next_q_target: jnp.ndarray) -> jnp.ndarray:
    """y = R + Gamma * max_a Q_target(s', a); R, Gamma (B,) n-step reward and discount, next_q (B, A)."""
    return reward + discount * jnp.max(next_q_target, axis=-1)


def huber_loss(targets: jnp.ndarray, predictions: jnp.ndarray, delta: float = 1.0) -> jnp.ndarray:
    """Elementwise: 0.5 x^2 for x = |targets - predictions| <= delta, else 0.5 delta^2 + delta (x - delta)."""
    x = jnp.abs(targets - predictions)
    return jnp.where(x <= delta, 0.5 * x ** 2, 0.5 * delta ** 2 + delta * (x - delta))


def mse_loss(targets: jnp.ndarray, predictions: jnp.ndarray) -> jnp.ndarray:
    """Elementwise (targets - predictions)^2 (Dopamine's mse_loss: no factor 1/2)."""
    return jnp.square(targets - predictions)


TD_LOSSES = {"mse": mse_loss, "huber": huber_loss}


def chosen_values(values: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    """values[b, action[b]] for values (B, A, ...) and integer actions (B,)."""
    return jnp.take_along_axis(values, action.reshape((-1,) + (1,) * (values.ndim - 1)), axis=1)[:, 0]


def batch_actions(batch: Dict[str, jnp.ndarray]) -> jnp.ndarray:
    """The replay stores the integer action as float32; (B,) or (B, 1) -> int32 (B,)."""
    return jnp.round(batch["action"].reshape(-1)).astype(jnp.int32)


def apply_gradients(state: DQNState, grads: Params) -> DQNState:
    """One Adam step of the online network."""
    updates, opt_state = optimizer(state.config).update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)


def target_sync_due(step, target_update_period: int, update_every_steps: int) -> jnp.ndarray:
    """True at the update that follows a multiple of `target_update_period` (agent steps).

    Updates run at steps that are multiples of `update_every_steps`; a multiple of the period falls in
    (step - update_every_steps, step] exactly when step % period < update_every_steps. With Dopamine's
    values (8000 = 2000 x 4, 2000 = 2000 x 1) that is exactly the steps with step % period == 0, where
    Dopamine's `training_steps % target_update_period == 0` syncs, after that step's update.
    """
    return (step % target_update_period) < update_every_steps


def sync_target(state: DQNState, step) -> Tuple[DQNState, jnp.ndarray]:
    """Target <- online when `target_sync_due`, else unchanged; also returns the flag (float32)."""
    config = state.config
    due = target_sync_due(step, config.target_update_period, config.update_every_steps)
    target = jax.tree.map(lambda online, old: jnp.where(due, online, old), state.params, state.target_params)
    return state.replace(target_params=target), due.astype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# 4. act and update
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("eval_mode",))
def act(state: DQNState, obs: jnp.ndarray, step, key: jax.Array, eval_mode: bool) -> jnp.ndarray:
    """Epsilon-greedy int32 actions (B,) for pixels (B, H, W, stack): epsilon_eval in eval_mode, else
    `train_epsilon(step)` (1 during the seed phase, then Dopamine's linear decay)."""
    config = state.config
    q = apply_network(state, state.params, obs).q
    epsilon = config.epsilon_eval if eval_mode else train_epsilon(config, step)
    return epsilon_greedy(key, q, epsilon)


@jax.jit
def update(state: DQNState, batch: Dict[str, jnp.ndarray], step, key: jax.Array) -> Tuple[DQNState, Metrics]:
    """One DQN update at agent step `step`: an Adam step on mean TD loss, then the target sync if due.

    batch: obs, next_obs (B, H, W, stack) uint8; action (B,) float32 integer actions; reward (B,)
    n-step clipped sum; discount (B,) gamma^n x environment discounts. `key` is unused (DQN's network
    is deterministic); it is there so every agent has the same signature.
    """
    del key
    config = state.config
    action = batch_actions(batch)
    reward, discount = batch["reward"].reshape(-1), batch["discount"].reshape(-1)
    next_q = apply_network(state, state.target_params, batch["next_obs"]).q
    target = jax.lax.stop_gradient(dqn_target(reward, discount, next_q))

    def loss_fn(params):
        q = apply_network(state, params, batch["obs"]).q
        chosen_q = chosen_values(q, action)
        return jnp.mean(TD_LOSSES[config.loss_type](target, chosen_q)), (q, chosen_q)

    (loss, (q, chosen_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = apply_gradients(state, grads)
    state, synced = sync_target(state, step)
    metrics = {
        "loss": loss,
        "q_chosen": chosen_q.mean(),
        "q_max": q.max(axis=-1).mean(),
        "target": target.mean(),
        "batch_reward": reward.mean(),
        "epsilon": train_epsilon(config, step),
        "target_synced": synced,
    }
    return state, {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
