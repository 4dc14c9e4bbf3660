"""core.schedules: the three DrQ-v2 schedule forms, python and traced steps, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import schedules


@pytest.mark.parametrize("spec, step, expected", [
    ("0.2", 0, 0.2),
    ("0.2", 10_000_000, 0.2),
    (" 1e-1 ", 5, 0.1),
    # linear(1.0, 0.1, 500000): 1 - 0.9 * step / 500000, held after the duration
    ("linear(1.0,0.1,500000)", 0, 1.0),
    ("linear(1.0,0.1,500000)", 250_000, 0.55),
    ("linear(1.0,0.1,500000)", 100_000, 0.82),
    ("linear(1.0,0.1,500000)", 500_000, 0.1),
    ("linear(1.0,0.1,500000)", 2_000_000, 0.1),
    ("linear(1.0, 0.1, 100000)", 25_000, 0.775),
    ("linear(0,2,4)", 1, 0.5),
    ("linear(0,2,4)", -3, 0.0),  # clipped below too
    # step_linear(1.0, 0.5, 100, 0.1, 200): 1 -> 0.5 over 100 steps, then 0.5 -> 0.1 over 200 more
    ("step_linear(1.0,0.5,100,0.1,200)", 0, 1.0),
    ("step_linear(1.0,0.5,100,0.1,200)", 50, 0.75),
    ("step_linear(1.0,0.5,100,0.1,200)", 100, 0.5),
    ("step_linear(1.0,0.5,100,0.1,200)", 200, 0.3),
    ("step_linear(1.0,0.5,100,0.1,200)", 300, 0.1),
    ("step_linear(1.0,0.5,100,0.1,200)", 10_000, 0.1),
])
def test_hand_values_python_and_jit(spec, step, expected):
    schedule = schedules.parse(spec)
    value = schedule(step)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, abs=1e-12)
    traced = jax.jit(schedule)(jnp.int32(step))
    assert traced.dtype == jnp.float32 and traced.shape == ()
    np.testing.assert_allclose(float(traced), expected, rtol=1e-6, atol=1e-7)


def test_works_on_a_vector_of_steps():
    schedule = schedules.parse("linear(1.0,0.1,100)")
    values = jax.jit(schedule)(jnp.array([0, 50, 100, 150]))
    np.testing.assert_allclose(values, [1.0, 0.55, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(schedules.parse("0.3")(jnp.array([0, 7])), [0.3, 0.3], rtol=1e-7)


@pytest.mark.parametrize("spec", [
    "", "abc", "linear(1.0,0.1)", "linear(1,0.1,100,3)", "lin(1,0.1,100)", "linear(1,0.1,0)",
    "step_linear(1,0.5,100,0.1)", "step_linear(1,0.5,0,0.1,10)", "nan", "inf", "linear(a,b,c)",
])
def test_bad_strings_raise_with_the_valid_forms(spec):
    with pytest.raises(ValueError) as error:
        schedules.parse(spec)
    message = str(error.value)
    assert repr(spec) in message
    if "duration" not in message:
        assert "linear(init, final, duration)" in message and "step_linear(" in message


def test_non_string_raises():
    with pytest.raises(ValueError, match="must be a string"):
        schedules.parse(0.5)
