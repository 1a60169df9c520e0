"""Independent float64 NumPy reference of the ltpnet network, one step at a time.

Written from the model equations below, for clarity, not speed: float64 NumPy, no
JAX, nothing shared with the package but the parameter names. The tests run the
engine and this module side by side on the same prescribed input and compare.

Scope: excitatory feed-forward networks without interneurons (`n_inh == 0`) and
without the NMDA current on the membrane (`nmda_current=False`). Input spikes are
prescribed (a raster, pathway pulses, or an explicit override), so no random
numbers are involved. Units: ms, mV, Hz; rates given per second are divided by
1000. H(u) = 1 if u > 0 else 0. Drug windows are [on, off) in ms and hold for
step_idx in [round(on/dt), round(off/dt)).

One fast step of dt, in this order (the state on the right is the old one unless
marked new):
  1. x_j = raster_j | pulse of j's pathway; x = 0 under TTX.
  2. s_j <- s_j exp(-dt/tau_N) + x_j; with short-term depression (spec.depression)
     the spike releases rel_j = x_j R_j instead of x_j (R_j: the input's releasable
     pool, 1 at rest), and R_j <- 1 - (1 - R_j + u_rel rel_j) exp(-dt/tau_rec), with
     u_rel and tau_rec of j's pathway; the AMPA input (3.) takes rel_j too.
  3. w_ik = a_i (w_min + q_ik (w_max - w_min)), q = clip(rho, 0, 1), or with phases
     q = clip(z + rho - rho_ref, 0, 1);  g_i <- g_i exp(-dt/tau_A) + sum_k w_ik x_pre(i,k).
  4. refrac <- max(refrac - 1, 0); free neurons (refrac = 0) integrate
     v <- v + dt/tau_m [(E_L - v) + g_new (E_E - v) + g_I (E_I - v)];
     y = free & (v >= V_th | forced) & no TTX & no clamp; spiking neurons reset to
     V_reset with refrac = round(t_ref/dt); under clamp v = V_clamp.
     bap <- bap exp(-dt/tau_bAP) + A_bAP y.
  5. "nmda": c <- c exp(-dt/tau_Ca) + dt alpha_N/1000 (1 - apv [APV]) s_new B(v + bap)
     + C_bAP y, with B(v) = 1 / (1 + Mg/3.57 exp(-0.062 v)) at the new v and bap;
     "linear": c <- c exp(-dt/tau_Ca) + C_pre x(t - D) + C_post y (x = 0 before the
     run start; D = 0 uses this step's x).
  6. rho <- clip(rho + dt/tau_rho [-rho(1-rho)(rho*-rho) + gamma_p (1-rho) H(c-theta_p)
     - gamma_d rho H(c-theta_d)], 0, 1), c new; with T286A the cubic term is replaced
     by -(tau_rho/tau_t286a)(rho - z).
  7. r <- r exp(-dt/tau_r) + 1000 y / tau_r.
After fast steps n with (n + 1) % slow_every == 0, with dt_s = slow_every dt:
  a <- a + dt_s/tau_a a (r_target - r)/r_target (homeostasis on);
  phases on: e = rho - rho_ref; tag = +1 (e > theta_tag), -1 (e < -theta_tag), else 0;
  T_i = [mean_k |e_ik| > theta_pro] and no anisomycin at step n;
  p <- p_inf + (p - p_inf) exp(-dt_s R), R = 1/tau_p_deg + T/tau_p_syn,
  p_inf = (T/tau_p_syn)/R;  z <- clip(z + dt_s/tau_z [z(1-z)(z-kappa)
  + gamma_z p_new tag], 0, 1);  the anchor, two first-order stages over tau_e with
  rho held (exact): u = rho_ref - rho, v = rho_lag - rho, E = exp(-dt_s/tau_e),
  u <- E (u + (dt_s/tau_e) v),  v <- E v.
"""

from __future__ import annotations

import math

import numpy as np

MS_PER_S = 1000.0


def mg_block(v, Mg):
    """Fraction of NMDA receptors not blocked by Mg2+ at voltage `v` [mV], `Mg` [mM]."""
    return 1.0 / (1.0 + (Mg / 3.57) * np.exp(-0.062 * v))


def heaviside(u):
    """1 where u > 0, else 0 (strict)."""
    return (np.asarray(u) > 0).astype(np.float64)


def window_steps(params, name, dt):
    """(on_step, off_step) of pharmacology window `name`: [on, off) in ms -> steps."""
    ph = params.pharmacology
    on = float(getattr(ph, name + "_on"))
    off = float(getattr(ph, name + "_off"))
    return round(on / dt), round(off / dt)


def window_active(params, name, dt, step_idx):
    """True when `step_idx` lies in the window [on, off) of drug `name`."""
    on, off = window_steps(params, name, dt)
    return on <= step_idx < off


def _f(x):
    return np.asarray(x, dtype=np.float64)


def reference_init(spec, params, rho0):
    """Resting state with efficacies `rho0` `(n_post, k)`: a dict of float64 arrays."""
    n_post, k = spec.n_post, spec.k
    rho0 = np.array(rho0, dtype=np.float64)
    st = {
        "s": np.zeros(spec.n_pre),
        "v": np.full(n_post, float(params.neuron.E_L)),
        "g": np.zeros(n_post),
        "g_I": np.zeros(n_post),
        "bap": np.zeros(n_post),
        "refrac": np.zeros(n_post, dtype=np.int64),
        "r": np.full(n_post, float(params.homeostasis.r_target)),
        "a": np.ones(n_post),
        "c": np.zeros((n_post, k)),
        "rho": rho0.copy(),
    }
    if spec.phases:
        st["p"] = np.zeros(n_post)
        st["rho_lag"] = rho0.copy()
        st["rho_ref"] = rho0.copy()
        st["z"] = rho0.copy()
    st["x_hist"] = np.zeros((spec.ca_delay_steps, spec.n_pre), dtype=bool)
    if getattr(spec, "depression", False):
        st["pool"] = np.ones(spec.n_pre)
    return st


def copy_state(st):
    return {name: np.array(value, copy=True) for name, value in st.items()}


def efficacy(spec, st):
    """q: clip(rho, 0, 1) without phases, clip(z + rho - rho_ref, 0, 1) with phases."""
    if spec.phases:
        return np.clip(st["z"] + st["rho"] - st["rho_ref"], 0.0, 1.0)
    return np.clip(st["rho"], 0.0, 1.0)


def weights(spec, params, st):
    """w_ik = a_i (w_min + q_ik (w_max - w_min)), `(n_post, k)`."""
    pl = params.plasticity
    w_min, w_max = _f(pl.w_min), _f(pl.w_max)
    q = efficacy(spec, st)
    return st["a"][:, None] * (w_min + q * (w_max - w_min))


def reference_step(
    spec,
    params,
    pre_idx,
    pre_pathway,
    st,
    *,
    raster=None,
    pulses=None,
    post=False,
    step_idx=0,
    x_override=None,
    xi=None,
):
    """Advance the fast variables by one step of dt.

    Args:
        spec: ModelSpec-like (n_post, k, n_pre, dt, flags).
        params: Params-like (attribute groups as in ltpnet.Params).
        pre_idx: `(n_post, k)` input index of every synapse.
        pre_pathway: `(n_pre,)` pathway of every input.
        st: State dict at the start of the step (not modified).
        raster: `(n_pre,)` bool prescribed input spikes, or None.
        pulses: `(n_pathways,)` bool pathways stimulated this step, or None.
        post: Force a post spike in every neuron this step.
        step_idx: Global index of this step (for the pharmacology windows).
        x_override: `(n_pre,)` bool input spikes used instead of raster and pulses
            (TTX still silences them).
        xi: `(n_post, k)` unit variates of the switch noise (used when
            `spec.switch_noise`), or None.

    Returns:
        `(new_state, x, y, aux)`: x `(n_pre,)` and y `(n_post,)` bool spikes, and
        aux with `v_free` `(n_post,)`, the membrane potential after integration and
        before the threshold test (NaN for refractory neurons).
    """
    if spec.n_inh or spec.nmda_current:
        raise NotImplementedError("reference: no interneurons, no NMDA current")
    nrn, inp, ca, pl = params.neuron, params.input, params.calcium, params.plasticity
    cons = params.consolidation
    dt = float(spec.dt)
    n_pre, n_post = spec.n_pre, spec.n_post
    ttx = window_active(params, "ttx", dt, step_idx)
    apv = window_active(params, "apv", dt, step_idx)
    clamp = window_active(params, "clamp", dt, step_idx)
    new = copy_state(st)

    # 1. input spikes
    if x_override is not None:
        x = np.array(x_override, dtype=bool)
    else:
        x = np.zeros(n_pre, dtype=bool)
        if raster is not None:
            x |= np.asarray(raster, dtype=bool)
        if pulses is not None:
            x |= np.asarray(pulses, dtype=bool)[pre_pathway]  # every input of a pathway
    if ttx:
        x[:] = False
    xf = x.astype(np.float64)
    if getattr(spec, "depression", False):  # release of the pool, then its recovery
        # u_rel and tau_rec: one value, or one per pathway
        n_path = len(spec.pathways)
        u = np.broadcast_to(np.asarray(inp.u_rel, np.float64), (n_path,))[pre_pathway]
        tau_rec = np.broadcast_to(np.asarray(inp.tau_rec, np.float64),
                                  (n_path,))[pre_pathway]
        xf = xf * st["pool"]
        new["pool"] = 1.0 - (1.0 - st["pool"] + u * xf) * np.exp(-dt / tau_rec)

    # 2. NMDA gating trace
    new["s"] = st["s"] * math.exp(-dt / float(inp.tau_N)) + xf

    # 3. AMPA conductance, weights from the start of the step
    w = weights(spec, params, st)
    x_syn = xf[pre_idx]  # (n_post, k): the input spike seen by each synapse
    g = st["g"] * np.exp(-dt / _f(nrn.tau_A)) + np.sum(w * x_syn, axis=1)
    new["g"] = g
    new["g_I"] = st["g_I"] * np.exp(-dt / _f(nrn.tau_GABA))

    # 4. membrane
    n_ref = round(float(nrn.t_ref) / dt)
    tau_m, E_L, E_E, E_I = _f(nrn.tau_m), _f(nrn.E_L), _f(nrn.E_E), _f(nrn.E_I)
    V_th, V_reset = _f(nrn.V_th), _f(nrn.V_reset)
    v0, g_I = st["v"], st["g_I"]
    refrac = np.maximum(st["refrac"] - 1, 0)
    free = refrac == 0  # refractory neurons are held
    current = (E_L - v0) + g * (E_E - v0) + g_I * (E_I - v0)
    v = np.where(free, v0 + dt / tau_m * current, v0)
    v_free = np.where(free, v, np.nan)
    blocked = ttx or clamp  # no spikes under TTX or voltage clamp
    y = free & ((v >= V_th) | bool(post)) & (not blocked)
    v = np.where(y, V_reset, v)
    refrac = np.where(y, n_ref, refrac)
    if clamp:
        v = np.full(n_post, float(nrn.V_clamp))
    yf = y.astype(np.float64)
    new["v"], new["refrac"] = v, refrac
    new["bap"] = st["bap"] * np.exp(-dt / _f(nrn.tau_bAP)) + _f(nrn.A_bAP) * yf

    # 5. calcium
    eCa = math.exp(-dt / float(ca.tau_Ca))
    c = st["c"] * eCa
    if spec.calcium == "nmda":
        B = mg_block(v + new["bap"], _f(ca.Mg))
        influx = (
            dt * _f(ca.alpha_N) / MS_PER_S * (1.0 - _f(params.pharmacology.apv) * apv)
        )
        s_syn = new["s"][pre_idx]
        c = c + influx * s_syn * B[:, None] + _f(ca.C_bAP) * yf[:, None]
    else:
        D = spec.ca_delay_steps
        x_del = st["x_hist"][0] if D > 0 else x  # input spike D steps ago
        x_del_syn = x_del[pre_idx].astype(np.float64)
        c = c + _f(ca.C_pre) * x_del_syn + _f(ca.C_post) * yf[:, None]
        if D > 0:
            new["x_hist"] = np.concatenate([st["x_hist"][1:], x[None, :]], axis=0)
    new["c"] = c

    # 6. efficacy switch
    rho = st["rho"]
    theta_d, theta_p = _f(pl.theta_d), _f(pl.theta_p)
    ltp = _f(pl.gamma_p) * (1.0 - rho) * heaviside(c - theta_p)
    ltd = _f(pl.gamma_d) * rho * heaviside(c - theta_d)
    if spec.t286a:  # no latch: relax to the late state instead of the cubic
        relax = (rho - st["z"]) / _f(cons.tau_t286a)
        drho = dt / _f(pl.tau_rho) * (ltp - ltd) - dt * relax
    else:
        cubic = -rho * (1.0 - rho) * (_f(pl.rho_star) - rho)
        drho = dt / _f(pl.tau_rho) * (cubic + ltp - ltd)
    if getattr(spec, "switch_noise", False):
        gate = np.sqrt(_f(pl.sigma) ** 2 * heaviside(c - theta_d)
                       + _f(pl.sigma_p) ** 2 * heaviside(c - theta_p))
        drho = drho + np.sqrt(dt / _f(pl.tau_rho)) * gate * np.asarray(
            xi, np.float64)
    noisy = getattr(spec, "switch_noise", False)  # a noisy switch is not clipped
    new["rho"] = rho + drho if noisy else np.clip(rho + drho, 0.0, 1.0)

    # 7. rate sensor
    tau_r = _f(params.homeostasis.tau_r)
    new["r"] = st["r"] * np.exp(-dt / tau_r) + yf * MS_PER_S / tau_r

    return new, x, y, {"v_free": v_free}


def reference_slow(spec, params, st, step_idx):
    """Advance the slow variables by dt_s = slow_every * dt after fast step `step_idx`.

    Returns `(new_state, aux)`; aux holds the early change `e` `(n_post, k)` and its
    per-neuron mean magnitude `e_mean` `(n_post,)` (phases on), else is empty.
    """
    dt_s = spec.slow_every * float(spec.dt)
    new = copy_state(st)
    aux = {}
    if spec.homeostasis:
        h = params.homeostasis
        r_target = _f(h.r_target)
        new["a"] = (
            st["a"] + dt_s / _f(h.tau_a) * st["a"] * (r_target - st["r"]) / r_target
        )
    if spec.phases:
        co = params.consolidation
        theta_tag, theta_pro = _f(co.theta_tag), _f(co.theta_pro)
        e = st["rho"] - st["rho_ref"]
        tag = np.where(e > theta_tag, 1.0, np.where(e < -theta_tag, -1.0, 0.0))
        e_mean = np.mean(np.abs(e), axis=1)
        aniso = window_active(params, "anisomycin", float(spec.dt), step_idx)
        trigger = ((e_mean > theta_pro) & (not aniso)).astype(np.float64)
        rate = 1.0 / _f(co.tau_p_deg) + trigger / _f(co.tau_p_syn)
        p_inf = (trigger / _f(co.tau_p_syn)) / rate
        p = p_inf + (st["p"] - p_inf) * np.exp(-dt_s * rate)
        z = st["z"]
        bistable = z * (1.0 - z) * (z - _f(co.kappa))
        capture = _f(co.gamma_z) * p[:, None] * tag
        dz = dt_s / _f(co.tau_z) * (bistable + capture)
        new["p"] = p
        new["z"] = np.clip(z + dz, 0.0, 1.0)
        x = dt_s / float(co.tau_e)
        u, v = -e, st["rho_lag"] - st["rho"]  # anchor stages relative to rho
        new["rho_ref"] = st["rho"] + math.exp(-x) * (u + x * v)
        new["rho_lag"] = st["rho"] + math.exp(-x) * v
        aux = {"e": e, "e_mean": e_mean}
    return new, aux


def is_slow_step(spec, step_idx):
    """The slow clock ticks after fast steps n with (n + 1) % slow_every == 0."""
    return (step_idx + 1) % spec.slow_every == 0


def reference_run(
    spec,
    params,
    pre_idx,
    pre_pathway,
    state,
    n_steps,
    *,
    raster=None,
    pulses=None,
    post=None,
    step0=0,
    x_override=None,
    xi=None,
):
    """Run `n_steps` steps from `state` and return every state along the way.

    Args:
        spec, params: ModelSpec-like and Params-like.
        pre_idx, pre_pathway: Connectivity arrays.
        state: Initial state dict (see `reference_init`); not modified.
        n_steps: Number of steps.
        raster: `(n_steps, n_pre)` bool, or None.
        pulses: `(n_steps, n_pathways)` bool, or None.
        post: `(n_steps,)` bool forced post spikes, or None.
        step0: Global index of the first step.
        x_override: `(n_steps, n_pre)` bool input spikes used as they are, or None.
        xi: `(n_steps, n_post, k)` unit variates of the switch noise, or None.

    Returns:
        dict with `states` (list of n_steps state dicts, the state after each step
        including the slow clock), `x` `(n_steps, n_pre)`, `y` `(n_steps, n_post)`,
        `v_free` `(n_steps, n_post)` and, with phases, `e_mean` and `e` at slow steps
        (lists of `(step_idx, array)`).
    """
    pre_idx = np.asarray(pre_idx)
    pre_pathway = np.asarray(pre_pathway)
    st = copy_state(state)
    out = {"states": [], "x": [], "y": [], "v_free": [], "e": [], "e_mean": []}
    for n in range(n_steps):
        idx = step0 + n
        st, x, y, aux = reference_step(
            spec,
            params,
            pre_idx,
            pre_pathway,
            st,
            raster=None if raster is None else raster[n],
            pulses=None if pulses is None else pulses[n],
            post=False if post is None else bool(post[n]),
            step_idx=idx,
            x_override=None if x_override is None else x_override[n],
            xi=None if xi is None else xi[n],
        )
        if is_slow_step(spec, idx):
            st, slow_aux = reference_slow(spec, params, st, idx)
            if slow_aux:
                out["e"].append((idx, slow_aux["e"]))
                out["e_mean"].append((idx, slow_aux["e_mean"]))
        out["states"].append(st)
        out["x"].append(x)
        out["y"].append(y)
        out["v_free"].append(aux["v_free"])
    for name in ("x", "y", "v_free"):
        out[name] = np.stack(out[name])
    return out
