"""The off-policy loop end to end: exact resume, seeds in one process, run directory, bad input."""

import csv
import json
import os
import subprocess
import sys

import gymnasium as gym
import jax
import numpy as np
import pytest

from agents import drm, drqv2
from core import launch
from core.offpolicy import LoopConfig, OffPolicyTrainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny agent from states: 250 agent steps per episode (action repeat 4), updates after 100 steps.
TINY_AGENT = dict(obs_type="states", hidden_dim=32, feature_dim=8, batch_size=32, num_expl_steps=100,
                  stddev_schedule="linear(1.0,0.1,1000)")


def tiny_loop(seeds, frames=3000, **kw) -> LoopConfig:
    settings = dict(task="cartpole_swingup", seeds=tuple(seeds), obs_type="states", action_repeat=4,
                    num_train_frames=frames, num_seed_frames=400, batch_size=32, replay_capacity=5000, nstep=3,
                    eval_every_frames=1000, num_eval_episodes=1, checkpoint_every_frames=1000,
                    save_video=False, progress=False, async_envs=False)
    settings.update(kw)
    return LoopConfig(**settings)


def crash_at(trainer, step):
    """Makes the trainer's updates raise from agent step `step` on (a simulated crash); None: no crash."""
    if step is None:
        return
    original = trainer.update

    def update(totals):
        if trainer.step >= step:
            raise KeyboardInterrupt("simulated crash")
        return original(totals)

    trainer.update = update


def train(run_dir, loop, resume=False, interrupt_at=None, agent=drqv2, **agent_overrides):
    config = agent.config_for_task(loop.task, **{**TINY_AGENT, **agent_overrides})
    trainer = OffPolicyTrainer(agent, config, loop, str(run_dir))
    crash_at(trainer, interrupt_at)
    try:
        trainer.train(resume=resume)
        return jax.device_get(trainer.states)
    finally:
        trainer.close()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def numeric(rows, drop=("fps", "wall_time")):
    return [{k: float(v) for k, v in r.items() if k not in drop and v != ""} for r in rows]


def test_resume_equals_uninterrupted(tmp_path):
    loop = tiny_loop([0])
    straight = train(tmp_path / "a", loop)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", loop, interrupt_at=600)  # checkpoints at steps 250 and 500
    resumed = train(tmp_path / "b", loop, resume=True)
    jax.tree.map(np.testing.assert_array_equal, straight, resumed)
    for name in ("metrics.csv", "eval.csv"):
        a, b = numeric(read_csv(tmp_path / "a" / name)), numeric(read_csv(tmp_path / "b" / name))
        assert len(a) == len(b) > 0
        for ra, rb in zip(a, b):
            assert ra == pytest.approx(rb), name


def test_seed_in_multiseed_run_equals_seed_alone(tmp_path):
    alone = train(tmp_path / "alone", tiny_loop([1], frames=2000))
    together = train(tmp_path / "together", tiny_loop([0, 1], frames=2000))
    # The same numbers up to float rounding: XLA fuses a 1-seed and a 2-seed program differently, and
    # rounding differences of ~1e-7 grow slowly over the ~400 updates of this run.
    max_diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a[0] - b[1]))), alone, together)))
    assert max_diff < 1e-3, max_diff
    rows = {r["seed"]: r for r in read_csv(tmp_path / "together" / "eval.csv")[-2:]}
    last_alone = read_csv(tmp_path / "alone" / "eval.csv")[-1]
    assert float(rows["1"]["episode_reward"]) == pytest.approx(float(last_alone["episode_reward"]), rel=1e-4)
    # The two seeds are independent runs, not copies.
    assert not np.allclose(jax.tree.leaves(together)[0][0], jax.tree.leaves(together)[0][1])


def test_drm_logs_every_update_and_its_events(tmp_path):
    """updates.csv: one row per update (agent steps 100, 102, ...) with beta (total and per layer),
    sigma, lambda; events.csv: each perturbation with alpha = clip(1 - k * previous beta), the awaken
    step once. A resumed run rewrites them exactly."""
    loop = tiny_loop([0])
    tiny_drm = dict(agent=drm, dormant_perturb_interval=200, max_perturb_factor=0.9, target_lambda=0.6,
                    target_dormant_ratio=0.95)  # beta < 0.95 at once: awakens at the first step past 100
    train(tmp_path / "a", loop, **tiny_drm)
    updates = numeric(read_csv(tmp_path / "a" / "updates.csv"))
    assert [r["step"] for r in updates] == list(range(100, 750, 2))
    layers = [k for k in updates[0] if k.startswith("dormant_ratio/")]
    assert len(layers) >= 3 and {"stddev", "lambda", "alpha", "awaken_step", "perturbed"} <= set(updates[0])
    config = drm.config_for_task("cartpole_swingup", **{**TINY_AGENT, **{k: v for k, v in tiny_drm.items()
                                                                          if k != "agent"}})
    for r in updates:  # sigma and lambda are the spec's functions of this update's beta
        assert r["lambda"] == pytest.approx(float(drm.target_lambda(config, r["dormant_ratio"])), abs=1e-6)
    events = read_csv(tmp_path / "a" / "events.csv")
    perturbs = [e for e in events if e["event"] == "perturb"]
    assert [int(e["step"]) for e in perturbs] == [200, 400, 600]
    by_step = {int(r["step"]): r for r in updates}
    for e in perturbs:  # alpha from the previous update's beta (official order)
        expected = drm.perturb_factor(config, by_step[int(e["step"]) - 2]["dormant_ratio"])
        assert float(e["alpha"]) == pytest.approx(float(expected), abs=1e-6)
    awakens = [e for e in events if e["event"] == "awaken"]
    assert [(int(e["step"]), float(e["awaken_step"])) for e in awakens] == [(102, 102.0)]
    assert all(r["awaken_step"] == (102 if r["step"] >= 102 else -1) for r in updates)

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", loop, interrupt_at=600, **tiny_drm)
    train(tmp_path / "b", loop, resume=True, **tiny_drm)
    for name in ("updates.csv", "events.csv"):
        assert read_csv(tmp_path / "a" / name) == read_csv(tmp_path / "b" / name), name


def test_run_directory(tmp_path):
    config = launch.base_config(drqv2.Config)
    config.task, config.obs, config.root = "cartpole_swingup", "states", str(tmp_path)
    config.checkpoint_every_frames, config.progress, config.video_size = 1000, False, 32
    for k, v in dict(TINY_AGENT, num_train_frames=2000, num_seed_frames=800, replay_capacity=2000, action_repeat=8,
                     eval_every_frames=1000, num_eval_episodes=1).items():
        if k != "obs_type":
            config.agent[k] = v
    summary = launch.run(drqv2, "drqv2", config)
    run_dir = summary["run_dir"]
    assert run_dir.startswith(str(tmp_path / "drqv2" / "cartpole_swingup"))
    saved = json.load(open(os.path.join(run_dir, "config.json")))
    assert saved["agent"] == "drqv2" and saved["agent_config"]["hidden_dim"] == 32
    assert saved["agent_config"]["lr"] == drqv2.Config().lr  # unset fields keep the paper's value
    evals = read_csv(os.path.join(run_dir, "eval.csv"))
    assert [int(r["frame"]) for r in evals] == [0, 1000]
    train_rows = read_csv(os.path.join(run_dir, "metrics.csv"))
    assert len(train_rows) == 2 and "critic_loss" in train_rows[-1]
    assert os.listdir(os.path.join(run_dir, "tb"))
    videos = sorted(os.listdir(os.path.join(run_dir, "videos")))
    assert videos and all(v.endswith(".mp4") for v in videos)
    assert os.listdir(os.path.join(run_dir, "checkpoints"))


def launcher(*args):
    return subprocess.run([sys.executable, "experiments/drqv2.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.parametrize("args, expected", [
    (["--config.task=cartpole_swingupp"], ["not a known task", "cartpole_swingup", "walker_walk"]),
    (["--config.obs=rgb"], ["--config.obs='rgb'", "pixels", "states"]),
    (["--config.seeds=0,a"], ["--config.seeds", "comma"]),
    (["--config.agent.replay_capacity=1000000000000"], ["GiB", "replay_capacity"]),
    (["--config.agent.stddev_schedule=cosine(1)"], ["linear"]),
    (["--config.nope=1"], ["nope"]),
])
def test_bad_input_stops_before_work(tmp_path, args, expected):
    result = launcher(*args, f"--config.root={tmp_path}")
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, result.stderr[-2000:]
    assert not os.path.exists(tmp_path / "drqv2")  # stopped before making a run directory


def test_resume_path_must_be_a_run_directory(tmp_path):
    result = launcher(f"--resume={tmp_path}")
    assert result.returncode != 0 and "not a pixax run directory" in result.stderr
    result = launcher(f"--resume={tmp_path / 'missing'}")
    assert result.returncode != 0 and "no such directory" in result.stderr


def test_pixels_end_to_end(tmp_path):
    """From pixels (32x32, so it runs on a CPU): frames stacked from the replay, updates run, resume works."""
    loop = tiny_loop([0], frames=2000, obs_type="pixels", image_size=32, action_repeat=8, num_seed_frames=800,
                     replay_capacity=1000, checkpoint_every_frames=1000)
    agent_config = drqv2.config_for_task("cartpole_swingup", obs_type="pixels", image_size=32, hidden_dim=32,
                                         feature_dim=8, batch_size=16, num_expl_steps=50)
    trainer = OffPolicyTrainer(drqv2, agent_config, loop, str(tmp_path))
    try:
        assert trainer.obs_shape == (32, 32, 9)
        trainer.train()
        params = jax.device_get(trainer.states.encoder_params)
    finally:
        trainer.close()
    rows = read_csv(tmp_path / "metrics.csv")
    assert len(rows) == 2 and np.isfinite(float(rows[-1]["critic_loss"]))
    assert [int(r["frame"]) for r in read_csv(tmp_path / "eval.csv")] == [0, 1000]
    fresh = drqv2.create(jax.random.split(jax.random.PRNGKey(0))[0], (32, 32, 9), 1, agent_config)
    moved = jax.tree.map(lambda a, b: float(np.abs(a[0] - b).max()), params, jax.device_get(fresh.encoder_params))
    assert max(jax.tree.leaves(moved)) > 0  # the critic's gradients reached the conv encoder


# ---------------------------------------------------------------- what the environment says: success, padding, resets


class FakeSuccessEnv(gym.Env):
    """Pixels with known content: the first (seeded) reset shows frame value 1, an unseeded reset 2,
    step t of the episode 10 + t; episodes are 5 steps (truncated); the stack is zero-filled at reset
    (`stack_padding = "zeros"`, as Meta-World's); info["episode_success"] turns 1 at step 3 of the
    episodes whose reset seed is divisible by 3. Registered as a Meta-World task by `fake_metaworld`."""

    metadata = {"render_modes": ["rgb_array"]}
    EPISODE_STEPS, SUCCESS_STEP = 5, 3
    stack_padding = "zeros"

    def __init__(self, task, *, obs_type="pixels", seed=0, action_repeat=1, frame_stack=3, image_size=16):
        self.frame_stack, self.image_size, self.seed_ = frame_stack, image_size, seed
        self.observation_space = gym.spaces.Box(0, 255, (image_size, image_size, 3 * frame_stack), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.max_episode_steps = self.EPISODE_STEPS

    def _frame(self, value):
        return np.full((self.image_size, self.image_size, 3), value, np.uint8)

    def _obs(self):
        return np.concatenate(self.frames, axis=-1)

    def reset(self, *, seed=None, options=None):
        seeded = seed is not None
        if seeded:
            self.seed_ = seed
        self.t = 0
        self.frames = [self._frame(0)] * (self.frame_stack - 1) + [self._frame(1 if seeded else 2)]
        return self._obs(), {}

    @staticmethod
    def succeeds(seed):
        return seed % 3 == 0

    def step(self, action):
        self.t += 1
        self.frames = self.frames[1:] + [self._frame(10 + self.t)]
        success = self.succeeds(self.seed_) and self.t >= self.SUCCESS_STEP
        info = {"discount": 1.0, "episode_success": float(success)}
        return self._obs(), 1.0, False, self.t >= self.EPISODE_STEPS, info

    def render(self, size=None):
        return self._frame(0)


@pytest.fixture
def fake_metaworld(monkeypatch):
    import envs

    monkeypatch.setitem(envs.SUITES, "metaworld", envs.Suite(tasks=("mw_fake",), make=FakeSuccessEnv,
                                                             domain_of=lambda task: "metaworld"))
    return "mw_fake"


def fake_loop(task, frames, seeds=(0,), **kw):
    settings = dict(obs_type="pixels", image_size=16, action_repeat=1, num_seed_frames=12, replay_capacity=200,
                    nstep=1, eval_every_frames=20, num_eval_episodes=4, checkpoint_every_frames=1000)
    return tiny_loop(seeds, frames=frames, task=task, **{**settings, **kw})


FAKE_AGENT = dict(obs_type="pixels", image_size=16, hidden_dim=16, feature_dim=4, batch_size=4, num_expl_steps=10)


def run_fake(run_dir, loop):
    trainer = OffPolicyTrainer(drqv2, drqv2.config_for_task("cartpole_swingup", **FAKE_AGENT), loop, str(run_dir))
    try:
        trainer.train()
        return trainer.replays[0]
    finally:
        trainer.close()


@pytest.mark.parametrize("parallel_eval", [1, 3])  # 3: the 4 evaluation episodes in rounds of 3 and 1
def test_success_columns_double_reset_and_zero_padding(tmp_path, fake_metaworld, parallel_eval):
    from core.offpolicy import EVAL_EPISODE, TRAIN_EPISODE, episode_seed

    replay = run_fake(tmp_path, fake_loop(fake_metaworld, frames=40, parallel_eval=parallel_eval))
    # metrics.csv: one row per 5-step training episode, its success from its (derived) reset seed.
    train_rows = read_csv(tmp_path / "metrics.csv")
    assert len(train_rows) == 8
    expected = [float(FakeSuccessEnv.succeeds(episode_seed(0, TRAIN_EPISODE, e))) for e in range(8)]
    assert [float(r["episode_success"]) for r in train_rows] == expected and 0 < sum(expected) < 8
    # eval.csv: the fraction of the 4 evaluation episodes that succeeded, at frames 0 and 20.
    eval_rows = read_csv(tmp_path / "eval.csv")
    assert [int(r["frame"]) for r in eval_rows] == [0, 20]
    for count, row in enumerate(eval_rows):
        seeds = [episode_seed(0, EVAL_EPISODE, count * 4 + ep) for ep in range(4)]
        assert float(row["success_rate"]) == pytest.approx(np.mean([FakeSuccessEnv.succeeds(s) for s in seeds]))

    # Replay: episode 0 starts with one reset, every later one with two: the second (frame 2) is stored
    # as a zero-action, reward-0 step whose stack restarts (zero padding, not the first reset's frame).
    values = replay.state_dict()["frames"][:len(replay), 0, 0, 0].tolist()
    assert values == [1, 11, 12, 13, 14, 15] + [1, 2, 11, 12, 13, 14, 15] * 7
    second_resets = [i for i, v in enumerate(values) if v == 2]
    assert np.all(replay.state_dict()["actions"][second_resets] == 0)
    assert np.all(replay.state_dict()["rewards"][second_resets] == 0)
    batch = replay.sample(np.random.default_rng(0), 2000)
    pairs = {(tuple(o[0, 0, ::3]), tuple(n[0, 0, ::3])) for o, n in zip(batch["obs"], batch["next_obs"])}
    assert ((0, 0, 1), (0, 0, 2)) in pairs  # the spurious transition of the double reset
    assert ((0, 0, 2), (0, 2, 11)) in pairs  # the second reset's stack: zeros, not frame 1
    assert ((0, 0, 1), (0, 1, 11)) in pairs  # episode 0: one reset
    assert not any(1 in o and 2 in o for o, _ in pairs)


def test_double_reset_can_be_turned_off(tmp_path, fake_metaworld):
    replay = run_fake(tmp_path, fake_loop(fake_metaworld, frames=20, mw_double_reset=False))
    values = replay.state_dict()["frames"][:len(replay), 0, 0, 0].tolist()
    assert values == [1, 11, 12, 13, 14, 15] * 4


def test_dmc_logs_no_success_columns(tmp_path):
    train(tmp_path, tiny_loop([0], frames=1000))
    assert "episode_success" not in read_csv(tmp_path / "metrics.csv")[0]
    assert "success_rate" not in read_csv(tmp_path / "eval.csv")[0]


def test_nan_in_a_loss_stops_with_a_clear_error():
    from core.offpolicy import check_finite

    check_finite({"critic_loss": np.array([0.5, 1.0])}, (0, 1), 500, None)
    with pytest.raises(FloatingPointError, match=r"critic_loss is nan for seed\(s\) \[1\].*step 250.*intact"):
        check_finite({"actor_loss": np.array([1.0, 2.0]), "critic_loss": np.array([0.5, np.nan])}, (0, 1), 500, 250)


# ---------------------------------------------------------------- the replay's frames on the device


def run_fake_trainer(run_dir, loop, interrupt_at=None, resume=False):
    """The fake Meta-World run (zero padding, double resets); returns (states, trainer.frames as numpy
    or None, the replay's host frames). interrupt_at: an update at this step or later raises."""
    trainer = OffPolicyTrainer(drqv2, drqv2.config_for_task("cartpole_swingup", **FAKE_AGENT), loop, str(run_dir))
    crash_at(trainer, interrupt_at)
    try:
        trainer.train(resume=resume)
        store = None
        if trainer.frames is not None:
            trainer.frames.flush()
            store = np.asarray(trainer.frames.array[0])
        return jax.device_get(trainer.states), store, trainer.replays[0].state_dict()["frames"].copy()
    finally:
        trainer.close()


@pytest.mark.parametrize("capacity", [200, 9])  # 9: the ring wraps around several times
def test_frames_on_device_give_the_same_run(tmp_path, fake_metaworld, capacity):
    """The device copy of the replay's frames (core/frame_store.py, what a GPU run uses) feeds the
    updates the frames the host replay would: the same parameters after the run, and the copy holds the
    host's frames plus one zero frame (for zero-padded stacks, which this fake Meta-World task has)."""
    runs = {}
    for on_device in (False, True):
        loop = fake_loop(fake_metaworld, frames=40, replay_capacity=capacity, frames_on_device=on_device)
        runs[on_device] = run_fake_trainer(tmp_path / str(on_device), loop)
    (host_states, no_store, _), (device_states, store, host_frames) = runs[False], runs[True]
    assert no_store is None
    np.testing.assert_array_equal(store[:capacity], host_frames)
    assert not store[capacity].any() and store[:capacity].any()
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), host_states, device_states)
    fresh = drqv2.create(jax.random.split(jax.random.PRNGKey(0))[0], (16, 16, 9), 2,
                         drqv2.config_for_task("cartpole_swingup", **FAKE_AGENT))
    moved = jax.tree.map(lambda a, b: float(np.abs(a[0] - b).max()), device_states.encoder_params,
                         jax.device_get(fresh.encoder_params))
    assert max(jax.tree.leaves(moved)) > 0  # updates ran on the gathered frames


def test_frames_on_device_resume_uploads_the_replay(tmp_path, fake_metaworld):
    loop = fake_loop(fake_metaworld, frames=40, replay_capacity=9, frames_on_device=True, checkpoint_every_frames=10)
    straight, _, _ = run_fake_trainer(tmp_path / "a", loop)
    with pytest.raises(KeyboardInterrupt):
        run_fake_trainer(tmp_path / "b", loop, interrupt_at=25)  # checkpoints at episode ends before step 25
    resumed, store, host_frames = run_fake_trainer(tmp_path / "b", loop, resume=True)
    np.testing.assert_array_equal(store[:9], host_frames)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), straight, resumed)


def test_when_frames_go_on_the_device():
    from core.offpolicy import use_device_frames

    gib = 2**30
    assert use_device_frames(None, "pixels", 1, 21 * gib, 80 * gib)  # one DrM seed on an H100
    assert not use_device_frames(None, "pixels", 1, 8 * 21 * gib, 80 * gib)  # 8 seeds do not fit
    assert not use_device_frames(None, "pixels", 1, 1, None)  # the CPU
    assert use_device_frames(True, "pixels", 1, 1, None)  # asked for (the tests do, on the CPU)
    assert not use_device_frames(False, "pixels", 1, 1, 80 * gib)
    assert not use_device_frames(True, "states", 1, 1, 80 * gib)  # nothing to mirror
    assert not use_device_frames(None, "pixels", 2, 1, 80 * gib)  # a mesh: the frames stay on the host
    with pytest.raises(ValueError, match="needs a single device.*mesh has 2"):
        use_device_frames(True, "pixels", 2, 1, 80 * gib)


def test_no_evaluation_episodes_writes_no_evaluation_rows(tmp_path, fake_metaworld):
    run_fake_trainer(tmp_path, fake_loop(fake_metaworld, frames=20, num_eval_episodes=0))
    assert len(read_csv(tmp_path / "metrics.csv")) == 4
    assert not os.path.exists(tmp_path / "eval.csv") or read_csv(tmp_path / "eval.csv") == []


def test_parallel_evaluation_acts_on_each_environment_s_own_observation(tmp_path, fake_metaworld):
    """Evaluation actions for 2 seeds x 3 parallel episodes equal each observation's action alone."""
    trainer = OffPolicyTrainer(drqv2, drqv2.config_for_task("cartpole_swingup", **FAKE_AGENT),
                               fake_loop(fake_metaworld, frames=40, parallel_eval=3, seeds=(0, 1)), str(tmp_path))
    try:
        assert trainer.eval_width == 3 and trainer.eval_envs.num_envs == 6
        obs = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 9), dtype=np.uint8)
        together = trainer.act_evaluation(obs, None, tick=0)
        for k in range(3):  # environment i * 3 + k plays seed i
            alone = trainer.act(obs[[k, 3 + k]], eval_mode=True)
            np.testing.assert_allclose(together[[k, 3 + k]], alone, rtol=1e-5, atol=1e-6)
        assert not np.allclose(together[0], together[3])  # the two seeds' actors differ
    finally:
        trainer.close()


def test_evaluation_width():
    from core.offpolicy import eval_width

    assert eval_width(4, 10, 1) == 4 and eval_width(16, 10, 1) == 10 and eval_width(3, 0, 1) == 1
    assert eval_width(0, 10, 2) == 1  # auto on the CPU backend: one episode at a time
    with pytest.raises(ValueError, match="parallel_eval must be >= 0"):
        eval_width(-1, 10, 1)


def test_missing_video_writer_stops_before_work(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "imageio_ffmpeg" else real_find_spec(name, *a))
    with pytest.raises(RuntimeError, match="imageio-ffmpeg.*save_video=False"):
        OffPolicyTrainer(drqv2, drqv2.config_for_task("cartpole_swingup", **TINY_AGENT),
                         tiny_loop([0], save_video=True), str(tmp_path))
    assert not os.listdir(tmp_path)  # nothing was written
