"""core/neighbors.py: both indexes against an exhaustive float64 numpy search (spec §11 "PRDC NN")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import neighbors


def exhaustive_kth_nearest(keys: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Reference: full float64 distance matrix, (distance, index) order, the k-th entry."""
    distances = ((queries[:, None, :].astype(np.float64) - keys[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return np.argsort(distances, axis=1, kind="stable")[:, k - 1]


def random_case(seed, num_keys, dim, batch, offset=0.0):
    rng = np.random.default_rng(seed)
    keys = (offset + rng.normal(size=(num_keys, dim))).astype(np.float32)
    # Half the queries near keys (as PRDC's, whose state part is a dataset state), half anywhere.
    near = keys[rng.integers(0, num_keys, batch // 2)] + 0.05 * rng.normal(size=(batch // 2, dim))
    anywhere = offset + rng.normal(size=(batch - batch // 2, dim))
    return keys, np.concatenate([near, anywhere]).astype(np.float32)


CASES = [  # (num_keys, dim, batch, k, block): N is not a multiple of the block except where noted
    (1000, 23, 37, 1, 128),
    (257, 5, 16, 3, 64),
    (50, 2, 8, 1, 1000),  # block larger than N: one matmul
    (300, 7, 10, 2, 100),  # N a multiple of the block
    (513, 23, 256, 1, 512),
    (101, 4, 9, 2, 3),  # block smaller than the candidates kept (k + refine_margin)
]


@pytest.mark.parametrize("num_keys,dim,batch,k,block", CASES)
def test_both_indexes_equal_exhaustive_numpy(num_keys, dim, batch, k, block):
    keys, queries = random_case(num_keys + dim, num_keys, dim, batch)
    expected = exhaustive_kth_nearest(keys, queries, k)

    brute = neighbors.BruteForceIndex.build(keys, block=block)
    np.testing.assert_array_equal(np.asarray(brute.query(jnp.asarray(queries), k)), expected)
    jitted = jax.jit(lambda index, q: index.query(q, k))
    np.testing.assert_array_equal(np.asarray(jitted(brute, jnp.asarray(queries))), expected)

    tree = neighbors.KDTreeIndex.build(keys)
    np.testing.assert_array_equal(tree.query_host(queries, k), expected)
    np.testing.assert_array_equal(np.asarray(jitted(tree, jnp.asarray(queries))), expected)


def test_brute_force_is_exact_far_from_the_origin():
    # ||k||^2 ~ 1e6 * dim: float32 matmul distances alone would lose the ranking; centring + re-ranking keep it.
    keys, queries = random_case(7, 2000, 23, 64, offset=1000.0)
    expected = exhaustive_kth_nearest(keys, queries, 1)
    index = neighbors.BruteForceIndex.build(keys, block=256)
    np.testing.assert_array_equal(np.asarray(index.query(jnp.asarray(queries))), expected)


def test_tie_rule_lowest_index_for_brute_force_same_key_for_kdtree():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(40, 3)).astype(np.float32)
    keys = np.concatenate([distinct, distinct[::-1], distinct])  # every key three times
    queries = distinct[:10] + 0.01
    expected = exhaustive_kth_nearest(keys, queries, 1)  # the first copy: index < 40
    assert (expected < 40).all()
    brute = neighbors.BruteForceIndex.build(keys, block=16)
    np.testing.assert_array_equal(np.asarray(brute.query(jnp.asarray(queries))), expected)
    # k=2: the second copy of the same key in (distance, index) order.
    np.testing.assert_array_equal(np.asarray(brute.query(jnp.asarray(queries), 2)),
                                  exhaustive_kth_nearest(keys, queries, 2))
    tree = neighbors.KDTreeIndex.build(keys)
    np.testing.assert_array_equal(keys[tree.query_host(queries)], keys[expected])


def test_indexes_inside_lax_scan_and_vmap():
    keys, _ = random_case(3, 600, 6, 2)
    rng = np.random.default_rng(4)
    query_batches = rng.normal(size=(5, 12, 6)).astype(np.float32)
    expected = np.stack([exhaustive_kth_nearest(keys, q, 1) for q in query_batches])
    for index in (neighbors.BruteForceIndex.build(keys, block=128), neighbors.KDTreeIndex.build(keys)):
        @jax.jit
        def all_batches(index, batches):
            return jax.lax.scan(lambda carry, q: (carry, index.query(q)), 0, batches)[1]

        np.testing.assert_array_equal(np.asarray(all_batches(index, jnp.asarray(query_batches))), expected)
        # vmap: e.g. seeds stacked on a leading axis.
        vmapped = jax.jit(jax.vmap(lambda q: index.query(q)))
        np.testing.assert_array_equal(np.asarray(vmapped(jnp.asarray(query_batches))), expected)


def test_clear_errors():
    keys = np.zeros((10, 3), np.float32)
    brute, tree = neighbors.BruteForceIndex.build(keys, block=4), neighbors.KDTreeIndex.build(keys)
    for index in (brute, tree):
        with pytest.raises(ValueError, match="k must be an int in \\[1, num_keys=10\\]"):
            index.query(jnp.zeros((2, 3)), k=11)
        with pytest.raises(ValueError, match="queries must be \\(batch, 3\\)"):
            index.query(jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="block must be a positive int"):
        neighbors.BruteForceIndex.build(keys, block=0)
    with pytest.raises(ValueError, match="keys must be a non-empty"):
        neighbors.KDTreeIndex.build(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="valid: \\('brute_force', 'kdtree'\\)"):
        neighbors.build_index(keys, "faiss")
