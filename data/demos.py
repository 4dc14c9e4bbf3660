"""Demonstrations for MoDem (spec §3.5, §10 #5 and #7): the file format, its checks, and the replay they fill.

File format. One Minari-compatible dataset per task (written with Minari's own writer, so
`minari.load_dataset` reads it too), at `<root>/<dataset_id>/data/` (`metadata.json` + `main_data.hdf5`),
root with MINARI_DATASETS_PATH's meaning (data/datasets.py). Ids look like `pixax/<task>/demos-v0`
(`dataset_id_for(task)`). Each episode group of the HDF5 file holds (L = the task's fixed episode length
in agent steps):

  observations/pixels  uint8   (L+1, h, w, 3)  RGB render of o_0 .. o_L, channels-last (pixax's layout;
                                               the spec's PyTorch layout is 3 x h x w)
  observations/state   float32 (L+1, S)        the proprioceptive / privileged state of o_0 .. o_L
  actions              float32 (L, A)          in [-1, 1] (clipped on read, as S2 helper.get_demos does)
  rewards              float32 (L,)            the reward MoDem learns from: already sparse (success - 1)
                                               for Meta-World / Adroit, dense for DMControl
  terminations         bool    (L,)            all False (fixed-length episodes)
  truncations          bool    (L,)            only the last True
  infos/success        float32 (L+1,)          Minari's infos: entry 0 after reset, entry t+1 after step t
                                               (per-step success, not latched; 0 for DMControl)

metadata.json holds Minari's keys plus "task", "episode_length" and the writer's own (how the demos were
made: policy, checkpoint, action_repeat, image_size, reward type, returns...).

Checks (every error names the file and what is wrong): a missing dataset or file, a corrupt file, missing
keys, wrong shapes or dtypes, NaN/inf values, an episode that terminates or is truncated before its last
step, and episodes of different lengths or of another length than the environment's (spec §10 #7: frame
stacking and the PER masking of the last H steps assume one fixed length; nothing is padded or trimmed).

Replay. MoDem's observations are pixels + state, so its buffers are a `PixelStateReplay`: a
data/sequence_replay buffer for the pixel frames, actions, rewards and priorities, plus the state of every
step in the same rows; `sample_replay` returns obs = {"pixels": (B, H+1, h, w, k*3), "state": (B, H+1, S)}.
`demo_replay(demos, ...)` builds one sized to the demos (N x L steps), not to the run (spec §10 #5); every
demo step gets priority 1 but its last H steps 0, as S2's demo buffer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Dict, Optional, Tuple

import flax.struct as struct
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from data import sequence_replay
# data/datasets.py's Minari helpers: root resolution, id-or-path lookup, its error type.
from data.datasets import DatasetError, _minari_root, _resolve_data_dir, datasets_root

NAMESPACE = "pixax"
REQUIRED_KEYS = ("pixels", "state", "actions", "rewards")  # what a writer must give per episode
_HDF5_FILE_NAME = "main_data.hdf5"
_METADATA_FILE_NAME = "metadata.json"
_OWN_METADATA_KEYS = ("task", "episode_length")  # written by write_demos itself


def dataset_id_for(task: str, version: int = 0) -> str:
    """The demos' Minari id of a pixax task: 'pixax/<task>/demos-v<version>'."""
    return f"{NAMESPACE}/{task}/demos-v{int(version)}"


# ---------------------------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Demos:
    """N demonstrations of one fixed length L, stacked (the layout of the module docstring)."""

    pixels: np.ndarray  # (N, L+1, h, w, 3) uint8
    state: np.ndarray  # (N, L+1, S) float32
    actions: np.ndarray  # (N, L, A) float32 in [-1, 1]
    rewards: np.ndarray  # (N, L) float32
    success: np.ndarray  # (N, L+1) float32 (infos/success)
    metadata: Dict[str, Any]
    name: str  # dataset id or path it was read from

    @property
    def num_episodes(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def episode_length(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def frame_shape(self) -> Tuple[int, ...]:
        return tuple(self.pixels.shape[2:])

    @property
    def state_dim(self) -> int:
        return int(self.state.shape[2])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[2])

    def returns(self) -> np.ndarray:
        """Undiscounted return of every demo (N,), float64."""
        return self.rewards.astype(np.float64).sum(axis=1)

    def episode(self, index: int) -> Dict[str, np.ndarray]:
        """Demo `index` as the dict write_demos takes."""
        return {"pixels": self.pixels[index], "state": self.state[index], "actions": self.actions[index],
                "rewards": self.rewards[index], "success": self.success[index]}


# ---------------------------------------------------------------------------------------------- checks


def _check_finite(values: np.ndarray, what: str, where: str) -> None:
    if not np.all(np.isfinite(values)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise DatasetError(f"{where}: {what} contains NaN or inf (first at index {bad}, value {values[bad]}); "
                           f"every state, action, reward and success value must be finite.")


def check_episode(episode: Mapping[str, Any], index: int, where: str) -> Dict[str, np.ndarray]:
    """One demo as numpy arrays (pixels uint8, the rest float32; terminations / truncations bool), after
    checking keys, shapes, dtypes, values and that it runs to its last step. `where` names the file."""
    here = f"{where}, episode {index}"
    missing = [key for key in REQUIRED_KEYS if key not in episode]
    if missing:
        raise DatasetError(f"{here}: missing {missing}; a demo needs {list(REQUIRED_KEYS)} (and optionally "
                           f"'success', 'terminations', 'truncations').")
    rewards = np.asarray(episode["rewards"])
    if rewards.ndim != 1 or rewards.shape[0] < 1:
        raise DatasetError(f"{here}: rewards must have shape (L,) with L >= 1, got {rewards.shape}.")
    length = rewards.shape[0]
    pixels, state, actions = (np.asarray(episode[key]) for key in ("pixels", "state", "actions"))
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[0] != length + 1 or pixels.shape[-1] != 3:
        raise DatasetError(f"{here}: pixels must be uint8 RGB frames (L+1, h, w, 3) = ({length + 1}, h, w, 3), "
                           f"channels-last, got {pixels.dtype} {pixels.shape}.")
    if state.ndim != 2 or state.shape[0] != length + 1 or state.shape[1] < 1:
        raise DatasetError(f"{here}: state must have shape (L+1, S) = ({length + 1}, S) with S >= 1, "
                           f"got {state.shape}.")
    if actions.ndim != 2 or actions.shape[0] != length or actions.shape[1] < 1:
        raise DatasetError(f"{here}: actions must have shape (L, A) = ({length}, A), got {actions.shape}.")
    success = np.asarray(episode.get("success", np.zeros(length + 1)))
    if success.shape != (length + 1,):
        raise DatasetError(f"{here}: success must have shape (L+1,) = ({length + 1},) (entry 0 after reset), "
                           f"got {success.shape}.")
    flags = {}
    for key, default in (("terminations", np.zeros(length, bool)), ("truncations", np.arange(length) == length - 1)):
        value = np.asarray(episode.get(key, default))
        if value.shape != (length,):
            raise DatasetError(f"{here}: {key} must have shape (L,) = ({length},), got {value.shape}.")
        flags[key] = value.astype(bool)
    if flags["terminations"].any() or flags["truncations"][:-1].any():
        key = "terminations" if flags["terminations"].any() else "truncations"
        step = int(np.argmax(flags[key]))
        raise DatasetError(f"{here}: {key} is set at step {step} of {length}; demos are fixed-length episodes that "
                           f"run to their last step (spec §10 #7): drop episodes that end early.")
    arrays = {"pixels": pixels, "state": state.astype(np.float32), "actions": actions.astype(np.float32),
              "rewards": rewards.astype(np.float32), "success": success.astype(np.float32), **flags}
    for key in ("state", "actions", "rewards", "success"):
        _check_finite(arrays[key], key, here)
    return arrays


def _check_same_layout(episodes: Sequence[Dict[str, np.ndarray]], where: str) -> None:
    """Every episode has episode 0's length, frame shape, state size and action size."""
    first = episodes[0]
    for index, episode in enumerate(episodes[1:], start=1):
        if len(episode["rewards"]) != len(first["rewards"]):
            raise DatasetError(
                f"{where}, episode {index}: {len(episode['rewards'])} steps but episode 0 has {len(first['rewards'])}; "
                f"every demo must have the task's fixed episode length (spec §10 #7).")
        for key, what in (("pixels", "frame shape"), ("state", "state size"), ("actions", "action size")):
            if episode[key].shape[1:] != first[key].shape[1:]:
                raise DatasetError(f"{where}, episode {index}: {what} {episode[key].shape[1:]} differs from episode "
                                   f"0's {first[key].shape[1:]}.")


# ---------------------------------------------------------------------------------------------- writing


def write_demos(dataset_id: str, episodes: Sequence[Mapping[str, Any]], *, task: str,
                root: str | os.PathLike | None = None, metadata: Optional[Mapping[str, Any]] = None,
                overwrite: bool = False) -> pathlib.Path:
    """Write `episodes` (dicts with pixels, state, actions, rewards and optionally success, see check_episode)
    as the Minari dataset `dataset_id` under `root`; returns its data/ folder.

    metadata: anything JSON-serialisable that says how the demos were made (stored as it is); "task" and
    "episode_length" are written here. An existing dataset is an error unless overwrite=True."""
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id

    root_path = datasets_root(root)
    where = f"demos {dataset_id!r} at {root_path / dataset_id}"
    try:
        parse_dataset_id(dataset_id)
    except ValueError:
        raise DatasetError(f"Malformed dataset id {dataset_id!r}: use '(namespace/)name-vN', e.g. "
                           f"{dataset_id_for('walker_walk')!r}.") from None
    if len(episodes) == 0:
        raise DatasetError(f"{where}: no episodes to write.")
    metadata = dict(metadata or {})
    clashes = sorted(set(metadata) & set(_OWN_METADATA_KEYS))
    if clashes:
        raise DatasetError(f"{where}: metadata keys {clashes} are written by write_demos itself; remove them.")
    checked = [check_episode(episode, index, where) for index, episode in enumerate(episodes)]
    _check_same_layout(checked, where)
    if (root_path / dataset_id).exists():
        if not overwrite:
            raise DatasetError(f"{where} already exists; Minari datasets are immutable: delete it, pass overwrite=True "
                               f"(--overwrite) or bump the version (-vN).")
        shutil.rmtree(root_path / dataset_id)

    first = checked[0]
    observation_space = gym.spaces.Dict({
        "pixels": gym.spaces.Box(0, 255, first["pixels"].shape[1:], np.uint8),
        "state": gym.spaces.Box(-np.inf, np.inf, first["state"].shape[1:], np.float32),
    })
    action_space = gym.spaces.Box(-1.0, 1.0, first["actions"].shape[1:], np.float32)
    buffers = [
        EpisodeBuffer(id=index, seed=episodes[index].get("seed"),
                      observations={"pixels": episode["pixels"], "state": episode["state"]},
                      actions=episode["actions"], rewards=episode["rewards"],
                      terminations=episode["terminations"], truncations=episode["truncations"],
                      infos={"success": episode["success"]})
        for index, episode in enumerate(checked)
    ]
    extra = json.loads(json.dumps({**metadata, "task": task, "episode_length": len(first["rewards"])},
                                  default=lambda x: x.item() if isinstance(x, np.generic) else x.tolist()))
    with _minari_root(root_path), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(is set to None|env_spec is None)", category=UserWarning)
        dataset = minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=observation_space,
                                                     action_space=action_space, jpeg_encoding=False)
    dataset.storage.update_metadata(extra)
    return pathlib.Path(dataset.storage.data_path)


# ---------------------------------------------------------------------------------------------- reading


def read_demos(dataset_id_or_path: str | os.PathLike, root: str | os.PathLike | None = None, *,
               episode_length: Optional[int] = None, num_demos: Optional[int] = None) -> Demos:
    """Read demos written by write_demos (an id under `root`, or a path when root is None).

    episode_length: the environment's episode length (agent steps); demos of another length are an error.
    num_demos: keep the first num_demos episodes (an error if there are fewer); None keeps all (S2 loads
    every file it finds, spec §3.5). Actions are clipped to [-1, 1] (S2 get_demos).
    Raises FileNotFoundError for a missing dataset or file, DatasetError (naming the file) otherwise."""
    from minari.dataset.minari_storage import MinariStorage

    data_dir, name = _resolve_data_dir(dataset_id_or_path, root)
    metadata_file, data_file = data_dir / _METADATA_FILE_NAME, data_dir / _HDF5_FILE_NAME
    for path in (metadata_file, data_file):
        if not path.is_file():
            raise FileNotFoundError(f"Demos {name!r}: {path} is missing; {data_dir} is not a demos dataset written "
                                    f"by data/demos.py write_demos (scripts/collect_demos.py).")
    where = f"demos {name!r} ({data_file})"
    try:
        metadata = json.loads(metadata_file.read_text())
        num_episodes = int(metadata["total_episodes"])
        storage = MinariStorage.read(data_dir)
        raw = list(storage.get_episodes(range(num_episodes)))
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, AssertionError) as error:
        raise DatasetError(f"{where}: cannot read the data ({type(error).__name__}: {error}); the file is corrupt or "
                           f"truncated, or not a demos dataset: collect the demos again.") from None
    if num_episodes == 0:
        raise DatasetError(f"{where}: the dataset holds no episodes.")

    episodes = []
    for index, episode in enumerate(raw):
        observations = episode.get("observations")
        if not isinstance(observations, Mapping) or not {"pixels", "state"} <= set(observations):
            found = sorted(observations) if isinstance(observations, Mapping) else type(observations).__name__
            raise DatasetError(f"{where}, episode {index}: observations must be a group with 'pixels' and 'state' "
                               f"(got {found}); this is not a MoDem demos dataset.")
        infos = episode.get("infos") or {}
        episodes.append(check_episode({
            "pixels": observations["pixels"], "state": observations["state"], "actions": episode["actions"],
            "rewards": episode["rewards"], "terminations": episode["terminations"],
            "truncations": episode["truncations"],
            **({"success": infos["success"]} if "success" in infos else {}),
        }, index, where))
    _check_same_layout(episodes, where)
    length = len(episodes[0]["rewards"])
    if episode_length is not None and length != int(episode_length):
        raise DatasetError(f"{where}: the demos have {length} steps per episode but the environment's episodes have "
                           f"{episode_length} (agent steps); collect them with the run's action repeat "
                           f"(the demos' metadata says action_repeat={metadata.get('action_repeat')}).")
    if num_demos is not None:
        if not 1 <= int(num_demos) <= len(episodes):
            raise DatasetError(f"{where}: {num_demos} demos asked for but the dataset holds {len(episodes)}.")
        episodes = episodes[:int(num_demos)]

    def stacked(key, dtype):
        return np.stack([episode[key] for episode in episodes]).astype(dtype)

    return Demos(pixels=stacked("pixels", np.uint8), state=stacked("state", np.float32),
                 actions=np.clip(stacked("actions", np.float32), -1.0, 1.0), rewards=stacked("rewards", np.float32),
                 success=stacked("success", np.float32), metadata=metadata, name=name)


# ---------------------------------------------------------------------------------------------- replay


class PixelStateReplay(struct.PyTreeNode):
    """A sequence replay of (pixels, state) observations; a pytree on the device, pure functions below."""

    sequences: sequence_replay.SequenceReplay  # single pixel frames, actions, rewards, priorities
    state: jax.Array  # (E, L+1, S) float32: the state of o_0 .. o_L, same rows as `sequences`


def init_replay(capacity_steps: int, episode_length: int, frame_shape: Sequence[int], state_dim: int,
                action_dim: int, frame_stack: int, *, horizon: int = 5,
                max_bytes: Optional[int] = None) -> PixelStateReplay:
    """An empty buffer of capacity_steps // episode_length episodes; frame_shape is one frame (h, w, 3),
    sampled observations stack frame_stack of them. max_bytes as sequence_replay.init (MemoryError)."""
    if isinstance(state_dim, bool) or not isinstance(state_dim, (int, np.integer)) or state_dim < 1:
        raise ValueError(f"state_dim must be an integer >= 1, got {state_dim!r}")
    num_episodes = int(capacity_steps) // int(episode_length)
    state_bytes = num_episodes * (int(episode_length) + 1) * int(state_dim) * 4
    limit = sequence_replay.available_bytes() if max_bytes is None else int(max_bytes)
    sequences = sequence_replay.init(capacity_steps, episode_length, frame_shape, np.uint8, action_dim, frame_stack,
                                     horizon=horizon, max_bytes=limit - state_bytes)
    return PixelStateReplay(sequences=sequences,
                            state=jnp.zeros((num_episodes, int(episode_length) + 1, int(state_dim)), jnp.float32))


def add_replay_episode(replay: PixelStateReplay, pixels: jax.Array, state: jax.Array, action: jax.Array,
                       reward: jax.Array) -> PixelStateReplay:
    """Writes one episode into the oldest row (jittable): pixels (L+1, h, w, 3) (or stacked (L+1, h, w, k*3):
    the newest frame is kept), state (L+1, S), action (L, A), reward (L,). Priorities as sequence_replay."""
    expected = replay.state.shape[1:]
    if jnp.shape(state) != expected:
        raise ValueError(f"state must have shape {expected} (episode_length + 1, state_dim), got {jnp.shape(state)}")
    row = replay.sequences.num_episodes % sequence_replay.capacity_episodes(replay.sequences)
    return PixelStateReplay(sequences=sequence_replay.add_episode(replay.sequences, pixels, action, reward),
                            state=replay.state.at[row].set(jnp.asarray(state, jnp.float32)))


def sample_replay(replay: PixelStateReplay, key: jax.Array, batch_size: int, horizon: int, *,
                  alpha: float = sequence_replay.DEFAULT_ALPHA, beta: float = sequence_replay.DEFAULT_BETA,
                  replace: bool = True) -> Tuple[Dict[str, Any], jax.Array]:
    """sequence_replay.sample with the states of the same steps: batch["obs"] = {"pixels": (B, H+1, h, w, k*3)
    uint8, "state": (B, H+1, S) float32}; action, reward, weights (normalized over this batch) and indices
    as sequence_replay.sample."""
    batch, indices = sequence_replay.sample(replay.sequences, key, batch_size, horizon, alpha=alpha, beta=beta,
                                            replace=replace)
    length = sequence_replay.episode_length(replay.sequences)
    rows, steps = indices // length, indices % length
    state = replay.state[rows[:, None], steps[:, None] + jnp.arange(horizon + 1)]
    return {**batch, "obs": {"pixels": batch["obs"], "state": state}}, indices


def update_replay_priorities(replay: PixelStateReplay, indices: jax.Array, priorities: jax.Array,
                             valid: Optional[jax.Array] = None) -> PixelStateReplay:
    """sequence_replay.update_priorities of the pixel part (the states have no priorities); rows whose
    `valid` flag is False (optional (B,) bool) change nothing."""
    return replay.replace(sequences=sequence_replay.update_priorities(replay.sequences, indices, priorities,
                                                                      valid))


def demo_replay(demos: Demos, *, frame_stack: int, horizon: int = 5,
                max_bytes: Optional[int] = None) -> PixelStateReplay:
    """A PixelStateReplay holding exactly the demos (N x L steps, spec §10 #5), each demo step at priority 1
    except its last `horizon` steps (0), as S2's demo buffer; its samples feed bc_update and the demo part
    of modem.update, and modem.update's "demo_priorities" go back into it."""
    if demos.episode_length <= horizon:
        raise ValueError(f"demos {demos.name!r}: episodes of {demos.episode_length} steps are too short for "
                         f"sequences of horizon {horizon}")
    replay = init_replay(demos.num_episodes * demos.episode_length, demos.episode_length, demos.frame_shape,
                         demos.state_dim, demos.action_dim, frame_stack, horizon=horizon, max_bytes=max_bytes)
    for index in range(demos.num_episodes):
        replay = add_replay_episode(replay, demos.pixels[index], demos.state[index], demos.actions[index],
                                    demos.rewards[index])
    return replay
