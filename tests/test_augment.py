"""core.augment.random_shift: an integer crop of the edge-padded image, equal to the official
bilinear grid_sample construction (DrQ-v2 RandomShiftsAug, spec §1.3) re-implemented here in numpy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import augment

PAD = 4


def random_images(seed, shape, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=shape).astype(dtype)


def recover_offsets(images, shifted, pad):
    """Brute force: for each sample, every (dy, dx) whose crop of the edge-padded image equals the output."""
    _, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    found = []
    for b in range(images.shape[0]):
        matches = [(dy, dx) for dy, dx in itertools.product(range(2 * pad + 1), repeat=2)
                   if np.array_equal(padded[b, dy:dy + height, dx:dx + width].astype(np.float32), shifted[b])]
        found.append(matches)
    return found


def official_grid_sample_shift(images, offsets, pad):
    """The official op, written from its definition: replicate-pad, normalized grid of the first H pixel
    centres of the padded image (align_corners=False), + 2*s/W_padded, bilinear sampling with zero padding.
    offsets[b] = (s_y, s_x). float64 throughout."""
    n, h, w, c = images.shape
    assert h == w, "the official op requires square images"
    padded = np.pad(images.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    size = h + 2 * pad
    eps = 1.0 / size
    base = np.linspace(-1.0 + eps, 1.0 - eps, size)[:h]  # normalized pixel-centre coordinates
    out = np.zeros((n, h, w, c))
    for b in range(n):
        grid_x = base[None, :] + 2.0 * offsets[b, 1] / size  # varies along width
        grid_y = base[:, None] + 2.0 * offsets[b, 0] / size  # varies along height
        grid_x, grid_y = np.broadcast_to(grid_x, (h, w)), np.broadcast_to(grid_y, (h, w))
        # unnormalize, align_corners=False
        ix = ((grid_x + 1.0) * size - 1.0) / 2.0
        iy = ((grid_y + 1.0) * size - 1.0) / 2.0
        x0, y0 = np.floor(ix).astype(int), np.floor(iy).astype(int)
        for dx_corner, dy_corner in itertools.product((0, 1), repeat=2):
            xs, ys = x0 + dx_corner, y0 + dy_corner
            weight = (1 - np.abs(ix - xs)) * (1 - np.abs(iy - ys))
            inside = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)  # zero padding outside
            values = padded[b, np.clip(ys, 0, size - 1), np.clip(xs, 0, size - 1)]
            out[b] += np.where(inside, weight, 0.0)[..., None] * values
    return out


def test_each_sample_is_an_integer_crop_of_the_edge_padded_image():
    images = random_images(0, (16, 12, 12, 3))
    key = jax.random.PRNGKey(3)
    shifted = np.asarray(augment.random_shift(key, jnp.asarray(images), PAD))
    assert shifted.dtype == np.float32 and shifted.shape == images.shape
    found = recover_offsets(images, shifted, PAD)
    assert all(len(matches) == 1 for matches in found), found
    recovered = np.array([matches[0] for matches in found])
    np.testing.assert_array_equal(recovered, np.asarray(augment.sample_offsets(key, 16, PAD)))
    # independent per sample: not all samples share one offset
    assert len({tuple(o) for o in recovered}) > 1


def test_equals_the_official_bilinear_grid_construction():
    images = random_images(1, (8, 20, 20, 9))
    key = jax.random.PRNGKey(7)
    shifted = np.asarray(augment.random_shift(key, jnp.asarray(images), PAD))
    offsets = np.asarray(augment.sample_offsets(key, 8, PAD))
    reference = official_grid_sample_shift(images, offsets, PAD)
    np.testing.assert_allclose(shifted, reference, atol=1e-4, rtol=0)


def test_offsets_cover_every_shift_independently_per_axis():
    offsets = np.asarray(augment.sample_offsets(jax.random.PRNGKey(0), 4000, PAD))
    assert offsets.min() == 0 and offsets.max() == 2 * PAD
    assert len({tuple(o) for o in offsets}) == (2 * PAD + 1) ** 2  # all 81 (dy, dx) pairs occur
    assert abs(np.corrcoef(offsets[:, 0], offsets[:, 1])[0, 1]) < 0.1


def test_float_input_non_square_and_jit():
    images = random_images(2, (4, 10, 14, 2), np.float32)
    key = jax.random.PRNGKey(5)
    shifted = np.asarray(jax.jit(augment.random_shift, static_argnums=2)(key, jnp.asarray(images), 2))
    offsets = np.asarray(augment.sample_offsets(key, 4, 2))
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    for b, (dy, dx) in enumerate(offsets):
        np.testing.assert_array_equal(shifted[b], padded[b, dy:dy + 10, dx:dx + 14])


def test_pad_zero_is_identity_and_bad_shapes_raise():
    images = random_images(3, (2, 6, 6, 3))
    np.testing.assert_array_equal(augment.random_shift(jax.random.PRNGKey(0), jnp.asarray(images), 0), images)
    with pytest.raises(ValueError, match="channel-last batch"):
        augment.random_shift(jax.random.PRNGKey(0), jnp.zeros((6, 6, 3)))
    with pytest.raises(ValueError, match="pad must be"):
        augment.random_shift(jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 3)), -1)
