"""MoDem's loop (core/modem_loop.py) with a tiny agent on cartpole: the three phases in order, the demo
sub-batch of the schedule at every update, one compiled update scan for every split, both step units logged,
exact resume; and envs/dmc.py's proprio option.

Expected values are hand-computed from the settings below (counts, schedule values) or statistics of the
seed-phase noise (the BC policy's output is recomputed here from the agent state of the end of BC).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dm_control import suite

from agents import modem
from core.modem_loop import MoDemTrainer
from core.offpolicy import LoopConfig
from envs import dmc
from scripts import collect_demos

TASK = "cartpole_balance"
REPEAT = 25  # 1000 simulator steps / 25 = episodes of 40 agent steps
LENGTH = 40
NUM_DEMOS = 2
# tests/test_modem.py's tiny agent; seed phase 80 agent steps (2 episodes); demo ratio 0.5 -> 0.25 over 160 steps
TINY = dict(image_size=16, num_convs=2, latent_dim=8, enc_dim=16, mlp_dim=16, num_channels=4, num_samples=16,
            num_elites=4, iterations=2, batch_size=8, action_repeat=REPEAT, num_seed_frames=80 * REPEAT,
            num_train_frames=160 * REPEAT, replay_capacity=10_000, eval_every_frames=160 * REPEAT,
            num_eval_episodes=1, demos=NUM_DEMOS, demo_schedule="linear(0.5,0.25,160)")


@pytest.fixture(scope="module")
def demos_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    collect_demos.main(["--random", "--task", TASK, "--episodes", str(NUM_DEMOS), "--image-size", "16",
                        "--action-repeat", str(REPEAT), "--root", str(root)])
    return str(root)


def loop_config(config, **kw) -> LoopConfig:
    settings = dict(task=TASK, seeds=(0,), obs_type="pixels", action_repeat=config.action_repeat,
                    frame_stack=config.frame_stack, image_size=config.image_size,
                    num_train_frames=config.num_train_frames, num_seed_frames=config.num_seed_frames,
                    batch_size=config.batch_size, replay_capacity=config.replay_capacity,
                    eval_every_frames=config.eval_every_frames, num_eval_episodes=config.num_eval_episodes,
                    checkpoint_every_frames=40 * REPEAT, save_video=False, progress=False)
    settings.update(kw)
    return LoopConfig(**settings)


def train(run_dir, demos_root, resume=False, interrupt_at=None):
    config = modem.config_for_task(TASK, **TINY)
    trainer = MoDemTrainer(modem, config, loop_config(config), str(run_dir), demos_root=demos_root)
    calls, seed_phase, bc_state = [], [], {}
    original_updates, original_plan = trainer.run_updates, trainer.plan

    def run_updates(num_updates):
        if interrupt_at is not None and trainer.step >= interrupt_at:
            raise KeyboardInterrupt("simulated crash")
        if not calls:  # nothing has changed the agent since BC
            bc_state["state"] = jax.device_get(trainer.states)
        calls.append((trainer.step, num_updates))
        return original_updates(num_updates)

    def plan(obs, mean, *, step, t, eval_mode):
        action, new_mean = original_plan(obs, mean, step=step, t=t, eval_mode=eval_mode)
        if not eval_mode and step < 80:
            seed_phase.append((jax.tree.map(np.array, obs), np.array(action)))
        return action, new_mean

    trainer.run_updates, trainer.plan = run_updates, plan
    try:
        trainer.train(resume=resume)
        return jax.device_get((trainer.states, trainer.replays, trainer.demo_replays)), calls, seed_phase, bc_state
    finally:
        trainer.close()


def read_rows(path):
    return np.genfromtxt(path, delimiter=",", names=True)


def test_update_scan_compiles_once_for_every_demo_split(tmp_path, demos_root):
    config = modem.config_for_task(TASK, **TINY)
    trainer = MoDemTrainer(modem, config, loop_config(config), str(tmp_path / "run"), demos_root=demos_root)
    compiles = []

    def count(event, duration_secs, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        rng = np.random.default_rng(0)
        for _ in range(2):  # two random episodes in the interaction replay
            trainer.replays = trainer._add(
                trainer.replays, jnp.asarray(rng.integers(0, 256, (1, LENGTH + 1, 16, 16, 3)), jnp.uint8),
                jnp.asarray(rng.normal(size=(1, LENGTH + 1, trainer.state_dim)), jnp.float32),
                jnp.asarray(rng.uniform(-1, 1, (1, LENGTH, trainer.action_dim)), jnp.float32),
                jnp.asarray(rng.uniform(0, 1, (1, LENGTH)), jnp.float32))
        # floor(4 - step / 80) per update until step 160, then 2 (ratio 0.25): means over the updates by hand
        calls = [(0, 4, 3.25),  # steps 0..3: 4, 3, 3, 3
                 (78, 4, 2.75),  # 78..81: 3, 3, 3, 2
                 (200, 4, 2.0),
                 (0, 2 * LENGTH, 241 / 80),  # 0..79: 4 once, then 3; run as two episode-length scans
                 (120, LENGTH, 2.0)]  # 120..159: the episode-length program of the call before
        for call, (step, num_updates, mean) in enumerate(calls):
            trainer.step = step
            before = len(compiles)
            metrics = jax.device_get(trainer.run_updates(num_updates))
            np.testing.assert_allclose(metrics["demo_batch_size"], [mean], rtol=1e-6)
            assert np.isfinite(metrics["consistency_loss"]).all()
            if call == 0:
                assert len(compiles) > before  # the listener sees compilations: the scan's program
            elif call != 3:  # (call 3 may compile the episode-length scan, unless an earlier test did)
                assert len(compiles) == before, f"step {step}: the update scan compiled again for another split"
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
        trainer.close()


def test_phases_schedule_logging_and_exact_resume(tmp_path, demos_root):
    (states, replays, demo_replays), calls, seed_phase, bc_state = train(tmp_path / "a", demos_root)

    # Phase 1: 2 x demos x L = 160 BC steps (the BC Adam's step count), before anything else.
    bc_adam = bc_state["state"].bc_opt_state[1][0]
    assert int(bc_adam.count[0]) == 2 * NUM_DEMOS * LENGTH == 160
    assert int(bc_state["state"].model_opt_state[1][0].count[0]) == 0  # no TD-MPC update during BC / seeding

    # Phase 2: the two seed episodes (steps 0 and 40) act with the BC policy + N(0, 0.05) noise, clipped
    # at 0.3: recompute pi(h(o)) with the end-of-BC agent (the agent cannot change before the first update).
    assert len(seed_phase) == 2 * LENGTH
    bc = jax.tree.map(lambda leaf: leaf[0], bc_state["state"])
    told = modem.model(bc.config, bc.action_dim, bc.obs_shape)
    pixels = jnp.stack([obs["pixels"][0] for obs, _ in seed_phase])
    state = jnp.stack([obs["state"][0] for obs, _ in seed_phase])
    policy = told.pi(bc.params, told.encode(bc.params, modem.pack_observations(pixels, state)))
    noise = np.stack([action[0] for _, action in seed_phase]) - np.asarray(policy)
    assert np.abs(noise).max() <= 0.3 + 1e-5
    assert 0.025 < np.abs(noise).mean() < 0.06  # E|N(0, 0.05)| = 0.04; a uniform action would give ~0.5

    # Then seed_steps (80) updates at once at the seed phase's end, then one episode's length each.
    assert calls == [(80, 80), (120, 40), (160, 40)]
    assert int(states.model_opt_state[1][0].count[0]) == 160
    metrics = read_rows(tmp_path / "a" / "metrics.csv")
    assert metrics["step"].tolist() == [0, 40, 80, 120, 160]
    assert np.all(metrics["frame"] == REPEAT * metrics["step"])  # env steps
    assert metrics["phase"].tolist() == [2, 2, 3, 3, 3]
    # Each update's own split, floor(ratio(step) * 8) = floor(4 - step / 80) until step 160, then 2; logged as
    # the mean over the updates after the episode: steps 80..159 give 3 once then 2 (161 / 80 = 2.0125),
    # steps 120..159 and 160..199 give 2.
    np.testing.assert_allclose(metrics["demo_batch_size"], [np.nan, np.nan, 2.0125, 2, 2], rtol=1e-6)
    assert metrics["bc_iterations"][0] == 160 and np.isfinite(metrics["bc_loss"][0])
    assert np.all(np.isfinite(metrics["consistency_loss"][2:]))
    evals = read_rows(tmp_path / "a" / "eval.csv")
    assert evals["frame"].tolist() == [0, 160 * REPEAT] and evals["step"].tolist() == [0, 160]
    # Priorities were written back to both buffers: the demo buffer's started at exactly 1 (0 on the masked steps).
    demo_priority = np.asarray(demo_replays.sequences.priority[0])
    assert np.all(demo_priority[:, -5:] == 0) and np.any(demo_priority[:, :-5] != 1.0)
    seed_episodes = np.asarray(replays.sequences.priority[0][:2, :-5])  # added at priority 1, before any update
    assert np.any(seed_episodes != 1.0)
    assert int(replays.sequences.num_episodes[0]) == 5

    # Interrupted during the updates of the episode at step 160 (the last checkpoint is at step 120, after
    # updates moved both buffers' priorities), then resumed: the same agents, both replays and logs as the
    # uninterrupted run.
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", demos_root, interrupt_at=160)
    resumed, *_ = train(tmp_path / "b", demos_root, resume=True)
    jax.tree.map(np.testing.assert_array_equal, (states, replays, demo_replays), resumed)
    for name in ("metrics.csv", "eval.csv"):
        a, b = read_rows(tmp_path / "a" / name), read_rows(tmp_path / "b" / name)
        assert len(a) == len(b) > 0
        for column in ("step", "frame", "episode_reward"):
            np.testing.assert_allclose(a[column], b[column], err_msg=f"{name} {column}")


def test_missing_demos_name_the_path(tmp_path):
    config = modem.config_for_task(TASK, **TINY)
    with pytest.raises(FileNotFoundError, match=r"demos-v0.*does not exist.*collect_demos"):
        MoDemTrainer(modem, config, loop_config(config), str(tmp_path / "run"), demos_root=str(tmp_path / "none"))


def test_dmc_proprio_option_gives_the_states_observation():
    env = dmc.DMCEnv(TASK, obs_type="pixels", image_size=16, action_repeat=REPEAT, frame_stack=2, proprio=True)
    states = dmc.DMCEnv(TASK, obs_type="states", action_repeat=REPEAT)
    plain = dmc.DMCEnv(TASK, obs_type="pixels", image_size=16, action_repeat=REPEAT, frame_stack=2)
    try:
        # cartpole's observation dict: position (3: cart x, cos, sin) + velocity (2)
        assert env.proprio_space.shape == (5,) == states.observation_space.shape
        assert plain.proprio_space is None
        obs, info = env.reset(seed=3)
        state_obs, _ = states.reset(seed=3)
        assert obs.shape == (16, 16, 6)
        np.testing.assert_array_equal(info["proprio"], state_obs)
        assert "proprio" not in plain.reset(seed=3)[1]
        action = np.array([0.5], np.float32)
        _, _, _, _, info = env.step(action)
        state_obs, *_ = states.step(action)
        np.testing.assert_array_equal(info["proprio"], state_obs)
        # by hand: the state of a raw suite task seeded the same way and stepped 25 frames with force 0.5
        raw = suite.load("cartpole", "balance", task_kwargs={"random": 0})
        raw.task._random = np.random.RandomState(3)
        raw.reset()
        for _ in range(REPEAT):
            step = raw.step(np.array([0.5]))
        expected = np.concatenate([step.observation["position"], step.observation["velocity"]]).astype(np.float32)
        np.testing.assert_array_equal(info["proprio"], expected)
        assert "proprio" not in plain.step(action)[4]
        with pytest.raises(ValueError, match="proprio=True adds the state vector to pixel observations"):
            dmc.DMCEnv(TASK, obs_type="states", proprio=True)
    finally:
        for e in (env, states, plain):
            e.close()
