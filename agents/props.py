"""PROPS (Proximal Robust On-Policy Sampling, Corrado & Hanna) on top of agents/ppo.py (spec §8).

Everything about the target policy pi_theta is PPO's (agents/ppo.py: networks, prepare, the PPO loss
and update, lr annealing, the sampling-error metric). PROPS adds a behaviour policy pi_phi that
collects all the data and is re-fitted every m environment steps so that the buffer of the last b * n
steps looks more like on-policy data for pi_theta: it lowers the probability of the actions the
buffer already holds. Reference code (read to settle details, nothing copied): PPOROS a0c8708
`PROPS/ppo_props_continuous.py` (main loop, `update_props`); PROPS d5d91bd `ppo_discrete.py`
(`ros_update`). Read top to bottom, only what differs from PPO:

  1. Config (PPO's fields + the behaviour update's), the §8.4 per-task tables, config_for_task
  2. PROPSState = PPOState + phi, phi's Adam state, the environment-step counter
  3. the behaviour objective: the Gaussian KL regularizer and L_PROPS (ROS: mean ratio)
  4. behaviour_update (phi <- theta, then epochs x minibatches with the delta_PROPS early stop)
  5. act (samples from pi_phi), window_steps = m, buffer_steps = b * n, update

One `update` call per m environment steps (spec §8.1), on the buffer's valid steps (T = min(filled,
b * n), oldest first, as the loop passes them):
  a. prepare under the current pi_theta (log-probs, values, GAE over the whole buffer; pitfall #29);
  b. every n environment steps: ppo.target_update on the whole buffer (the sampling error when due,
     then PPO's update);
  c. phi <- theta, then the behaviour update on the buffer without its oldest m steps when the buffer
     is full (they leave before the next update, so they cannot affect future sampling error), against
     references log pi_theta, mu_theta, sigma_theta recomputed AFTER step b (stale_props_reference=True
     keeps PPOROS HEAD's pre-update references, spec pitfall #35).
behaviour="ros" replaces c's objective by the ROS step of Zhong et al. (one full-batch step on +mean
r_phi, PROPS-2025's sign; PPOROS HEAD's branch has the sign flipped, pitfall #27); behaviour="none" is
PPO-BUFFER: pi_phi = pi_theta, no behaviour update, one `update` call per n steps.

Shapes: the loop passes exactly T steps, so `update` is traced once per distinct T (at most
b * n / m shapes, all during the first b * n steps); within one shape everything is static (which
samples the behaviour update sees, whether a PPO update is possible at all), and only "is a PPO update
due now" is a traced lax.cond on the step counter. Note: under jax.vmap over seeds (the loop's
"vmap" strategy) a lax.cond with a per-seed predicate runs both branches, so the PPO update (and the
sampling-error fit) is computed on every call and discarded when not due: correct, but up to n/m
times the PPO compute; the "map" / "unroll" strategies keep the branch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from agents import ppo
from agents.ppo import DEFAULT_OBS, OBS_TYPES, Rollout  # noqa: F401  (the loop builds agent.Rollout)
from core import devices
from core import sampling_error

Params = ppo.Params
Batch = ppo.Batch
Metrics = ppo.Metrics

DEFAULT_TASK = "Hopper-v5"
BEHAVIOURS = ("props", "ros", "none")
KL_DIRECTIONS = ("behaviour_target", "target_behaviour")  # KL(pi_phi || pi_theta) as coded, or the reverse
KL_REDUCES = ("mean", "sum")  # over batch x action dims as coded, or summed over dims then mean over batch
BEHAVIOUR_STREAM = 0xB0  # fold_in(update key, .): the behaviour update's shuffles
PROPS_ADAM_EPS = 1e-5  # PPOROS optim.Adam(agent_props.parameters(), eps=1e-5)
ADVANTAGE_EPS = 1e-8

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config(ppo.Config):
    """PPO's fields (same defaults) plus the behaviour update's; defaults are PPOROS
    `ppo_props_continuous.py` argparse values, per task see config_for_task (spec §8.4)."""

    buffer_batches: int = 2  # b: PROPS and PPO-BUFFER keep the last b * n steps (PPOROS -b default)
    behaviour: str = "props"  # "props" | "ros" (Zhong et al. 2022 baseline) | "none" (PPO-BUFFER)
    props_num_steps: int = 1024  # m: environment steps between two behaviour updates; divides num_steps
    props_lr: float = 1e-4  # Adam lr of phi, no annealing (PPOROS --props-anneal-lr 0)
    props_clip: float = 0.3  # eps_P: r_phi below 1 - eps_P is clipped (no gradient); above 1 never
    props_target_kl: float = 0.05  # delta_PROPS: approx-KL early stop of the behaviour update; <= 0 disables
    props_lambda: float = 0.3  # lambda_P: weight of KL(pi_phi || pi_theta)
    props_epochs: int = 16
    props_num_minibatches: int = 16  # of a full buffer minus m: minibatch = (b*n - m) * num_envs // this
    props_max_grad_norm: float = 0.5
    props_kl_check: str = "before_step"  # PPOROS; "after_step" = PROPS-2025 props_update (see ppo.KL_CHECKS)
    kl_direction: str = "behaviour_target"  # PPOROS codes KL(pi_phi || pi_theta); the paper may state the reverse
    kl_reduce: str = "mean"  # PPOROS: .mean() over batch x dims; "sum": sum over dims, mean over batch
    props_adv: bool = False  # weight the clipped ratio by |A| / std(A) (not mean-centred), PPOROS --props-adv
    stale_props_reference: bool = False  # True: PPOROS HEAD's pre-PPO-update references (pitfall #35)

    def _rules(self):
        full_minus_m = (self.buffer_batches * self.num_steps - self.props_num_steps) * self.num_envs
        behaves = self.behaviour != "none"
        return super()._rules() + [
            ("behaviour", self.behaviour in BEHAVIOURS, f"one of {BEHAVIOURS}"),
            ("props_num_steps", self.props_num_steps >= 1, ">= 1"),
            ("props_num_steps", not behaves or self.num_steps % max(self.props_num_steps, 1) == 0,
             f"a divisor of num_steps = {self.num_steps} (a target update falls on a behaviour update)"),
            ("props_num_steps", not behaves or self.props_num_steps < self.buffer_batches * self.num_steps,
             f"< buffer_batches * num_steps = {self.buffer_batches * self.num_steps}: a full buffer minus the "
             f"m steps about to leave it must hold samples for the behaviour update"),
            ("props_num_minibatches", self.props_num_minibatches >= 1, ">= 1"),
            ("props_num_minibatches", not behaves or full_minus_m >= self.props_num_minibatches,
             f"<= (buffer_batches * num_steps - props_num_steps) * num_envs = {full_minus_m}"),
            ("props_lr", self.props_lr >= 0, ">= 0"),
            ("props_clip", self.props_clip > 0, "> 0"),
            ("props_lambda", self.props_lambda >= 0, ">= 0"),
            ("props_epochs", self.props_epochs >= 1, ">= 1"),
            ("props_max_grad_norm", self.props_max_grad_norm > 0, "> 0"),
            ("props_kl_check", self.props_kl_check in ppo.KL_CHECKS, f"one of {ppo.KL_CHECKS}"),
            ("kl_direction", self.kl_direction in KL_DIRECTIONS, f"one of {KL_DIRECTIONS}"),
            ("kl_reduce", self.kl_reduce in KL_REDUCES, f"one of {KL_REDUCES}"),
        ]


# Spec §8.4 (computed from the PPOROS NeurIPS data configs `data/rl/props`, -v4 tasks; re-read here
# from the snapshot's config.yml files): PROPS column. The v5 names get the same values.
PROPS_RUNS: Dict[str, Dict[str, Any]] = {
    "Swimmer": {"num_train_frames": 1_000_000, "num_steps": 2048, "lr": 1e-3, "props_num_steps": 1024,
                "props_lr": 1e-5, "props_clip": 0.3, "props_target_kl": 0.03, "props_lambda": 0.1,
                "props_num_minibatches": 16},
    "Hopper": {"num_train_frames": 1_000_000, "num_steps": 2048, "lr": 1e-3, "props_num_steps": 256,
               "props_lr": 1e-3, "props_clip": 0.3, "props_target_kl": 0.05, "props_lambda": 0.3,
               "props_num_minibatches": 16},
    "HalfCheetah": {"num_train_frames": 2_000_000, "num_steps": 1024, "lr": 1e-4, "props_num_steps": 512,
                    "props_lr": 1e-3, "props_clip": 0.3, "props_target_kl": 0.05, "props_lambda": 0.3,
                    "props_num_minibatches": 16},
    "Walker2d": {"num_train_frames": 2_000_000, "num_steps": 2048, "lr": 1e-3, "props_num_steps": 256,
                 "props_lr": 1e-3, "props_clip": 0.3, "props_target_kl": 0.1, "props_lambda": 0.3,
                 "props_num_minibatches": 32},
    "Ant": {"num_train_frames": 4_000_000, "num_steps": 2048, "lr": 1e-4, "props_num_steps": 256,
            "props_lr": 1e-3, "props_clip": 0.05, "props_target_kl": 0.03, "props_lambda": 0.1,
            "props_num_minibatches": 16},
    "Humanoid": {"num_train_frames": 6_000_000, "num_steps": 8192, "lr": 1e-4, "props_num_steps": 256,
                 "props_lr": 1e-4, "props_clip": 0.3, "props_target_kl": 0.1, "props_lambda": 0.1,
                 "props_num_minibatches": 32},
}
# PPO-BUFFER (b = 2) column, used when behaviour="none" (`data/rl/ppo_buffer/.../b_2`).
PPO_BUFFER_RUNS: Dict[str, Dict[str, Any]] = {
    "Swimmer": {"num_train_frames": 1_000_000, "num_steps": 2048, "lr": 1e-3},
    "Hopper": {"num_train_frames": 1_000_000, "num_steps": 1024, "lr": 1e-4},
    "HalfCheetah": {"num_train_frames": 2_000_000, "num_steps": 4096, "lr": 1e-3},
    "Walker2d": {"num_train_frames": 2_000_000, "num_steps": 4096, "lr": 1e-3},
    "Ant": {"num_train_frames": 4_000_000, "num_steps": 1024, "lr": 1e-4},
    "Humanoid": {"num_train_frames": 6_000_000, "num_steps": 8192, "lr": 1e-4},
}
_versions = lambda table: {f"{name}-{v}": values for name, values in table.items() for v in ("v4", "v5")}
TASK_OVERRIDES: Dict[str, Dict[str, Any]] = _versions(PROPS_RUNS)
PPO_BUFFER_TASK_OVERRIDES: Dict[str, Dict[str, Any]] = _versions(PPO_BUFFER_RUNS)


def config_for_task(task: str, **user_overrides) -> Config:
    """The PROPS-paper config of `task`: the PROPS column (behaviour "props" or "ros") or the
    PPO-BUFFER column (behaviour="none"); other tasks get the defaults. Then user_overrides (unknown
    field names raise ValueError naming the valid ones)."""
    valid_fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(user_overrides) - valid_fields)
    if unknown:
        raise ValueError(f"unknown Config field(s) {unknown}; valid fields: {sorted(valid_fields)}")
    table = PPO_BUFFER_TASK_OVERRIDES if user_overrides.get("behaviour") == "none" else TASK_OVERRIDES
    return Config(**{**table.get(task, {}), **user_overrides})


# ----------------------------------------------------------------------------------------------
# 2. Agent state
# ----------------------------------------------------------------------------------------------


class PROPSState(ppo.PPOState):
    """PPO's state (params of pi_theta and the critic, their Adam state, num_updates = target updates
    done) plus the behaviour policy. Every ppo.* function that takes a PPOState takes this one too."""

    behaviour_params: Params  # {"actor", "log_std"} of pi_phi (PPOROS copies the critic too; it is unused)
    behaviour_opt_state: optax.OptState  # phi's Adam state: kept across behaviour updates (PPOROS copies
    #                                      theta into phi's tensors, its optimizer keeps its moments)
    env_steps: jnp.ndarray  # int32: environment steps per environment so far (+window_steps per update)


def behaviour_optimizer(config: Config) -> optax.GradientTransformation:
    """Global-norm clip at props_max_grad_norm, then Adam's direction (eps 1e-5); lr applied outside."""
    return optax.chain(optax.clip_by_global_norm(config.props_max_grad_norm),
                       optax.scale_by_adam(b1=0.9, b2=0.999, eps=PROPS_ADAM_EPS))


def policy_params(params: Params) -> Params:
    """The policy part {"actor", "log_std"} of PPO's params (what pi_phi copies from pi_theta)."""
    return {"actor": params["actor"], "log_std": params["log_std"]}


def create(key: jax.Array, obs_dim: int, action_dim: int, config: Config) -> PROPSState:
    """PPO's fresh agent, with pi_phi = pi_theta, a fresh Adam state for phi and env_steps = 0."""
    base = ppo.create(key, obs_dim, action_dim, config)
    phi = policy_params(base.params)
    return PROPSState(params=base.params, opt_state=base.opt_state, num_updates=base.num_updates,
                      config=config, action_dim=action_dim, behaviour_params=phi,
                      behaviour_opt_state=behaviour_optimizer(config).init(phi),
                      env_steps=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------------------------
# 3. The behaviour objective
# ----------------------------------------------------------------------------------------------


def gaussian_kl(mean_p: jnp.ndarray, log_std_p: jnp.ndarray, mean_q: jnp.ndarray,
                log_std_q: jnp.ndarray) -> jnp.ndarray:
    """KL(N(mean_p, std_p^2) || N(mean_q, std_q^2)) per action dimension (elementwise):
    log(std_q / std_p) + (std_p^2 + (mean_p - mean_q)^2) / (2 std_q^2) - 1/2."""
    return (log_std_q - log_std_p + 0.5 * jnp.exp(2 * (log_std_p - log_std_q))
            + 0.5 * jnp.square(mean_p - mean_q) * jnp.exp(-2 * log_std_q) - 0.5)


def kl_regularizer(mean_phi: jnp.ndarray, log_std_phi: jnp.ndarray, mean_theta: jnp.ndarray,
                   log_std_theta: jnp.ndarray, valid: jnp.ndarray, config: Config) -> jnp.ndarray:
    """The lambda_P term's KL over a (B, A) minibatch (valid (B,) marks real samples): KL(pi_phi ||
    pi_theta) ("behaviour_target") or KL(pi_theta || pi_phi), averaged over batch x dims ("mean", as
    coded) or summed over dims and averaged over the batch ("sum", the KL of the product Gaussians)."""
    if config.kl_direction == "behaviour_target":
        per_dim = gaussian_kl(mean_phi, log_std_phi, mean_theta, log_std_theta)
    else:
        per_dim = gaussian_kl(mean_theta, log_std_theta, mean_phi, log_std_phi)
    per_sample = per_dim.mean(-1) if config.kl_reduce == "mean" else per_dim.sum(-1)
    return sampling_error.masked_mean(per_sample, valid)


def props_loss(phi: Params, minibatch: Batch, config: Config,
               valid: Optional[jnp.ndarray] = None) -> Tuple[jnp.ndarray, Metrics]:
    """L_PROPS on one minibatch (spec §8.2), r = pi_phi(a|s) / pi_theta(a|s):

        mean[ max(r, clip(r, 1 - eps_P, 1 + eps_P)) (* |A| / std(A) if props_adv) ] + lambda_P * KL

    Minimizing it lowers the probability of the buffer's actions; once r < 1 - eps_P the term is the
    constant 1 - eps_P (no gradient), r > 1 is never clipped. behaviour="ros": mean[r] alone (no clip,
    no KL). minibatch: obs, actions, log_probs / means / log_stds of pi_theta (the references),
    advantages; valid (B,) marks real samples (a short last minibatch is padded). Metrics (no
    gradient): props_approx_kl = mean((r - 1) - log r) at phi (the early-stop statistic),
    props_clip_fraction = mean(|r - 1| > eps_P), props_kl = the KL term, props_policy_loss."""
    if valid is None:
        valid = jnp.ones(minibatch["obs"].shape[:1], bool)
    eps = config.props_clip
    mean, log_std = ppo.policy(phi, minibatch["obs"], config.tanh_mean)
    log_ratio = ppo.log_prob(mean, log_std, minibatch["actions"]) - minibatch["log_probs"]
    chex.assert_equal_shape([log_ratio, valid])
    ratio = jnp.exp(log_ratio)
    kl = kl_regularizer(mean, log_std, minibatch["means"], minibatch["log_stds"], valid, config)

    if config.behaviour == "ros":
        policy_loss = sampling_error.masked_mean(ratio, valid)
        loss = policy_loss
    else:
        surrogate = jnp.maximum(ratio, jnp.clip(ratio, 1 - eps, 1 + eps))
        if config.props_adv:  # |A| / std(A) with the minibatch's sample std (ddof 1), not mean-centred
            advantages = minibatch["advantages"]
            count = jnp.maximum(jnp.sum(valid), 2)
            centred = advantages - sampling_error.masked_mean(advantages, valid)
            std = jnp.sqrt(jnp.sum(jnp.where(valid, jnp.square(centred), 0.0)) / (count - 1))
            surrogate = surrogate * jnp.abs(advantages) / (std + ADVANTAGE_EPS)
        policy_loss = sampling_error.masked_mean(surrogate, valid)
        loss = policy_loss + config.props_lambda * kl

    no_grad = jax.lax.stop_gradient
    metrics = {
        "props_loss": loss, "props_policy_loss": policy_loss, "props_kl": no_grad(kl),
        "props_approx_kl": no_grad(sampling_error.masked_mean((ratio - 1) - log_ratio, valid)),
        "props_clip_fraction": no_grad(sampling_error.masked_mean((jnp.abs(ratio - 1) > eps).astype(jnp.float32),
                                                                   valid)),
    }
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# 4. The behaviour update
# ----------------------------------------------------------------------------------------------


def behaviour_references(params: Params, batch: Batch, config: Config) -> Batch:
    """The behaviour update's samples with pi_theta's references under `params`: obs, actions,
    log_probs (= batch's when batch was prepared under params), means, log_stds, advantages."""
    mean, log_std = ppo.policy(params, batch["obs"], config.tanh_mean)
    refs = {"obs": batch["obs"], "actions": batch["actions"], "log_probs": batch["log_probs"],
            "means": mean, "log_stds": log_std, "advantages": batch["advantages"]}
    return jax.tree.map(jax.lax.stop_gradient, refs)


def behaviour_start(buffer_len: int, config: Config) -> int:
    """Buffer steps (oldest first) the behaviour update skips for a buffer of buffer_len steps: the
    oldest m when the buffer is full (they are evicted by the next m steps), else none (PPOROS
    update_props: all data while global_step <= buffer_size - m)."""
    return window_steps(config) if buffer_len == buffer_steps(config) else 0


def behaviour_minibatch_size(num_samples: int, config: Config) -> int:
    """(b * n - m) * num_envs // props_num_minibatches (PPOROS props_minibatch_size, fixed at the size
    for a full buffer), at most num_samples; ROS: the full batch."""
    if config.behaviour == "ros":
        return num_samples
    full = (config.buffer_batches * config.num_steps - config.props_num_steps) * config.num_envs
    return min(max(full // config.props_num_minibatches, 1), num_samples)


def minibatch_sizes(config: Config) -> Tuple[int, ...]:
    """Every minibatch size an update of a run can use (sorted, distinct), over the buffer fill levels
    the loop passes (T = m, 2m, ..., b * n steps): PPO's (ppo.minibatch_layout, on the calls where T is
    a multiple of n) and the behaviour update's (behaviour_minibatch_size of the samples after
    behaviour_start). The loop checks that its data-parallel devices divide each (core/onpolicy.py)."""
    E, full = config.num_envs, buffer_steps(config)
    ppo_full = full * E // config.num_minibatches
    sizes = set()
    for steps in range(window_steps(config), full + 1, window_steps(config)):
        if steps % config.num_steps == 0:
            sizes.add(min(ppo_full, steps * E))
        if config.behaviour != "none":
            sizes.add(behaviour_minibatch_size((steps - behaviour_start(steps, config)) * E, config))
    return tuple(sorted(sizes))


@functools.partial(jax.jit, static_argnames=("config",))
def behaviour_update(state: PROPSState, refs: Batch, key: jax.Array,
                     config: Config) -> Tuple[Params, optax.OptState, Metrics]:
    """phi <- theta (state.params), then minimize props_loss over the samples of refs (flat (N, ...)
    arrays, behaviour_references): props_epochs epochs of fresh shuffles cut into minibatches of
    behaviour_minibatch_size (a short last one, as PPOROS's slicing), one clipped Adam step (props_lr)
    each, phi's Adam state carried over from the previous behaviour update. Early stop
    (props_target_kl > 0) on each minibatch's props_approx_kl, with ppo_update's props_kl_check rules
    ("before_step", PPOROS: the exceeding minibatch takes no step and the update ends).
    behaviour="ros": one full-batch step, no early stop (PROPS-2025 ros_update).

    Returns (phi, phi's Adam state, metrics): props_loss, props_policy_loss, props_kl, props_approx_kl,
    props_clip_fraction, props_grad_norm (means over the minibatches evaluated), props_gradient_steps,
    props_early_stopped."""
    num_samples = refs["obs"].shape[0]
    size = behaviour_minibatch_size(num_samples, config)
    ros = config.behaviour == "ros"
    epochs = 1 if ros else config.props_epochs
    kl_enabled = (not ros) and config.props_target_kl > 0
    tx = behaviour_optimizer(config)

    epoch_keys = jax.random.split(key, epochs)
    indices, valid = jax.vmap(lambda k: sampling_error.minibatch_indices(k, num_samples, size))(epoch_keys)
    per_epoch = indices.shape[1]
    indices, valid = indices.reshape(-1, size), valid.reshape(-1, size)
    is_epoch_end = (jnp.arange(epochs * per_epoch) % per_epoch) == per_epoch - 1
    metric_names = ("props_loss", "props_policy_loss", "props_kl", "props_approx_kl", "props_clip_fraction",
                    "props_grad_norm")

    def take_minibatch(mb_indices, mb_valid):
        # On a device mesh the minibatch (and its padding mask) is split over the data devices
        # (core/devices.py; a no-op without one); its masked means stay the whole minibatch's.
        return devices.shard_batch((jax.tree.map(lambda x: x[mb_indices], refs), mb_valid), 0)

    def loss_fn(phi, minibatch_and_valid):
        minibatch, mb_valid = minibatch_and_valid
        return props_loss(phi, minibatch, config, mb_valid)

    phi = policy_params(state.params)  # phi <- theta before every behaviour update
    phi, opt_state, steps, stopped, metrics = ppo.early_stopped_steps(
        take_minibatch, loss_fn, phi, state.behaviour_opt_state, tx, config.props_lr, indices, valid, is_epoch_end,
        kl_name="props_approx_kl", target_kl=config.props_target_kl if kl_enabled else 0.0,
        kl_check=config.props_kl_check, metric_names=metric_names, grad_norm_name="props_grad_norm")
    metrics.update(props_gradient_steps=steps, props_early_stopped=stopped)
    return phi, opt_state, {name: jnp.asarray(v, jnp.float32) for name, v in metrics.items()}


# ----------------------------------------------------------------------------------------------
# 5. act and update
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("eval_mode",))
def act(state: PROPSState, obs: jnp.ndarray, key: jax.Array, eval_mode: bool = False) -> jnp.ndarray:
    """A sample of pi_phi (the behaviour policy collects all data), or in eval_mode the TARGET
    policy's mean (what is evaluated). Not clipped: the environment clips."""
    if eval_mode:
        return ppo.act(state, obs, key, eval_mode=True)
    behaviour = state.replace(params={**state.params, **state.behaviour_params})
    return ppo.act(behaviour, obs, key)


def window_steps(config: Config) -> int:
    """Environment steps per environment between two `update` calls: m (n for behaviour="none", where
    only the every-n PPO update happens)."""
    return config.num_steps if config.behaviour == "none" else config.props_num_steps


def buffer_steps(config: Config) -> int:
    """Length of the loop's ring buffer per environment: b * n."""
    return ppo.buffer_steps(config)


def _nan_metrics(metrics_shapes: Metrics) -> Metrics:
    """NaN metrics of the given shapes (PPO's metrics on calls without a target update)."""
    return {name: jnp.full(s.shape, jnp.nan, s.dtype) for name, s in metrics_shapes.items()}


@jax.jit
def update(state: PROPSState, rollout: Rollout, key: jax.Array) -> Tuple[PROPSState, Metrics]:
    """One call per window_steps environment steps on the buffer's valid T steps (module doc a-c).

    Metrics: PPO's (ppo.update's, sampling_error included), NaN on calls without a target update;
    target_update (1 on calls with one); and, unless behaviour="none", the behaviour update's
    (behaviour_update). The set of names is the same on every call."""
    config = state.config
    ppo.check_rollout(rollout, state.action_dim)
    T, E = rollout.rewards.shape
    window, n, full = window_steps(config), config.num_steps, buffer_steps(config)
    if T % window or T > full:
        raise ValueError(f"the rollout holds T={T} steps; the loop passes min(filled, buffer_steps={full}) steps, "
                         f"a multiple of window_steps={window}")
    env_steps = state.env_steps + window
    target_due = env_steps % n == 0

    batch = ppo.prepare(state, rollout, config)  # under the pre-update theta
    params_before = state.params
    if T % n == 0:  # static: only then can env_steps be a multiple of n (before the buffer is full, T = env_steps)
        state, ppo_metrics = jax.lax.cond(
            target_due, ppo.target_update,
            lambda s, b, k: (s, _nan_metrics(jax.eval_shape(ppo.target_update, s, b, k)[1])),
            state, batch, key)
    else:
        full_batch = {name: jax.ShapeDtypeStruct((full * E,) + x.shape[1:], x.dtype) for name, x in batch.items()}
        ppo_metrics = _nan_metrics(jax.eval_shape(ppo.target_update, state, full_batch, key)[1])
    metrics = {**ppo_metrics, "target_update": target_due.astype(jnp.float32)}

    if config.behaviour == "none":  # PPO-BUFFER: pi_phi = pi_theta
        phi, phi_opt_state = policy_params(state.params), state.behaviour_opt_state
    else:
        if config.stale_props_reference:
            refs = behaviour_references(params_before, batch, config)
        else:
            refs = behaviour_references(state.params, ppo.prepare(state, rollout, config), config)
        start = behaviour_start(T, config) * E  # flat rows are step-major: step t is rows t*E .. t*E + E-1
        refs = jax.tree.map(lambda x: x[start:], refs)
        phi, phi_opt_state, props_metrics = behaviour_update(
            state, refs, jax.random.fold_in(key, BEHAVIOUR_STREAM), config)
        metrics.update(props_metrics)
    state = state.replace(behaviour_params=phi, behaviour_opt_state=phi_opt_state, env_steps=env_steps)
    return state, metrics
