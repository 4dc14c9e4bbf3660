"""DrQ-v2 schedule strings -> functions of the agent step.

Three forms are accepted (the same grammar as the official DrQ-v2 configs):

  "0.2"                                          a constant
  "linear(init, final, duration)"                linear from init to final over `duration` steps,
                                                 then held at final
  "step_linear(init, final1, dur1, final2, dur2)" linear init -> final1 over dur1 steps, then
                                                 final1 -> final2 over the next dur2 steps, then held

Durations are in AGENT steps (one policy decision = action_repeat frames): the official trainer
passes `global_step` to the schedule, so `linear(1.0,0.1,500000)` decays over 1 M frames.

The returned function accepts a python int (returns a python float) or a jnp scalar, traced or not
(returns a jnp float32 scalar), so it can run inside a jitted update.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from typing import Callable, Union

import jax.numpy as jnp

Step = Union[int, jnp.ndarray]
Schedule = Callable[[Step], Union[float, jnp.ndarray]]

VALID_FORMS = (
    '"<float>" (constant, e.g. "0.2"), '
    '"linear(init, final, duration)" and '
    '"step_linear(init, final1, duration1, final2, duration2)"'
)

_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_LINEAR = re.compile(r"^\s*linear\(" + ",".join([_NUMBER] * 3) + r"\)\s*$")
_STEP_LINEAR = re.compile(r"^\s*step_linear\(" + ",".join([_NUMBER] * 5) + r"\)\s*$")


def _is_python_number(x) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


def _clip01(x):
    """clip to [0, 1]: python arithmetic for python numbers, jnp otherwise (jit-safe)."""
    if _is_python_number(x):
        return min(max(float(x), 0.0), 1.0)
    return jnp.clip(x, 0.0, 1.0)


def _interpolate(start: float, end: float, mix):
    return (1.0 - mix) * start + mix * end


def _constant(value: float) -> Schedule:
    def schedule(step: Step):
        if _is_python_number(step):
            return value
        return jnp.full(jnp.shape(step), value, dtype=jnp.float32)

    return schedule


def _linear(init: float, final: float, duration: float) -> Schedule:
    def schedule(step: Step):
        return _interpolate(init, final, _clip01(step / duration))

    return schedule


def _step_linear(init: float, final1: float, duration1: float, final2: float, duration2: float) -> Schedule:
    def schedule(step: Step):
        first = _interpolate(init, final1, _clip01(step / duration1))
        second = _interpolate(final1, final2, _clip01((step - duration1) / duration2))
        if _is_python_number(step):
            return first if step <= duration1 else second
        return jnp.where(step <= duration1, first, second)

    return schedule


def parse(spec: str) -> Schedule:
    """Parse a schedule string into a function of the agent step; ValueError on a malformed string."""
    if not isinstance(spec, str):
        raise ValueError(f"schedule must be a string, got {type(spec).__name__} {spec!r}; valid forms: {VALID_FORMS}")
    return _parse(spec)


@functools.lru_cache(maxsize=None)
def _parse(spec: str) -> Schedule:
    try:
        value = float(spec)
    except ValueError:
        value = None
    if value is not None:
        if not math.isfinite(value):
            raise ValueError(f"schedule {spec!r} is not a finite number; valid forms: {VALID_FORMS}")
        return _constant(value)
    match = _LINEAR.match(spec)
    if match:
        init, final, duration = (float(g) for g in match.groups())
        if duration <= 0:
            raise ValueError(f"schedule {spec!r}: duration must be > 0, got {duration}")
        return _linear(init, final, duration)
    match = _STEP_LINEAR.match(spec)
    if match:
        init, final1, duration1, final2, duration2 = (float(g) for g in match.groups())
        if duration1 <= 0 or duration2 <= 0:
            raise ValueError(f"schedule {spec!r}: both durations must be > 0, got {duration1} and {duration2}")
        return _step_linear(init, final1, duration1, final2, duration2)
    raise ValueError(f"cannot parse schedule {spec!r}; valid forms: {VALID_FORMS}")
