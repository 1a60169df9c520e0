"""What a run records, reduced on the device (like diffrax's SaveAt(fn=...)).

Every `every` steps the observers below are evaluated on the state; the spikes of
the first `spike_neurons` post neurons and of the first `input_neurons` inputs are
kept every step. Per-synapse traces are opt-in and cover the synapses of the first
`neurons` post neurons only. `spine` turns weights into spine-structure folds.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import units
from .spec import ModelSpec
from .state import State
from .step import Coeffs, efficacy, syn_weights

# name -> (kind, units); kind: "pathway" (n_pathways,), "neuron" (n,), "synapse" (n, k),
# "scalar" ()
VARIABLES = {
    "fepsp": ("pathway", units.CONDUCTANCE),
    "v": ("neuron", units.VOLTAGE),
    "r": ("neuron", units.RATE),
    "a": ("neuron", units.DIMENSIONLESS),
    "p": ("neuron", units.DIMENSIONLESS),
    "w_mean": ("neuron", units.CONDUCTANCE),
    "c_mean": ("neuron", units.DIMENSIONLESS),
    "rho_mean": ("neuron", units.DIMENSIONLESS),
    "c": ("synapse", units.DIMENSIONLESS),
    "rho": ("synapse", units.DIMENSIONLESS),
    "z": ("synapse", units.DIMENSIONLESS),
    "q": ("synapse", units.DIMENSIONLESS),
    "w": ("synapse", units.CONDUCTANCE),
}


@dataclasses.dataclass(frozen=True)
class Observe:
    """Recording plan (static: changing it recompiles).

    Attributes:
        every: Steps between records.
        variables: Names from `VARIABLES` evaluated at each record.
        neurons: Neurons covered by per-neuron and per-synapse variables (first n;
            None = all).
        spike_neurons: Post neurons whose spikes are kept every step (first n).
        input_neurons: Inputs whose spikes are kept every step (first n).
    """

    every: int = 1000
    variables: tuple[str, ...] = ("fepsp", "r", "a", "w_mean")
    neurons: int | None = None
    spike_neurons: int = 0
    input_neurons: int = 0

    def check(self, spec: ModelSpec) -> Observe:
        """Raise ValueError naming the bad field and what is allowed."""
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"Observe.every must be a positive integer, got {self.every!r}")
        # the per-step engine scans whole slow blocks between records; the fused
        # engine applies the slow clock by step index and only needs whole syn_blocks
        if not spec.fused and self.every % spec.slow_every:
            raise ValueError(f"Observe.every={self.every} must be a multiple of "
                             f"slow_every={spec.slow_every}")
        if self.every % spec.syn_block:
            raise ValueError(f"Observe.every={self.every} must be a multiple of "
                             f"syn_block={spec.syn_block}")
        for v in self.variables:
            if v not in VARIABLES:
                raise ValueError(f"unknown record variable {v!r}; choose from {list(VARIABLES)}")
            if v in ("p", "z") and not spec.phases:
                raise ValueError(f"record variable {v!r} needs phases on")
        if self.neurons is not None and not 1 <= self.neurons <= spec.n_post:
            raise ValueError(f"Observe.neurons must be in 1..{spec.n_post}, got {self.neurons}")
        if not 0 <= self.spike_neurons <= spec.n_post:
            raise ValueError(f"Observe.spike_neurons must be in 0..{spec.n_post}, "
                             f"got {self.spike_neurons}")
        if not 0 <= self.input_neurons <= spec.n_pre:
            raise ValueError(f"Observe.input_neurons must be in 0..{spec.n_pre}, "
                             f"got {self.input_neurons}")
        return self

    def n_neurons(self, spec: ModelSpec) -> int:
        return spec.n_post if self.neurons is None else self.neurons

    def shape(self, spec: ModelSpec, name: str) -> tuple[int, ...]:
        kind = VARIABLES[name][0]
        n = self.n_neurons(spec)
        return {"pathway": (spec.n_pathways,), "neuron": (n,), "synapse": (n, spec.k),
                "scalar": ()}[kind]


def pathway_sums(spec: ModelSpec, w, syn_pathway) -> jnp.ndarray:
    """`(n_pathways,)` summed weight of the synapses of each pathway (fEPSP proxy)."""
    if spec.n_pathways == 1:  # every synapse: no pathway labels to read
        return jnp.sum(w)[None]
    return jnp.stack([jnp.sum(jnp.where(syn_pathway == i, w, 0.0))
                      for i in range(spec.n_pathways)])


class SpineFolds(NamedTuple):
    """Spine read-out of a weight change (see `spine`)."""

    volume: object  # spine-head volume, relative to the reference [1]
    area: object  # spine-head surface area, relative to the reference [1]


def spine(w, w_ref) -> SpineFolds:
    """Spine-head volume and surface-area folds of weights `w` relative to `w_ref`.

    The AMPA conductance of a synapse is proportional to its spine-head volume
    (Matsuzaki et al. 2001, 2004), so the volume fold is the weight (conductance)
    fold `w / w_ref`; the surface area of a head of fixed shape grows as
    volume^(2/3). `w` and `w_ref` are weights [g_leak] of the same synapses (any
    broadcastable shapes: NumPy or JAX arrays, also under `jit`; `w_ref > 0`, which holds for
    weights of a model with `w_min > 0`), e.g. after and before an induction.

    Returns:
        `SpineFolds(volume, area)`, each shaped like `w / w_ref`.
    """
    if not isinstance(w, jax.Array) and not isinstance(w_ref, jax.Array):
        w, w_ref = np.asarray(w, float), np.asarray(w_ref, float)  # lists, scalars
    volume = w / w_ref
    return SpineFolds(volume=volume, area=volume ** (2.0 / 3.0))


def observe(spec: ModelSpec, obs: Observe, co: Coeffs, conn, state: State) -> dict:
    """Evaluate the recorded variables of `obs` on `state`."""
    n = obs.n_neurons(spec)
    out = {}
    w = None
    for name in obs.variables:
        if name in ("fepsp", "w_mean", "w") and w is None:
            w = syn_weights(spec, co, state)
        if name == "fepsp":
            out[name] = pathway_sums(spec, w, conn.pre_pathway[conn.pre_idx])
        elif name == "w_mean":
            out[name] = jnp.mean(w[:n], axis=1)
        elif name == "c_mean":
            out[name] = jnp.mean(state.syn.c[:n], axis=1)
        elif name == "rho_mean":
            out[name] = jnp.mean(state.syn.rho[:n], axis=1)
        elif name in ("v", "r", "a", "p"):
            out[name] = getattr(state.post, name)[:n]
        elif name in ("c", "rho", "z"):
            out[name] = getattr(state.syn, name)[:n]
        elif name == "q":
            out[name] = efficacy(spec, state)[:n]
        elif name == "w":
            out[name] = w[:n]
    return out
