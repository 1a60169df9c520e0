r"""The single-synapse models that are fitted, and their population read-out.

Both models turn a protocol into the total time the calcium of one synapse spends
above the depression and potentiation thresholds, $t_d$ and $t_p$, and map those to a
ratio after/before with the analytic transition probabilities of Graupner & Brunel
(2012) (docs/fitting.md has the equations).

* ``"linear"``: Graupner-Brunel calcium, a jump ``C_pre`` a delay ``D`` after each
  presynaptic spike and ``C_post`` at each postsynaptic spike, decaying with
  ``tau_Ca``. Between two jumps $c$ is a single exponential, so the time above a
  threshold is exact (`ltpnet.surrogate.time_above_decay`); every spike of the
  protocol is an event, so trains of any length are exact too.
* ``"nmda"``: the NMDA/bAP calcium of ltpnet's network, $\dot c = -c/\tau_{Ca}
  + \alpha_N s\,B(E_L + b + u) + C_{bAP}\sum\delta(t - t_{post})$, with the NMDA
  gating trace $s$ (jump 1, decay $\tau_N$), the bAP depolarisation $b$ (jump
  $A_{bAP}$, decay $\tau_{bAP}$) and the EPSP $u$ of the stimulated pathway, whose
  inputs all spike together with summed AMPA weight $W$ (``extra.W``, in units of the
  leak): $u = W (E_E - E_L) \frac{\tau_A}{\tau_m - \tau_A}\sum_i
  (e^{-(t - t_i)/\tau_m} - e^{-(t - t_i)/\tau_A})$, the EPSP of a membrane at rest
  linearised in the conductance (W = 0: a membrane at rest apart from the bAP). A
  postsynaptic spike resets the membrane to ``neuron.V_reset``, from where it relaxes
  with $\tau_m$, as the network's does. A condition with ``clamp_mv`` holds the
  membrane at that potential instead (no EPSP, no bAP, no reset). It
  is integrated on a grid over the first ``transient_periods`` periods of a train and
  over the periodic steady state, which stands for the remaining periods.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from .. import surrogate
from ..dynamics.neuron import mg_block
from ..params import Params
from .data import Batch

MODELS = ("linear", "nmda")

# Parameters without a Params counterpart live in the "extra" group:
#   D      presynaptic calcium delay [ms]  (ModelSpec.ca_delay_steps * dt in a network)
#   beta   fraction of synapses initially DOWN  (ModelSpec.beta_down)
#   b      UP/DOWN weight ratio w1/w0  (plasticity.w_max / plasticity.w_min)
#   W      summed AMPA weight of the stimulated pathway onto one cell (nmda model)


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """A fittable parameter: its unit, its allowed range and the models that use it."""

    unit: str
    lo: float = 0.0  # smallest allowed value
    hi: float = float("inf")  # largest allowed value
    open_lo: bool = False  # lo itself not allowed
    models: tuple[str, ...] = MODELS
    doc: str = ""


PARAMS: dict[str, ParamInfo] = {
    "calcium.tau_Ca": ParamInfo("ms", open_lo=True, doc="calcium decay"),
    "calcium.C_pre": ParamInfo("1", models=("linear",),
                               doc="jump per presynaptic spike"),
    "calcium.C_post": ParamInfo("1", models=("linear",),
                                doc="jump per postsynaptic spike"),
    "calcium.alpha_N": ParamInfo("1/s", models=("nmda",),
                                 doc="NMDA calcium influx rate"),
    "calcium.C_bAP": ParamInfo("1", models=("nmda",), doc="calcium jump per bAP"),
    "calcium.Mg": ParamInfo("mM", models=("nmda",), doc="extracellular Mg2+"),
    "input.tau_N": ParamInfo("ms", open_lo=True, models=("nmda",),
                             doc="NMDA gating decay"),
    "input.u_rel": ParamInfo("1", hi=1.0, models=("nmda",),
                             doc="share of the releasable pool a spike uses"),
    "input.tau_rec": ParamInfo("ms", open_lo=True, models=("nmda",),
                               doc="recovery of the releasable pool"),
    "neuron.E_L": ParamInfo("mV", lo=-float("inf"), models=("nmda",),
                            doc="resting potential"),
    "neuron.A_bAP": ParamInfo("mV", models=("nmda",), doc="bAP depolarisation"),
    "neuron.tau_bAP": ParamInfo("ms", open_lo=True, models=("nmda",), doc="bAP decay"),
    "plasticity.theta_d": ParamInfo("1", open_lo=True, doc="depression threshold"),
    "plasticity.theta_p": ParamInfo("1", open_lo=True, doc="potentiation threshold"),
    "plasticity.gamma_d": ParamInfo("1", doc="depression rate (per tau_rho)"),
    "plasticity.gamma_p": ParamInfo("1", doc="potentiation rate (per tau_rho)"),
    "plasticity.tau_rho": ParamInfo("ms", open_lo=True, doc="switch time constant"),
    "plasticity.rho_star": ParamInfo("1", hi=1.0, open_lo=True,
                                     doc="unstable point of the switch"),
    "plasticity.sigma": ParamInfo("1", doc="switch noise above theta_d"),
    "plasticity.sigma_p": ParamInfo("1", doc="switch noise above theta_p (G&B: = sigma)"),
    "extra.D": ParamInfo("ms", models=("linear",), doc="presynaptic calcium delay"),
    "extra.beta": ParamInfo("1", hi=1.0, doc="fraction of synapses initially DOWN"),
    "extra.b": ParamInfo("1", open_lo=True, doc="UP/DOWN weight ratio w1/w0"),
    "extra.W": ParamInfo("1", models=("nmda",),
                         doc="summed AMPA weight of the stimulated pathway [g_leak]"),
    "neuron.tau_m": ParamInfo("ms", open_lo=True, models=("nmda",),
                              doc="membrane time constant"),
    "neuron.tau_A": ParamInfo("ms", open_lo=True, models=("nmda",),
                              doc="AMPA conductance decay"),
    "neuron.E_E": ParamInfo("mV", lo=-float("inf"), models=("nmda",),
                            doc="excitatory reversal"),
    "neuron.V_reset": ParamInfo("mV", lo=-float("inf"), models=("nmda",),
                                doc="membrane potential after a postsynaptic spike"),
}

# Graupner & Brunel (2012) parameter sets (SCIENCE.md section 1a), in ltpnet units (ms).
_GB_KEYS = ("calcium.tau_Ca", "calcium.C_pre", "calcium.C_post", "plasticity.theta_d",
            "plasticity.theta_p", "plasticity.gamma_d", "plasticity.gamma_p",
            "plasticity.sigma", "plasticity.tau_rho", "extra.D", "extra.beta", "extra.b")
_GB_SETS = {
    "DP": (20.0, 1.0, 2.0, 1.0, 1.3, 200.0, 321.808, 2.8284, 150_000.0, 13.7, 0.5, 5.0),
    "cortical_slices": (22.6936, 0.5617539, 1.23964, 1.0, 1.3, 331.909, 725.085, 3.3501,
                        346_361.5, 4.6098, 0.5, 5.40988),
    "hippocampal_slices": (48.8373, 1.0, 0.275865, 1.0, 1.3, 313.0965, 1645.59, 9.1844,
                           688_355.0, 18.8008, 0.7, 5.28145),
    "hippocampal_cultures": (11.9536, 0.58156, 1.76444, 1.0, 1.3, 61.141, 113.6545,
                             2.5654, 33_759.6, 10.0, 0.5, 36.0263),
}


def _ltpnet_defaults() -> dict[str, float]:
    """ltpnet's own defaults: `Params()` and `ModelSpec()` (extras)."""
    from ..spec import ModelSpec

    p, spec = Params(), ModelSpec()
    out = {}
    for name in PARAMS:
        group, key = name.split(".")
        if group != "extra":
            out[name] = float(getattr(getattr(p, group), key))
    out.update({
        "extra.D": float(spec.ca_delay_steps * spec.dt),
        "extra.beta": float(spec.beta_down),
        "extra.b": float(p.plasticity.w_max / p.plasticity.w_min),
        "extra.W": 0.0,
    })
    return out


def preset(name: str) -> dict[str, float]:
    """All parameter values of preset `name` (see `PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets are {list(PRESETS)}")
    base = _ltpnet_defaults()
    if name != "ltpnet":
        base.update(dict(zip(_GB_KEYS, _GB_SETS[name], strict=True)))
        base["plasticity.rho_star"] = 0.5
        base["plasticity.sigma_p"] = base["plasticity.sigma"]  # one noise in G&B
    return base


PRESETS = ("ltpnet",) + tuple(_GB_SETS)


def names_for(model: str) -> tuple[str, ...]:
    """Parameters that the model uses, in registry order."""
    return tuple(n for n, info in PARAMS.items() if model in info.models)


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Static choices of a model (they set array shapes; changing them recompiles).

    Attributes:
        model: ``"linear"`` or ``"nmda"``.
        max_pairs: Pairs per train of the longest condition (``"linear"``: 2 events
            per pair).
        grid: Grid points per period (``"nmda"``).
        window_ms: Longest stretch of a period that is integrated (``"nmda"``); calcium
            is assumed below threshold and NMDA influx negligible after it.
        transient_periods: Periods of a train integrated one by one before the
            periodic steady state takes over (``"nmda"``).
        release_rows: Rows that stand for the periods after the transient ones
            (``"nmda"``): each is the periodic steady state of a train whose
            spikes all release what the train's spike in the middle of its share of
            those periods does (short-term depression approaches its steady state
            slowly when ``input.u_rel`` is small). The shares grow quadratically,
            finest after the transient. 1: the steady state alone (exact without
            depression).
        switch: How the times above threshold move the switch: ``"gb"``, Graupner &
            Brunel's analytic probabilities (the drift linear while calcium is above a
            threshold, the cubic left out); ``"fokker_planck"``, the switch's
            probability density over the protocol's duration with the cubic, the drift
            and the noise averaged over it (`transition_probabilities_fp`).
        switch_grid: Grid cells per unit of rho (``"fokker_planck"``; a multiple of
            4, so that rho = 0 and 1 are nodes of the grid over [-0.75, 1.75]).
        cells: ``None``: one cell whose stimulated pathway has the summed weight
            ``extra.W``. ``(k, p)``: a population of cells, as a network's
            connectivity draws them (``"nmda"``): each cell has
            n ~ Binomial(k, p) synapses of the pathway, each UP with probability
            1 - beta, and a summed weight in proportion to n - u + b u (u of them
            UP), ``extra.W`` for the mean cell. The ratio is that of the weight
            summed over all cells, as a field EPSP pools it (`pooled_ratio`).
    """

    model: str = "linear"
    max_pairs: int = 1
    grid: int = 512
    window_ms: float = 500.0
    transient_periods: int = 16
    release_rows: int = 1
    switch: str = "gb"
    switch_grid: int = 24
    cells: tuple[int, float] | None = None


# ---------------------------------------------------------------------------
# linear (Graupner-Brunel) calcium: exact, event by event


def _linear_times(v, cond, opts: ModelOptions, temperature):
    """(t_d, t_p) of one condition [ms], summed over all trains."""
    N = opts.max_pairs
    P, dt, has_post = cond["period_ms"], cond["dt_ms"], cond["has_post"]
    f = P.dtype
    n = cond["n_pairs"]
    off = jnp.maximum(0.0, -dt)  # the earlier spike of the first pair at t = 0
    a = off + v["extra.D"]  # presynaptic calcium jumps at k P + a
    b = jnp.where(has_post, off + dt, a)  # postsynaptic ones at k P + b
    k = jnp.arange(N)
    kf = k.astype(f)
    valid = k < n
    # merge the two arithmetic sequences without sorting: pre jump k comes after the
    # m_k post jumps j < k + (a - b)/P, and post jump j after the pre jumps with
    # m_k <= j (one rounding decides both, so the positions are a permutation);
    # padding goes after every real event
    nf = n.astype(f)
    m = jnp.where(valid, jnp.clip(jnp.ceil(kf + (a - b) / P), 0.0, nf), nf + 1.0)
    n_pre_before = jnp.searchsorted(m, kf, side="right")
    pos_pre = jnp.where(valid, k + m.astype(k.dtype), n + k)
    pos_post = jnp.where(valid, k + n_pre_before, N + k)
    # an event at k P + phase is kept as (k, phase): gaps between events are then
    # (k' - k) P + (phase' - phase), accurate however long the train (absolute times
    # of a 15 min protocol would have ~0.1 ms resolution in float32)
    last = n - 1
    k_pre, k_post = jnp.where(valid, k, last), jnp.where(valid, k, last)
    ph_pre = jnp.where(valid, a, jnp.maximum(a, b))
    ph_post = jnp.where(valid, b, jnp.maximum(a, b))
    kk = jnp.zeros(2 * N, k.dtype).at[pos_pre].set(k_pre).at[pos_post].set(k_post)
    ph = jnp.zeros(2 * N, f).at[pos_pre].set(ph_pre).at[pos_post].set(ph_post)
    amp_post = jnp.where(has_post, v["calcium.C_post"], 0.0)
    amp_pre = jnp.where(valid, v["calcium.C_pre"], 0.0)
    amp = (jnp.zeros(2 * N, f).at[pos_pre].set(amp_pre)
           .at[pos_post].set(jnp.where(valid, amp_post, 0.0)))
    tau = v["calcium.tau_Ca"]
    gaps = jnp.diff(kk).astype(f) * P + jnp.diff(ph)
    decay = jnp.exp(-gaps / tau)

    def jump(c, x):  # calcium just after each event
        c = c * x[0] + x[1]
        return c, c

    c0 = amp[0]
    _, c_rest = jax.lax.scan(jump, c0, (decay, amp[1:]))
    c = jnp.concatenate([c0[None], c_rest])
    # the tail after the last event is unbounded (the next train starts from rest)
    length = jnp.concatenate([gaps, jnp.full((1,), 1e9, f)])

    def above(theta):
        return jnp.sum(surrogate.time_above_decay(c, theta, tau, length, temperature))

    n_tr = cond["n_trains"]
    return n_tr * above(v["plasticity.theta_d"]), n_tr * above(v["plasticity.theta_p"])


# ---------------------------------------------------------------------------
# NMDA/bAP calcium: a grid over one period, transient periods, then steady state


def _spike_sum(phi, at, tau, P, geo, now, strict=False):
    """Sum of exp(-(t - t_spike)/tau) at phases `phi` of a period.

    `now`: the weight of this period's spike at phase `at` (True: 1, False: none);
    `geo` weighs the earlier ones ((1 - r^k)/(1 - r) after k periods of equal spikes,
    r = exp(-P/tau)); `strict`: left limits.
    """
    after = (phi > at) if strict else (phi >= at)
    cur = jnp.where(after, jnp.exp(-jnp.maximum(phi - at, 0.0) / tau), 0.0) * now
    return cur + geo * jnp.exp(-(phi - at + P) / tau)


def release_train(v, P, k):
    r"""Release of the k-th spike of a train (k = 0, 1, ...), relative to a rested pool.

    Short-term depression (Tsodyks & Markram 1997): a spike releases the share
    ``input.u_rel`` of the pool R, which recovers as $(1 - R)/\tau_{rec}$. With
    spikes every P ms, $R_k = R_\infty + (1 - R_\infty)\lambda^k$, $\lambda = (1 -
    u)e^{-P/\tau_{rec}}$, $R_\infty = (1 - e^{-P/\tau_{rec}})/(1 - \lambda)$. Returns
    ``(R_k, R_inf, lam)``; u = 0 is a synapse without depression (R = 1).
    """
    u = v["input.u_rel"]
    log_lam = _log_lam(v, P)
    lam = jnp.exp(log_lam)
    r_inf = jnp.where(u == 0, 1.0, -jnp.expm1(-P / v["input.tau_rec"]) / (1.0 - lam))
    return r_inf + (1.0 - r_inf) * jnp.exp(k * log_lam), r_inf, lam


def _log_lam(v, P):
    """log lam of `release_train`. Its powers are taken as exp(k log lam): lam
    underflows to 0 for periods much longer than tau_rec, and the gradient of 0**0 is
    NaN. u_rel = 1 counts as 1 - 1e-7."""
    u = jnp.minimum(v["input.u_rel"], 1.0 - 1e-7)
    return jnp.log1p(-u) - P / v["input.tau_rec"]


def _released_sum(v, P, tau, k):
    r"""$\sum_{j<k} R_j r^{k-1-j}$, r = exp(-P/tau): the weight of the k earlier spikes
    of a depressing train at the start of period k (`_spike_sum`'s `geo`)."""
    _, r_inf, lam = release_train(v, P, 0.0)
    lam_k = jnp.exp(k * _log_lam(v, P))
    r = jnp.exp(-P / tau)
    # sum_{i<k} r^i lam^(k-1-i) = (r^k - lam^k)/(r - lam), k r^(k-1) where r = lam;
    # powers of r as exponentials (r underflows for P >> tau)
    near = jnp.abs(r - lam) < 1e-6
    mixed = jnp.where(near, k * jnp.exp(-jnp.maximum(k - 1.0, 0.0) * P / tau),
                      (jnp.exp(-k * P / tau) - lam_k) / jnp.where(near, 1.0, r - lam))
    steady = r_inf * -jnp.expm1(-k * P / tau) / -jnp.expm1(-P / tau)
    return steady + (1.0 - r_inf) * mixed


def _linear_recurrence(decay, inc):
    """x_m = x_{m-1} decay_m + inc_m along the last axis (x_{-1} = 0), by `lax.scan`
    (it compiles far faster than an associative scan and runs as fast here)."""
    def step(x, di):
        x = x * di[0] + di[1]
        return x, x

    x0 = jnp.zeros(inc.shape[:-1], inc.dtype)
    xs_in = (jnp.moveaxis(decay, -1, 0), jnp.moveaxis(inc, -1, 0))
    _, xs = jax.lax.scan(step, x0, xs_in)
    return jnp.moveaxis(xs, 0, -1)


def _nmda_times(v, cond, opts: ModelOptions, temperature):
    """(t_d, t_p) of one condition [ms], summed over all trains."""
    M, K, Q = opts.grid, opts.transient_periods, opts.release_rows
    P, dt, has_post = cond["period_ms"], cond["dt_ms"], cond["has_post"]
    f = P.dtype
    W = jnp.minimum(P, opts.window_ms)
    # nodes: the first spike of a pair sits at phase 0, the second at d = |dt|
    d = jnp.where(has_post, jnp.abs(dt), 0.0)
    m1 = M // 4
    phi = jnp.concatenate([jnp.linspace(0.0, 1.0, m1 + 1, dtype=f)[:-1] * d,
                           d + jnp.linspace(0.0, 1.0, M - m1 + 1, dtype=f) * (W - d)])
    a_pre = jnp.where(dt < 0, d, 0.0)
    a_post = jnp.where(dt < 0, 0.0, d)
    n = cond["n_pairs"].astype(f)
    # rows 0..K-1: the first periods; rows K..K+Q-1: periodic steady states, each
    # standing for a share [b_q, b_{q+1}) of the later periods, released as period
    # k_q (its middle) releases
    edges = K + jnp.maximum(n - K, 0.0) * (jnp.arange(Q + 1, dtype=f) / Q) ** 2
    share = jnp.diff(edges)
    steady = (jnp.arange(K + Q) >= K)[:, None]
    k = jnp.concatenate([jnp.arange(K, dtype=f),
                         jnp.floor(0.5 * (edges[:-1] + edges[1:]))])[:, None]
    tau_ca, tau_n, tau_b = v["calcium.tau_Ca"], v["input.tau_N"], v["neuron.tau_bAP"]
    A_b = jnp.where(has_post, v["neuron.A_bAP"], 0.0)
    C_b = jnp.where(has_post, v["calcium.C_bAP"], 0.0)
    gain = v["calcium.alpha_N"] / 1000.0

    def geo(tau, count):  # (1 - r^count)/(1 - r), r = exp(-P/tau); 1/(1 - r) if steady
        one_minus_r = -jnp.expm1(-P / tau)
        return jnp.where(steady, 1.0, -jnp.expm1(-count * P / tau)) / one_minus_r

    # presynaptic spikes release R_k of a rested pool (short-term depression)
    rel_now = release_train(v, P, k)[0]

    def geo_rel(tau, count):  # the same sum over released spikes
        return jnp.where(steady, rel_now / -jnp.expm1(-P / tau),
                         _released_sum(v, P, tau, count))

    tau_m, tau_a = v["neuron.tau_m"], v["neuron.tau_A"]
    # EPSP of the pathway: W (E_E - E_L) tau_A/(tau_m - tau_A) (e^{-t/tau_m} - e^{-t/tau_A});
    # a clamped membrane sits at clamp_mv with neither EPSP nor bAP
    clamped = cond["has_clamp"]
    rest = jnp.where(clamped, cond["clamp_mv"], v["neuron.E_L"])
    amp_u = jnp.where(clamped, 0.0, v["extra.W"] * (v["neuron.E_E"] - v["neuron.E_L"])
                      * tau_a / (tau_m - tau_a))

    def epsp(x, g, now, strict):
        return amp_u * (_spike_sum(x, a_pre, tau_m, P, g["m"], now, strict)
                        - _spike_sum(x, a_pre, tau_a, P, g["a"], now, strict))

    # a postsynaptic spike at t_post resets the membrane to V_reset; the linear
    # membrane relaxes from there and the AMPA conductance left adds to it:
    # u + (V_reset - E_L - u(t_post)) e^{-(t - t_post)/tau_m} after the spike. The
    # network also holds v for t_ref (2 ms), which moves the times above threshold by
    # under 0.1 % and is left out; a spike of an earlier period is taken with this
    # period's jump (its share is e^{-P/tau_m}). Not on a clamped membrane.
    reset_on = has_post & ~clamped
    jump_r = v["neuron.V_reset"] - v["neuron.E_L"]

    def influx(x, g, now, pre, pre_reset, strict):
        # now: this period's spikes count; pre: the weight of its presynaptic one;
        # pre_reset: that weight in the EPSP the reset starts from
        s = _spike_sum(x, a_pre, tau_n, P, g["n"], pre, strict)
        bap = A_b * _spike_sum(x, a_post, tau_b, P, g["b"], now, strict)
        reset = jnp.where(reset_on, jump_r - epsp(a_post, g, pre_reset, True), 0.0)
        u = epsp(x, g, pre, strict) + reset * _spike_sum(x, a_post, tau_m, P, g["p"],
                                                         now, strict)
        return gain * s * mg_block(rest + bap + u, v["calcium.Mg"])

    def nmda_calcium(x, g, now, pre, pre_reset):
        # exponential integrator with trapezoidal influx, right limits after spikes
        f_right = influx(x, g, now, pre, pre_reset, False)
        f_left = influx(x, g, now, pre, pre_reset, True)
        h = jnp.diff(x, axis=-1)
        e = jnp.exp(-h / tau_ca)
        inc = 0.5 * h * (f_right[..., :-1] * e + f_left[..., 1:])
        shape = jnp.broadcast_shapes(inc.shape, e.shape)
        decay = jnp.concatenate([jnp.zeros(shape[:-1] + (1,), f),
                                 jnp.broadcast_to(e, shape)], axis=-1)
        inc = jnp.concatenate([jnp.zeros(shape[:-1] + (1,), f),
                               jnp.broadcast_to(inc, shape)], axis=-1)
        return _linear_recurrence(decay, inc)

    def dwell(x):  # trapezoidal time weight of each node
        h = jnp.diff(x)
        z = jnp.zeros((1,), f)
        return 0.5 * (jnp.concatenate([z, h]) + jnp.concatenate([h, z]))

    # periods of the train
    taus = {"n": tau_n, "m": tau_m, "a": tau_a}  # presynaptic spikes, released
    taus_post = {"b": tau_b, "p": tau_m}  # postsynaptic spikes: bAP, reset
    g_c = geo(tau_ca, k)
    row = phi[None, :]
    J = nmda_calcium(row, {**{name: geo_rel(tau, k) for name, tau in taus.items()},
                           **{name: geo(tau, k) for name, tau in taus_post.items()}},
                     True, rel_now, rel_now)
    eP = jnp.exp(-P / tau_ca)
    carry_out = J[:, -1] * jnp.exp(-(P - W) / tau_ca)

    def chain(c0, x):
        return c0 * eP + x, c0

    c_end, c_start = jax.lax.scan(chain, jnp.zeros((), f), carry_out[:K])
    c_ss = carry_out[K:] / -jnp.expm1(-P / tau_ca)
    c = (jnp.concatenate([c_start, c_ss])[:, None] * jnp.exp(-row / tau_ca) + J
         + C_b * _spike_sum(row, a_post, tau_ca, P, g_c, True))
    weight = jnp.where(steady[:, 0], jnp.concatenate([jnp.zeros(K, f), share]),
                       (k[:, 0] < n) * 1.0)
    w_phi = dwell(phi)
    # the tail after the last period: no new spikes
    x = jnp.linspace(0.0, opts.window_ms, M + 1, dtype=f)
    starts = jnp.concatenate([c_start, c_end[None]])
    c0_tail = jnp.where(n > K, c_ss[-1], starts[jnp.minimum(n, K).astype(jnp.int32)])

    def geo_n(tau):  # the n spikes of the train, all in the past
        return -jnp.expm1(-n * P / tau) / -jnp.expm1(-P / tau)

    J_tail = nmda_calcium(x, {**{name: _released_sum(v, P, tau, n)
                                 for name, tau in taus.items()},
                              **{name: geo_n(tau) for name, tau in taus_post.items()}},
                          False, False, release_train(v, P, n - 1.0)[0])
    c_tail = (c0_tail * jnp.exp(-x / tau_ca) + J_tail
              + C_b * _spike_sum(x, a_post, tau_ca, P, geo_n(tau_ca), False))
    w_tail = dwell(x)

    def above(theta):
        g = surrogate.threshold_gate(c, theta, temperature)
        g_tail = surrogate.threshold_gate(c_tail, theta, temperature)
        return jnp.sum(weight * (g @ w_phi)) + g_tail @ w_tail

    n_tr = cond["n_trains"]
    return n_tr * above(v["plasticity.theta_d"]), n_tr * above(v["plasticity.theta_p"])


# ---------------------------------------------------------------------------
# population read-out


def transition_probabilities(v, t_d, t_p):
    r"""Probabilities (U, D) that a DOWN synapse ends UP and an UP one ends DOWN.

    Graupner & Brunel (2012): with $G = (\gamma_p t_p + \gamma_d t_d)/\tau$,
    $\bar\rho = \gamma_p t_p/(\gamma_p t_p + \gamma_d t_d)$ and $\sigma_\rho^2 =
    (\sigma_p^2 t_p + \sigma^2 t_d)/(\gamma_p t_p + \gamma_d t_d)$ (G&B: $\sigma_p =
    \sigma$), a synapse that starts at
    $\rho_0$ ends above $\rho^*$ with probability $\frac12[1 + \mathrm{erf}(x)]$,
    $x = (\bar\rho + (\rho_0 - \bar\rho)e^{-G} - \rho^*)
    /\sqrt{\sigma_\rho^2(1 - e^{-2G})}$.
    """
    gp, gd = v["plasticity.gamma_p"], v["plasticity.gamma_d"]
    rate = gp * t_p + gd * t_d
    # without time above threshold nothing changes; keep that branch free of 0/0
    active = rate > 1e-9
    safe = jnp.where(active, rate, 1.0)
    rho_bar = gp * t_p / safe
    var = (v["plasticity.sigma_p"] ** 2 * t_p + v["plasticity.sigma"] ** 2 * t_d) / safe
    G = safe / v["plasticity.tau_rho"]
    spread = jnp.sqrt(jnp.maximum(var * -jnp.expm1(-2.0 * G), 0.0) + 1e-20)
    decay = jnp.exp(-G)
    rs = v["plasticity.rho_star"]
    x0 = (rho_bar + (0.0 - rho_bar) * decay - rs) / spread
    x1 = (rho_bar + (1.0 - rho_bar) * decay - rs) / spread
    U = jnp.where(active, 0.5 * (1.0 + jsp.erf(x0)), 0.0)
    D = jnp.where(active, 0.5 * (1.0 - jsp.erf(x1)), 0.0)
    return U, D


SWITCHES = ("gb", "fokker_planck")
_FP_RANGE = (-0.75, 1.75)  # the density's grid [rho]; reflecting ends
_FP_SQUARINGS = 20  # steps of the propagator: 2**k, k <= this, chosen per condition


def _bernoulli(x):
    """x / (e^x - 1) for x >= 0 (1 at 0)."""
    small = x < 1e-4
    return jnp.where(small, 1.0 - 0.5 * x, x / jnp.expm1(jnp.where(small, 1.0, x)))


def transition_probabilities_fp(v, t_d, t_p, duration, grid: int = 24, cubic=True):
    r"""Probabilities (U, D) as `transition_probabilities`, with the switch's cubic.

    Over the protocol's duration T the switch obeys $\tau\dot\rho = -\rho(1 - \rho)
    (\rho^* - \rho) + \gamma_p a_p (1 - \rho) - \gamma_d a_d \rho$ plus noise of
    variance rate $(\sigma_p^2 a_p + \sigma^2 a_d)/\tau$, with the drive averaged over
    the protocol ($a_{d,p} = t_{d,p}/T$, the shares of time above each threshold;
    exact in the limit of many small steps per pulse, which holds when each pulse moves
    rho by little). Its probability density is propagated from rho = 0 and rho = 1 on
    a grid of `grid` cells per unit rho over [-0.75, 1.75] (Scharfetter-Gummel fluxes;
    the ends reflect, which with the slice defaults' sigma_p = 11.2 and no cubic moves
    U and D by up to 0.007 against an unbounded density). A synapse ends UP if it is
    above rho* at T: afterwards the cubic alone carries it to the stable state on its
    side. The propagator takes 2^k explicit steps, k <= 20, which keeps each step
    stable while the fastest rate out of a node times T stays under 5e5. Without the
    cubic (`cubic=False`) and with grid -> infinity this is Graupner & Brunel's result.
    The gaps between the trains of a multi-train protocol are left out: T is the
    trains' summed duration. Elementwise over conditions (vmapped).
    """
    if not (isinstance(grid, int) and grid >= 4 and grid % 4 == 0):
        raise ValueError(f"grid must be a multiple of 4 (cells per unit rho), got "
                         f"grid={grid!r}")
    rs, tau = v["plasticity.rho_star"], v["plasticity.tau_rho"]
    gp, gd = v["plasticity.gamma_p"], v["plasticity.gamma_d"]
    f = jnp.result_type(t_d, float)
    lo, hi = _FP_RANGE
    n = int(round((hi - lo) * grid)) + 1
    h = 1.0 / grid
    x = lo + h * jnp.arange(n, dtype=f)  # nodes; 0 and 1 are nodes
    i0, i1 = int(round(-lo * grid)), int(round((1.0 - lo) * grid))

    def one(t_d, t_p, T):
        safe_T = jnp.where(T > 0, T, 1.0)
        a_d, a_p = t_d / safe_T, t_p / safe_T
        xm = x[:-1] + 0.5 * h  # interfaces
        drift = gp * a_p * (1.0 - xm) - gd * a_d * xm
        if cubic:
            drift = drift - xm * (1.0 - xm) * (rs - xm)
        # rates per tau_rho: O(1) numbers, so that the floor below stays far above
        # float32's smallest (its square enters the gradient)
        diff = 0.5 * (v["plasticity.sigma_p"] ** 2 * a_p
                      + v["plasticity.sigma"] ** 2 * a_d)
        d = diff / h
        z = jnp.minimum(jnp.abs(drift) / jnp.maximum(d, 1e-6), 60.0)
        both = d * _bernoulli(z)
        up = (jnp.maximum(drift, 0.0) + both) / h  # rate from node i to i + 1
        down = (jnp.maximum(-drift, 0.0) + both) / h  # from node i + 1 to i
        out = jnp.concatenate([up, jnp.zeros(1, f)]) + jnp.concatenate(
            [jnp.zeros(1, f), down])
        L = (jnp.diag(up, -1) + jnp.diag(down, 1) - jnp.diag(out))  # columns: from
        # propagator exp(L T) as (I + L T/2^k)^(2^k), kept as B = A - I so that the
        # small steps do not drown in the identity's rounding; k sets each step
        # below half the fastest rate out of a node
        T_tau = T / tau
        rate = jnp.max(out) * T_tau
        k = jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(2.0 * rate, 1.0))), 0,
                     _FP_SQUARINGS)
        B = L * (T_tau / 2.0 ** k)

        def square(B, j):
            return jnp.where(j < k, 2.0 * B + B @ B, B), None

        B, _ = jax.lax.scan(square, B, jnp.arange(_FP_SQUARINGS, dtype=f))
        above = jnp.clip((x + 0.5 * h - rs) / h, 0.0, 1.0)  # share of each cell > rho*
        U = above @ B[:, i0] + above[i0]
        D = 1.0 - (above @ B[:, i1] + above[i1])
        return jnp.clip(U, 0.0, 1.0), jnp.clip(D, 0.0, 1.0)

    shape = jnp.broadcast_shapes(jnp.shape(t_d), jnp.shape(t_p), jnp.shape(duration))
    args = [jnp.broadcast_to(jnp.asarray(a, f), shape).reshape(-1)
            for a in (t_d, t_p, duration)]
    U, D = jax.vmap(one)(*args)
    return U.reshape(shape), D.reshape(shape)


def population_ratio(v, U, D):
    """Ratio after/before of a population with a fraction beta DOWN and w1/w0 = b."""
    U, D = jnp.asarray(U)[None], jnp.asarray(D)[None]  # one group of synapses
    beta = jnp.reshape(v["extra.beta"], (1,) * U.ndim)
    return _pooled(beta, 1.0 - beta, U, D, v["extra.b"])


def _pooled(down, up, U, D, b):
    """Ratio after/before of the weight summed over groups (leading axis) of `down`
    DOWN and `up` UP synapses whose switches end UP with probability `U` and DOWN with
    probability `D`; an UP synapse weighs b times a DOWN one."""
    after = down * (1.0 - U) + up * D + b * (down * U + up * (1.0 - D))
    return jnp.sum(after, 0) / jnp.sum(down + b * up, 0)


CELL_NODES = 12  # cell types whose times above threshold are computed
_CELL_MASS = 1e-9  # counts n rarer than this are left out


def cell_table(k: int, p: float):
    """Static part of a population of cells: `(n, u, log_weight)` over 0 <= u <= n <= k,
    log_weight = log[Binomial(n; k, p) C(n, u)] (float64 NumPy). Counts n rarer than
    `_CELL_MASS` are left out."""
    lf = np.array([math.lgamma(i + 1.0) for i in range(k + 1)])  # log i!
    m = np.arange(k + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pn = (lf[k] - lf[m] - lf[k - m] + np.where(m > 0, m * np.log(p), 0.0)
                  + np.where(m < k, (k - m) * np.log1p(-p), 0.0))
    n, u = (a.ravel() for a in np.meshgrid(m, m, indexing="ij"))
    keep = (u <= n) & (log_pn[n] >= np.log(_CELL_MASS))
    n, u = n[keep], u[keep]
    return n, u, log_pn[n] + lf[n] - lf[u] - lf[n - u]


def cell_population(v, cells):
    """Every cell type `(n_cells,)` of a population `cells = (k, p)`: its DOWN and UP
    synapses of the pathway weighted by P(n, u) (`down`, `up`), its summed weight
    relative to the mean cell's (`x`), and `nodes` `(CELL_NODES,)`, the x of the cell
    types at evenly spaced quantiles of the pooled weight, from the lightest to the
    heaviest (with any synapse of the pathway)."""
    k, p = cells
    n, u, logw = cell_table(k, p)
    beta, b = v["extra.beta"], v["extra.b"]
    f = jnp.result_type(beta, float)
    n, u = jnp.asarray(n, f), jnp.asarray(u, f)
    w = jnp.exp(jnp.asarray(logw, f) + jsp.xlogy(u, 1.0 - beta)
                + jsp.xlogy(n - u, beta))
    x = (n - u + b * u) / (k * p * (beta + (1.0 - beta) * b))
    pool = jnp.where((w >= _CELL_MASS) & (n > 0), w * (n - u + b * u), 0.0)
    order = jnp.argsort(jnp.where(pool > 0, x, jnp.inf))
    cum = jnp.cumsum(pool[order])
    live = jnp.sum(pool > 0)
    i = jnp.clip(jnp.searchsorted(cum / cum[-1], jnp.linspace(0.0, 1.0, CELL_NODES)),
                 0, live - 1)
    i = i.at[0].set(0).at[-1].set(live - 1)
    return {"down": w * (n - u), "up": w * u, "x": x,
            "nodes": jax.lax.stop_gradient(x[order][i])}


def pooled_ratio(v, t_d, t_p, pop, U_D):
    r"""Ratio after/before of the weight pooled over a population of cells.

    `t_d`, `t_p` `(CELL_NODES, ...)`: times above threshold of cells whose pathway sums
    to ``extra.W`` times `pop["nodes"]` (the rest are conditions). Each cell type's
    times are interpolated linearly in its relative weight `pop["x"]`, `U_D(t_d, t_p)`
    turns them into its transition probabilities, and the ratio is
    $\sum P(n, u)[(n - u)(1 - U) + uD + b((n - u)U + u(1 - D))]
    / \sum P(n, u)(n - u + b u)$ over cell types with n synapses of the pathway, u of
    them UP.
    """
    shape = t_d.shape[1:]

    def interp(t):
        return jax.vmap(lambda tc: jnp.interp(pop["x"], pop["nodes"], tc), in_axes=1,
                        out_axes=1)(t.reshape(CELL_NODES, -1))

    U, D = U_D(interp(t_d), interp(t_p))
    down, up = pop["down"][:, None], pop["up"][:, None]
    return _pooled(down, up, U, D, v["extra.b"]).reshape(shape)


def batch_arrays(b: Batch, dtype=None) -> dict:
    """The per-condition arrays of a Batch, as JAX arrays of the default float dtype."""
    f = dtype or jnp.result_type(float)
    return {
        "dt_ms": jnp.asarray(b.dt_ms, f), "has_post": jnp.asarray(b.has_post),
        "clamp_mv": jnp.asarray(b.clamp_mv, f), "has_clamp": jnp.asarray(b.has_clamp),
        "period_ms": jnp.asarray(b.period_ms, f), "n_pairs": jnp.asarray(b.n_pairs),
        "n_trains": jnp.asarray(b.n_trains, f),
    }


def times_above(v: dict, conds: dict, opts: ModelOptions, temperature=0.0):
    """(t_d, t_p) `(n_conditions,)` [ms]: total time above theta_d and theta_p."""
    fn = _linear_times if opts.model == "linear" else _nmda_times
    return jax.vmap(lambda c: fn(v, c, opts, temperature))(conds)


def predict(v: dict, conds: dict, opts: ModelOptions, temperature=0.0):
    """Predicted ratio after/before `(n_conditions,)` for parameter values `v`.

    Args:
        v: Parameter name -> scalar (every name of `names_for(opts.model)`).
        conds: Output of `batch_arrays`.
        opts: Static model options.
        temperature: Surrogate temperature; 0 (a Python number) is the hard threshold.
    """
    if opts.switch == "fokker_planck":
        duration = (conds["n_pairs"] * conds["period_ms"] * conds["n_trains"])

        def U_D(t_d, t_p):
            return transition_probabilities_fp(v, t_d, t_p, duration.astype(t_d.dtype),
                                               opts.switch_grid)
    else:
        def U_D(t_d, t_p):
            return transition_probabilities(v, t_d, t_p)
    if opts.cells is None:
        return population_ratio(v, *U_D(*times_above(v, conds, opts, temperature)))
    pop = cell_population(v, opts.cells)
    t_d, t_p = jax.vmap(lambda x: times_above({**v, "extra.W": v["extra.W"] * x},
                                              conds, opts, temperature))(pop["nodes"])
    return pooled_ratio(v, t_d, t_p, pop, U_D)
