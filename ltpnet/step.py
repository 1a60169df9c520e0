"""One place decides the update order: bench-v1 steps 1-7, then the slow clock.

`discretise` turns Params into per-step coefficients once per chunk (inside jit,
outside the scan, so gradients reach every time constant); `step` advances the
fast variables by dt; `slow_step` advances the slow ones by dt * slow_every.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._pytree import pytree_dataclass
from .connectivity import Connectivity
from .dynamics import consolidation, homeostasis, neuron, plasticity, synapse
from .params import WINDOWS, Params
from .spec import ModelSpec
from .state import State
from .units import MS_PER_S


@pytree_dataclass
class Drive:
    """External drive of one step (or, stacked, of a chunk: leading time axis).

    Attributes:
        pulses: `(n_pathways,)` bool: pathways stimulated this step.
        post: `()` bool: post spikes forced this step (current injection).
        raster: `(n_pre,)` bool prescribed input spikes, or None.
    """

    pulses: jnp.ndarray
    post: jnp.ndarray
    raster: jnp.ndarray | None = None


@pytree_dataclass
class Coeffs:
    """Per-step constants derived from Params (exact decays, Euler factors)."""

    p: Params
    dt: jnp.ndarray
    p_in: jnp.ndarray  # (n_pre,) spike probability per step
    eN: jnp.ndarray
    uRel: jnp.ndarray  # (n_pre,) share of the pool a spike uses (ModelSpec.depression)
    eRec: jnp.ndarray  # (n_pre,) recovery of the releasable pool
    eA: jnp.ndarray
    eG: jnp.ndarray
    eCa: jnp.ndarray
    ebAP: jnp.ndarray
    eR: jnp.ndarray
    kv: jnp.ndarray
    kN: jnp.ndarray
    kr: jnp.ndarray
    kn: jnp.ndarray  # sqrt(dt / tau_rho): switch noise per unit variate and unit sigma
    k286: jnp.ndarray
    r_inc: jnp.ndarray
    ka: jnp.ndarray
    n_ref: jnp.ndarray
    windows: dict  # name -> (on_step, off_step) int32


def discretise(spec: ModelSpec, params: Params, conn: Connectivity) -> Coeffs:
    """Step coefficients of `params` at `spec.dt` (call inside jit, outside scans)."""
    fdt = jnp.dtype(spec.dtype)
    p = jax_tree_cast(params, fdt)
    dt = jnp.asarray(spec.dt, fdt)
    dt_s = dt * spec.slow_every
    pathway = jnp.asarray(conn.pre_pathway)

    def per_input(x):  # a scalar or one value per pathway -> one per input
        return jnp.broadcast_to(x, (spec.n_pathways,))[pathway]

    n = p.neuron
    ph = p.pharmacology
    windows = {
        w: (jnp.round(getattr(ph, w + "_on") / dt).astype(jnp.int32),
            jnp.round(getattr(ph, w + "_off") / dt).astype(jnp.int32))
        for w in WINDOWS
    }
    return Coeffs(
        p=p, dt=dt,
        p_in=per_input(p.input.rate * dt / MS_PER_S),
        eN=jnp.exp(-dt / p.input.tau_N),
        uRel=per_input(p.input.u_rel),
        eRec=per_input(jnp.exp(-dt / p.input.tau_rec)),
        eA=jnp.exp(-dt / n.tau_A),
        eG=jnp.exp(-dt / n.tau_GABA),
        eCa=jnp.exp(-dt / p.calcium.tau_Ca),
        ebAP=jnp.exp(-dt / n.tau_bAP),
        eR=jnp.exp(-dt / p.homeostasis.tau_r),
        kv=dt / n.tau_m,
        kN=_calcium_gain(spec, dt, p),
        kr=dt / p.plasticity.tau_rho,
        kn=jnp.sqrt(dt / p.plasticity.tau_rho),
        k286=dt / p.consolidation.tau_t286a,
        r_inc=MS_PER_S / p.homeostasis.tau_r,
        ka=dt_s / p.homeostasis.tau_a,
        n_ref=jnp.round(n.t_ref / dt).astype(jnp.int32),
        windows=windows,
    )


def _calcium_gain(spec: ModelSpec, dt, p: Params):
    """Calcium per unit `B s` in one step (`ModelSpec.calcium_step`)."""
    alpha = p.calcium.alpha_N / MS_PER_S  # [1/ms]
    if spec.calcium_step == "euler":
        return dt * alpha
    rN, rC = 1.0 / p.input.tau_N, 1.0 / p.calcium.tau_Ca
    eN, eC = jnp.exp(-dt * rN), jnp.exp(-dt * rC)
    same = jnp.abs(rC - rN) < 1e-9 * rC  # tau_N = tau_Ca: the limit dt e^{-dt/tau}
    return alpha * jnp.where(same, dt * eC, (eN - eC) / jnp.where(same, 1.0, rC - rN))


def jax_tree_cast(tree, dtype):
    """Cast every float leaf of `tree` to `dtype` (Python floats included)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)


def _on(co: Coeffs, name: str, step_idx) -> jnp.ndarray:
    on, off = co.windows[name]
    return (step_idx >= on) & (step_idx < off)


def efficacy(spec: ModelSpec, state: State) -> jnp.ndarray:
    """Efficacy q `(n_post, k)` that the weights read: rho, or z + e with phases, within
    [0, 1] (a noisy rho is not clipped and can leave [0, 1]; the weight it gives stays
    between w_min and w_max). Elementwise, so batched states work too."""
    s = state.syn
    if spec.phases:
        return consolidation.efficacy(s.rho, s.rho_ref, s.z)
    return jnp.clip(s.rho, 0.0, 1.0)


def syn_weights(spec: ModelSpec, co: Coeffs, state: State) -> jnp.ndarray:
    """Excitatory weights `(n_post, k)` [g_leak]."""
    pl = co.p.plasticity
    return synapse.weights(efficacy(spec, state), state.post.a, pl.w_min, pl.w_max)


def step(spec: ModelSpec, co: Coeffs, conn: Connectivity, state: State,
         drive: Drive, key, step_idx) -> tuple[State, tuple]:
    """Advance the fast variables by one step of dt.

    Args:
        spec: Static model description.
        co: Coefficients from `discretise`.
        conn: Connectivity.
        state: State at the start of the step.
        drive: External drive of this step (unstacked).
        key: PRNG key of this step (`fold_in(base_key, step_idx)`); with
            `spec.rng == "hash"` the run's base key (the step index selects the
            numbers).
        step_idx: Global index of this step (int32 scalar).

    Returns:
        `(state, (x, y))`: the new state and this step's input and post spikes.
    """
    p = co.p
    pre, post, syn = state.pre, state.post, state.syn
    ttx = _on(co, "ttx", step_idx)
    clamp = _on(co, "clamp", step_idx)
    pre_idx = conn.pre_idx

    # 1. input spikes (TTX silences them)
    x = input_spikes(spec, co, conn, drive, key, step_idx) & ~ttx
    x_ca, x_hist = x, pre.x_hist
    if spec.calcium == "linear":
        x_ca, x_hist = delayed_spikes(spec, x_hist, x, step_idx)
    # 2. release (1 per spike, or the pool's with short-term depression), NMDA trace
    pool = pre.pool
    if spec.depression:
        rel, pool = synapse.release(pre.pool, x, co.uRel, co.eRec)
    else:
        rel = x.astype(pre.s.dtype)
    s = pre.s * co.eN + rel
    # 3. conductances (weights of the previous step)
    w = syn_weights(spec, co, state)
    g = post.g * co.eA + synapse.summed_input(w, rel[pre_idx].astype(w.dtype))
    s_syn = s[pre_idx]
    current_extra = 0.0
    if spec.nmda_current:
        gN = p.neuron.g_NMDA * synapse.summed_input(w, s_syn)
        current_extra = gN * neuron.mg_block(post.v, p.calcium.Mg) * (p.neuron.E_E - post.v)
    v, refrac, y, yf, bap, g_I, inh = membrane(
        spec, co, conn, state, x, g, drive, step_idx, ttx, clamp, current_extra)
    # 5. calcium
    if spec.calcium == "nmda":
        B = neuron.mg_block(v + bap, p.calcium.Mg)
        kN = co.kN * (1 - jnp.where(_on(co, "apv", step_idx), p.pharmacology.apv, 0.0))
        c = plasticity.calcium_nmda(syn.c, s_syn, B, yf, co.eCa, kN, p.calcium.C_bAP)
    else:
        c = plasticity.calcium_linear(syn.c, x_ca[pre_idx].astype(syn.c.dtype), yf,
                                      co.eCa, p.calcium.C_pre, p.calcium.C_post)
    # 6. efficacy switch
    pl = p.plasticity
    noise = None
    if spec.switch_noise:
        noise = co.kn * switch_variates(spec, key, step_idx, c.shape, c.dtype)
    rho = plasticity.update_rho(
        syn.rho, c, co.kr, pl.theta_d, pl.theta_p, pl.gamma_d, pl.gamma_p, pl.rho_star,
        latch=not spec.t286a, relax_to=syn.z if spec.t286a else None, k_relax=co.k286,
        noise=noise, sigma=pl.sigma, sigma_p=pl.sigma_p)
    # 7. rate sensor (the scaling factor moves on the slow clock)
    r = homeostasis.update_rate(post.r, yf, co.eR, co.r_inc)
    new = State(
        pre=pre.replace(s=s, x_hist=x_hist, pool=pool),
        post=post.replace(v=v, g=g, g_I=g_I, bap=bap, refrac=refrac, r=r),
        syn=syn.replace(c=c, rho=rho),
        inh=inh,
    )
    return new, (x, y)


def delayed_spikes(spec: ModelSpec, x_hist, x, step_idx):
    """`(x_ca, x_hist)`: the input spikes that reach linear calcium,
    `spec.ca_delay_steps` late, and the ring buffer `x_hist` with `x` stored in their
    place (`x` itself and the buffer unchanged without a delay)."""
    if spec.ca_delay_steps == 0:
        return x, x_hist
    slot = step_idx % spec.ca_delay_steps
    return x_hist[slot], x_hist.at[slot].set(x)


def input_spikes(spec: ModelSpec, co: Coeffs, conn: Connectivity, drive: Drive, key,
                 step_idx) -> jnp.ndarray:
    """Step 1 before TTX: Poisson, stimulated and prescribed input spikes `(n_pre,)`."""
    if spec.rng == "hash":
        return synapse.input_spikes_hash(
            synapse.hash_seed(key), step_idx, synapse.spike_threshold(co.p_in),
            co.p_in >= 1, drive.pulses, conn.pre_pathway, drive.raster)
    return synapse.input_spikes(key, co.p_in, drive.pulses, conn.pre_pathway,
                                drive.raster)


_NOISE_STREAM = 0x5EED5EED


def noise_seed(key) -> jnp.ndarray:
    """The uint32 seed of the switch noise with `rng = "hash"` (a stream apart from
    the input draw's)."""
    return synapse.hash_seed(key) ^ jnp.uint32(_NOISE_STREAM)


def irwin_hall(w, dtype) -> jnp.ndarray:
    """Zero-mean, unit-variance variates from uint32 words: the sum of each word's
    four bytes, centred and scaled."""
    m = jnp.uint32(0xFF)
    total = (w & m) + ((w >> 8) & m) + ((w >> 16) & m) + (w >> 24)
    # four bytes, uniform on 0..255: mean 510, variance 4 (256^2 - 1) / 12
    sd = (4 * (256.0 ** 2 - 1) / 12) ** 0.5
    return (total.astype(dtype) - 510.0) / sd


def switch_variates(spec: ModelSpec, key, step_idx, shape, dtype) -> jnp.ndarray:
    """Zero-mean, unit-variance variates `shape` of the switch noise of one step.

    `"threefry"`: standard normal from `fold_in(key, 1)` (`key` is the step's key,
    whose own stream draws the input spikes). `"hash"`: from one `hash_bits` word per
    synapse of a stream separate from the inputs', the sum of its four bytes,
    centred and scaled (Irwin-Hall: bounded at 3.45 SD; its quantiles lie within
    0.03 SD of the normal's from the 5th to the 95th percentile and within 0.08 SD
    at the 1st and 99th; a transition of the switch sums thousands of steps).
    """
    if spec.rng == "hash":
        w = synapse.hash_bits(noise_seed(key), step_idx, math.prod(shape))
        return irwin_hall(w, dtype).reshape(shape)
    return jax.random.normal(jax.random.fold_in(key, 1), shape, dtype)


def membrane(spec: ModelSpec, co: Coeffs, conn: Connectivity, state: State, x, g,
             drive: Drive, step_idx, ttx, clamp, current_extra=0.0):
    """Steps 3 (GABA_A, interneurons) and 4 (membrane, spikes, bAP) of one step.

    `g` is this step's AMPA conductance and `x` its input spikes. Returns
    `(v, refrac, y, yf, bap, g_I, inh)`, with `yf` the spikes as floats.
    """
    p = co.p
    post, inh = state.post, state.inh
    g_I = post.g_I
    if spec.n_inh:
        bic = _on(co, "bicuculline", step_idx)
        w_ie = jnp.where(bic, 0.0, p.inhibition.w_ie)
        g_I = g_I * co.eG + w_ie * jnp.sum(inh.y[conn.ie_idx], axis=1).astype(g_I.dtype)
        gi = inh.g * co.eA + p.inhibition.w_ei * jnp.sum(
            x[conn.inh_idx], axis=1).astype(inh.g.dtype)
        vi, ri, yi = neuron.integrate(
            inh.v, inh.refrac, (p.neuron.E_L - inh.v) + gi * (p.neuron.E_E - inh.v),
            co.kv, p.neuron.V_th, p.neuron.V_reset, co.n_ref, block=ttx)
        inh = inh.replace(v=vi, g=gi, refrac=ri, y=yi)
    # 4. membrane, spikes, reset, refractoriness; voltage clamp overrides
    v0 = post.v
    current = ((p.neuron.E_L - v0) + g * (p.neuron.E_E - v0)
               + g_I * (p.neuron.E_I - v0) + current_extra)
    v, refrac, y = neuron.integrate(
        v0, post.refrac, current, co.kv, p.neuron.V_th, p.neuron.V_reset, co.n_ref,
        force=drive.post, block=ttx | clamp)
    v = jnp.where(clamp, p.neuron.V_clamp, v)
    yf = y.astype(v.dtype)
    bap = post.bap * co.ebAP + p.neuron.A_bAP * yf
    return v, refrac, y, yf, bap, g_I, inh


def slow_step(spec: ModelSpec, co: Coeffs, state: State, step_idx) -> State:
    """Advance the slow variables by dt * slow_every (after the fast step `step_idx`)."""
    p = co.p
    post, syn = state.post, state.syn
    a = post.a
    if spec.homeostasis:
        a = homeostasis.update_scaling(a, post.r, co.ka, p.homeostasis.r_target)
    if not spec.phases:
        return state.replace(post=post.replace(a=a))
    c = p.consolidation
    synth_ok = ~_on(co, "anisomycin", step_idx)
    rho_lag, rho_ref, z, prot = consolidation.update_slow(
        syn.rho, syn.rho_lag, syn.rho_ref, syn.z, post.p, co.dt * spec.slow_every,
        c.tau_e, c.theta_tag, c.theta_pro, c.tau_p_syn, c.tau_p_deg, c.tau_z, c.kappa,
        c.gamma_z, synth_ok)
    return state.replace(post=post.replace(a=a, p=prot),
                         syn=syn.replace(rho_lag=rho_lag, rho_ref=rho_ref, z=z))
