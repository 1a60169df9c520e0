"""Fixed in-degree connectivity as index arrays."""

from __future__ import annotations

import numpy as np

from ._pytree import pytree_dataclass
from .spec import ModelSpec


@pytree_dataclass
class Connectivity:
    """Who connects to whom; integer index arrays built once, outside any scan.

    Attributes:
        pre_idx: `(n_post, k)` int32: input index of each excitatory synapse.
        pre_pathway: `(n_pre,)` int32: pathway of each input.
        inh_idx: `(n_inh, k_inh)` int32 inputs of each interneuron, or None.
        ie_idx: `(n_post, k_ie)` int32 interneurons onto each pyramidal cell, or None.
    """

    pre_idx: np.ndarray
    pre_pathway: np.ndarray
    inh_idx: np.ndarray | None = None
    ie_idx: np.ndarray | None = None

    def syn_pathway(self) -> np.ndarray:
        """`(n_post, k)` pathway label of every synapse."""
        return np.asarray(self.pre_pathway)[np.asarray(self.pre_idx)]

    def to_dense(self, n_pre: int) -> np.ndarray:
        """`(n_post, n_pre)` count matrix (for tests: gather equals matmul)."""
        pre_idx = np.asarray(self.pre_idx)
        m = np.zeros((pre_idx.shape[0], n_pre), dtype=np.int32)
        np.add.at(m, (np.arange(pre_idx.shape[0])[:, None], pre_idx), 1)
        return m


def draw_indegree(rng: np.random.Generator, n_src: int, n_tgt: int, k: int,
                  sort: bool = True) -> np.ndarray:
    """`(n_tgt, k)` int32: for each target, `k` distinct sources drawn uniformly.

    Draws random keys and keeps the k smallest per row (the same algorithm, and so
    the same network for a given seed, as the bench-v1 peer implementations).
    """
    out = np.empty((n_tgt, k), dtype=np.int32)
    chunk = max(1, 20_000_000 // n_src)
    for a in range(0, n_tgt, chunk):
        b = min(n_tgt, a + chunk)
        keys = rng.random((b - a, n_src), dtype=np.float32)
        sel = np.argpartition(keys, k - 1, axis=1)[:, :k]
        if sort:
            sel.sort(axis=1)
        out[a:b] = sel
    return out


def fixed_indegree(spec: ModelSpec, rng: np.random.Generator) -> Connectivity:
    """Draw the network of `spec` from `rng` (numpy Generator, advanced in place)."""
    spec.check()
    pre_idx = draw_indegree(rng, spec.n_pre, spec.n_post, spec.k, spec.sort_synapses)
    pre_pathway = np.repeat(
        np.arange(spec.n_pathways, dtype=np.int32), [n for _, n in spec.pathways]
    )
    inh_idx = ie_idx = None
    if spec.n_inh:
        inh_idx = draw_indegree(rng, spec.n_pre, spec.n_inh, spec.k_inh)
        ie_idx = draw_indegree(rng, spec.n_inh, spec.n_post, spec.k_ie)
    return Connectivity(pre_idx=pre_idx, pre_pathway=pre_pathway,
                        inh_idx=inh_idx, ie_idx=ie_idx)
