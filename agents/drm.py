"""DrM (Xu et al., ICLR 2024): DrQ-v2 + three mechanisms driven by the actor's dormant ratio beta.

  1. perturbation:  every `dormant_perturb_interval` agent steps, shrink-and-perturb every Dense
                    layer towards a fresh init, theta <- a*theta + (1-a)*phi, a = clip(1 - k*beta, a_min, a_max)
  2. awaken exploration: the exploration std is sigmoid((beta - beta_hat) * dormant_temp) until beta
                    first falls below beta_hat (the awaken step t0), then max(that, linear schedule
                    restarted at t0)
  3. exploitation:  an expectile state-value network V, and the critic target
                    y = R + Gamma * [lambda(beta) V(h') + (1 - lambda(beta)) min Q_tgt(h', a')]

Spec: shared/spec/pixel-agents.md §2 (and §5 rows 14-22). Everything else — encoder, actor, critic,
augmentation, losses, Adam, soft update, schedules — is agents/drqv2.py, imported and called here,
so this file shows only what DrM adds. Read top to bottom:

  1. Config (DrQ-v2's fields + DrM's), DMC / Meta-World / Adroit hyperparameters as data, config_for_task
  2. the agent state (DrMState = DrQV2State + V network, beta, t0, last alpha), create
  3. DrM's pieces as pure functions: alpha(beta), sigma(beta, t0), lambda(beta), the awaken test,
     the dormant ratio, shrink-and-perturb, the expectile loss, the blended target, the V step
  4. act and update (jitted; the perturbation is a lax.cond inside the update)

Per-domain networks (spec §2.6, §2.7), set by the domain's config data and built by drqv2.networks:
  * Meta-World: Dropout(0.01) then LayerNorm after each hidden Dense of the Q heads
    (`critic_hidden_dropout`, `critic_hidden_layer_norm`); dropout is on in every critic call of an
    update (V step, target, critic loss, actor loss), in the target critic too (`critic_target_dropout`,
    the official train-mode target), with masks from fold_in(key, _DROPOUT_SALT);
  * Adroit: h <- Fusion(h + StateMLP(s)) after the trunk of the actor, critic and V (`proprio_dim` = 24),
    s = batch["proprio"] (obs) / batch["next_proprio"] (next_obs) and act(..., proprio=s).
"""

import dataclasses
import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.traverse_util as traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from agents import drqv2
from core import schedules
from networks import actor_critic, dormant
from networks.mlp import layer_norm

Params = Any
Metrics = Dict[str, jnp.ndarray]

# ----------------------------------------------------------------------------------------------
# 1. Configuration
# ----------------------------------------------------------------------------------------------

DORMANT_NETWORKS = ("actor", "actor+critic")
PERTURB_TARGETS = ("independent", "copy_online")
STDDEV_TYPES = ("awake", "dormant", "drqv2")


@dataclasses.dataclass(frozen=True)
class Config(drqv2.Config):
    """DrQ-v2's fields (unchanged defaults, see drqv2.Config) plus DrM's. Every default is the official
    DMC value (S2 = XuGW-Kevin/DrM 317116a, cfgs/agent/drm.yaml, agents/drm.py, utils.py) unless the
    comment says otherwise. Steps are AGENT steps. `max_perturb_factor` and `target_lambda` have no
    default (official '???'): config_for_task gives the per-task values."""

    # Dormant ratio beta (§2.1).
    dormant_threshold: float = 0.025  # S2 drm.yaml dormant_threshold (tau)
    dormant_comparison: str = "<"  # S2 utils.cal_dormant_ratio: strict <; the paper writes <=
    dormant_activation: str = "official"  # S2 hooks + in-place ReLU: trunk pre-LN, hidden post-ReLU, output pre-tanh
    dormant_network: str = "actor"  # S2 drm.py update: cal_dormant_ratio(self.actor, ...) only
    dormant_include_output_layer: bool = True  # S2 cal_dormant_ratio hooks every nn.Linear, output included
    # With a token head (drqv2 `head`): count its Dense layers (token mixer / experts) in beta, units
    # averaged over batch and tokens (or slots); spec §4.7 `dormant_include_moe` [DESIGN SUGGESTION].
    dormant_include_moe: bool = True
    target_dormant_ratio: float = 0.2  # S2 drm.yaml target_dormant_ratio (beta_hat)
    # Mechanism 1: perturbation (§2.2).
    perturb: bool = True  # pixax switch: False turns the perturbation off
    dormant_perturb_interval: int = 100_000  # S2 drm.yaml (agent steps = 200 k frames)
    perturb_rate: float = 2.0  # S2 drm.yaml perturb_rate (k)
    min_perturb_factor: float = 0.2  # S2 drm.yaml min_perturb_factor (alpha_min)
    max_perturb_factor: Optional[float] = None  # S2 drm.yaml '???': per task (alpha_max), see DMC_TASK_OVERRIDES
    perturb_encoder_convs: bool = False  # S2 utils.perturb blends nn.Linear only: the conv encoder is never perturbed
    perturb_target: str = "independent"  # S2 drm.py perturb: critic_target gets its own fresh init
    reset_opt_state: bool = True  # S2 utils.perturb: optimizer.state = defaultdict(dict) (counts too)
    # Mechanism 2: awaken exploration (§2.3). "drqv2" = the plain schedule: the switch that turns it off.
    stddev_type: str = "awake"  # S2 drm.yaml stddev_type
    dormant_temp: float = 10.0  # S2 drm.yaml dormant_temp (1/T)
    awaken_guard: bool = True  # S2 drm.py: t0 needs step > num_expl_steps (the Meta-World agent has no guard)
    # Mechanism 3: exploitation (§2.4). False: no V step and the plain DrQ-v2 target.
    exploitation: bool = True  # pixax switch
    target_lambda: Optional[float] = None  # S2 cfgs/task/<task>.yaml (lambda_hat; removed from drm.yaml 2024-03-02)
    lambda_temp: float = 50.0  # S2 drm.yaml lambda_temp (1/T')
    constant_lambda: bool = False  # S2 drm_mw.py: lambda = target_lambda, no beta dependence (Meta-World)
    expectile: float = 0.9  # S2 drm.yaml expectile (kappa)
    # Per-domain networks (§2.6, §2.7); the DMC agent has neither (METAWORLD / ADROIT set them).
    critic_hidden_dropout: float = 0.0  # S2 drm_mw.py Critic: nn.Dropout(0.01) after each hidden Linear
    critic_hidden_layer_norm: bool = False  # S2 drm_mw.py Critic: nn.LayerNorm after that Dropout
    critic_target_dropout: bool = True  # S2 drm_mw.py: critic_target.train() -> dropout in the target (§5 #20)
    proprio_dim: int = 0  # S2 drm_adroit.py StateEncoder: state_dim = 24 (Adroit's observation_sensor)

    def __post_init__(self):
        for name in ("max_perturb_factor", "target_lambda"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Config.{name} must be a float or None, got {type(value).__name__} {value!r}")
            object.__setattr__(self, name, float(value))
        super().__post_init__()

    def _rules(self):
        alpha_max, lam = self.max_perturb_factor, self.target_lambda
        required = "set (official DrM has no default: use config_for_task(task) or give it)"
        return super()._rules() + [
            ("dormant_threshold", 0 <= self.dormant_threshold < 1, "in [0, 1) (official 0.025)"),
            ("dormant_comparison", self.dormant_comparison in dormant.COMPARISONS, f"one of {dormant.COMPARISONS}"),
            ("dormant_activation", self.dormant_activation in dormant.RULES, f"one of {dormant.RULES}"),
            ("dormant_network", self.dormant_network in DORMANT_NETWORKS, f"one of {DORMANT_NETWORKS}"),
            ("target_dormant_ratio", 0 <= self.target_dormant_ratio <= 1, "in [0, 1]"),
            ("dormant_perturb_interval",
             self.dormant_perturb_interval >= 1 and self.dormant_perturb_interval % self.update_every_steps == 0,
             f"a positive multiple of update_every_steps={self.update_every_steps}, or it would never "
             f"coincide with an update (official 100000)"),
            ("perturb_rate", self.perturb_rate >= 0, ">= 0"),
            ("min_perturb_factor", 0 <= self.min_perturb_factor <= 1, "in [0, 1]"),
            ("max_perturb_factor",
             not self.perturb or (alpha_max is not None and self.min_perturb_factor <= alpha_max <= 1),
             required + f", in [min_perturb_factor={self.min_perturb_factor}, 1]"),
            ("perturb_target", self.perturb_target in PERTURB_TARGETS, f"one of {PERTURB_TARGETS}"),
            ("stddev_type", self.stddev_type in STDDEV_TYPES, f"one of {STDDEV_TYPES}"),
            ("dormant_temp", self.dormant_temp > 0, "> 0"),
            ("target_lambda", not self.exploitation or (lam is not None and 0 <= lam <= 1), required + ", in [0, 1]"),
            ("lambda_temp", self.lambda_temp > 0, "> 0"),
            ("expectile", 0 < self.expectile < 1, "in (0, 1)"),
            ("critic_hidden_dropout", 0 <= self.critic_hidden_dropout < 1, "in [0, 1) (Meta-World: 0.01)"),
            ("proprio_dim", self.proprio_dim >= 0, ">= 0 (Adroit: 24; 0 = no proprioception fusion)"),
        ]


# DMC tiers of DrM (S2 cfgs/task/{easy,medium,hard}.yaml) and the tasks that have a DrM task yaml.
# DrM's `easy` differs from DrQ-v2's and no DrM task uses it; DMC tasks without a DrM yaml (e.g.
# walker_walk) get DrM's tier of the same name as their DrQ-v2 tier, DrQ-v2's per-task overrides,
# and must be given max_perturb_factor and target_lambda.
DMC_TIERS: Dict[str, Dict[str, Any]] = {
    "easy": {"tasks": (), "num_train_frames": 210_000, "stddev_schedule": "linear(1.0,0.1,40000)"},
    "medium": {
        "tasks": ("acrobot_swingup", "cartpole_swingup_sparse", "cheetah_run", "hopper_hop", "quadruped_run",
                  "quadruped_walk", "reacher_easy", "reacher_hard", "walker_run"),
        "num_train_frames": 3_100_000, "stddev_schedule": "linear(1.0,0.1,500000)",
    },
    "hard": {
        "tasks": ("acrobot_swingup_sparse", "dog_run", "dog_stand", "dog_trot", "dog_walk", "humanoid_run",
                  "humanoid_stand", "humanoid_walk", "manipulator_bring_ball"),
        "num_train_frames": 30_100_000, "stddev_schedule": "linear(1.0,0.1,2000000)",
    },
}

# Per-task values (S2 cfgs/task/<task>.yaml; spec §2.6 table). alpha_max and lambda_hat per task.
_MEDIUM = {"max_perturb_factor": 1.0, "target_lambda": 0.6}
_HARD = {"lr": 8e-5, "feature_dim": 100, "target_lambda": 0.6}
DMC_TASK_OVERRIDES: Dict[str, Dict[str, Any]] = {
    "dog_stand": {**_HARD, "max_perturb_factor": 0.6},
    "dog_walk": {**_HARD, "max_perturb_factor": 0.6},
    "dog_trot": {**_HARD, "max_perturb_factor": 0.9},
    "dog_run": {**_HARD, "max_perturb_factor": 0.6},
    "humanoid_run": {**_HARD, "max_perturb_factor": 0.6},
    "humanoid_walk": {**_HARD, "max_perturb_factor": 0.9},
    "humanoid_stand": {**_HARD, "max_perturb_factor": 0.9},
    # lr 8e-5 but feature_dim stays at the global 50.
    "manipulator_bring_ball": {"lr": 8e-5, "max_perturb_factor": 0.9, "target_lambda": 0.6},
    "acrobot_swingup_sparse": {"max_perturb_factor": 0.9, "target_lambda": 0.6},
    "acrobot_swingup": _MEDIUM,
    "cartpole_swingup_sparse": _MEDIUM,
    "cheetah_run": _MEDIUM,
    "hopper_hop": _MEDIUM,
    "reacher_easy": _MEDIUM,
    "reacher_hard": _MEDIUM,
    "quadruped_run": {**_MEDIUM, "replay_capacity": 100_000},
    "quadruped_walk": {**_MEDIUM, "replay_capacity": 100_000},  # unlike DrQ-v2 (only quadruped_run)
    "walker_run": {**_MEDIUM, "batch_size": 512, "nstep": 3},  # nstep 3: DrM's walker_run.yaml drops DrQ-v2's 1
}

# Meta-World, every task (S2 cfgs/task/metaworld.yaml + cfgs/agent/drm_mw.yaml, composed; spec §2.6/§2.7).
METAWORLD: Dict[str, Any] = {
    "num_train_frames": 2_100_000,
    "stddev_schedule": "linear(1.0,0.1,500000)",
    # The yaml lists n-step / discount schedules, but train_mw.py builds the buffer once with
    # floor(3 + 7) = 10 and 0.997 - 0.02 - 0.007 = 0.97 and never applies the schedules (§5 #15).
    "nstep": 10,
    "discount": 0.97,
    # drm_mw.yaml is merged after the task yaml (Hydra order †): its 0.95 / 0.5 win for every task,
    # including sweep-into, whose own yaml says 0.9 / 0.6.
    "max_perturb_factor": 0.95,
    "target_lambda": 0.5,
    "constant_lambda": True,  # drm_mw.py: lambda_ = target_lambda
    "expectile": 0.9,
    "awaken_guard": False,  # drm_mw.py: t0 when beta < beta_hat, no step guard
    "critic_hidden_dropout": 0.01,  # drm_mw.py Critic Q1/Q2
    "critic_hidden_layer_norm": True,
}
METAWORLD_TASKS: Tuple[str, ...] = (
    "assembly", "basketball", "bin-picking", "box-close", "button-press", "button-press-topdown",
    "button-press-topdown-wall", "button-press-wall", "coffee-button", "coffee-pull", "coffee-push",
    "dial-turn", "disassemble", "door-close", "door-lock", "door-open", "door-unlock", "drawer-close",
    "drawer-open", "faucet-close", "faucet-open", "hammer", "hand-insert", "handle-press", "handle-press-side",
    "handle-pull", "handle-pull-side", "lever-pull", "peg-insert-side", "peg-unplug-side", "pick-out-of-hole",
    "pick-place", "pick-place-wall", "plate-slide", "plate-slide-back", "plate-slide-back-side",
    "plate-slide-side", "push", "push-back", "push-wall", "reach", "reach-wall", "shelf-place", "soccer",
    "stick-pull", "stick-push", "sweep", "sweep-into", "window-close", "window-open",
)

# Adroit, every task (S2 cfgs/task/adroit_medium.yaml + cfgs/agent/drm_adroit.yaml, composed).
ADROIT: Dict[str, Any] = {
    "num_train_frames": 6_100_000,
    "stddev_schedule": "linear(1.0,0.1,500000)",
    "frame_stack": 1,
    "max_perturb_factor": 0.9,
    "target_lambda": 0.6,
    # 0.7 for all three: door.yaml's 0.6 is overridden by drm_adroit.yaml (Hydra order †).
    "expectile": 0.7,
    "proprio_dim": 24,  # train_adroit.py: observation_sensor (the hand's 24 joint positions)
}
ADROIT_TASKS: Tuple[str, ...] = ("door", "hammer", "pen")

_MW_PREFIXES = ("metaworld_", "metaworld-", "metaworld/", "mw_", "mw-", "mw/")
_MW_SUFFIXES = ("-v2-goal-observable", "-v3-goal-observable", "-v2", "-v3")
_ADROIT_PREFIXES = ("adroit_", "adroit-", "adroit/")
_ADROIT_GYM_IDS = {f"AdroitHand{t.capitalize()}-v{v}": t for t in ADROIT_TASKS for v in (0, 1)}


def _strip(name: str, prefixes: Sequence[str], suffixes: Sequence[str]) -> Tuple[str, bool]:
    marked = False
    for prefix in prefixes:
        if name.startswith(prefix):
            name, marked = name[len(prefix):], True
            break
    for suffix in suffixes:
        if name.endswith(suffix):
            name, marked = name[: -len(suffix)], True
            break
    return name, marked


def task_domain(task: str) -> Tuple[str, str]:
    """(domain, DrM's task name) of a task name: domain "dmc", "metaworld" or "adroit".

    DMC: "walker_run". Meta-World: "door-open", "door-open-v2", "door-open-v3", "metaworld_door-open",
    "mw-door-open" (bare "hammer" is Adroit's, as in the official configs; say "hammer-v3" or
    "metaworld_hammer" for Meta-World's). Adroit: "door", "adroit_door", "AdroitHandDoor-v1".
    """
    if not isinstance(task, str):
        raise ValueError(f"task must be a string, got {type(task).__name__} {task!r}")
    dmc_tasks = {t for tier in DMC_TIERS.values() for t in tier["tasks"]}
    dmc_tasks |= {t for tier in drqv2.TIERS.values() for t in tier["tasks"]}
    if task in dmc_tasks:
        return "dmc", task
    if task in _ADROIT_GYM_IDS:
        return "adroit", _ADROIT_GYM_IDS[task]
    name, marked = _strip(task, _ADROIT_PREFIXES, ("-v0", "-v1"))
    if name in ADROIT_TASKS and (marked or task == name):
        return "adroit", name
    name, marked = _strip(task, _MW_PREFIXES, _MW_SUFFIXES)
    if name in METAWORLD_TASKS and (marked or name != "hammer"):
        return "metaworld", name
    raise ValueError(
        f"unknown task {task!r}; DrM knows the DMC tasks {sorted(dmc_tasks)}, the Meta-World tasks "
        f"{list(METAWORLD_TASKS)} (as '<name>', '<name>-v3' or 'metaworld_<name>') and the Adroit tasks "
        f"{list(ADROIT_TASKS)} (as '<name>', 'adroit_<name>' or 'AdroitHand<Name>-v1')")


def _tables(domain: str) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Dict[str, Any]]]:
    """(tiers, per-task overrides) of a domain, in drqv2.build_task_config's format."""
    if domain == "metaworld":
        return {"metaworld": {"tasks": METAWORLD_TASKS, **METAWORLD}}, {}
    if domain == "adroit":
        return {"adroit": {"tasks": ADROIT_TASKS, **ADROIT}}, {}
    tiers = {name: dict(tier) for name, tier in DMC_TIERS.items()}
    overrides = dict(DMC_TASK_OVERRIDES)
    drm_tasks = {t for tier in DMC_TIERS.values() for t in tier["tasks"]}
    for name, tier in drqv2.TIERS.items():  # DMC tasks without a DrM task yaml
        extra = tuple(t for t in tier["tasks"] if t not in drm_tasks)
        tiers[name]["tasks"] = tiers[name]["tasks"] + extra
        overrides.update({t: drqv2.TASK_OVERRIDES[t] for t in extra if t in drqv2.TASK_OVERRIDES})
    return tiers, overrides


def config_for_task(task: str, **user_overrides) -> Config:
    """The official DrM config of a task (domain / tier, then per-task values), then `user_overrides`.

    Raises ValueError before any work for an unknown task or field, or when the task has no official
    max_perturb_factor / target_lambda and the user gave none (while the mechanism using it is on).
    """
    domain, name = task_domain(task)
    tiers, overrides = _tables(domain)
    tier = next(t for t in tiers.values() if name in t["tasks"])
    resolved = {**tier, **overrides.get(name, {}), **user_overrides}
    for field, switch, example in (("max_perturb_factor", "perturb", "1.0 (the medium DMC tasks' value)"),
                                   ("target_lambda", "exploitation", "0.6 (every DMC task's value)")):
        if resolved.get(field) is None and resolved.get(switch, True):
            raise ValueError(
                f"task {task!r} has no official DrM {field} (DrM's configs set it only for "
                f"{sorted(DMC_TASK_OVERRIDES)}, Meta-World and Adroit); give it, e.g. {field}={example}, "
                f"or turn the mechanism off with {switch}=False")
    return drqv2.build_task_config(Config, name, tiers, overrides, user_overrides)


# ----------------------------------------------------------------------------------------------
# 2. Agent state
# ----------------------------------------------------------------------------------------------

# fold_in salts: fold_in(key, i) equals split(key, n)[i] for small i, so these are far from any split index.
_VALUE_INIT_SALT = 0x76616C75  # "valu": the V network's init key in create
_PERTURB_SALT = 0x70657274  # "pert": the perturbation's key in update
_DROPOUT_SALT = 0x64726F70  # "drop": the critic's dropout masks in update (Meta-World)


class DrMState(drqv2.DrQV2State):
    """DrQ-v2's state plus DrM's: every field below is a pytree leaf, so orbax saves it."""

    value_params: Params  # expectile V network (own trunk + MLP); no target V
    value_opt_state: optax.OptState
    dormant_ratio: jnp.ndarray  # beta of the last update, float32; 1.0 before the first (official init)
    awaken_step: jnp.ndarray  # t0, int32; -1 = not awakened yet
    perturb_alpha: jnp.ndarray  # alpha of the last perturbation, float32; 1.0 before the first


def value_network(config: Config) -> actor_critic.Value:
    return actor_critic.Value(config.feature_dim, config.hidden_dim, dtype=drqv2.COMPUTE_DTYPES[config.compute_dtype],
                              proprio_dim=config.proprio_dim, head=drqv2.trunk_head(config))


def value_of(state: "DrMState", value_params: Params, features: jnp.ndarray,
             proprio: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """V(h) (with the proprio fusion when the config has it), shape (B,)."""
    return value_network(state.config).apply(value_params, features, **drqv2.proprio_kwargs(state.config, proprio))


def _dummy_features(state: drqv2.DrQV2State) -> jnp.ndarray:
    """Zeros shaped like one encoder output (shapes only; nothing is computed)."""
    encoder = drqv2.networks(state.config, state.action_dim).encoder
    shape = jax.eval_shape(encoder.apply, state.encoder_params, jnp.zeros((1, *state.obs_shape), jnp.float32)).shape
    return jnp.zeros(shape, jnp.float32)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _create(key: jax.Array, obs_shape: Tuple[int, ...], action_dim: int, config: Config) -> DrMState:
    # The same key gives DrQ-v2's encoder / actor / critic exactly; V gets a key of its own.
    base = drqv2.create(key, obs_shape, action_dim, config)
    value_params = value_network(config).init(jax.random.fold_in(key, _VALUE_INIT_SALT), _dummy_features(base),
                                              **drqv2.dummy_proprio(config))
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return DrMState(
        **fields,
        value_params=value_params,
        value_opt_state=drqv2.optimizer(config).init(value_params),
        dormant_ratio=jnp.asarray(1.0, jnp.float32),
        awaken_step=jnp.asarray(-1, jnp.int32),
        perturb_alpha=jnp.asarray(1.0, jnp.float32),
    )


def create(key: jax.Array, obs_shape: Sequence[int], action_dim: int, config: Config) -> DrMState:
    """Fresh agent: DrQ-v2's networks for this key, a fresh V network, beta = 1, not awakened."""
    if not isinstance(config, Config):
        raise ValueError(f"config must be an agents.drm.Config, got {type(config).__name__}")
    if not isinstance(action_dim, int) or action_dim < 1:
        raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
    return _create(key, tuple(int(d) for d in obs_shape), action_dim, config)


# ----------------------------------------------------------------------------------------------
# 3. DrM's pieces (pure functions)
# ----------------------------------------------------------------------------------------------


def perturb_factor(config: Config, beta) -> jnp.ndarray:
    """alpha = clip(1 - k*beta, alpha_min, alpha_max) (§2.2)."""
    raw = 1.0 - config.perturb_rate * jnp.asarray(beta, jnp.float32)
    return jnp.minimum(jnp.maximum(raw, config.min_perturb_factor), config.max_perturb_factor)


def dormant_stddev(config: Config, beta) -> jnp.ndarray:
    """sigma_dorm = 1 / (1 + exp(-(beta - beta_hat) * dormant_temp)) (§2.3)."""
    return jax.nn.sigmoid((jnp.asarray(beta, jnp.float32) - config.target_dormant_ratio) * config.dormant_temp)


def stddev(config: Config, step, beta, awaken_step) -> jnp.ndarray:
    """Exploration std of `stddev_type`: awake (default), dormant, or drqv2 (the plain schedule)."""
    if config.stddev_type == "drqv2":
        return drqv2.stddev(config, step)
    sigma_dorm = dormant_stddev(config, beta)
    if config.stddev_type == "dormant":
        return sigma_dorm
    # awake: the schedule restarts from its initial value at t0 (spec §2.3, §5 #22).
    restarted = jnp.asarray(schedules.parse(config.stddev_schedule)(step - awaken_step), jnp.float32)
    return jnp.where(awaken_step < 0, sigma_dorm, jnp.maximum(sigma_dorm, restarted))


def target_lambda(config: Config, beta) -> jnp.ndarray:
    """lambda(beta) = lambda_hat / (1 + exp((beta - beta_hat) * lambda_temp)); constant lambda_hat for
    Meta-World; 0 when exploitation is off (§2.4)."""
    if not config.exploitation:
        return jnp.asarray(0.0, jnp.float32)
    if config.constant_lambda:
        return jnp.asarray(config.target_lambda, jnp.float32)
    scaled = (jnp.asarray(beta, jnp.float32) - config.target_dormant_ratio) * config.lambda_temp
    return config.target_lambda * jax.nn.sigmoid(-scaled)


def awaken(config: Config, awaken_step, step, beta) -> jnp.ndarray:
    """t0: set once, to the first update step with step > num_expl_steps (if awaken_guard) and
    beta < beta_hat; never reset."""
    ready = jnp.asarray(beta) < config.target_dormant_ratio
    if config.awaken_guard:
        ready = ready & (step > config.num_expl_steps)
    return jnp.where((awaken_step < 0) & ready, jnp.asarray(step, jnp.int32), awaken_step).astype(jnp.int32)


def _identity(x):
    return x


def _fusion_layers() -> Dict[str, dormant.DenseLayer]:
    """The 4 Dense layers of actor_critic.ProprioFusion (Adroit): the first of each MLP is followed by an
    in-place ReLU in the official StateEncoder (official rule: post-ReLU), the second by nothing (raw)."""
    return {f"proprio_fusion/{mlp}/dense_{i}": dormant.DenseLayer(nn.relu, inplace_relu=True) if i == 0
            else dormant.DenseLayer(_identity)
            for mlp in ("state_encoder", "fusion") for i in (0, 1)}


def actor_layers(config: Config, actor_params: Params) -> Dict[str, dormant.DenseLayer]:
    """dormant.actor_layers, plus the proprio fusion's layers when the config has it (spec §2.1: the
    official Adroit ratio includes them)."""
    layers = dormant.actor_layers(actor_params)
    if config.proprio_dim:
        layers.update(_fusion_layers())
    return layers


def critic_layers(config: Config, critic_params: Params) -> Dict[str, dormant.DenseLayer]:
    """dormant.critic_layers, adapted to the Meta-World Q heads (hidden Dense -> Dropout -> LayerNorm -> ReLU:
    no in-place ReLU reads the Dense output, so "official" is raw; "post" is ReLU(LayerNorm(x)), without
    dropout) and the proprio fusion."""
    layers = dormant.critic_layers(critic_params)
    if config.critic_hidden_dropout > 0 or config.critic_hidden_layer_norm:
        params = critic_params["params"]
        layers = {"trunk/dense": layers["trunk/dense"]}
        for head in ("q1", "q2"):
            for i in (0, 1):
                norm = None
                if config.critic_hidden_layer_norm:
                    norm_params = {"params": params[head][f"layer_norm_{i}"]}
                    norm = functools.partial(layer_norm(jnp.float32).apply, norm_params)

                def hidden(x, norm=norm):
                    return nn.relu(x if norm is None else norm(x.astype(jnp.float32)))

                layers[f"{head}/dense_{i}"] = dormant.DenseLayer(hidden)
            layers[f"{head}/dense_2"] = dormant.DenseLayer(_identity, is_output=True)
    if config.proprio_dim:
        layers.update(_fusion_layers())
    return layers


def _token_head_layers(config: Config, raw: Dict[str, jnp.ndarray]):
    """The raw outputs to measure and the descriptions of a token head's Dense layers ("trunk/head/...":
    each expert / token-mixer MLP is Dense -> ReLU -> Dense): the first measured after its ReLU as the
    official rule does for hidden layers, the second raw. Without dormant_include_moe they are dropped."""
    head = {name for name in raw if name.startswith("trunk/head/")}
    kept = {name: value for name, value in raw.items() if name not in head or config.dormant_include_moe}
    layers = {name: dormant.DenseLayer(nn.relu, inplace_relu=True) if name.endswith("dense_0")
              else dormant.DenseLayer(_identity) for name in head}
    return kept, layers


def measure_dormant_ratio(state: DrMState, features: jnp.ndarray, action: jnp.ndarray,
                          proprio: Optional[jnp.ndarray] = None) -> dormant.DormantRatio:
    """beta of `dormant_network` on a batch of encoder features (detached); layers named
    "actor/trunk/dense", "actor/policy/dense_0", ... ("critic/q1/dense_0", ... with actor+critic;
    "actor/proprio_fusion/state_encoder/dense_0", ... with Adroit's fusion). The critic runs without dropout."""
    config = state.config
    nets = drqv2.networks(config, state.action_dim)
    features = jax.lax.stop_gradient(features)
    extra = drqv2.proprio_kwargs(config, proprio)
    measured = {}
    parts = [("actor", nets.actor, state.actor_params, (features,), actor_layers)]
    if config.dormant_network == "actor+critic":
        parts.append(("critic", nets.critic, state.critic_params, (features, action), critic_layers))
    for prefix, module, params, inputs, layer_table in parts:
        raw = dormant.dense_outputs(module, params, *inputs, **extra)
        layers = layer_table(config, params)
        raw, head_layers = _token_head_layers(config, raw)
        layers.update(head_layers)
        for name, value in dormant.measured_activations(raw, layers, config.dormant_activation).items():
            if config.dormant_include_output_layer or not layers[name].is_output:
                measured[f"{prefix}/{name}"] = value
    return dormant.dormant_ratio(measured, config.dormant_threshold, config.dormant_comparison)


def fresh_params(state: DrMState, key: jax.Array) -> Dict[str, Params]:
    """phi: a fresh init of every network, same initializers as create (§1.4), its own key each.

    key -> split(key, 3) = (main, target, value): encoder / actor / critic = drqv2.init_params(main),
    the critic target's = drqv2.init_params(target)'s critic, V's = init with `value`.
    """
    key_main, key_target, key_value = jax.random.split(key, 3)
    encoder, actor, critic = drqv2.init_params(key_main, state.obs_shape, state.action_dim, state.config)
    critic_target = drqv2.init_params(key_target, state.obs_shape, state.action_dim, state.config)[2]
    value = value_network(state.config).init(key_value, _dummy_features(state), **drqv2.dummy_proprio(state.config))
    return {"encoder": encoder, "actor": actor, "critic": critic, "critic_target": critic_target, "value": value}


def shrink_and_perturb(params: Params, fresh: Params, alpha, module_paths: Sequence[Tuple[str, ...]]) -> Params:
    """Every param of the modules at `module_paths`: theta <- alpha*theta + (1-alpha)*phi; others unchanged."""
    selected = set(map(tuple, module_paths))
    flat, flat_fresh = traverse_util.flatten_dict(params), traverse_util.flatten_dict(fresh)
    # keys are ("params", *module path, "kernel" | "bias" | "scale")
    blended = {key: alpha * value + (1.0 - alpha) * flat_fresh[key] if key[1:-1] in selected else value
               for key, value in flat.items()}
    return traverse_util.unflatten_dict(blended)


def perturbed_layers(state: DrMState) -> Dict[str, Tuple[Tuple[str, ...], ...]]:
    """Module paths that the perturbation blends, per network: every Dense (the official nn.Linear
    rule), plus the encoder's convolutions if perturb_encoder_convs. Shapes only."""
    nets = drqv2.networks(state.config, state.action_dim)
    features = _dummy_features(state)
    action = jnp.zeros((1, state.action_dim), jnp.float32)
    encoder_types = (nn.Dense, nn.Conv) if state.config.perturb_encoder_convs else (nn.Dense,)
    proprio = drqv2.dummy_proprio(state.config)
    critic = dormant.layer_paths(nets.critic, state.critic_params, features, action, **proprio)
    return {
        "encoder": dormant.layer_paths(nets.encoder, state.encoder_params,
                                       jnp.zeros((1, *state.obs_shape), jnp.float32), types=encoder_types),
        "actor": dormant.layer_paths(nets.actor, state.actor_params, features, **proprio),
        "critic": critic,
        "critic_target": critic,
        "value": dormant.layer_paths(value_network(state.config), state.value_params, features, **proprio),
    }


def perturb(state: DrMState, key: jax.Array) -> DrMState:
    """Shrink-and-perturb every network with alpha from the state's (previous update's) beta (§2.2).

    Encoder, actor, critic, critic target (own phi, or a copy of the perturbed critic with
    perturb_target="copy_online") and V; LayerNorm (and convs, by default) untouched; all four Adam
    states re-initialized when reset_opt_state (the official code resets critic_opt twice: same thing).
    """
    config = state.config
    alpha = perturb_factor(config, state.dormant_ratio)
    fresh, paths = fresh_params(state, key), perturbed_layers(state)
    blend = {name: shrink_and_perturb(getattr(state, f"{name}_params"), fresh[name], alpha, paths[name])
             for name in fresh}
    if config.perturb_target == "copy_online":
        blend["critic_target"] = blend["critic"]
    state = state.replace(**{f"{name}_params": params for name, params in blend.items()}, perturb_alpha=alpha)
    if config.reset_opt_state:
        opt = drqv2.optimizer(config)
        state = state.replace(**{f"{name}_opt_state": opt.init(blend[name])
                                 for name in ("encoder", "actor", "critic", "value")})
    return state


def expectile_loss(v: jnp.ndarray, q: jnp.ndarray, expectile: float) -> jnp.ndarray:
    """mean(w * u^2), u = V - Q, w = expectile if u <= 0 else 1 - expectile (official sign: V below Q
    weighs expectile, so expectile 0.9 pulls V towards an upper expectile of Q)."""
    u = v - q
    weight = jnp.where(u > 0, 1.0 - expectile, expectile)
    return jnp.mean(weight * jnp.square(u))


def blended_target(reward: jnp.ndarray, discount: jnp.ndarray, target_q1: jnp.ndarray, target_q2: jnp.ndarray,
                   next_value: jnp.ndarray, lam) -> jnp.ndarray:
    """y = R + Gamma * [lambda V(h') + (1 - lambda) min(Q1_tgt, Q2_tgt)], shape (B,)."""
    bootstrap = lam * next_value + (1.0 - lam) * jnp.minimum(target_q1, target_q2)
    return reward.reshape(-1) + discount.reshape(-1) * bootstrap


def update_value(state: DrMState, features: jnp.ndarray, action: jnp.ndarray, *,
                 proprio: Optional[jnp.ndarray] = None, dropout_key: Optional[jax.Array] = None
                 ) -> Tuple[DrMState, Metrics]:
    """One Adam step of V on expectile_loss(V(sg h), sg min(Q1, Q2)(h, a)) with the state's critic
    (in train mode, i.e. with dropout masks from dropout_key, when the critic has dropout)."""
    config = state.config
    features = jax.lax.stop_gradient(features)
    q1, q2 = drqv2.critic_values(state, state.critic_params, features, action, proprio, dropout_key)
    q = jax.lax.stop_gradient(jnp.minimum(q1, q2))

    def loss_fn(value_params):
        v = value_of(state, value_params, features, proprio)
        return expectile_loss(v, q, config.expectile), v

    (loss, v), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.value_params)
    updates, value_opt_state = drqv2.optimizer(config).update(grads, state.value_opt_state, state.value_params)
    state = state.replace(value_params=optax.apply_updates(state.value_params, updates),
                          value_opt_state=value_opt_state)
    return state, {"value_loss": loss, "value_v": v.mean()}


# ----------------------------------------------------------------------------------------------
# 4. act and update
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("eval_mode",))
def act(state: DrMState, obs: jnp.ndarray, step, key: jax.Array, eval_mode: bool,
        proprio: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """DrQ-v2's act with DrM's std: sigma(beta, t0) from the state's last update (drqv2.act otherwise).
    proprio: (B, proprio_dim) with Adroit's fusion (ignored otherwise)."""
    std = stddev(state.config, step, state.dormant_ratio, state.awaken_step)
    return drqv2.act_with_stddev(state, obs, std, step, key, eval_mode, proprio)


# Logged after every update to updates.csv by the trainer (names, or prefixes of "prefix/..." names).
TRACE_METRICS = ("dormant_ratio", "stddev", "lambda", "alpha", "awaken_step", "perturbed")


def trace_events(row: Dict[str, float]) -> list:
    """The events in one update's traced metrics, for events.csv: a perturbation (with its alpha) and
    the awaken step (set once, to the step of the update that found beta below beta_hat)."""
    events = []
    if row["perturbed"]:
        events.append({"event": "perturb", "alpha": row["alpha"]})
    if row["awaken_step"] == row["step"]:
        events.append({"event": "awaken", "awaken_step": row["awaken_step"]})
    return events


@jax.jit
def update(state: DrMState, batch: Dict[str, jnp.ndarray], step, key: jax.Array) -> Tuple[DrMState, Metrics]:
    """One DrM update in the official order (§2.5). batch: obs, action, reward, discount, next_obs
    (+ proprio, next_proprio with Adroit's fusion).

    Keys: split(key, 3) -> augmentation, target action noise, actor action noise (as drqv2.update);
    fold_in(key, _PERTURB_SALT) -> the perturbation's fresh inits (see fresh_params);
    split(fold_in(key, _DROPOUT_SALT), 4) -> the critic's dropout masks in the V step, the target, the
    critic loss and the actor loss (only when the critic has dropout).
    """
    config = state.config
    key_augment, key_target, key_actor = jax.random.split(key, 3)
    proprio, next_proprio = batch.get("proprio"), batch.get("next_proprio")
    if config.proprio_dim and (proprio is None or next_proprio is None):
        raise ValueError(f"this DrM config fuses proprioception (proprio_dim={config.proprio_dim}): the batch "
                         f"needs 'proprio' and 'next_proprio', got keys {sorted(batch)}")
    dropout = {"value": None, "target": None, "critic": None, "actor": None}
    if config.critic_hidden_dropout > 0:  # every critic call of the update is in train mode (official)
        dropout = dict(zip(dropout, jax.random.split(jax.random.fold_in(key, _DROPOUT_SALT), 4)))
        if not config.critic_target_dropout:
            dropout["target"] = None

    # 1. Perturb with the previous update's beta, on steps that are multiples of the interval.
    perturbed = jnp.asarray(False)
    if config.perturb:
        perturbed = step % config.dormant_perturb_interval == 0
        key_perturb = jax.random.fold_in(key, _PERTURB_SALT)
        state = jax.lax.cond(perturbed, lambda s: perturb(s, key_perturb), lambda s: s, state)

    # 2. Augment and encode, as DrQ-v2: h with the encoder's pullback, h' detached.
    obs, next_obs = drqv2.augment_batch(config, batch["obs"], batch["next_obs"], key_augment)
    features, encoder_pullback = drqv2.encode_with_pullback(state, obs)
    next_features = jax.lax.stop_gradient(drqv2.encode(state, next_obs))

    # 3. beta on this batch (pre-update encoder, post-perturbation actor), then the awaken test.
    beta = measure_dormant_ratio(state, features, batch["action"], proprio)
    state = state.replace(dormant_ratio=beta.total,
                          awaken_step=awaken(config, state.awaken_step, step, beta.total))
    std = stddev(config, step, state.dormant_ratio, state.awaken_step)
    lam = target_lambda(config, state.dormant_ratio)

    # 4. V step with the pre-update critic; 5. critic + encoder step on the target with the new V.
    value_metrics = {"value_loss": jnp.zeros(()), "value_v": jnp.zeros(())}
    if config.exploitation:
        state, value_metrics = update_value(state, features, batch["action"], proprio=proprio,
                                            dropout_key=dropout["value"])
    target_q1, target_q2 = drqv2.target_q_values(state, next_features, std, key_target, next_proprio=next_proprio,
                                                 dropout_key=dropout["target"])
    if config.exploitation:
        next_value = value_of(state, state.value_params, next_features, next_proprio)
        target = blended_target(batch["reward"], batch["discount"], target_q1, target_q2, next_value, lam)
    else:
        target = drqv2.critic_target(batch["reward"], batch["discount"], target_q1, target_q2)
    state, critic_metrics = drqv2.update_critic(state, features, encoder_pullback, batch["action"], target,
                                                proprio=proprio, dropout_key=dropout["critic"])

    # 6. Actor step (pre-update features, post-update critic); 7. soft update of the critic target.
    state, actor_metrics = drqv2.update_actor(state, features, std, key_actor, proprio=proprio,
                                              dropout_key=dropout["actor"])
    state = drqv2.soft_update_target(state)

    metrics = {
        "batch_reward": jnp.mean(batch["reward"]), **critic_metrics, **actor_metrics, **value_metrics,
        "dormant_ratio": beta.total,
        **{f"dormant_ratio/{name}": ratio for name, ratio in beta.per_layer.items()},
        "stddev": std, "lambda": lam, "alpha": state.perturb_alpha,
        "awaken_step": state.awaken_step, "perturbed": perturbed,
    }
    return state, {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
