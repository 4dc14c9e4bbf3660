"""Device-resident prioritized replay of whole fixed-length episodes, for TD-MPC (spec §2.6).

The buffer is a pytree (`SequenceReplay`) that lives on the accelerator, so that sampling, the agent
update and the priority write-back can run together in one jitted `lax.scan` of many updates. Every
function here is pure and jittable, and vmappable over a leading seed axis of the state (S seeds
train in one program, each with its own buffer and key).

Layout (E = capacity_steps // L episodes of L steps each, a ring over episodes):
  * obs      (E, L+1, *obs_shape)  o_0 .. o_L of each episode. For pixels one frame per step, e.g.
                                   uint8 (h, w, C), channels-last as pixax's environments; stacks of `frame_stack` frames are rebuilt when
                                   sampling (spec §2.6: single frames stored, re-stacked at sample time).
  * action   (E, L, A) float32     a_t taken at o_t
  * reward   (E, L)    float32     r_t received after a_t
  * priority (E, L)    float32     one PER priority per step; flat slot index = episode * L + step
  * num_episodes  int32 scalar     episodes ever added; episode n lives in row n % E (the oldest is
                                   overwritten once the ring is full)
  * max_priority  float32 scalar   the largest priority stored in the filled rows (1.0 while empty);
                                   what a new episode's steps get

A sequence starting at slot (e, t) is (H = the `horizon` passed to `sample`):
  obs    o_t .. o_{t+H}        (H+1, *stacked_obs_shape)
  action a_t .. a_{t+H-1}      (H, A)
  reward r_t .. r_{t+H-1}      (H,)
A new episode's last `horizon` steps (the horizon given to `init`) get priority 0 and so are never
drawn: no sequence crosses the end of an episode. (With L+1 observations stored, the start L-H would
still fit; the official buffer masks it too, because it reads one action more than an update uses.)

Frame stacking (frame_stack = k > 1): observation t is the concatenation on the last (channel) axis
(the agent's (h, w, k*C) input, data/replay.py merge_frames) of frames t-k+1 .. t, oldest first; frames before the
episode's start are its first frame o_0 repeated, as DMC's frame stack does.

Sampling (official TD-MPC, src/algorithm/helper.py ReplayBuffer):
  * P(i) = p_i^alpha / sum_j p_j^alpha over the filled slots (alpha 0.6).
  * weights w_i = (N * P(i))^-beta / max over the batch (beta 0.4, no annealing), N = number of
    filled slots, zero-priority ones included (after dividing by the batch max, N cancels).
  * replace=True draws independently: first an episode with probability (its sum of p^alpha) / total,
    then a step within it in proportion to p^alpha. Two levels of float32 cumulative sums over E
    episode totals and L steps keep every slot's share accurate where one float32 cumulative sum over
    a million slots would round away the small ones.
  * replace=False draws distinct slots by Gumbel top-k (the distribution of numpy's
    choice(replace=False, p), which the official code uses once its buffer is full). It needs
    batch_size <= the number of slots with priority > 0.
  * The official code samples with replacement until the buffer is full and without afterwards:
    `replace=not bool(is_full(state))`, decided on the host (it is a static argument).

Priorities: a new episode's steps get `max_priority` (1.0 if the buffer is empty), its last H steps 0.
`update_priorities` writes p = priority + 1e-6 and then sets max_priority to the largest priority in
the filled rows, as the official code does by taking the max of its priority array at every add
(so it can go down, unlike the running max of data/prioritized.py). A slot drawn twice in one batch
keeps the larger of its two new priorities (a deterministic choice; the official write is "last one
wins" in an unspecified order). An optional `valid` mask leaves the rows of a batch that were not
trained on out of the write entirely (MoDem samples a full batch and uses only some of its rows).

Use under jit with the state donated (`jax.jit(add_episode, donate_argnums=0)`), or inside a jitted
loop, so that adding an episode writes in place instead of copying the whole buffer. `sample` assumes
at least one episode was added (an empty buffer gives garbage, not an error: nothing can be checked
inside jit).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import psutil

from data.replay import merge_frames

PRIORITY_EPS = 1e-6  # official TD-MPC: added to every updated priority so no slot dies
DEFAULT_ALPHA = 0.6  # official TD-MPC cfgs/default.yaml per_alpha
DEFAULT_BETA = 0.4  # official TD-MPC cfgs/default.yaml per_beta

_GIB = 1024**3
# float32 arrays of one value per slot that `sample` materializes (p^alpha, its cumulative sums, and the
# Gumbel keys of replace=False); counted when checking that a buffer fits, since one that fits but
# cannot be sampled is of no use.
_SAMPLE_WORKSPACE_FLOATS_PER_SLOT = 3


class SequenceReplay(struct.PyTreeNode):
    """Whole episodes on the device; see the module docstring for the layout."""

    obs: jax.Array  # (E, L+1, *obs_shape), single frames when frame_stack > 1
    action: jax.Array  # (E, L, A) float32
    reward: jax.Array  # (E, L) float32
    priority: jax.Array  # (E, L) float32
    num_episodes: jax.Array  # int32 scalar: episodes ever added
    max_priority: jax.Array  # float32 scalar: largest priority in the filled rows, 1.0 while empty
    frame_stack: int = struct.field(pytree_node=False, default=1)
    horizon: int = struct.field(pytree_node=False, default=5)  # last `horizon` steps get priority 0


# ----------------------------------------------------------------------------------------------
# Sizing and creation (host side)
# ----------------------------------------------------------------------------------------------


def memory_bytes(capacity_steps: int, episode_length: int, obs_shape: Sequence[int], obs_dtype,
                 action_dim: int) -> int:
    """Bytes of the arrays `init` allocates for these arguments (the state only)."""
    num_episodes = int(capacity_steps) // int(episode_length)
    slots = num_episodes * int(episode_length)
    obs_bytes = num_episodes * (int(episode_length) + 1) * int(np.prod(obs_shape, dtype=np.int64)) \
        * np.dtype(obs_dtype).itemsize
    float32 = 4
    action_bytes = slots * int(action_dim) * float32
    reward_and_priority_bytes = 2 * slots * float32
    scalar_bytes = 2 * 4  # num_episodes, max_priority
    return obs_bytes + action_bytes + reward_and_priority_bytes + scalar_bytes


def available_bytes(device: Optional[jax.Device] = None) -> int:
    """Free memory of `device` (default: the first local device) where JAX reports it (GPUs, TPUs),
    otherwise the host's available RAM (the CPU backend reports nothing)."""
    device = jax.local_devices()[0] if device is None else device
    try:
        stats = device.memory_stats()
    except Exception:  # some backends raise instead of returning None
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return int(psutil.virtual_memory().available)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def init(capacity_steps: int, episode_length: int, obs_shape: Sequence[int], obs_dtype, action_dim: int,
         frame_stack: int = 1, *, horizon: int = 5, max_bytes: Optional[int] = None) -> SequenceReplay:
    """An empty buffer of capacity_steps // episode_length episodes.

    obs_shape: one stored observation: (obs_dim,) for states, one frame (h, w, C) for pixels (channels-last).
    frame_stack: frames per sampled observation (1 for states); sampled pixel observations have
        shape (h, w, frame_stack * C).
    horizon: H of the TD-MPC update (official 5); each episode's last H steps get priority 0.
    max_bytes: memory the buffer and its sampling workspace may use; default `available_bytes()`,
        the first device's free memory (or the host's RAM where JAX reports none). Pass a share of it
        when the state will be stacked over seeds. Raises MemoryError when the buffer does not fit.
    """
    capacity_steps = _positive_int("capacity_steps", capacity_steps)
    episode_length = _positive_int("episode_length", episode_length)
    action_dim = _positive_int("action_dim", action_dim)
    frame_stack = _positive_int("frame_stack", frame_stack)
    horizon = _positive_int("horizon", horizon)
    try:
        obs_shape = tuple(int(s) for s in obs_shape)
    except TypeError:
        raise ValueError(f"obs_shape must be a tuple of positive ints, got {obs_shape!r}") from None
    if not obs_shape or any(s < 1 for s in obs_shape):
        raise ValueError(f"obs_shape must be a non-empty tuple of positive ints, got {obs_shape!r}")
    obs_dtype = np.dtype(obs_dtype)
    if capacity_steps < episode_length:
        raise ValueError(f"capacity_steps ({capacity_steps}) must hold at least one episode of "
                         f"episode_length {episode_length} steps")
    if horizon >= episode_length:
        raise ValueError(f"horizon ({horizon}) must be smaller than episode_length ({episode_length}): the "
                         f"last horizon steps of every episode get priority 0, so none would be left to sample")

    num_episodes = capacity_steps // episode_length
    state_bytes = memory_bytes(capacity_steps, episode_length, obs_shape, obs_dtype, action_dim)
    workspace_bytes = _SAMPLE_WORKSPACE_FLOATS_PER_SLOT * 4 * num_episodes * episode_length
    needed = state_bytes + workspace_bytes
    limit = available_bytes() if max_bytes is None else int(max_bytes)
    if needed > limit:
        per_episode = (memory_bytes(episode_length, episode_length, obs_shape, obs_dtype, action_dim)
                       + _SAMPLE_WORKSPACE_FLOATS_PER_SLOT * 4 * episode_length)
        fitting_steps = (limit // per_episode) * episode_length
        raise MemoryError(
            f"sequence replay of capacity_steps={capacity_steps} ({num_episodes} episodes of {episode_length} "
            f"steps, obs {obs_shape} {obs_dtype}, action_dim {action_dim}) needs {needed} bytes "
            f"({needed / _GIB:.2f} GiB: {state_bytes} for the buffer, {workspace_bytes} for sampling) but "
            f"only {limit} bytes ({limit / _GIB:.2f} GiB) are available; the largest capacity_steps that fits "
            f"is {fitting_steps}")

    return SequenceReplay(
        obs=jnp.zeros((num_episodes, episode_length + 1, *obs_shape), obs_dtype),
        action=jnp.zeros((num_episodes, episode_length, action_dim), jnp.float32),
        reward=jnp.zeros((num_episodes, episode_length), jnp.float32),
        priority=jnp.zeros((num_episodes, episode_length), jnp.float32),
        num_episodes=jnp.zeros((), jnp.int32),
        max_priority=jnp.ones((), jnp.float32),  # official: 1.0 for the first episode
        frame_stack=frame_stack,
        horizon=horizon,
    )


# ----------------------------------------------------------------------------------------------
# Small queries (jittable)
# ----------------------------------------------------------------------------------------------


def capacity_episodes(state: SequenceReplay) -> int:
    """E, the number of episode rows (a static Python int)."""
    return state.reward.shape[-2]


def episode_length(state: SequenceReplay) -> int:
    """L, steps per episode (a static Python int)."""
    return state.reward.shape[-1]


def num_filled_episodes(state: SequenceReplay) -> jax.Array:
    """Rows that hold an episode: min(num_episodes, E)."""
    return jnp.minimum(state.num_episodes, capacity_episodes(state))


def is_full(state: SequenceReplay) -> jax.Array:
    """Whether every row holds an episode (the official code then samples without replacement)."""
    return state.num_episodes >= capacity_episodes(state)


def _filled_rows(state: SequenceReplay) -> jax.Array:
    return jnp.arange(capacity_episodes(state)) < num_filled_episodes(state)


# ----------------------------------------------------------------------------------------------
# Adding episodes
# ----------------------------------------------------------------------------------------------


def add_episode(state: SequenceReplay, obs: jax.Array, action: jax.Array, reward: jax.Array) -> SequenceReplay:
    """Writes one episode into the oldest row (jittable).

    obs: (L+1, *obs_shape), o_0 .. o_L. With frame_stack k > 1 a stacked observation
        (L+1, h, w, k*C) is accepted too; its newest frame (the last C channels) is stored.
    action: (L, A); reward: (L,).
    The episode's priorities are max_priority (1.0 if the buffer is empty), its last `horizon` 0.
    """
    length, frame_shape = episode_length(state), state.obs.shape[2:]
    obs = jnp.asarray(obs)
    stacked_shape = (*frame_shape[:-1], frame_shape[-1] * state.frame_stack)
    if state.frame_stack > 1 and obs.shape == (length + 1, *stacked_shape):
        obs = obs[..., -frame_shape[-1]:]  # keep the newest frame of each stack (official does the same)
    if obs.shape != (length + 1, *frame_shape):
        valid = f"{(length + 1, *frame_shape)}" + (f" or stacked {(length + 1, *stacked_shape)}"
                                                   if state.frame_stack > 1 else "")
        raise ValueError(f"obs must have shape {valid} (episode_length + 1 observations), got {obs.shape}")
    if not np.can_cast(obs.dtype, state.obs.dtype, casting="same_kind"):
        raise ValueError(f"obs of dtype {obs.dtype} cannot be stored as {state.obs.dtype} without changing "
                         f"its values")
    action_shape, reward_shape = state.action.shape[1:], state.reward.shape[1:]
    if jnp.shape(action) != action_shape:
        raise ValueError(f"action must have shape {action_shape} (episode_length, action_dim), "
                         f"got {jnp.shape(action)}")
    if jnp.shape(reward) != reward_shape:
        raise ValueError(f"reward must have shape {reward_shape} (episode_length,), got {jnp.shape(reward)}")

    row = state.num_episodes % capacity_episodes(state)
    # Official: the max over the priorities stored so far (the row about to be overwritten included).
    new_priority = jnp.where(jnp.arange(length) < length - state.horizon, state.max_priority, 0.0)
    return state.replace(
        obs=state.obs.at[row].set(obs.astype(state.obs.dtype)),
        action=state.action.at[row].set(jnp.asarray(action, jnp.float32)),
        reward=state.reward.at[row].set(jnp.asarray(reward, jnp.float32)),
        priority=state.priority.at[row].set(new_priority.astype(jnp.float32)),
        num_episodes=state.num_episodes + 1,
        # The new row holds the old max, so the max over filled rows is unchanged.
    )


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def _draw_with_replacement(key: jax.Array, scaled: jax.Array, batch_size: int) -> Tuple[jax.Array, jax.Array]:
    """(row, step) of batch_size independent draws with probability scaled[row, step] / scaled.sum()."""
    row_cumsum = jnp.cumsum(scaled, axis=1)  # (E, L)
    row_total = row_cumsum[:, -1]
    episode_cumsum = jnp.cumsum(row_total)  # (E,)
    key_row, key_step = jax.random.split(key)

    def below(total):  # a uniform in [0, total): the top value must not land on `total` itself
        return jnp.nextafter(total, jnp.zeros_like(total))

    # Smallest index whose cumulative sum exceeds u: never one of zero width.
    u_row = jnp.minimum(jax.random.uniform(key_row, (batch_size,)) * episode_cumsum[-1], below(episode_cumsum[-1]))
    rows = jnp.searchsorted(episode_cumsum, u_row, side="right")
    chosen_total = row_total[rows]
    u_step = jnp.minimum(jax.random.uniform(key_step, (batch_size,)) * chosen_total, below(chosen_total))
    steps = jax.vmap(lambda cumsum, u: jnp.searchsorted(cumsum, u, side="right"))(row_cumsum[rows], u_step)
    return rows, steps


def _draw_without_replacement(key: jax.Array, scaled: jax.Array, batch_size: int) -> Tuple[jax.Array, jax.Array]:
    """(row, step) of batch_size distinct slots: the top batch_size of log(scaled) + Gumbel noise."""
    length = scaled.shape[1]
    flat = scaled.reshape(-1)
    logits = jnp.where(flat > 0, jnp.log(jnp.where(flat > 0, flat, 1.0)), -jnp.inf)
    _, slots = jax.lax.top_k(logits + jax.random.gumbel(key, flat.shape), batch_size)
    return slots // length, slots % length


def _stacked_obs(state: SequenceReplay, rows: jax.Array, positions: jax.Array) -> jax.Array:
    """Observations at positions (B, T) of episodes rows (B,): (B, T, h, w, k*C) with frames t-k+1..t,
    oldest first, the episode's first frame repeated before its start."""
    k = state.frame_stack
    if k == 1:
        return state.obs[rows[:, None], positions]
    frame_positions = jnp.maximum(positions[..., None] - jnp.arange(k - 1, -1, -1), 0)  # (B, T, k)
    return merge_frames(state.obs[rows[:, None, None], frame_positions])  # (B, T, k, h, w, C) -> (B, T, h, w, k*C)


def sample(state: SequenceReplay, key: jax.Array, batch_size: int, horizon: int, *,
           alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA,
           replace: bool = True) -> Tuple[Dict[str, jax.Array], jax.Array]:
    """Draws batch_size sequences of `horizon` steps by priority (jittable; batch_size, horizon and
    replace static).

    Returns (batch, indices):
      batch["obs"]     (B, H+1, *stacked_obs_shape), the stored dtype (uint8 pixels, float32 states)
      batch["action"]  (B, H, A) float32
      batch["reward"]  (B, H) float32
      batch["weights"] (B,) float32 importance weights (N P)^-beta / max over the batch
      indices          (B,) int32 flat slots (episode row * L + step) for update_priorities
    """
    batch_size = _positive_int("batch_size", batch_size)
    horizon = _positive_int("horizon", horizon)
    if horizon > state.horizon:
        raise ValueError(f"horizon ({horizon}) must be at most the horizon the buffer was created with "
                         f"({state.horizon}): only that many final steps of each episode are excluded, "
                         f"so longer sequences would cross an episode's end")
    num_rows, length = state.priority.shape
    if not replace and batch_size > num_rows * (length - state.horizon):
        raise ValueError(f"replace=False draws distinct slots, so batch_size ({batch_size}) must be at most "
                         f"the {num_rows * (length - state.horizon)} sampleable slots of a full buffer")

    filled_rows = _filled_rows(state)
    scaled = jnp.where(filled_rows[:, None], state.priority, 0.0) ** alpha  # p^alpha, 0 for empty rows
    draw = _draw_with_replacement if replace else _draw_without_replacement
    rows, steps = draw(key, scaled, batch_size)

    probability = scaled[rows, steps] / scaled.sum()
    num_filled_slots = (num_filled_episodes(state) * length).astype(jnp.float32)
    weights = (num_filled_slots * probability) ** (-beta)
    weights = weights / weights.max()

    step_offsets = jnp.arange(horizon)
    batch = {
        "obs": _stacked_obs(state, rows, steps[:, None] + jnp.arange(horizon + 1)),
        "action": state.action[rows[:, None], steps[:, None] + step_offsets],
        "reward": state.reward[rows[:, None], steps[:, None] + step_offsets],
        "weights": weights.astype(jnp.float32),
    }
    indices = (rows * length + steps).astype(jnp.int32)
    return batch, indices


# ----------------------------------------------------------------------------------------------
# Priority write-back
# ----------------------------------------------------------------------------------------------


def update_priorities(state: SequenceReplay, indices: jax.Array, priorities: jax.Array,
                      valid: Optional[jax.Array] = None) -> SequenceReplay:
    """Sets p = priority + 1e-6 at the flat slots `indices` (B,) from `sample` (jittable); a slot given
    twice keeps the larger value. Then max_priority = the largest priority in the filled rows.

    priorities: (B,) or (B, 1), finite and >= 0 (the agent's per-sample TD priorities).
    valid: optional (B,) bool; rows where it is False are ignored entirely (the result is that of the
    valid rows alone: no write, no +1e-6, no say in a repeated slot; with no valid row the state comes
    back unchanged). For a batch of which only some rows were trained on (MoDem's demo split).
    """
    indices = jnp.asarray(indices)
    priorities = jnp.asarray(priorities, jnp.float32)
    if priorities.ndim == 2 and priorities.shape[1] == 1:
        priorities = priorities[:, 0]
    if indices.ndim != 1 or priorities.shape != indices.shape:
        raise ValueError(f"indices must have shape (B,) and priorities (B,) or (B, 1); got indices "
                         f"{indices.shape} and priorities {priorities.shape}")
    flat = state.priority.reshape(-1)
    any_valid = jnp.asarray(True)
    if valid is not None:
        valid = jnp.asarray(valid)
        if valid.shape != indices.shape or valid.dtype != jnp.bool_:
            raise ValueError(f"valid must be a bool array of shape {indices.shape} (one flag per index); got "
                             f"{valid.dtype} {valid.shape}")
        # Ignored rows point past the end and are dropped by the scatters below.
        indices = jnp.where(valid, indices, flat.size)
        any_valid = valid.any()
    # Clearing first and then taking the max makes a repeated slot's result deterministic.
    flat = flat.at[indices].set(0.0, mode="drop").at[indices].max(priorities + PRIORITY_EPS, mode="drop")
    priority = flat.reshape(state.priority.shape)
    max_priority = jnp.max(jnp.where(_filled_rows(state)[:, None], priority, 0.0))
    return state.replace(priority=priority, max_priority=jnp.where(any_valid, max_priority, state.max_priority))
