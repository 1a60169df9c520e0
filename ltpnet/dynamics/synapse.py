r"""Presynaptic drive: Poisson and stimulated input spikes, NMDA gating, AMPA input.

Input j spikes in a step when $U(0,1) < r_j\,dt$ (Poisson), when its pathway is
stimulated, or when a prescribed raster says so. The NMDA gating trace is
$s_j \leftarrow s_j e^{-dt/\tau_N} + x_j$ and the AMPA input to neuron i is
$\sum_{j\to i} w_{ij} x_j$ with $w_{ij} = a_i (w_{min} + q_{ij}(w_{max} - w_{min}))$.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def input_spikes(key, p_in, pulses, pre_pathway, raster=None):
    """Bool `(n_pre,)` spikes: Poisson with probability `p_in`, or stimulated."""
    x = jax.random.uniform(key, p_in.shape, p_in.dtype) < p_in
    x = x | pulses[pre_pathway]
    if raster is not None:
        x = x | raster
    return x


def weights(q, a, w_min, w_max):
    """Synaptic weight `(n_post, k)` from efficacy q and scaling factor a `(n_post,)`."""
    return a[:, None] * (w_min + q * (w_max - w_min))


def summed_input(w, x_syn):
    r"""Per-neuron input $\sum_k w_{ik} x_{ik}$ `(n_post,)`."""
    return jnp.sum(w * x_syn, axis=1)
