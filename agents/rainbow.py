"""Rainbow (Hessel et al. 2018) and DER (van Hasselt et al. 2019) as Dopamine's "full Rainbow" agent
runs them in the SoftMoE papers (spec §4.5), built on agents/dqn.py.

What differs from DQN (everything else — network, state, Adam step, target sync, tiers — is
agents/dqn.py, imported): C51 distributional output (51 atoms on [-10, 10]) trained with a
cross-entropy loss against the projected n-step target (`project_distribution`), the next action
chosen by the online network (double DQN), a dueling output, NoisyNet layers in place of
epsilon-greedy exploration, and prioritized replay (loss weights from batch["probabilities"], new
priorities returned). Dopamine sources (google/dopamine 5873f54): jax/agents/full_rainbow/
full_rainbow_agent.py, jax/agents/rainbow/rainbow_agent.py (project_distribution), jax/networks.py
(FullRainbowNetwork, NoisyNetwork), labs/moes/agents/{full_rainbow_moe_agent, rainbow_100k_moe_agent}.py,
labs/moes/configs/{full_rainbow, DER}.gin.

Two presets, as data (`PRESETS`, chosen by the `preset` field): "rainbow" (full_rainbow.gin: Impala
encoder, 200 M frames, sticky actions) and "der" (DER.gin, Atari 100k: Nature-CNN encoder
(`encoder_type='CNN'`, the same three convs), n = 10, an update every step, target every 2000
steps, 100k agent steps, no sticky actions, a life loss ends the episode).

Noise, as Dopamine does it:
  * acting while training: noisy layers on, epsilon 0 (with `noisy`, Dopamine swaps the epsilon
    schedule for `zero_epsilon`);
  * acting in evaluation: epsilon_eval (0.001) and the noisy layers after the head OFF (Dopamine
    passes eval_mode to them) — but the SoftMoE experts' noisy layers stay ON, because Dopamine's
    ExpertModel is never given eval_mode (`expert_noise_at_eval`, default True, follows that);
  * update: the online network in the loss draws noise per sample (the MoE lab's agents split the
    key over the batch; `per_sample_noise`), the target network and the double-DQN online pass on
    s' share one key, so both see the same noise draw, shared by the batch.

`update` returns, with `prioritized`, metrics["priorities"]: the new priorities of the batch's
transitions, a (B,) array (every other metric is a float32 scalar). The trainer must pop it and
pass it with batch["indices"] to the replay before it logs the metrics.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from agents import dqn
from networks import atari

Metrics = Dict[str, jnp.ndarray]

# Dopamine's guard: weights 1/sqrt(p + 1e-10), priorities sqrt(loss + 1e-10).
PER_EPSILON = 1e-10

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config(dqn.Config):
    """DQN's fields with full Rainbow's values (G = labs/moes/configs/full_rainbow.gin, R =
    JaxFullRainbowAgent defaults, M = FullRainbowMoENetwork) plus Rainbow's own. DER's values are
    PRESETS["der"]. Fields DQN has that Rainbow does not use: epsilon_train / epsilon_decay_period
    (only when noisy=False)."""

    preset: str = "rainbow"  # a key of PRESETS, applied before the task tier and the user's values
    encoder: str = "impala"  # G FullRainbowMoENetwork.encoder_type = 'IMPALA'
    num_experts: int = 4  # G
    nstep: int = 3  # G update_horizon
    loss_type: str = "cross_entropy"  # C51: the only loss of the distributional agent
    # Rainbow components (G / R).
    noisy: bool = True
    dueling: bool = True
    double_dqn: bool = True
    num_atoms: int = 51
    v_max: float = 10.0
    v_min: Optional[float] = None  # R: None means -v_max
    prioritized: bool = True  # G replay_scheme = 'prioritized'
    # Noise details of Dopamine's MoE-lab agents (module docstring).
    per_sample_noise: bool = True
    expert_noise_at_eval: bool = True

    def _rules(self):
        v_min = dqn.support_bounds(self)[0]
        return super()._rules() + [
            ("preset", self.preset in PRESETS, f"one of {tuple(PRESETS)}"),
            ("num_atoms", self.num_atoms >= 2, ">= 2 (C51 needs a support)"),
            ("v_max", v_min < self.v_max, "> v_min (v_min None means -v_max, so v_max > 0)"),
        ]

    def valid_loss_types(self) -> Tuple[str, ...]:
        return ("cross_entropy",)


PRESETS: Dict[str, Dict[str, Any]] = {
    "rainbow": {},  # the Config defaults are full_rainbow.gin's
    "der": {  # labs/moes/configs/DER.gin (Atari 100k)
        "encoder": "nature",  # FullRainbowMoENetwork.encoder_type = 'CNN' (RainbowCNNet: the Nature convs)
        "lr": 1e-4,  # create_optimizer.learning_rate (DER, van Hasselt et al. 2019)
        "adam_eps": 1.5e-4,
        "nstep": 10,
        "num_seed_frames": 6_400,  # min_replay_history 1600 agent steps x 4
        "update_every_steps": 1,
        "target_update_period": 2000,
        "epsilon_decay_period": 2000,  # unused (noisy)
        "sticky_actions": False,
        "terminal_on_life_loss": True,
        "num_train_frames": 400_004,  # 10 iterations x 10 000 agent steps x 4, + one step for the last eval
        "eval_every_frames": 40_000,  # one evaluation per iteration
        "num_eval_episodes": 100,  # atari_100k MaxEpisodeEvalRunner num_eval_episodes
    },
}


def config_for_task(task: str, **user_overrides) -> Config:
    """The Rainbow config of a task: defaults <- PRESETS[preset] <- the task's tier (dqn.TIERS) <- per-task
    overrides <- `user_overrides`; `preset` ("rainbow" unless given) picks Rainbow or DER."""
    preset = user_overrides.get("preset", Config.preset)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return dqn.resolve_config(Config, task, dqn.TIERS, dqn.TASK_OVERRIDES, user_overrides, base=PRESETS[preset])


# The network and state are DQN's (q_network reads noisy / dueling / num_atoms / v_min / v_max).
create = dqn.create
RainbowState = dqn.DQNState


def support(config: Config) -> jnp.ndarray:
    """The C51 atoms z_0 < ... < z_{K-1}, equally spaced on [v_min, v_max]."""
    v_min, v_max = dqn.support_bounds(config)
    return jnp.linspace(v_min, v_max, config.num_atoms, dtype=jnp.float32)


# ----------------------------------------------------------------------------------------------
# 2. Pieces (pure functions)
# ----------------------------------------------------------------------------------------------


def project_distribution(supports_target: jnp.ndarray, probabilities: jnp.ndarray,
                         support: jnp.ndarray) -> jnp.ndarray:
    """Projects the distribution {supports_target[j]: probabilities[j]} onto the fixed `support`
    (Bellemare et al. 2017, eq. 7, in Dopamine's form): each source atom, clipped to [v_min, v_max],
    gives target atom z_i the weight clip(1 - |clip(T z_j) - z_i| / dz, 0, 1) times its probability.

    supports_target, probabilities: (..., K_source); support: (K,) equally spaced -> (..., K).
    """
    v_min, v_max = support[0], support[-1]
    delta_z = (v_max - v_min) / (support.shape[0] - 1)
    clipped = jnp.clip(supports_target, v_min, v_max)
    distance = jnp.abs(clipped[..., None, :] - support[:, None])  # (..., K, K_source)
    weight = jnp.clip(1.0 - distance / delta_z, 0.0, 1.0)
    return jnp.sum(weight * probabilities[..., None, :], axis=-1)


def next_actions(next_q_online: jnp.ndarray, next_q_target: jnp.ndarray, double_dqn: bool) -> jnp.ndarray:
    """argmax_a of the online network's Q(s', a) (double DQN) or of the target network's; (B,) int32."""
    return jnp.argmax(next_q_online if double_dqn else next_q_target, axis=-1).astype(jnp.int32)


def categorical_target(reward: jnp.ndarray, discount: jnp.ndarray, next_probabilities: jnp.ndarray,
                       next_action: jnp.ndarray, support: jnp.ndarray) -> jnp.ndarray:
    """The C51 target (B, K): the target network's distribution at (s', a*), shifted to R + Gamma z
    and projected on the support. Gamma = 0 (terminal) puts all mass on the atoms around R."""
    supports_target = reward[:, None] + discount[:, None] * support[None, :]
    return project_distribution(supports_target, dqn.chosen_values(next_probabilities, next_action), support)


def cross_entropy(target_probabilities: jnp.ndarray, logits: jnp.ndarray) -> jnp.ndarray:
    """-sum_k target_k log softmax(logits)_k over the last axis; (B, K), (B, K) -> (B,)."""
    return -jnp.sum(target_probabilities * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def per_loss_weights(probabilities: jnp.ndarray) -> jnp.ndarray:
    """Importance weights of prioritized replay: 1/sqrt(p + 1e-10), divided by the batch maximum."""
    weights = 1.0 / jnp.sqrt(probabilities + PER_EPSILON)
    return weights / jnp.max(weights)


def priorities_from_loss(loss: jnp.ndarray) -> jnp.ndarray:
    """New priorities sqrt(loss + 1e-10); a slightly negative rounding of the loss counts as 0."""
    return jnp.sqrt(jnp.maximum(loss, 0.0) + PER_EPSILON)


def online_outputs(state: RainbowState, params, obs: jnp.ndarray, key: jax.Array) -> atari.QOutput:
    """The online network on the batch with noise on; per-sample noise draws with `per_sample_noise`."""
    config = state.config
    if config.noisy and config.per_sample_noise:
        def one_sample(o, k):
            return dqn.apply_network(state, params, o[None], k, noise=True)

        outputs = jax.vmap(one_sample)(obs, jax.random.split(key, obs.shape[0]))
        return jax.tree.map(lambda x: x[:, 0], outputs)
    return dqn.apply_network(state, params, obs, key, noise=True)


def target_distribution(state: RainbowState, next_obs: jnp.ndarray, reward: jnp.ndarray,
                        discount: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """The projected C51 target (B, K), no gradient. One noise key for the target and online passes."""
    config = state.config
    target_out = dqn.apply_network(state, state.target_params, next_obs, key, noise=True)
    next_q_online = dqn.apply_network(state, state.params, next_obs, key, noise=True).q if config.double_dqn \
        else target_out.q
    action = next_actions(next_q_online, target_out.q, config.double_dqn)
    target = categorical_target(reward, discount, target_out.probabilities, action, support(config))
    return jax.lax.stop_gradient(target)


# ----------------------------------------------------------------------------------------------
# 3. act and update
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("eval_mode",))
def act(state: RainbowState, obs: jnp.ndarray, step, key: jax.Array, eval_mode: bool) -> jnp.ndarray:
    """int32 actions (B,). Training: noisy network, epsilon 0 (or DQN's schedule when not noisy).
    eval_mode: noise off after the head (experts per `expert_noise_at_eval`), epsilon_eval."""
    config = state.config
    key_noise, key_greedy = jax.random.split(key)
    if eval_mode:
        q = dqn.apply_network(state, state.params, obs, key_noise, noise=False,
                              expert_noise=config.expert_noise_at_eval).q
        epsilon = config.epsilon_eval
    else:
        q = dqn.apply_network(state, state.params, obs, key_noise, noise=True).q
        epsilon = 0.0 if config.noisy else dqn.train_epsilon(config, step)
    return dqn.epsilon_greedy(key_greedy, q, epsilon)


@jax.jit
def update(state: RainbowState, batch: Dict[str, jnp.ndarray], step, key: jax.Array
           ) -> Tuple[RainbowState, Metrics]:
    """One Rainbow update at agent step `step`: an Adam step on the (PER-weighted) mean cross-entropy,
    then the target sync if due (dqn.sync_target).

    batch: DQN's keys, plus "probabilities" (B,) sampling probabilities when `prioritized`.
    Metrics: float32 scalars, plus "priorities" (B,) when `prioritized` (module docstring).
    Keys: split(key) -> (online network noise in the loss, target / double-DQN noise).
    """
    config = state.config
    key_online, key_target = jax.random.split(key)
    action = dqn.batch_actions(batch)
    reward, discount = batch["reward"].reshape(-1), batch["discount"].reshape(-1)
    target = target_distribution(state, batch["next_obs"], reward, discount, key_target)
    if config.prioritized:
        weights = per_loss_weights(batch["probabilities"].reshape(-1))
    else:
        weights = jnp.ones_like(reward)

    def loss_fn(params):
        out = online_outputs(state, params, batch["obs"], key_online)
        per_sample = cross_entropy(target, dqn.chosen_values(out.logits, action))
        return jnp.mean(weights * per_sample), (per_sample, out.q)

    (loss, (per_sample, q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = dqn.apply_gradients(state, grads)
    state, synced = dqn.sync_target(state, step)
    metrics = {
        "loss": loss,
        "cross_entropy": per_sample.mean(),
        "q_chosen": dqn.chosen_values(q, action).mean(),
        "q_max": q.max(axis=-1).mean(),
        "batch_reward": reward.mean(),
        "target_synced": synced,
    }
    metrics = {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
    if config.prioritized:
        metrics["priorities"] = jax.lax.stop_gradient(priorities_from_loss(per_sample)).astype(jnp.float32)
    return state, metrics
