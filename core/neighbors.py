"""Exact nearest-neighbour search over a fixed set of keys (PRDC's dataset constraint, spec §5.2).

Two interchangeable indexes, both built once over the static dataset and both usable inside a jitted
function (PRDC's update and its `lax.scan` of updates):

  BruteForceIndex  the keys live on the device; a query computes squared distances
                   ||q||^2 - 2 q.k + ||k||^2 block by block (one matmul per block of `block` keys)
                   and keeps a running set of the best candidates, then re-ranks those candidates
                   with exact differences sum((q - k)^2). Pure jnp, so it runs INSIDE jit / scan.
  KDTreeIndex      the keys live on the host in a scipy KD-tree (what the official PRDC uses); a
                   query inside jit goes out through `jax.pure_callback` (the result is a constant
                   for the actor loss, so no gradient is needed) and the indices come back.

`query(queries, k)` returns, for every query, the index of its k-th nearest key (k=1: the nearest),
as the official `KDTree.query(x, k=[k])` does: the k-th neighbour only, not the k nearest.

Tie rule. BruteForceIndex: among keys whose float32 distances to the query are exactly equal, the
lowest key index wins (the k-th in (distance, index) order). KDTreeIndex: scipy does not specify
which of several equidistant keys it returns. Exactly equidistant keys that differ have probability
zero on continuous data; duplicated keys are identical rows (same state and same action), so any of
them gives the same BC target.

Why the re-ranking: the matmul form of the distance loses precision by cancellation when the keys
are far from the origin (float32 error ~ 1e-7 * ||k||^2), enough to swap two near-equal neighbours.
Keys and queries are therefore centred on the key mean (distances are unchanged), and the best
`k + refine_margin` candidates of the matmul distances are re-ranked with exact differences. The
matmul runs at `Precision.HIGHEST`: on GPUs the default float32 matmul may use TF32 (10-bit mantissa).
"""

from __future__ import annotations

import dataclasses
from typing import Union

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

ArrayLike = Union[np.ndarray, jnp.ndarray]

DEFAULT_BLOCK = 16384  # keys per matmul block: as fast as 4096 on CPU at 1e6 keys (agents/prdc.py table),
# and 4x fewer sequential scan steps for an accelerator
DEFAULT_REFINE_MARGIN = 3  # extra candidates re-ranked with exact distances


def _check_keys(keys: ArrayLike) -> None:
    if keys.ndim != 2 or keys.shape[0] < 1 or keys.shape[1] < 1:
        raise ValueError(f"keys must be a non-empty (num_keys, dim) array, got shape {tuple(keys.shape)}")


def _check_query(queries, dim: int, k: int, num_keys: int) -> None:
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries must be (batch, {dim}) to match the keys, got shape {tuple(queries.shape)}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= num_keys:
        raise ValueError(f"k must be an int in [1, num_keys={num_keys}], got {k!r}")


# ----------------------------------------------------------------------------------------------
# Device brute force
# ----------------------------------------------------------------------------------------------


class BruteForceIndex(struct.PyTreeNode):
    """Keys on the device, split into blocks; a pytree, so it can be an argument of a jitted function.

    Build with `BruteForceIndex.build(keys, block)`. The last block is zero-padded; padded slots have
    an infinite squared norm, so they never win.
    """

    blocks: jnp.ndarray  # (num_blocks, block, dim) centred keys, zero-padded
    block_sq_norms: jnp.ndarray  # (num_blocks, block) ||k - center||^2, +inf on padding
    center: jnp.ndarray  # (dim,) mean of the keys
    num_keys: int = struct.field(pytree_node=False)
    block: int = struct.field(pytree_node=False)
    refine_margin: int = struct.field(pytree_node=False)

    @classmethod
    def build(cls, keys: ArrayLike, block: int = DEFAULT_BLOCK,
              refine_margin: int = DEFAULT_REFINE_MARGIN) -> "BruteForceIndex":
        """Index over `keys` (num_keys, dim), float32 on the default device. block >= 1 keys per matmul;
        a block larger than num_keys is shrunk to num_keys (one matmul)."""
        _check_keys(keys)
        if not isinstance(block, int) or isinstance(block, bool) or block < 1:
            raise ValueError(f"block must be a positive int (keys per matmul), got {block!r}")
        if not isinstance(refine_margin, int) or isinstance(refine_margin, bool) or refine_margin < 0:
            raise ValueError(f"refine_margin must be an int >= 0, got {refine_margin!r}")
        keys = jnp.asarray(keys, jnp.float32)
        num_keys, dim = keys.shape
        block = min(block, num_keys)
        num_blocks = -(-num_keys // block)
        center = keys.mean(axis=0)
        centred = keys - center
        padding = num_blocks * block - num_keys
        sq_norms = jnp.sum(jnp.square(centred), axis=1)
        blocks = jnp.pad(centred, ((0, padding), (0, 0))).reshape(num_blocks, block, dim)
        block_sq_norms = jnp.pad(sq_norms, (0, padding), constant_values=jnp.inf).reshape(num_blocks, block)
        return cls(blocks=blocks, block_sq_norms=block_sq_norms, center=center, num_keys=num_keys,
                   block=block, refine_margin=refine_margin)

    @property
    def dim(self) -> int:
        return self.blocks.shape[-1]

    def query(self, queries: jnp.ndarray, k: int = 1) -> jnp.ndarray:
        """Index (B,) int32 of the k-th nearest key of each query (B, dim). Jit-able; k is static."""
        _check_query(queries, self.dim, k, self.num_keys)
        num_candidates = min(k + self.refine_margin, self.num_keys)
        queries = jnp.asarray(queries, jnp.float32) - self.center
        batch = queries.shape[0]

        def scan_block(best, block_data):
            best_distances, best_indices = best
            block_index, keys, key_sq_norms = block_data
            products = jnp.matmul(queries, keys.T, precision=jax.lax.Precision.HIGHEST)
            # ||q||^2 is the same for every key of a query: it does not change the ranking.
            distances = key_sq_norms[None, :] - 2.0 * products
            negated, position = jax.lax.top_k(-distances, min(num_candidates, self.block))
            # Earlier candidates first, so on equal values top_k keeps the lower index.
            merged_distances = jnp.concatenate([best_distances, -negated], axis=1)
            merged_indices = jnp.concatenate([best_indices, block_index * self.block + position], axis=1)
            _, merged_position = jax.lax.top_k(-merged_distances, num_candidates)
            return (jnp.take_along_axis(merged_distances, merged_position, axis=1),
                    jnp.take_along_axis(merged_indices, merged_position, axis=1)), None

        initial = (jnp.full((batch, num_candidates), jnp.inf, jnp.float32),
                   jnp.full((batch, num_candidates), self.num_keys, jnp.int32))
        block_ids = jnp.arange(self.blocks.shape[0], dtype=jnp.int32)
        (_, candidates), _ = jax.lax.scan(scan_block, initial, (block_ids, self.blocks, self.block_sq_norms))
        if num_candidates == 1:
            return candidates[:, 0]
        # Re-rank the candidates with exact differences, ordered by (distance, index).
        candidates = jnp.sort(candidates, axis=1)
        candidate_keys = self.blocks.reshape(-1, self.dim)[candidates]  # (B, C, dim)
        exact = jnp.sum(jnp.square(queries[:, None, :] - candidate_keys), axis=-1)
        order = jnp.argsort(exact, axis=1, stable=True)
        return jnp.take_along_axis(candidates, order[:, k - 1:k], axis=1)[:, 0]


# ----------------------------------------------------------------------------------------------
# Host KD-tree
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class KDTreeIndex:
    """scipy KD-tree over the keys (float64, host memory); the official PRDC's structure.

    Registered as a pytree without leaves (the tree is static data compared by identity), so it can be
    passed to a jitted function like BruteForceIndex; `query` then calls the host through
    `jax.pure_callback`. `workers=-1` uses every CPU core, as the official code does.
    """

    tree: cKDTree
    workers: int = -1

    @classmethod
    def build(cls, keys: ArrayLike, leafsize: int = 16, workers: int = -1) -> "KDTreeIndex":
        _check_keys(keys)
        if not isinstance(leafsize, int) or isinstance(leafsize, bool) or leafsize < 1:
            raise ValueError(f"leafsize must be a positive int, got {leafsize!r}")
        return cls(tree=cKDTree(np.asarray(keys, np.float64), leafsize=leafsize), workers=workers)

    @property
    def num_keys(self) -> int:
        return self.tree.n

    @property
    def dim(self) -> int:
        return self.tree.m

    def query_host(self, queries: np.ndarray, k: int = 1) -> np.ndarray:
        """Index (B,) int32 of the k-th nearest key of each query, computed on the host (numpy in and out)."""
        queries = np.asarray(queries, np.float64)
        _check_query(queries, self.dim, k, self.num_keys)
        _, indices = self.tree.query(queries, k=[k], workers=self.workers)
        return indices[:, 0].astype(np.int32)

    def query(self, queries: jnp.ndarray, k: int = 1) -> jnp.ndarray:
        """Same as query_host, callable inside jit / scan (a host callback)."""
        _check_query(queries, self.dim, k, self.num_keys)
        result = jax.ShapeDtypeStruct((queries.shape[0],), jnp.int32)
        # vmap (seeds stacked on a leading axis) calls the host once per member.
        return jax.pure_callback(lambda q: self.query_host(q, k), result, queries, vmap_method="sequential")


jax.tree_util.register_pytree_node(KDTreeIndex, lambda index: ((), index), lambda index, _: index)

Index = Union[BruteForceIndex, KDTreeIndex]
BACKENDS = ("brute_force", "kdtree")


def build_index(keys: ArrayLike, backend: str, block: int = DEFAULT_BLOCK) -> Index:
    """The index of `backend` ("brute_force" on the device, "kdtree" on the host) over `keys`."""
    if backend == "brute_force":
        return BruteForceIndex.build(keys, block=block)
    if backend == "kdtree":
        return KDTreeIndex.build(keys)
    raise ValueError(f"unknown nearest-neighbour backend {backend!r}; valid: {BACKENDS}")
