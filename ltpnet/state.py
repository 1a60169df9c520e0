"""The scan carry: state of inputs, neurons and synapses, grouped by where it lives."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._pytree import pytree_dataclass
from .connectivity import Connectivity, fixed_indegree
from .params import Params
from .spec import ModelSpec


@pytree_dataclass
class PreState:
    """Input population, `(n_pre,)` arrays.

    Attributes:
        s: NMDA gating trace [1].
        x_hist: `(ca_delay_steps, n_pre)` bool ring buffer of past input spikes
            (linear calcium with a presynaptic delay), else None.
        pool: Releasable pool, 1 at rest (`ModelSpec.depression`), else None.
    """

    s: jnp.ndarray
    x_hist: jnp.ndarray | None = None
    pool: jnp.ndarray | None = None


@pytree_dataclass
class PostState:
    """CA1 pyramidal neurons, `(n_post,)` arrays.

    Attributes:
        v: Somatic membrane potential [mV].
        g: AMPA conductance [g_leak].
        g_I: GABA_A conductance [g_leak].
        bap: Dendritic depolarisation left by the last back-propagating AP [mV].
        refrac: Refractory steps left (int32).
        r: Firing-rate sensor [Hz].
        a: Homeostatic scaling factor [1].
        p: Plasticity-related protein level [1] (phases on), else None.
    """

    v: jnp.ndarray
    g: jnp.ndarray
    g_I: jnp.ndarray
    bap: jnp.ndarray
    refrac: jnp.ndarray
    r: jnp.ndarray
    a: jnp.ndarray
    p: jnp.ndarray | None = None


@pytree_dataclass
class InhState:
    """Feed-forward interneurons, `(n_inh,)` arrays."""

    v: jnp.ndarray
    g: jnp.ndarray
    refrac: jnp.ndarray
    y: jnp.ndarray  # spikes of the last step (bool)


@pytree_dataclass
class SynState:
    """Excitatory synapses, `(n_post, k)` arrays; row i holds the inputs of neuron i.

    Attributes:
        c: Calcium [1].
        rho: Efficacy switch (CaMKII-like, bistable) in [0, 1] (near it with switch
            noise, which is not clipped).
        rho_lag: First stage of the early-phase anchor: follows rho over tau_e
            (phases on).
        rho_ref: Anchor of the early phase, following rho_lag over tau_e: early
            change e = rho - rho_ref (phases on).
        z: Late (consolidated) efficacy in [0, 1] (phases on).
    """

    c: jnp.ndarray
    rho: jnp.ndarray
    rho_lag: jnp.ndarray | None = None
    rho_ref: jnp.ndarray | None = None
    z: jnp.ndarray | None = None


@pytree_dataclass
class State:
    """Everything that evolves; the carry of every scan."""

    pre: PreState
    post: PostState
    syn: SynState
    inh: InhState | None = None


def init_rho(spec: ModelSpec, rng: np.random.Generator) -> np.ndarray:
    """Initial efficacy: U(0, 1) (bench-v1) or DOWN/UP with P(DOWN) = beta_down."""
    u = rng.random((spec.n_post, spec.k), dtype=np.float32)
    if spec.rho_init == "uniform":
        return u
    return (u >= spec.beta_down).astype(np.float32)


def init_state(spec: ModelSpec, params: Params, rho0: np.ndarray) -> State:
    """Resting network with efficacies `rho0` `(n_post, k)`."""
    dt = jnp.dtype(spec.dtype)
    n = params.neuron

    def post(x):
        return jnp.broadcast_to(jnp.asarray(x, dt), (spec.n_post,))

    rho = jnp.asarray(rho0, dt)
    x_hist = None
    if spec.calcium == "linear" and spec.ca_delay_steps > 0:
        x_hist = jnp.zeros((spec.ca_delay_steps, spec.n_pre), bool)
    inh = None
    if spec.n_inh:
        inh = InhState(
            v=jnp.broadcast_to(jnp.asarray(n.E_L, dt), (spec.n_inh,)),
            g=jnp.zeros(spec.n_inh, dt),
            refrac=jnp.zeros(spec.n_inh, jnp.int32),
            y=jnp.zeros(spec.n_inh, bool),
        )
    return State(
        pre=PreState(s=jnp.zeros(spec.n_pre, dt), x_hist=x_hist,
                     pool=jnp.ones(spec.n_pre, dt) if spec.depression else None),
        post=PostState(
            v=post(n.E_L), g=post(0.0), g_I=post(0.0), bap=post(0.0),
            refrac=jnp.zeros(spec.n_post, jnp.int32),
            r=post(params.homeostasis.r_target), a=post(1.0),
            p=post(0.0) if spec.phases else None,
        ),
        syn=SynState(
            c=jnp.zeros((spec.n_post, spec.k), dt), rho=rho,
            rho_lag=jnp.array(rho, copy=True) if spec.phases else None,
            rho_ref=jnp.array(rho, copy=True) if spec.phases else None,
            z=jnp.array(rho, copy=True) if spec.phases else None,
        ),
        inh=inh,
    )


def state_shapes(spec: ModelSpec) -> State:
    """The State of `spec` as ShapeDtypeStructs (its structure depends on spec only):
    the leaves a checkpoint holds and the bytes the state takes, without allocating."""
    rho = jax.ShapeDtypeStruct((spec.n_post, spec.k), np.dtype(spec.dtype))
    return jax.eval_shape(lambda r: init_state(spec, Params(), r), rho)


def build(spec: ModelSpec, params: Params, seed: int) -> tuple[Connectivity, State]:
    """Draw the network and its initial state from `seed` (numpy RNG, reproducible)."""
    rng = np.random.default_rng(seed)
    conn = fixed_indegree(spec, rng)
    return conn, init_state(spec, params, init_rho(spec, rng))
