"""networks.dormant: the dormant ratio of Dense layers (spec §2.1) on hand-built activations and networks
whose dormant neurons are known, the pooled total, the strict comparison at the boundary, the three
activation rules, and the generic helper on a flax module."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from networks import actor_critic, dormant
from networks.mlp import MLP

TAU = 0.025  # DrM's dormant_threshold


def test_ratio_of_hand_made_activations():
    """Layer a: neuron 1 is always 0 (dormant), neuron 2 tiny (mean|h| 0.01 < 0.025 * 1.67).
    Layer b: nothing dormant. Pooled: 2 / 5."""
    activations = {
        "a": jnp.array([[1.0, 0.0, 0.01], [-3.0, 0.0, -0.01]]),  # mean|h| = [2, 0, 0.01]
        "b": jnp.array([[1.0, -2.0], [1.0, 2.0]]),  # [1, 2]
    }
    ratio = dormant.dormant_ratio(activations, TAU)
    np.testing.assert_allclose(ratio.per_layer["a"], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(ratio.per_layer["b"], 0.0)
    np.testing.assert_allclose(ratio.total, 2 / 5, rtol=1e-6)
    np.testing.assert_array_equal(dormant.neuron_mask(activations["a"], TAU), [False, True, True])


def test_total_is_pooled_not_a_mean_of_layers():
    """1 of 2 dormant in a small layer, 0 of 8 in a big one: pooled 1/10, not (1/2 + 0)/2 = 1/4."""
    activations = {"small": jnp.array([[1.0, 0.0]]), "big": jnp.ones((1, 8))}
    ratio = dormant.dormant_ratio(activations, TAU)
    np.testing.assert_allclose(ratio.per_layer["small"], 0.5)
    np.testing.assert_allclose(ratio.total, 0.1, rtol=1e-6)
    assert abs(float(ratio.total) - 0.25) > 0.1


def test_strict_comparison_at_the_boundary():
    """mean|h| = [1, 3, 5, 7], layer mean 4, tau 0.25: neuron 0 sits exactly on tau * mean = 1 (all
    dyadic, so exact). Official `<`: not dormant; paper `<=`: dormant."""
    activation = jnp.array([[1.0, -3.0, 5.0, 7.0]])
    strict = dormant.dormant_ratio({"l": activation}, 0.25, "<")
    loose = dormant.dormant_ratio({"l": activation}, 0.25, "<=")
    assert float(strict.total) == 0.0
    assert float(loose.total) == 0.25


def test_all_zero_layer_is_not_dormant_under_strict_comparison():
    """The official comparison without division: 0 < tau * 0 is false (the paper's score is 0/0)."""
    zeros = {"dead": jnp.zeros((4, 3))}
    assert float(dormant.dormant_ratio(zeros, TAU, "<").total) == 0.0
    assert float(dormant.dormant_ratio(zeros, TAU, "<=").total) == 1.0


@pytest.mark.parametrize("tau", [-0.1, 1.0, 1.5, "0.1", True])
def test_bad_threshold_is_a_clear_error(tau):
    with pytest.raises(ValueError, match="tau"):
        dormant.dormant_ratio({"l": jnp.ones((2, 2))}, tau)


def test_bad_comparison_and_rule_and_shape_are_clear_errors():
    with pytest.raises(ValueError, match="comparison"):
        dormant.dormant_ratio({"l": jnp.ones((2, 2))}, TAU, "<<")
    with pytest.raises(ValueError, match="activation rule"):
        dormant.measured_activations({}, {}, "relu")
    with pytest.raises(ValueError, match="batch, units"):
        dormant.dormant_ratio({"l": jnp.ones((3,))}, TAU)
    with pytest.raises(ValueError, match="at least one layer"):
        dormant.dormant_ratio({}, TAU)


def tiny_actor_params():
    """Params of a DrQ-v2 Actor with 2 trunk units, hidden 4, 2 actions (LayerNorm scale 1, bias 0)."""
    actor = actor_critic.Actor(action_dim=2, feature_dim=2, hidden_dim=4)
    return actor, actor.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))


def test_three_activation_rules_give_their_own_answers():
    """Raw Dense outputs of the actor, built so that each rule counts different neurons (tau 0.025):

      trunk (2):    mean|raw| = [0.001, 5]           -> unit 0 dormant pre; after LayerNorm+tanh both
                                                        units are +-0.76: none dormant post
      hidden_0 (4): three neurons always -2, one 1   -> pre none; post (ReLU) three dormant
      hidden_1 (4): all 1                            -> none under any rule
      output (2):   mean|raw| = [1000, 10]           -> unit 1 dormant pre; tanh: [1, 1], none post
    pre = 2/12; post = 3/12; official (trunk pre, hidden post, output pre) = (1 + 3 + 1)/12."""
    _, params = tiny_actor_params()
    raw = {
        "trunk/dense": jnp.array([[0.001, 5.0], [-0.001, -5.0]]),
        "policy/dense_0": jnp.array([[-2.0, -2.0, -2.0, 1.0]] * 2),
        "policy/dense_1": jnp.ones((2, 4)),
        "policy/dense_2": jnp.array([[1000.0, 10.0], [-1000.0, -10.0]]),
    }
    layers = dormant.actor_layers(params)
    totals = {rule: float(dormant.dormant_ratio(dormant.measured_activations(raw, layers, rule), TAU).total)
              for rule in dormant.RULES}
    np.testing.assert_allclose(totals["pre"], 2 / 12, rtol=1e-6)
    np.testing.assert_allclose(totals["post"], 3 / 12, rtol=1e-6)
    np.testing.assert_allclose(totals["official"], 5 / 12, rtol=1e-6)
    official = dormant.dormant_ratio(dormant.measured_activations(raw, layers, "official"), TAU).per_layer
    np.testing.assert_allclose([official[k] for k in raw], [0.5, 0.75, 0.0, 0.5])


def test_dense_outputs_of_the_actor_are_its_raw_dense_outputs():
    """Names and values from capture_intermediates match the Actor's own return_activations."""
    actor, params = tiny_actor_params()
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    captured = dormant.dense_outputs(actor, params, x)
    _, own = actor.apply(params, x, return_activations=True)
    names = {"trunk/dense": "trunk", "policy/dense_0": "hidden_0", "policy/dense_1": "hidden_1",
             "policy/dense_2": "output"}
    assert set(captured) == set(names)
    for name, own_name in names.items():
        np.testing.assert_array_equal(captured[name], own[own_name])
    assert set(dormant.actor_layers(params)) == set(names)
    assert dormant.layer_paths(actor, params, x) == tuple(tuple(n.split("/")) for n in sorted(names))


def test_official_rule_on_the_actor_is_relu_on_hidden_layers_only():
    """Recomputed from return_activations: ReLU on hidden_0/hidden_1, trunk and output raw."""
    actor, params = tiny_actor_params()
    x = jax.random.normal(jax.random.PRNGKey(2), (6, 3))
    measured = dormant.measured_activations(dormant.dense_outputs(actor, params, x), dormant.actor_layers(params),
                                            "official")
    _, own = actor.apply(params, x, return_activations=True)
    np.testing.assert_array_equal(measured["trunk/dense"], own["trunk"])
    np.testing.assert_array_equal(measured["policy/dense_0"], np.maximum(own["hidden_0"], 0))
    np.testing.assert_array_equal(measured["policy/dense_1"], np.maximum(own["hidden_1"], 0))
    np.testing.assert_array_equal(measured["policy/dense_2"], own["output"])
    post = dormant.measured_activations(dormant.dense_outputs(actor, params, x), dormant.actor_layers(params), "post")
    np.testing.assert_allclose(post["policy/dense_2"], actor.apply(params, x), rtol=1e-6)  # tanh(out) = mu


def test_critic_layers_name_every_dense_layer_of_the_critic():
    critic = actor_critic.Critic(feature_dim=2, hidden_dim=4)
    params = critic.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 2)))
    captured = dormant.dense_outputs(critic, params, jnp.ones((3, 3)), jnp.ones((3, 2)))
    layers = dormant.critic_layers(params)
    assert set(captured) == set(layers) == {"trunk/dense", "q1/dense_0", "q1/dense_1", "q1/dense_2",
                                            "q2/dense_0", "q2/dense_1", "q2/dense_2"}
    assert [name for name, layer in layers.items() if layer.is_output] == ["q1/dense_2", "q2/dense_2"]


def hand_built_mlp():
    """MLP 2 -> 3 -> 2 with hand-set weights (zero biases). On x = [[1, 2], [3, 4]]:
    dense_0 = [x0, 0, x1] -> mean|h| = [2, 0, 3]: neuron 1 dormant (0 < 0.025 * 5/3)
    dense_1 = [h0, -h0]   -> raw [[1, -1], [3, -3]]: none dormant; after ReLU: neuron 1 dormant."""
    mlp = MLP((3, 2))
    params = {"params": {
        "dense_0": {"kernel": jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), "bias": jnp.zeros(3)},
        "dense_1": {"kernel": jnp.array([[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]), "bias": jnp.zeros(2)},
    }}
    return mlp, params, jnp.array([[1.0, 2.0], [3.0, 4.0]])


def test_module_helper_on_a_hand_built_mlp():
    mlp, params, x = hand_built_mlp()
    pre = dormant.module_dormant_ratio(mlp, params, x, tau=TAU)
    np.testing.assert_allclose(pre.total, 1 / 5, rtol=1e-6)
    np.testing.assert_allclose([pre.per_layer["dense_0"], pre.per_layer["dense_1"]], [1 / 3, 0.0], rtol=1e-6)
    post = dormant.module_dormant_ratio(mlp, params, x, tau=TAU, activation=jax.nn.relu)
    np.testing.assert_allclose(post.total, 2 / 5, rtol=1e-6)
    per_layer = dormant.module_dormant_ratio(mlp, params, x, tau=TAU,
                                             activation={"dense_0": lambda h: h, "dense_1": jax.nn.relu})
    np.testing.assert_allclose(per_layer.per_layer["dense_1"], 0.5)
    jitted = jax.jit(lambda p, x: dormant.module_dormant_ratio(mlp, p, x, tau=TAU).total)(params, x)
    np.testing.assert_allclose(jitted, 1 / 5, rtol=1e-6)
    with pytest.raises(ValueError, match="missing"):
        dormant.module_dormant_ratio(mlp, params, x, tau=TAU, activation={"dense_0": jax.nn.relu})
