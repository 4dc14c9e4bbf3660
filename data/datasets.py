"""Offline datasets in Minari format and their D4RL `qlearning_dataset` view (spec §4, §9.1, §10 #18, #21, #26).

Storage. A dataset is a local Minari dataset written with Minari's own writer
(`minari.create_dataset_from_buffers`), so `minari.load_dataset` reads it too. It lives at
`<root>/<dataset_id>/data/` (`metadata.json` + `main_data.hdf5`), where `root` has the meaning of
MINARI_DATASETS_PATH: `root=None` uses that variable, or `~/.minari/datasets` when it is unset.
Ids look like `pixax/halfcheetah/medium-v0` (Minari's `(namespace/)name-vN`).

An episode of T steps is a dict of arrays
  observations (T+1, *obs_shape)   o_0 ... o_T (o_T is the observation after the last step)
  actions      (T, A)
  rewards      (T,)
  terminations (T,)  True only at the last step, when the MDP ended (no bootstrapping from o_T)
  truncations  (T,)  True only at the last step, when a time limit cut the episode (bootstrapping goes on)
An episode whose last step is neither terminated nor truncated is an unfinished log (e.g. a replay
buffer dumped mid-episode); it is treated like a truncation.

Reference returns. Our v5 datasets carry their own random and expert returns in the dataset
metadata, under Minari's names `ref_min_score` (random) and `ref_max_score` (expert), so that
Minari's `get_normalized_score` sees them too. The D4RL v2 constants are in `D4RL_V2_REFERENCE_RETURNS`
for reference only: they come from mujoco-py v2 environments and are NOT comparable with gymnasium v5
datasets (spec §9.1); compare algorithms with each other on identical data.

The transition view (`load_dataset`), one row per step t of every episode:
  observations[i] = o_t, actions[i] = a_t, rewards[i] = r_t, next_observations[i] = o_{t+1},
  terminals[i] = terminations[t], timeouts[i] = truncations[t], episode_ids[i] = the episode's index.
Terminals are terminations only: a time-limit truncation is NOT a terminal (spec §10 #26). Unlike
D4RL's `qlearning_dataset`, which drops the transition at a timeout because its flat files lack the
next observation, the Minari layout stores o_T, so that transition is kept (terminal 0, it bootstraps
from o_T). Floating-point arrays are float32; terminals and timeouts are float32 0/1, so a learner
writes (1 - terminals) directly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np

# D4RL v2 (mujoco-py) random / expert reference returns, spec §9.1. NOT comparable with our v5 datasets.
D4RL_V2_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
}

# Metadata keys that go to Minari's own arguments of create_dataset_from_buffers.
_MINARI_METADATA_ARGUMENTS = ("algorithm_name", "author", "author_email", "code_permalink", "description", "requirements")
# Keys Minari writes itself; a caller's metadata may not set them.
_MINARI_RESERVED_KEYS = (
    "dataset_id", "observation_space", "action_space", "env_spec", "eval_env_spec", "data_format",
    "jpeg_encoding", "minari_version", "total_episodes", "total_steps", "dataset_size",
    "ref_min_score", "ref_max_score", "num_episodes_average_score",
)
_EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")
_HDF5_FILE_NAME = "main_data.hdf5"  # Minari's HDF5 storage keeps every episode in this one file
_METADATA_FILE_NAME = "metadata.json"


class DatasetError(ValueError):
    """A dataset that exists but cannot be used: corrupt file, bad values, wrong shapes, missing metadata."""


# ---------------------------------------------------------------------------------------------- paths

def datasets_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder that holds local Minari datasets: `root`, else MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    if root is not None:
        return pathlib.Path(root)
    from_environment = os.environ.get("MINARI_DATASETS_PATH")
    if from_environment is not None:
        return pathlib.Path(from_environment)
    return pathlib.Path.home() / ".minari" / "datasets"


@contextmanager
def _minari_root(root: pathlib.Path) -> Iterator[None]:
    """Point Minari at `root` for the duration of a call (Minari reads MINARI_DATASETS_PATH at each call).

    Not thread-safe: it sets a process-wide environment variable and restores it afterwards."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _local_dataset_ids(root: pathlib.Path) -> list[str]:
    """Ids of the datasets under `root` (folders that hold a data/metadata.json), for error messages."""
    if not root.is_dir():
        return []
    return sorted(
        path.parent.parent.relative_to(root).as_posix() for path in root.glob(f"**/data/{_METADATA_FILE_NAME}")
    )


def _resolve_data_dir(dataset_id_or_path: str | os.PathLike, root: str | os.PathLike | None) -> tuple[pathlib.Path, str]:
    """The dataset's `data/` folder and a name for messages.

    With root=None an existing path is taken as it is (the dataset folder, its data/ folder or its
    main_data.hdf5); anything else is a dataset id under the datasets root."""
    candidate = pathlib.Path(dataset_id_or_path)
    if root is None and candidate.exists():
        if candidate.is_file():
            return candidate.parent, str(dataset_id_or_path)
        if (candidate / "data").is_dir():
            return candidate / "data", str(dataset_id_or_path)
        return candidate, str(dataset_id_or_path)
    datasets_folder = datasets_root(root)
    data_dir = datasets_folder / str(dataset_id_or_path) / "data"
    if not data_dir.is_dir():
        available = _local_dataset_ids(datasets_folder)
        raise FileNotFoundError(
            f"No Minari dataset {str(dataset_id_or_path)!r}: {data_dir} does not exist. "
            f"Datasets under {datasets_folder}: {available if available else 'none'}. "
            "Pass root=<folder> (MINARI_DATASETS_PATH semantics) or the path of the dataset folder."
        )
    return data_dir, str(dataset_id_or_path)


# ---------------------------------------------------------------------------------------------- checks

def _check_finite(values: np.ndarray, what: str, where: str) -> None:
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0]
        raise DatasetError(
            f"{where}: {what} contains NaN or inf (first at index {tuple(int(i) for i in bad)}, "
            f"value {values[tuple(bad)]}); every observation, action and reward must be finite."
        )


def _check_episode(episode: Mapping[str, Any], index: int, where: str) -> dict[str, np.ndarray]:
    """One episode as numpy arrays, after checking its keys, lengths, flags and values."""
    here = f"{where}, episode {index}"
    missing = [key for key in _EPISODE_KEYS if key not in episode]
    if missing:
        raise DatasetError(f"{here}: missing {missing}; an episode needs {list(_EPISODE_KEYS)}.")
    arrays = {key: np.asarray(episode[key]) for key in _EPISODE_KEYS}
    num_steps = arrays["rewards"].shape[0] if arrays["rewards"].ndim == 1 else -1
    if num_steps < 1:
        raise DatasetError(f"{here}: rewards must have shape (T,) with T >= 1, got {arrays['rewards'].shape}.")
    expected_lengths = {"observations": num_steps + 1, "actions": num_steps, "terminations": num_steps, "truncations": num_steps}
    for key, length in expected_lengths.items():
        if arrays[key].ndim == 0 or arrays[key].shape[0] != length:
            raise DatasetError(
                f"{here}: inconsistent lengths: {key} has shape {arrays[key].shape}, expected {length} rows "
                f"(T = {num_steps} rewards; observations hold T+1 rows, o_0 ... o_T)."
            )
    if arrays["actions"].ndim != 2:
        raise DatasetError(f"{here}: actions must have shape (T, A), got {arrays['actions'].shape}.")
    for key in ("terminations", "truncations"):
        flags = arrays[key]
        if not np.all((flags == 0) | (flags == 1)):
            raise DatasetError(f"{here}: {key} must be booleans (0/1), got values {np.unique(flags)[:5]}.")
        arrays[key] = flags.astype(bool)
        if np.any(arrays[key][:-1]):
            raise DatasetError(
                f"{here}: {key} is set before the last step (at step {int(np.argmax(arrays[key]))} of {num_steps}); "
                "an episode ends at its first termination or truncation: split it into episodes."
            )
    for key in ("observations", "actions", "rewards"):
        _check_finite(arrays[key], key, here)
    return arrays


def _plain_json(value: Any, what: str) -> Any:
    """`value` as plain JSON types (Minari writes metadata with json.dump and no numpy support)."""
    try:
        return json.loads(json.dumps(value, default=lambda x: x.item() if isinstance(x, np.generic) else x.tolist()))
    except (TypeError, AttributeError, ValueError) as error:
        raise DatasetError(f"metadata {what} is not JSON-serialisable ({error}): use numbers, strings, lists and dicts.") from None


# ---------------------------------------------------------------------------------------------- writing

def write_minari(
    dataset_id: str,
    episodes: Sequence[Mapping[str, Any]],
    *,
    env_spec_or_task: str | gym.envs.registration.EnvSpec,
    root: str | os.PathLike | None,
    metadata: Mapping[str, Any],
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> pathlib.Path:
    """Write `episodes` as the local Minari dataset `dataset_id` under `root`; returns its data/ folder.

    env_spec_or_task: a gymnasium EnvSpec or registered id (recorded, so Minari's `recover_environment`
      works; the spaces come from that environment), or any other task name (e.g. a dm_control task):
      recorded as metadata "task", spaces taken from `observation_space`/`action_space` or else inferred
      from the data as unbounded Boxes.
    metadata: must hold "random_return" and "expert_return" (our reference returns, stored as Minari's
      ref_min_score / ref_max_score) and "recipe" (how the data was made: policy, checkpoint, steps, noise...).
      "algorithm_name", "author", "author_email", "code_permalink", "description", "requirements" go
      to Minari's arguments of the same name; every other key is stored as it is (JSON types).
    Image observations are stored losslessly (Minari's JPEG encoding is off).
    """
    import minari
    from minari.dataset.minari_dataset import parse_dataset_id

    root_path = datasets_root(root)
    where = f"dataset {dataset_id!r} at {root_path / dataset_id}"
    try:
        parse_dataset_id(dataset_id)
    except ValueError:
        raise DatasetError(f"Malformed dataset id {dataset_id!r}: use '(namespace/)name-vN', e.g. 'pixax/halfcheetah/medium-v0'.") from None
    if (root_path / dataset_id).exists():
        raise DatasetError(f"{where} already exists; Minari datasets are immutable: delete it or bump the version (-vN).")
    if len(episodes) == 0:
        raise DatasetError(f"{where}: no episodes to write.")

    for key in ("random_return", "expert_return", "recipe"):
        if key not in metadata:
            raise DatasetError(f"{where}: metadata needs {key!r} (random_return, expert_return: floats; recipe: how the data was made).")
    random_return, expert_return = float(metadata["random_return"]), float(metadata["expert_return"])
    if not (math.isfinite(random_return) and math.isfinite(expert_return) and expert_return > random_return):
        raise DatasetError(
            f"{where}: reference returns must be finite with expert_return > random_return, "
            f"got random {random_return}, expert {expert_return}."
        )
    reserved = sorted(set(metadata) & set(_MINARI_RESERVED_KEYS))
    if reserved:
        raise DatasetError(f"{where}: metadata keys {reserved} are written by Minari / write_minari itself; remove them.")

    checked = [_check_episode(episode, index, where) for index, episode in enumerate(episodes)]
    obs_shape, obs_dtype = checked[0]["observations"].shape[1:], checked[0]["observations"].dtype
    action_dim = checked[0]["actions"].shape[1]
    for index, episode in enumerate(checked):
        if episode["observations"].shape[1:] != obs_shape or episode["actions"].shape[1] != action_dim:
            raise DatasetError(
                f"{where}, episode {index}: observation shape {episode['observations'].shape[1:]} / action dim "
                f"{episode['actions'].shape[1]} differ from episode 0's {obs_shape} / {action_dim}."
            )

    # The environment: a gymnasium spec is recorded; any other task name only as metadata.
    env_spec = None
    if isinstance(env_spec_or_task, gym.envs.registration.EnvSpec):
        env_spec = env_spec_or_task
    elif isinstance(env_spec_or_task, str) and env_spec_or_task in gym.registry:
        env_spec = gym.spec(env_spec_or_task)
    elif not isinstance(env_spec_or_task, str):
        raise DatasetError(f"{where}: env_spec_or_task must be a gymnasium EnvSpec or a string, got {type(env_spec_or_task).__name__}.")
    task_name = env_spec.id if env_spec is not None else env_spec_or_task
    env = gym.make(env_spec) if env_spec is not None else None  # Minari records env.spec; its spaces are the defaults
    if observation_space is None:
        observation_space = env.observation_space if env is not None else gym.spaces.Box(-np.inf, np.inf, obs_shape, obs_dtype)
    if action_space is None:
        action_space = env.action_space if env is not None else gym.spaces.Box(-np.inf, np.inf, (action_dim,), np.float32)
    if env is not None:
        env.close()
    if observation_space.shape != obs_shape or action_space.shape != (action_dim,):
        raise DatasetError(
            f"{where}: the data has observations {obs_shape} and actions ({action_dim},) but {task_name}'s spaces are "
            f"{observation_space.shape} and {action_space.shape}."
        )

    from minari.data_collector import EpisodeBuffer

    buffers = [
        EpisodeBuffer(
            seed=episodes[index].get("seed"),
            observations=episode["observations"],
            actions=episode["actions"],
            rewards=episode["rewards"],
            terminations=episode["terminations"],
            truncations=episode["truncations"],
        )
        for index, episode in enumerate(checked)
    ]
    minari_arguments = {key: metadata[key] for key in _MINARI_METADATA_ARGUMENTS if key in metadata}
    extra = {key: value for key, value in metadata.items() if key not in _MINARI_METADATA_ARGUMENTS and key not in ("random_return", "expert_return")}
    extra = _plain_json(extra, "values")
    extra["task"] = task_name

    with _minari_root(root_path), warnings.catch_warnings():
        # Minari warns about each optional field left None (author, permalink, eval env...): noise here.
        warnings.filterwarnings("ignore", message=r".*(is set to None|env_spec is None)", category=UserWarning)
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env,  # None for a task that is not a gymnasium environment
            observation_space=observation_space,
            action_space=action_space,
            jpeg_encoding=False,
            **minari_arguments,
        )
    # Reference returns under Minari's names (its create_dataset only records them together with an eval env).
    dataset.storage.update_metadata({"ref_min_score": random_return, "ref_max_score": expert_return, **extra})
    return pathlib.Path(dataset.storage.data_path)


# ---------------------------------------------------------------------------------------------- reading

@dataclasses.dataclass(frozen=True)
class OfflineDataset:
    """The D4RL `qlearning_dataset` view of a Minari dataset: N transitions from E episodes (module docstring).

    episode_starts[e], episode_ends[e]: transitions of episode e are rows [start, end). Episode e ends in a
    termination when terminals[end-1] = 1, a truncation when timeouts[end-1] = 1, else it is an unfinished log.
    metadata: the Minari metadata (ref_min_score = random return, ref_max_score = expert return, recipe, task...).
    """

    observations: np.ndarray  # (N, *obs_shape)
    actions: np.ndarray  # (N, A)
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, *obs_shape)
    terminals: np.ndarray  # (N,) float32 0/1: terminations only
    timeouts: np.ndarray  # (N,) float32 0/1: truncations (not terminals)
    episode_ids: np.ndarray  # (N,) int64, 0 .. E-1
    episode_starts: np.ndarray  # (E,) int64
    episode_ends: np.ndarray  # (E,) int64
    metadata: dict[str, Any]
    name: str  # dataset id or path it was loaded from

    @property
    def num_transitions(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.observations.shape[1:])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, (E,) float64."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    def episodes(self) -> list[dict[str, np.ndarray]]:
        """The episodes as dicts in the layout `write_minari` takes (e.g. to write a concatenation)."""
        result = []
        for start, end in zip(self.episode_starts, self.episode_ends):
            result.append({
                "observations": np.concatenate([self.observations[start:end], self.next_observations[end - 1:end]]),
                "actions": self.actions[start:end],
                "rewards": self.rewards[start:end],
                "terminations": self.terminals[start:end].astype(bool),
                "truncations": self.timeouts[start:end].astype(bool),
            })
        return result


def _float32(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) if np.issubdtype(values.dtype, np.floating) else values


def load_dataset(dataset_id_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> OfflineDataset:
    """Read a local Minari dataset (id under `root`, or a path when root is None) as an `OfflineDataset`.

    Raises FileNotFoundError when the dataset or one of its files is missing, and DatasetError (naming the
    file) when the file is corrupt or truncated, a value is NaN/inf, or lengths disagree."""
    from minari.dataset.minari_storage import MinariStorage

    data_dir, name = _resolve_data_dir(dataset_id_or_path, root)
    metadata_file = data_dir / _METADATA_FILE_NAME
    if not metadata_file.is_file():
        raise FileNotFoundError(f"Dataset {name!r}: {metadata_file} is missing; {data_dir} is not a Minari dataset folder.")
    try:
        metadata = json.loads(metadata_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"Dataset {name!r}: {metadata_file} is not valid JSON ({error}); the dataset is corrupt.") from None
    data_format = metadata.get("data_format", "hdf5")
    data_file = data_dir / _HDF5_FILE_NAME if data_format == "hdf5" else data_dir
    if data_format == "hdf5" and not data_file.is_file():
        raise FileNotFoundError(f"Dataset {name!r}: {data_file} is missing.")
    where = f"dataset {name!r} ({data_file})"
    try:
        storage = MinariStorage.read(data_dir)
        num_episodes = int(metadata["total_episodes"])
        raw_episodes = []
        episode_iterator = iter(storage.get_episodes(range(num_episodes)))
        for index in range(num_episodes):
            try:
                raw_episodes.append(next(episode_iterator))
            except KeyError:
                raise DatasetError(
                    f"{where}: inconsistent lengths: metadata.json says {num_episodes} episodes but episode {index} "
                    "is not in the file."
                ) from None
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, AssertionError) as error:
        raise DatasetError(
            f"{where}: cannot read the data ({type(error).__name__}: {error}); the file is corrupt or truncated, "
            "regenerate the dataset."
        ) from None
    if num_episodes == 0:
        raise DatasetError(f"{where}: the dataset holds no episodes.")

    episodes = [_check_episode(episode, index, where) for index, episode in enumerate(raw_episodes)]
    total_steps = sum(len(episode["rewards"]) for episode in episodes)
    if "total_steps" in metadata and int(metadata["total_steps"]) != total_steps:
        raise DatasetError(f"{where}: inconsistent lengths: metadata.json says {metadata['total_steps']} steps, the episodes hold {total_steps}.")
    obs_shape, action_dim = episodes[0]["observations"].shape[1:], episodes[0]["actions"].shape[1]
    for index, episode in enumerate(episodes):
        if episode["observations"].shape[1:] != obs_shape or episode["actions"].shape[1] != action_dim:
            raise DatasetError(
                f"{where}, episode {index}: observation shape {episode['observations'].shape[1:]} / action dim "
                f"{episode['actions'].shape[1]} differ from episode 0's {obs_shape} / {action_dim}."
            )

    lengths = np.array([len(episode["rewards"]) for episode in episodes], np.int64)
    episode_ends = np.cumsum(lengths)
    return OfflineDataset(
        observations=_float32(np.concatenate([episode["observations"][:-1] for episode in episodes])),
        actions=_float32(np.concatenate([episode["actions"] for episode in episodes])),
        rewards=np.concatenate([episode["rewards"] for episode in episodes]).astype(np.float32),
        next_observations=_float32(np.concatenate([episode["observations"][1:] for episode in episodes])),
        terminals=np.concatenate([episode["terminations"] for episode in episodes]).astype(np.float32),
        timeouts=np.concatenate([episode["truncations"] for episode in episodes]).astype(np.float32),
        episode_ids=np.repeat(np.arange(len(episodes), dtype=np.int64), lengths),
        episode_starts=episode_ends - lengths,
        episode_ends=episode_ends,
        metadata=metadata,
        name=name,
    )


def check_shapes(dataset: OfflineDataset, obs_shape: Sequence[int], action_dim: int) -> None:
    """Raise DatasetError when the dataset's observation shape or action dimension does not fit the agent."""
    problems = []
    if tuple(dataset.obs_shape) != tuple(obs_shape):
        problems.append(f"observations have shape {dataset.obs_shape} per step but the agent expects {tuple(obs_shape)}")
    if dataset.action_dim != int(action_dim):
        problems.append(f"actions have dimension {dataset.action_dim} but the agent expects {int(action_dim)}")
    if problems:
        task = dataset.metadata.get("task", "unknown task")
        raise DatasetError(f"Dataset {dataset.name!r} ({task}) does not fit the agent: " + "; ".join(problems) + ".")


# ---------------------------------------------------------------------------------------------- scores

def normalized_score(returns: float | np.ndarray, random_return: float, expert_return: float) -> float | np.ndarray:
    """D4RL normalized score 100·(R − R_rand)/(R_exp − R_rand): 0 = random policy, 100 = expert."""
    if expert_return == random_return:
        raise ValueError(f"expert_return equals random_return ({expert_return}): the normalized score is undefined.")
    score = 100.0 * (np.asarray(returns, np.float64) - random_return) / (expert_return - random_return)
    return float(score) if score.ndim == 0 else score


def reference_returns(dataset: OfflineDataset) -> tuple[float, float]:
    """(random_return, expert_return) stored in the dataset's metadata (ref_min_score, ref_max_score)."""
    missing = [key for key in ("ref_min_score", "ref_max_score") if dataset.metadata.get(key) is None]
    if missing:
        raise DatasetError(f"Dataset {dataset.name!r} has no reference returns ({missing} missing from its metadata); write it with write_minari.")
    return float(dataset.metadata["ref_min_score"]), float(dataset.metadata["ref_max_score"])


def concatenate(datasets: Sequence[OfflineDataset]) -> OfflineDataset:
    """Episode-wise concatenation (medium-expert = medium ∪ expert): episodes keep their transitions, ids are renumbered.

    The datasets must share observation shape, action dimension and reference returns; the result's metadata
    is the first dataset's, with "concatenated_from" listing the sources and "recipe" the list of their recipes."""
    if len(datasets) == 0:
        raise ValueError("concatenate needs at least one dataset.")
    first = datasets[0]
    for other in datasets[1:]:
        check_shapes(other, first.obs_shape, first.action_dim)
        if (other.metadata.get("ref_min_score"), other.metadata.get("ref_max_score")) != (
            first.metadata.get("ref_min_score"), first.metadata.get("ref_max_score")
        ):
            raise DatasetError(
                f"Cannot concatenate {first.name!r} and {other.name!r}: their reference returns differ "
                f"({first.metadata.get('ref_min_score')}, {first.metadata.get('ref_max_score')}) vs "
                f"({other.metadata.get('ref_min_score')}, {other.metadata.get('ref_max_score')}); they are not the same task."
            )
    transition_offsets = np.cumsum([0] + [d.num_transitions for d in datasets[:-1]])
    episode_offsets = np.cumsum([0] + [d.num_episodes for d in datasets[:-1]])
    metadata = dict(first.metadata)
    metadata["concatenated_from"] = [d.name for d in datasets]
    metadata["recipe"] = [d.metadata.get("recipe") for d in datasets]
    return OfflineDataset(
        observations=np.concatenate([d.observations for d in datasets]),
        actions=np.concatenate([d.actions for d in datasets]),
        rewards=np.concatenate([d.rewards for d in datasets]),
        next_observations=np.concatenate([d.next_observations for d in datasets]),
        terminals=np.concatenate([d.terminals for d in datasets]),
        timeouts=np.concatenate([d.timeouts for d in datasets]),
        episode_ids=np.concatenate([d.episode_ids + offset for d, offset in zip(datasets, episode_offsets)]),
        episode_starts=np.concatenate([d.episode_starts + offset for d, offset in zip(datasets, transition_offsets)]),
        episode_ends=np.concatenate([d.episode_ends + offset for d, offset in zip(datasets, transition_offsets)]),
        metadata=metadata,
        name="+".join(d.name for d in datasets),
    )
