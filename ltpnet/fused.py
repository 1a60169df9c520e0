"""The fused engine (`ModelSpec.fused`): neurons step by step, synapses in blocks.

The per-step engine (`ltpnet.step`) touches every synapse several times per step: it
builds the weights, gathers the input spikes for the AMPA sum, gathers the NMDA
traces for calcium, and updates calcium and efficacy in separate passes. The
synapses are where the time goes (n_post * k of them against n_post neurons), so
this engine reorganises the same equations around one pass over the synapses per
block of `T = spec.syn_block` steps:

1. The input spikes of the block are drawn, packed into 32-bit words (one bit per
   input and step).
2. The AMPA sums of the block's steps are formed from the efficacies at the block
   start: with `spec.ampa == "event"` only the synapses of inputs that spiked are
   touched (about n_syn * rate * dt per step), through a pre-major index.
3. The neurons advance the T steps one by one (NMDA traces, AMPA, membrane, spikes,
   rate sensor, scaling factor); each step leaves per neuron
   beta = dt alpha_N (1 - f_APV) B(v + bap) and its spikes (gamma = C_bAP y), and
   per input a spike bit.
4. One fused pass advances every synapse through the T steps: it gathers the NMDA
   trace of its input at the block start and the block's spike bits once, replays
   s <- s e^{-dt/tau_N} + x, c <- c e^{-dt/tau_Ca} + beta s + gamma and the switch
   (with `switch_noise`, its variates hashed from (seed, step, synapse) as in the
   per-step engine, so no noise is stored or read), and writes calcium and efficacy
   once. They are carried packed in one array
   (`PackedSyn`: complex c + i rho, or bfloat16 pairs in a uint32), so that XLA
   emits a single loop that reads and writes each synapse once (XLA on CPU gives a
   loop one output).

The model variants replay the same pass. With Graupner-Brunel linear calcium
(`spec.calcium = "linear"`) each step leaves beta = C_pre and gamma = C_post y, the
bits are those of the input spikes `ca_delay_steps` late (a ring buffer carried by
the neuron loop), and the pass takes s <- x instead of the NMDA trace. With CaMKII
T286A (`spec.t286a`) the cubic drift is replaced by the relaxation to the late state
z, read once per block. With the NMDA current on the membrane (`spec.nmda_current`)
the neuron loop also sums w s over every synapse at each step, with the weights of
the block start, as the AMPA sums read them. With short-term depression
(`spec.depression`) each step's release per input is computed before the block from
the pools; the AMPA sums and the neuron loop take it spike by spike, and the synapse
pass gathers one release per synapse for the block.

With T = 1 and `rho_drift = "step"` this is the step order of docs/model.md exactly
(tests compare it with the float64 reference). With T > 1 the weights a block's AMPA
input reads lag by at most T - 1 steps (rho moves by at most
dt/tau_rho * (gamma_p + gamma_d) per step, 3.5e-4 with the bench-v1 values);
`rho_drift = "block"` applies the cubic drift of the switch once per block. A noisy
rho is not clipped (as in the per-step engine); the weights read it clipped. Without
noise, within a block rho is clipped to [0, 1] at the block end only: with
kr = dt/tau_rho and kr (gamma_d + gamma_p + 1) <= 1 no step can leave [0, 1], so this
equals clipping every step. docs/benchmarks.md gives the measurements behind these
choices.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ._pytree import pytree_dataclass
from .connectivity import Connectivity
from .dynamics import consolidation, homeostasis, neuron, synapse
from .params import Params
from .record import Observe
from .record import observe as _observe
from .spec import ModelSpec
from .state import State, SynState
from .step import (
    Coeffs,
    Drive,
    _on,
    delayed_spikes,
    discretise,
    input_spikes,
    irwin_hall,
    membrane,
    noise_seed,
)


@pytree_dataclass
class FusedConnectivity(Connectivity):
    """`Connectivity` plus the pre-major index of the event-driven AMPA input.

    `pre_idx` is stored in the narrowest unsigned type that holds `n_pre - 1`
    (uint16 up to 65536 inputs).

    Attributes:
        syn_by_pre: `(n_syn,)` int32 synapse ids `i * k + kk` grouped by input, each
            group in increasing order (None without `ampa = "event"`).
        pre_ptr: `(n_pre + 2,)` int32 group starts: input j owns
            `syn_by_pre[pre_ptr[j]:pre_ptr[j + 1]]`; the last two entries are n_syn.
        max_out: The largest out-degree (static).
    """

    _static = ("max_out",)

    syn_by_pre: np.ndarray | None = None
    pre_ptr: np.ndarray | None = None
    max_out: int = 0


def index_dtype(n: int):
    """Narrowest unsigned integer dtype holding 0..n-1 (int32 above 65536)."""
    return np.uint16 if n <= 1 << 16 else np.int32


def prepare(spec: ModelSpec, conn: Connectivity) -> FusedConnectivity:
    """`conn` as the fused engine of `spec` reads it (host numpy; idempotent)."""
    if isinstance(conn, FusedConnectivity) and (
        spec.ampa != "event" or conn.syn_by_pre is not None
    ):
        return conn
    pre_idx = np.asarray(conn.pre_idx)
    fields = {f.name: getattr(conn, f.name) for f in dataclasses.fields(Connectivity)}
    fields["pre_idx"] = pre_idx.astype(index_dtype(spec.n_pre))
    if spec.ampa == "event":
        flat = pre_idx.reshape(-1)
        if flat.size > 1 << 26 and jax.default_backend() != "cpu":  # sort on the device
            order = np.asarray(jnp.argsort(jnp.asarray(flat), stable=True), np.int32)
        else:
            order = np.argsort(flat, kind="stable").astype(np.int32)
        counts = np.bincount(flat, minlength=spec.n_pre)
        ptr = np.zeros(spec.n_pre + 2, np.int64)
        np.cumsum(counts, out=ptr[1 : spec.n_pre + 1])
        ptr[-1] = flat.size
        fields.update(
            syn_by_pre=order,
            pre_ptr=ptr.astype(np.int32),
            max_out=int(counts.max(initial=0)),
        )
    return FusedConnectivity(**fields)


@pytree_dataclass
class PackedSyn:
    """Synapse state as the fused engine carries it.

    `cr` is `c + 1j * rho` (complex, `syn_dtype="float32"`) or one uint32 per synapse
    holding bfloat16 c in the high and bfloat16 rho in the low half
    (`syn_dtype="bfloat16"`).
    """

    cr: jnp.ndarray
    rho_lag: jnp.ndarray | None = None
    rho_ref: jnp.ndarray | None = None
    z: jnp.ndarray | None = None


def decode(cr):
    """`(c, rho)` float32/float64 arrays of a packed array (JAX or numpy)."""
    xp = jnp if isinstance(cr, jax.Array) else np
    if xp.iscomplexobj(cr):
        return cr.real, cr.imag
    cr = xp.asarray(cr, xp.uint32)
    as_f32 = (
        (lambda u: jax.lax.bitcast_convert_type(u, jnp.float32))
        if xp is jnp
        else (lambda u: u.view(np.float32))
    )
    return as_f32(cr & xp.uint32(0xFFFF0000)), as_f32(cr << xp.uint32(16))


def rho_of(cr):
    """The efficacies of a packed array (a gather decodes only what it reads)."""
    if jnp.iscomplexobj(cr):
        return jnp.imag(cr)
    return jax.lax.bitcast_convert_type(cr << jnp.uint32(16), jnp.float32)


def encode(c, rho, syn_dtype: str, noise=None):
    """Pack float arrays (see `PackedSyn`).

    For bfloat16, `noise` (uniform uint32 words) rounds stochastically: 16 random bits
    are added below the kept ones before truncating, so each stored value is unbiased.
    Without noise the values are truncated (for values that bfloat16 already holds).
    """
    if syn_dtype == "float32":
        return jax.lax.complex(c, rho)
    cu = jax.lax.bitcast_convert_type(jnp.asarray(c, jnp.float32), jnp.uint32)
    ru = jax.lax.bitcast_convert_type(jnp.asarray(rho, jnp.float32), jnp.uint32)
    if noise is not None:  # add 16 random bits below the kept ones, then truncate
        cu = cu + (noise & jnp.uint32(0xFFFF))
        ru = ru + (noise >> jnp.uint32(16))
    return (cu & jnp.uint32(0xFFFF0000)) | (ru >> jnp.uint32(16))


def pack(state: State, syn_dtype: str = "float32") -> State:
    """`state` with calcium and efficacy packed into one array (see `PackedSyn`).

    bfloat16 packing rounds the given state to the nearest bfloat16 once; the engine
    then rounds stochastically after every block.
    """
    if isinstance(state.syn, PackedSyn):
        return state
    s = state.syn
    c, rho = jnp.asarray(s.c), jnp.asarray(s.rho)
    if syn_dtype == "bfloat16":
        c = c.astype(jnp.bfloat16).astype(jnp.float32)
        rho = rho.astype(jnp.bfloat16).astype(jnp.float32)
    return state.replace(
        syn=PackedSyn(cr=encode(c, rho, syn_dtype), rho_lag=s.rho_lag,
                      rho_ref=s.rho_ref, z=s.z)
    )


def unpack(state: State) -> State:
    """Inverse of `pack` (numpy or JAX arrays; an unpacked State is returned as is)."""
    if not isinstance(state, State) or not isinstance(state.syn, PackedSyn):
        return state
    s = state.syn
    c, rho = decode(s.cr)
    return state.replace(syn=SynState(c=c, rho=rho, rho_lag=s.rho_lag,
                                      rho_ref=s.rho_ref, z=s.z))


def unpack_all(tree):
    """Apply `unpack` to every State inside `tree`."""
    return jax.tree_util.tree_map(unpack, tree, is_leaf=lambda n: isinstance(n, State))


def synapse_block(
    cr, s, bits, beta, gamma, pre_idx, co: Coeffs, drift_block: bool, noise=None,
    switch=None, relax_to=None, decay=None, rel=None,
):
    """Advance every synapse `(n_post, k)` of packed `cr` through one block.

    Args:
        cr: Packed calcium and efficacy at the block start.
        s: `(n_pre,)` NMDA traces: at the block start, or after the step if T = 1
            (then `bits` is None); None for linear calcium with `bits` (the pass then
            reads the delayed spikes from `bits` alone).
        bits: `(n_pre,)` uint32 spike bits of the block (bit t: spike at step t).
        beta: `(T, n_post)` NMDA calcium per unit trace of each step,
            dt alpha_N (1 - f_APV) B(v + bap).
        gamma: `(T, n_post)` bAP calcium of each step, C_bAP y.
        pre_idx: `(n_post, k)` input of each synapse.
        co: Coefficients (decays, kr and the switch parameters).
        drift_block: Apply the cubic drift once per block (else every step).
        noise: `(n_post, k)` uint32 random words for the stochastic rounding of
            bfloat16 storage (`cr` uint32), else None.
        switch: `(seed, step0, ids)` for the switch noise (`spec.switch_noise`), else
            None: step `step0 + t` of the block adds the variates of
            `ltpnet.step.switch_variates` (`rng = "hash"`), drawn for the synapse
            ids `ids` `(n_post, k)` (`i * k + kk`), so that both engines draw the
            same noise.
        decay: Per-step decay of the gathered trace; None: the NMDA trace's, e^{-dt/
            tau_N}. 0 for linear calcium (`spec.calcium = "linear"`), where `s` (if
            given) and `bits` hold the delayed input spikes themselves, `beta` is
            C_pre and `gamma` C_post y.
        relax_to: `(n_post, k)` late state z for CaMKII T286A (`spec.t286a`): the
            switch cannot latch, so the cubic drift is replaced by relaxation to z,
            -dt/tau_T286A (rho - z), as in `plasticity.update_rho`; else None.
        rel: `(n_pre,)` release of each input's spike in the block with short-term
            depression (`spec.depression`): a spike bit adds rel to the trace
            instead of 1 (exact for an input that spikes at most once per block;
            a second spike in the block adds the first one's release); else None.

    Returns:
        The packed state after the block (rho clipped to [0, 1] at the end unless
        the switch is noisy, as in `plasticity.update_rho`).
    """
    pl = co.p.plasticity
    T = beta.shape[0]
    c, r = decode(cr)
    dt = c.dtype
    kr = co.kr
    a_p = kr * pl.gamma_p
    a_d = kr * pl.gamma_d
    # rho <- rho * m + A with m, A set by calcium alone: the chain from one step's rho
    # to the next is a single multiply-add (XLA then overlaps many synapses)
    m_d, m_p = 1 - a_d, 1 - a_d - a_p
    if switch is not None:  # the gate sqrt(sigma^2 H_d + sigma_p^2 H_p) of each band
        sd_d = jnp.abs(pl.sigma)
        sd_p = jnp.sqrt(pl.sigma**2 + pl.sigma_p**2)
    s_syn = 0.0 if s is None else synapse.take(s, pre_idx)
    rel_syn = None if rel is None else synapse.take(rel, pre_idx)
    eN = co.eN if decay is None else decay
    if bits is not None:  # gather a float view of the bits: XLA then fuses the gather
        b = jax.lax.bitcast_convert_type(
            synapse.take(jax.lax.bitcast_convert_type(bits, jnp.float32), pre_idx),
            jnp.uint32,
        )
    for t in range(T):
        if bits is not None:
            x_t = ((b >> t) & 1).astype(dt)
            s_syn = s_syn * eN + (x_t if rel_syn is None else x_t * rel_syn)
        c = c * co.eCa + (beta[t][:, None] * s_syn + gamma[t][:, None])
        ltp = c > pl.theta_p
        m = jnp.where(ltp, m_p, jnp.where(c > pl.theta_d, m_d, 1.0))
        new = r * m + jnp.where(ltp, a_p, 0.0)
        if not drift_block:
            new = new - _drift(r, kr, co.k286, pl.rho_star, relax_to)
        if switch is not None:
            seed, step0, ids = switch
            xi = irwin_hall(synapse.hash_bits(seed, step0 + t, 0, ids), dt)
            sd = jnp.where(ltp, sd_p, jnp.where(c > pl.theta_d, sd_d, 0.0))
            new = new + (co.kn * xi) * sd
        r = new
    if drift_block:
        r = r - _drift(r, T * kr, T * co.k286, pl.rho_star, relax_to)
    if switch is None:
        r = jnp.clip(r, 0.0, 1.0)
    if jnp.iscomplexobj(cr):
        return jax.lax.complex(c, r)
    return encode(c, r, "bfloat16", noise)


def _drift(r, kr, k286, rho_star, relax_to):
    """The switch's own drift over kr = dt/tau_rho: the cubic that latches it, or
    with T286A (`relax_to` = z) the relaxation to the late state over k286."""
    if relax_to is None:
        return kr * (r * (1 - r) * (rho_star - r))
    return k286 * (r - relax_to)


def _in_memory(tree, step_idx):
    """`tree` as values XLA keeps in memory instead of fusing their computation into
    each consumer (XLA:CPU would otherwise evaluate a gathered table or the input
    draw once per synapse that reads it). A conditional on a predicate that is true
    at run time (step indices are never negative) is the fusion boundary."""
    return jax.lax.cond(
        step_idx >= 0,
        lambda t: t,
        lambda t: jax.tree_util.tree_map(jnp.zeros_like, t),
        tree,
    )


def _rho_row_sums(cr):
    """`sum_k rho_ik` `(n_post,)` of the packed state in one pass.

    Complex state: partial sums over slices of each row first (XLA would otherwise
    copy the efficacies out of the packed array before reducing them). bfloat16
    pairs: the low halves as bfloat16, summed in float32 (decoding each slice to
    float32 first took three times as long on XLA:CPU).
    """
    if not jnp.iscomplexobj(cr):
        rho = jax.lax.bitcast_convert_type(cr.astype(jnp.uint16), jnp.bfloat16)
        return jnp.sum(rho, axis=1, dtype=jnp.float32)
    n, k = cr.shape
    m = max(d for d in range(1, 17) if k % d == 0)
    v = cr.reshape(n, m, k // m)
    part = v[:, 0]
    for i in range(1, m):
        part = part + v[:, i]
    return jnp.sum(jnp.imag(part), axis=1)


def observe(spec: ModelSpec, obs: Observe, co: Coeffs, conn, st: State) -> dict:
    """`ltpnet.record.observe` on a packed state.

    With one pathway the fEPSP proxy is summed row by row,
    sum_i a_i (k w_min + (w_max - w_min) sum_k rho_ik): the same value as the summed
    weights, read in one pass over the efficacies.
    """
    names = obs.variables
    out = {}
    # (a noisy rho can leave [0, 1]: the weights then read it clipped, row sums do not)
    if ("fepsp" in names and spec.n_pathways == 1 and not spec.phases
            and not spec.switch_noise):
        pl = co.p.plasticity
        rows = _rho_row_sums(st.syn.cr)
        out["fepsp"] = jnp.sum(
            st.post.a * (spec.k * pl.w_min + (pl.w_max - pl.w_min) * rows)
        )[None]
        names = tuple(v for v in names if v != "fepsp")
    if names:
        out.update(
            _observe(
                spec, dataclasses.replace(obs, variables=names), co, conn, unpack(st)
            )
        )
    return {v: out[v] for v in obs.variables}


def _check(spec: ModelSpec, obs: Observe, conn) -> None:
    if obs.every % spec.syn_block:
        raise ValueError(
            f"Observe.every={obs.every} must be a multiple of "
            f"syn_block={spec.syn_block}"
        )
    if spec.ampa == "event" and getattr(conn, "syn_by_pre", None) is None:
        raise ValueError(
            'ampa="event" needs the pre-major index: pass '
            "conn=ltpnet.fused.prepare(spec, conn)"
        )


def run_impl(
    spec: ModelSpec,
    obs: Observe,
    n_records: int,
    params: Params,
    conn: Connectivity,
    state: State,
    drive: Drive,
    key,
    step0,
):
    """`ltpnet.run_chunk` for `spec.fused` (same arguments and results).

    `state` may be packed (`pack`); the returned state is packed when it was.
    """
    _check(spec, obs, conn)
    co = discretise(spec, params, conn)
    p = co.p
    T = spec.syn_block
    per_rec = obs.every // T
    n_sp, n_in = obs.spike_neurons, obs.input_neurons
    packed_in = isinstance(state.syn, PackedSyn)
    st = pack(state, spec.syn_dtype)
    if spec.syn_dtype == "bfloat16":  # its own stream, apart from the input draw
        round_seed = synapse.hash_seed(jax.random.fold_in(key, 0x5EED))
    if spec.switch_noise:  # the per-step engine's stream, word i * k + kk per synapse
        sw_seed = noise_seed(key)
        sw_ids = jnp.arange(spec.n_syn, dtype=jnp.uint32).reshape(spec.n_post, spec.k)
    if spec.rng == "hash":  # per-input constants in the word layout of the draw
        seed = synapse.hash_seed(key)
        thresh2 = synapse.word_layout(synapse.spike_threshold(co.p_in))
        sure2 = synapse.word_layout(co.p_in >= 1, False)
        path2 = synapse.word_layout(jnp.asarray(conn.pre_pathway, jnp.int32))
    pl = p.plasticity
    k = spec.k
    linear = spec.calcium == "linear"

    def draw(d, idx):
        """Packed input spikes `(ceil(n_pre / 32),)` of step `idx` (none under TTX)."""
        if spec.rng == "hash":
            words = synapse.hash_spike_words(
                seed, idx, thresh2, sure2, d.pulses, path2, d.raster
            )
        else:
            words = synapse.pack_bits(
                input_spikes(spec, co, conn, d, jax.random.fold_in(key, idx), idx)
            )
        return jnp.where(_on(co, "ttx", idx), jnp.uint32(0), words)

    def neuron_step(carry, xs, w_nmda=None):
        s2, post, inh, bits2, xh, dbits2 = carry
        d, idx, u, words, t, rel = xs
        # per input, in the (32, nw) word layout (input b * nw + w at [b, w]): the NMDA
        # trace and the spike bits of the block, carried through the loop so that the
        # synapse pass gathers them from memory
        x2 = (words[None, :] >> jnp.arange(32, dtype=jnp.uint32)[:, None]) & 1
        s2 = s2 * co.eN + (x2.astype(s2.dtype) if rel is None
                           else synapse.word_layout(rel, 0.0))
        bits2 = bits2 | (x2 << t.astype(jnp.uint32))
        x = x2.reshape(-1)[: spec.n_pre].astype(bool)
        if linear:  # the spikes that reach the calcium, ca_delay_steps late
            x_ca, xh = delayed_spikes(spec, xh, x, idx)
            dbits2 = dbits2 | (synapse.word_layout(x_ca.astype(jnp.uint32))
                               << t.astype(jnp.uint32))
        ttx = _on(co, "ttx", idx)
        clamp = _on(co, "clamp", idx)
        # AMPA: efficacies of the block start, scaling factor of the last step
        g = post.g * co.eA + post.a * u
        current_extra = 0.0
        if spec.nmda_current:  # NMDA on the membrane: sum_k w s over every synapse
            s_syn = synapse.take(s2.reshape(-1)[: spec.n_pre], conn.pre_idx)
            gN = p.neuron.g_NMDA * post.a * synapse.summed_input(w_nmda, s_syn)
            current_extra = (gN * neuron.mg_block(post.v, p.calcium.Mg)
                             * (p.neuron.E_E - post.v))
        v, refrac, y, yf, bap, g_I, inh = membrane(
            spec,
            co,
            conn,
            State(pre=None, post=post, syn=None, inh=inh),
            x,
            g,
            d,
            idx,
            ttx,
            clamp,
            current_extra,
        )
        if linear:  # calcium per delayed spike, C_pre
            beta = jnp.broadcast_to(p.calcium.C_pre, v.shape).astype(v.dtype)
        else:  # NMDA calcium per unit trace
            B = neuron.mg_block(v + bap, p.calcium.Mg)
            apv = jnp.where(_on(co, "apv", idx), p.pharmacology.apv, 0.0)
            beta = co.kN * (1 - apv) * B
        r = homeostasis.update_rate(post.r, yf, co.eR, co.r_inc)
        a = post.a
        if spec.homeostasis:
            scaled = homeostasis.update_scaling(a, r, co.ka, p.homeostasis.r_target)
            a = (
                scaled
                if spec.slow_every == 1
                else jnp.where((idx + 1) % spec.slow_every == 0, scaled, a)
            )
        post = post.replace(v=v, g=g, g_I=g_I, bap=bap, refrac=refrac, r=r, a=a)
        return (s2, post, inh, bits2, xh, dbits2), (beta, y, x[:n_in])

    def slow_synapses(st, idx_last):
        """The synaptic part of `slow_step` (phases), after fast step `idx_last`."""
        c = p.consolidation
        syn = st.syn
        synth_ok = ~_on(co, "anisomycin", idx_last)
        rho_lag, rho_ref, z, prot = consolidation.update_slow(
            rho_of(syn.cr),
            syn.rho_lag,
            syn.rho_ref,
            syn.z,
            st.post.p,
            co.dt * spec.slow_every,
            c.tau_e,
            c.theta_tag,
            c.theta_pro,
            c.tau_p_syn,
            c.tau_p_deg,
            c.tau_z,
            c.kappa,
            c.gamma_z,
            synth_ok,
        )
        return st.replace(
            post=st.post.replace(p=prot),
            syn=syn.replace(rho_lag=rho_lag, rho_ref=rho_ref, z=z),
        )

    def block(st, xs, after=None):
        """One block; the synapse pass is ordered after `after` (a read-out of the
        state it overwrites) when given."""
        d, idx = xs
        cr = st.syn.cr
        # 1. the input spikes of the block, one packed row per step, kept in memory
        #    so that no consumer repeats the draw
        words = _in_memory(jax.lax.map(lambda a: draw(*a), (d, idx)), idx[0])
        # 1b. short-term depression: the release of every input's spike of the block
        #     (from the pool at the block start, step by step), and the pool after it
        rel, pool = None, st.pre.pool
        if spec.depression:
            def release_step(r, w):
                return synapse.release(r, synapse.unpack_bits(w, spec.n_pre),
                                       co.uRel, co.eRec)[::-1]

            pool, rel = jax.lax.scan(release_step, st.pre.pool, words)
            rel = _in_memory(rel, idx[0])
        # 2. the AMPA sums of every step of the block (efficacies of the block start;
        #    with phases q = clip(z + rho - rho_ref, 0, 1), computed only where gathered)
        with_q = spec.phases or spec.switch_noise
        if spec.phases:
            q = consolidation.efficacy(rho_of(cr), st.syn.rho_ref, st.syn.z)
        elif spec.switch_noise:  # a noisy rho is not clipped; its weight is
            q = jnp.clip(rho_of(cr), 0.0, 1.0)
        if spec.ampa == "event":
            u = synapse.event_sums(
                words,
                q.reshape(-1) if with_q else cr.reshape(-1),
                conn.syn_by_pre,
                conn.pre_ptr,
                k,
                pl.w_min,
                pl.w_max,
                conn.max_out,
                spec.spikes_per_batch,
                spec.n_post,
                rel,
            )
        else:
            x_blk = _in_memory(
                jax.vmap(lambda w: synapse.unpack_bits(w, spec.n_pre))(words), idx[0]
            )
            u = synapse.dense_sums(
                x_blk if rel is None else rel,
                q if with_q else rho_of(cr),
                conn.pre_idx,
                pl.w_min,
                pl.w_max,
            )
        # 3. the inputs and neurons, step by step
        s2 = synapse.word_layout(st.pre.s, 0.0)
        zeros = jnp.zeros(s2.shape, jnp.uint32)
        dbits0 = zeros if linear else None  # the delayed spike bits (linear calcium)
        carry0 = (s2, st.post, st.inh, zeros, st.pre.x_hist, dbits0)
        w_nmda = None
        if spec.nmda_current:  # the weights the AMPA input reads, before scaling
            q_n = q if with_q else rho_of(cr)
            w_nmda = pl.w_min + q_n * (pl.w_max - pl.w_min)
        (s2_end, post, inh, bits2, xh, dbits2), (beta, y, xs_) = jax.lax.scan(
            lambda c_, x_: neuron_step(c_, x_, w_nmda),
            carry0,
            (d, idx, u, words, jnp.arange(T, dtype=jnp.int32), rel),
        )
        pre = st.pre.replace(s=s2_end.reshape(-1)[: spec.n_pre], x_hist=xh, pool=pool)
        # calcium of a post spike: the bAP's C_bAP, or C_post of linear calcium
        gamma = (p.calcium.C_post if linear else p.calcium.C_bAP) * y.astype(beta.dtype)
        ys, counts = y[:, :n_sp], jnp.sum(y, axis=1, dtype=jnp.int32)
        # 4. every synapse, once
        if after is not None:  # a data dependency: the read-out must come first
            beta = beta + 0.0 * sum(
                jnp.sum(v).astype(beta.dtype) for v in jax.tree_util.tree_leaves(after)
            )
        # (the gathered tables are kept in memory: gathering from an expression
        # would evaluate it once per synapse)
        noise = None
        if spec.syn_dtype == "bfloat16":  # random words for the stochastic rounding
            noise = synapse.hash_bits(
                round_seed,
                idx[0],
                0,
                jnp.arange(spec.n_syn, dtype=jnp.uint32).reshape(spec.n_post, spec.k),
            )
        switch = (sw_seed, idx[0], sw_ids) if spec.switch_noise else None
        if T == 1:  # the trace (or delayed spike) after the step, no bits
            s_now = (dbits2 & 1).astype(s2.dtype) if linear else s2_end
            s_tab, b_tab = _in_memory(s_now.reshape(-1), idx[0]), None
        elif linear:  # the delayed spikes alone: no trace to gather
            s_tab, b_tab = None, _in_memory(dbits2.reshape(-1), idx[0])
        else:
            s_tab, b_tab = _in_memory((s2.reshape(-1), bits2.reshape(-1)), idx[0])
        cr = synapse_block(
            cr,
            s_tab,
            b_tab,
            beta,
            gamma,
            conn.pre_idx,
            co,
            spec.rho_drift == "block",
            noise,
            switch,
            st.syn.z if spec.t286a else None,
            0.0 if linear else None,
            None if rel is None or T == 1 else _in_memory(jnp.max(rel, axis=0), idx[0]),
        )
        st = State(pre=pre, post=post, syn=st.syn.replace(cr=cr), inh=inh)
        if spec.phases:  # slow_every is a multiple of T: at most one tick per block
            se = spec.slow_every
            first, last = idx[0], idx[-1]
            tick = (last + 1) // se > first // se
            st = jax.lax.cond(
                tick,
                lambda s_: slow_synapses(s_, ((last + 1) // se) * se - 1),
                lambda s_: s_,
                st,
            )
        return st, (ys, xs_, counts)

    def observe_now(st):
        return observe(spec, obs, co, conn, st)

    def record_block(st, xs):
        st, ys = jax.lax.scan(block, st, xs)
        return st, (observe_now(st), ys)

    def record_block_single(st, xs):
        # one block per record: XLA drops the inner loop and would fuse (repeat) the
        # synapse pass inside the read-out, so observe the state this iteration
        # starts from instead (the record of the previous one), before the pass
        before = observe_now(st)
        d, idx = xs
        st, ys = block(st, (jax.tree_util.tree_map(lambda a: a[0], d), idx[0]), before)
        ys = jax.tree_util.tree_map(lambda a: a[None], ys)
        return st, (before, ys)

    n = n_records * obs.every
    idx = (step0 + jnp.arange(n, dtype=jnp.int32)).reshape(n_records, per_rec, T)
    d = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a).reshape((n_records, per_rec, T) + a.shape[1:]), drive
    )
    if per_rec > 1 or not obs.variables:
        st, (records, (ys, xs, counts)) = jax.lax.scan(record_block, st, (d, idx))
    else:
        st, (before, (ys, xs, counts)) = jax.lax.scan(record_block_single, st, (d, idx))
        records = jax.tree_util.tree_map(
            lambda b, last: jnp.concatenate([b[1:], last[None]]),
            before,
            observe_now(st),
        )
    flat = lambda a: a.reshape((n,) + a.shape[3:])  # noqa: E731
    return (
        (st if packed_in else unpack(st)),
        records,
        {"post": flat(ys), "input": flat(xs), "count": flat(counts)},
    )


def traffic(spec: ModelSpec, conn: Connectivity, obs: Observe | None = None) -> dict:
    """Bytes the fused engine reads and writes per step, counted array by array.

    Every array the engine touches is listed with its actual dtype and the number of
    elements read or written per step (per block divided by `syn_block`, per record
    divided by `Observe.every`). Gathers from per-input or per-neuron tables count
    the elements gathered; tables that are read whole count once. The event-driven
    AMPA input counts one pass per block of `spike_batch` inputs of `max_out`
    synapses each (padding included).

    Returns:
        `{"items": {name: bytes per step}, "per_step": total, "per_syn_step":
        total / n_syn}`.
    """
    f = np.dtype(spec.dtype).itemsize
    cr = 2 * f if spec.syn_dtype == "float32" else 4  # bytes of one packed (c, rho)
    n_syn, n_pre, n_post, T = spec.n_syn, spec.n_pre, spec.n_post, spec.syn_block
    idx = np.dtype(getattr(conn, "pre_idx", np.zeros(0, np.int32)).dtype).itemsize
    items = {
        # one pass over the synapses per block
        "synapses: read packed (c, rho)": n_syn * cr / T,
        "synapses: write packed (c, rho)": n_syn * cr / T,
        "synapses: read pre_idx": n_syn * idx / T,
        "synapses: trace and spike-bit tables": n_pre * (f + 4) / T,
        "synapses: beta, gamma of the block": 2 * n_post * f,
        # inputs and neurons, every step
        "inputs: draw, s, spike bits (read+write)": 2 * n_pre * (f + 4) + n_pre * 4,
        "neurons: v, g, g_I, bap, refrac, r, a (read+write)": 2 * 7 * n_post * f,
    }
    if spec.t286a:
        items["synapses: read z (T286A)"] = n_syn * f / T
    if spec.depression:  # the pool and each step's release; one table per block
        items["inputs: releasable pool, release (read+write)"] = 4 * n_pre * f
        items["synapses: release table"] = n_pre * f / T
    if spec.nmda_current:  # sum_k w s per neuron, every step
        items["NMDA current: weights, pre_idx, gathered traces"] = n_syn * (2 * f + idx)
    if spec.calcium == "linear" and spec.ca_delay_steps:
        items["inputs: delay ring buffer (read+write)"] = 2 * n_pre
    if spec.n_inh:
        items["interneurons and GABA_A input"] = (
            2 * 4 * spec.n_inh * f
            + spec.n_inh * spec.k_inh * 4
            + n_post * spec.k_ie * 4
        )
    words = 4 * T * -(-n_pre // 32)
    if (
        spec.ampa == "event"
    ):  # one pass per block over the words and `spike_batch` slots
        slots = spec.spikes_per_batch * max(getattr(conn, "max_out", 0), 1)
        items["AMPA events: spike words, pre_ptr, synapse ids, packed rho, sums"] = (
            words + 2 * spec.spikes_per_batch * 4 + slots * (4 + cr + f)
        ) / T
    else:  # every synapse once per block
        items["AMPA dense: packed rho, pre_idx, spike words"] = (
            n_syn * (cr + idx) + words
        ) / T
    items["AMPA sums and post spikes of the block"] = n_post * (f + 1)
    if obs is not None:
        per = 0.0
        for name in obs.variables:
            if name in ("fepsp", "w_mean", "c_mean", "rho_mean", "c", "rho", "q", "w"):
                per = max(
                    per,
                    n_syn * cr
                    + (n_syn * idx if name == "fepsp" and spec.n_pathways > 1 else 0),
                )
            if name in ("c", "rho", "q", "w"):
                per += obs.n_neurons(spec) * spec.k * f
        items["records"] = per / obs.every + n_post / 8 * (obs.spike_neurons > 0)
    total = float(sum(items.values()))
    return {"items": items, "per_step": total, "per_syn_step": total / n_syn}
