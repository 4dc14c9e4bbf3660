"""DrQ random-shift augmentation as an integer crop.

The official DrQ-v2 op replicate-pads by `pad` pixels and bilinearly samples (grid_sample,
align_corners=False) an image-sized grid of pixel centres shifted by an integer number of pixels.
Every sampling point lands on a pixel centre, so the bilinear weights are (1, 0) and the op is
exactly an integer crop of the edge-padded image (spec §1.3); that is what is computed here.
tests/test_augment.py checks it against a bilinear re-implementation of the official grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_offsets(key: jax.Array, batch_size: int, pad: int = 4) -> jax.Array:
    """Per-sample crop offsets, int32 (batch_size, 2) = (dy, dx), each uniform in {0, ..., 2*pad}."""
    return jax.random.randint(key, (batch_size, 2), 0, 2 * pad + 1, dtype=jnp.int32)


def random_shift(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Shift each image of a (B, H, W, C) batch by its own random offset; returns float32 (B, H, W, C).

    out[b, y, x] = edge_pad(images[b])[y + dy_b, x + dx_b], offsets from `sample_offsets(key, B, pad)`.
    Values are not rescaled (uint8 pixels stay in [0, 255]).
    """
    if images.ndim != 4:
        raise ValueError(f"random_shift expects a channel-last batch (B, H, W, C), got shape {images.shape}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    batch_size, height, width, channels = images.shape
    offsets = sample_offsets(key, batch_size, pad)
    # Pad and crop in the input dtype (uint8 moves 4x fewer bytes), cast once at the end.
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    return jax.vmap(crop)(padded, offsets).astype(jnp.float32)
