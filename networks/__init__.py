"""Neural-network modules (flax linen). Import the submodules by name:

    from networks import encoders, mlp, actor_critic

Conventions shared by every module here:
  * params are float32; `dtype` is the compute dtype (jnp.bfloat16 for mixed precision),
    and heads return float32 so that losses are computed in float32;
  * initialization follows DrQ-v2 (spec §1.4): Dense -> orthogonal (gain 1), Conv -> orthogonal
    (gain sqrt(2)), zero biases, LayerNorm eps 1e-5 (PyTorch's, not Flax's 1e-6);
  * layer names say what a layer is ("dense_*", "layer_norm", "conv_*"), so a parameter or an
    intermediate can be selected by its path (DrM's dormant ratio and shrink-and-perturb do this).
"""
