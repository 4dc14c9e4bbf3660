"""The episodic loop of the planners (core/episodic.py) with a tiny TD-MPC: the official schedule of
episodes and updates, exact resume, and the fixed-length check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import tdmpc
from core import episodic
from core.episodic import EpisodicTrainer
from core.offpolicy import LoopConfig

TASK = "cartpole_balance"  # TD-MPC's cartpole action repeat 8: 125 agent steps per episode
TINY = dict(obs_type="states", latent_dim=4, enc_dim=8, mlp_dim=8, num_samples=8, num_elites=2, iterations=1,
            batch_size=8, num_seed_frames=2000)


def tiny_loop(seeds=(0,), frames=4000, **kw) -> LoopConfig:
    # 5 episodes (steps 0, 125, ..., 500: the official loop also collects the episode starting at the last
    # step), seed phase 250 agent steps: 250 updates after the 3rd episode, then 125 after each.
    settings = dict(task=TASK, seeds=tuple(seeds), obs_type="states", action_repeat=8, num_train_frames=frames,
                    num_seed_frames=2000, batch_size=8, replay_capacity=10_000, eval_every_frames=2000,
                    num_eval_episodes=1, checkpoint_every_frames=2000, save_video=False, progress=False)
    settings.update(kw)
    return LoopConfig(**settings)


def train(run_dir, loop, resume=False, interrupt_at=None):
    config = tdmpc.config_for_task(TASK, **{**TINY, "action_repeat": loop.action_repeat,
                                            "num_seed_frames": loop.num_seed_frames})
    trainer = EpisodicTrainer(tdmpc, config, loop, str(run_dir))
    calls = []
    original = trainer.run_updates

    def run_updates(num_updates):
        if interrupt_at is not None and trainer.step >= interrupt_at:
            raise KeyboardInterrupt("simulated crash")
        calls.append((trainer.step, num_updates))
        return original(num_updates)

    trainer.run_updates = run_updates
    try:
        trainer.train(resume=resume)
        return jax.device_get((trainer.states, trainer.replays)), calls
    finally:
        trainer.close()


def read_rows(path):
    return np.genfromtxt(path, delimiter=",", names=True)


def test_official_schedule_and_exact_resume(tmp_path):
    loop = tiny_loop()
    straight, calls = train(tmp_path / "a", loop)
    # seed_steps (250) updates at once at the seed phase's end, then an episode's length (125) per episode
    assert calls == [(250, 250), (375, 125), (500, 125)]
    metrics = read_rows(tmp_path / "a" / "metrics.csv")
    assert metrics["step"].tolist() == [0, 125, 250, 375, 500]
    assert np.all(metrics["frame"] == 8 * metrics["step"])
    assert np.all(np.isnan(metrics["consistency_loss"][:2])) and np.all(np.isfinite(metrics["consistency_loss"][2:]))
    evals = read_rows(tmp_path / "a" / "eval.csv")
    assert evals["frame"].tolist() == [0, 2000, 4000]  # every eval_every_frames, official `env_step % eval_freq`

    # Interrupted during the updates of the episode at step 375 (the last checkpoint is at step 250), then
    # resumed: the same agent states, replays and logs as the uninterrupted run.
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", loop, interrupt_at=375)
    resumed, _ = train(tmp_path / "b", loop, resume=True)
    jax.tree.map(np.testing.assert_array_equal, straight, resumed)
    for name in ("metrics.csv", "eval.csv"):
        a, b = read_rows(tmp_path / "a" / name), read_rows(tmp_path / "b" / name)
        assert len(a) == len(b) > 0
        for column in ("step", "frame", "episode_reward"):
            np.testing.assert_allclose(a[column], b[column], err_msg=f"{name} {column}")


def test_an_episode_that_ends_early_is_a_clear_error(tmp_path):
    # Hopper falls within a few dozen random steps: the loop stores only whole fixed-length episodes.
    # (TD-MPC's config refuses non-DMC tasks already; the loop's own check is tested with its config.)
    with pytest.raises(ValueError, match="dm_control tasks"):
        tdmpc.config_for_task("Hopper-v5")
    loop = tiny_loop(task="Hopper-v5", action_repeat=1, num_seed_frames=10_000, eval_every_frames=10**6)
    with pytest.raises(RuntimeError, match="fixed-length episodes of 1000 agent steps.*terminated at step"):
        train(tmp_path, loop)
    # The agent plans with its own seed phase: a loop with another one is refused.
    with pytest.raises(ValueError, match="num_seed_frames: the agent's config has 40000 but the loop's 2000"):
        EpisodicTrainer(tdmpc, tdmpc.config_for_task(TASK), tiny_loop(), str(tmp_path / "mismatch"))
    # The off-policy loop's options are refused, not ignored.
    for option in ({"parallel_eval": 4}, {"frames_on_device": True}):
        with pytest.raises(ValueError, match="option of the off-policy loop"):
            train(tmp_path / "options", tiny_loop(**option))


def test_pixel_updates_one_call_each_on_the_cpu_equal_one_scan(tmp_path, monkeypatch):
    # On the CPU a pixel agent's updates are one jitted call each (XLA:CPU runs a convolution's gradient
    # ~10-100x slower inside a scan: episodic.updates_per_call); update i keeps its step and keys, so 3 calls
    # give the agents, priorities and metric means of one 3-update scan.
    assert jax.default_backend() == "cpu"
    assert episodic.updates_per_call(125, convolutional=True) == 1
    assert episodic.updates_per_call(125, convolutional=False) == 125
    pixels = dict(obs_type="pixels", image_size=40, frame_stack=2, latent_dim=8, mlp_dim=16, num_channels=4,
                  enc_dim=8, num_samples=8, num_elites=2, iterations=1, batch_size=4, num_seed_frames=2000)
    loop = tiny_loop(obs_type="pixels", image_size=40, frame_stack=2, batch_size=4, replay_capacity=250)
    config = tdmpc.config_for_task(TASK, **{**pixels, "action_repeat": loop.action_repeat})
    rng = np.random.default_rng(0)
    episode = (jnp.asarray(rng.integers(0, 256, (1, 126, 40, 40, 3)), jnp.uint8),
               jnp.asarray(rng.uniform(-1, 1, (1, 125, 1)), jnp.float32),
               jnp.asarray(rng.uniform(0, 1, (1, 125)), jnp.float32))

    def three_updates(run_dir):
        trainer = EpisodicTrainer(tdmpc, config, loop, str(run_dir))
        try:
            trainer.replays = trainer._add(trainer.replays, *episode)
            trainer.step = 250
            metrics = trainer.run_updates(3)
            return jax.device_get((trainer.states, trainer.replays.priority, metrics))
        finally:
            trainer.close()

    calls = three_updates(tmp_path / "calls")
    monkeypatch.setattr(episodic, "updates_per_call", lambda num_updates, convolutional: num_updates)
    scan = three_updates(tmp_path / "scan")
    assert int(calls[0].model_opt_state[1][0].count[0]) == 3  # three Adam steps of the model
    assert np.any(calls[1][0][0, :-5] != 1.0)  # priorities were written back
    # separate programs: float rounding only (a shifted step or key changes the values by far more)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), calls, scan)
