"""Homeostatic synaptic scaling (Turrigiano et al. 1998): a culture fires spontaneously
(Poisson CA3 input, feed-forward inhibition) for a baseline, then three sister
cultures (the same network and state) get 48 h of TTX (no spikes), 48 h of
bicuculline (no GABA_A inhibition) or nothing (control), and finally a washout
with spontaneous activity and no drug. Each cell's scaling factor is the mean over
its synapses of weight after / weight before the treatment; the ranked-amplitude
test is the coefficient of variation of those per-synapse ratios within a cell.
`rate_before_hz` is the population rate of the baseline, `rate_after_hz` that of
the last `rate_window_ms` of the bicuculline treatment (drug still on: the rate
that scaling brings back toward the set point); the rates at bicuculline onset,
of the control and after each washout are reported too.

Preparation (not the hippocampal default): a dissociated culture, as in Turrigiano
et al. 1998 (SCIENCE.md 2f), in three respects.

1. Time-compressed homeostasis. 48 h at 1-ms steps is 1.7e8 steps, about 50 min
   per condition for 20 cells on this CPU and days for 1e6 synapses, so the
   scaling factor and its rate sensor both run `speedup` times faster than the
   defaults (tau_a = 100 h / speedup, tau_r = 10 min / speedup) and the treatment
   lasts `treatment_ms / speedup`. The homeostatic subsystem is then exactly the
   default one on a rescaled clock (tau_r / tau_a and treatment / tau_a are
   unchanged); what is not rescaled is everything else, which must be at steady
   state for the rescaling to be harmless. It is: the calcium switches are held
   (3.), and the fast variables (conductances, tau <= 10 ms; the rate sensor,
   tau_r = 0.5 s at the default speedup) settle within seconds of the baseline.
2. Spontaneous activity: every CA3 input fires at `[input] rate`, chosen so that
   the cells fire near the set point r_target = 2 Hz at baseline (SCIENCE.md 1f:
   "the set point is effectively each cell's own pre-perturbation firing rate").
   Feed-forward interneurons (n_inh, k_inh, k_ie) supply the inhibition that
   bicuculline removes.
3. Saturated synapses, held (`[spec] beta_down = 0`: every switch UP and
   consolidated; `[plasticity] gamma_d = gamma_p = 0`: the calcium switch does
   not move), so that the treatments change weights by scaling alone. With the
   hippocampal switch free, this uncorrelated drive depresses the UP switches and
   silences the culture within the baseline (0.00 Hz at bicuculline onset in the
   --quick run). Saturation makes the ranked-amplitude test of the main conditions
   trivial, so a fourth culture (`ttx_ratio_cv_mixed`) gets the same TTX from the
   default DOWN/UP weights (beta_down = 0.7, 5.3-fold spread) without prior
   activity.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import ltpnet as lt
from experiments import ExperimentError
from experiments._common import (
    MS_PER_H,
    MS_PER_MIN,
    check,
    distribution,
    mean_se,
    run_timeline,
    value_se,
)
from ltpnet.state import init_rho, init_state

DEFAULTS = {
    "treatment_ms": "48 h",  # drug duration in the default model's time (run / speedup)
    "speedup": 1200.0,  # homeostasis (tau_a, tau_r) and treatment compressed this much
    "baseline_ms": "1 min",  # spontaneous activity before the drugs (model time)
    "washout_ms": "30 s",  # spontaneous activity after the drugs (model time)
    "rate_window_ms": "20 s",  # window for onset/end rates (model time)
    "record_ms": "2 s",  # record interval (model time)
    "mixed_beta_down": 0.7,  # DOWN fraction of the extra TTX culture (mixed weights)
    "ttx_dt_ms": 10.0,  # time step of the silent (TTX) cultures [ms]
}

SUMMARY_KEYS = ("ttx_factor", "bicuculline_factor", "ttx_ratio_cv", "rate_before_hz",
                "rate_after_hz")

CONDITIONS = ("control", "ttx", "bicuculline")
_TAU_A0 = lt.Params().homeostasis.tau_a
_TAU_R0 = lt.Params().homeostasis.tau_r


def validate(spec: lt.ModelSpec, params: lt.Params, exp: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    def bad(key, allowed):
        raise ExperimentError(
            f"[experiment] {key} must be {allowed}, got {key}={exp[key]!r}")

    if not exp["speedup"] >= 1.0:
        bad("speedup", ">= 1 (1 = the default 48 h at tau_a = 100 h)")
    for key in ("treatment_ms", "baseline_ms", "rate_window_ms", "record_ms"):
        if not exp[key] > 0:
            bad(key, "> 0 ms")
    if exp["washout_ms"] < exp["rate_window_ms"]:
        bad("washout_ms", f">= rate_window_ms = {exp['rate_window_ms']} ms")
    if not 0.0 <= exp["mixed_beta_down"] <= 1.0:
        bad("mixed_beta_down", "in [0, 1]")
    if not 0 < exp["ttx_dt_ms"] <= 0.5 * params.neuron.tau_m:
        bad("ttx_dt_ms", f"in (0, tau_m / 2 = {0.5 * params.neuron.tau_m} ms] "
            "(the silent membrane's Euler step must stay stable)")
    t = exp["treatment_ms"] / exp["speedup"]
    if t < 2 * exp["rate_window_ms"]:
        raise ExperimentError(
            f"[experiment] treatment_ms / speedup = {t:g} ms must be at "
            f"least 2 x rate_window_ms = {2 * exp['rate_window_ms']:g} ms")
    for key in ("treatment_ms", "baseline_ms", "washout_ms", "rate_window_ms"):
        v = exp[key] / (exp["speedup"] if key == "treatment_ms" else 1.0)
        if abs(v / exp["record_ms"] - round(v / exp["record_ms"])) > 1e-6:
            raise ExperimentError(f"[experiment] {key} (model time {v:g} ms) must be a "
                                  f"multiple of record_ms = {exp['record_ms']:g} ms")
    if not spec.n_inh:
        raise ExperimentError("[spec] n_inh must be > 0: bicuculline acts on the "
                              "feed-forward inhibition (set n_inh, k_inh, k_ie)")
    if not spec.homeostasis:
        raise ExperimentError(
            "[spec] homeostasis must be true for a scaling experiment")


def _params(params: lt.Params, speedup: float) -> lt.Params:
    h = params.homeostasis
    return params.with_values("homeostasis", tau_a=h.tau_a / speedup,
                              tau_r=h.tau_r / speedup)


def _windows(params: lt.Params, drug: str | None, t_end: float) -> lt.Params:
    """`params` with `drug` on during [0, t_end) and every other drug window empty.

    An empty window is written [1e12, 0) rather than [0, 0) so that batched members
    differ in both ends (experiments._common._shift_windows turns a shared `on`
    into a batched array when its `off` is batched).
    """
    kw = {}
    for d in ("ttx", "bicuculline"):
        on, off = (0.0, t_end) if d == drug else (1e12, 0.0)
        kw[d + "_on"], kw[d + "_off"] = on, off
    return params.replace(pharmacology=params.pharmacology.replace(**kw))


def _stack(states: list):
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                                  *states)


def _member(state, b: int):
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[b], state)


def _rate(tr, t0: float, t1: float) -> np.ndarray:
    """Population rate [Hz] over [t0, t1) from the stretches of `tr` (per member)."""
    num = den = 0.0
    for a, b, r in tr.rates:
        if a >= t0 - 1e-6 and b <= t1 + 1e-6:
            num = num + np.asarray(r) * (b - a)
            den += b - a
    if den == 0:
        raise RuntimeError(f"no stretch inside [{t0}, {t1}) ms")
    return num / den


def _cell_rate(tr, t0: float, t1: float) -> np.ndarray:
    """Per-cell rate [Hz] over (t0, t1]: the mean of the rate sensor's records."""
    sel = (tr.t > t0 + 1e-6) & (tr.t <= t1 + 1e-6)
    return tr.records["r"][..., sel, :].mean(axis=-2)


def _ratios(w1, w0):
    """Per cell: mean and CV of the per-synapse ratios w1 / w0 `(..., n_post, k)`."""
    q = np.asarray(w1, float) / np.asarray(w0, float)
    m = q.mean(-1)
    return m, q.std(-1) / m


def run(ctx) -> dict:
    spec, exp = ctx.spec, ctx.exp
    K = exp["speedup"]
    p = _params(ctx.params, K)
    T = exp["treatment_ms"] / K
    B, W, win, rec = exp["baseline_ms"], exp["washout_ms"], exp["rate_window_ms"], \
        exp["record_ms"]
    kw = dict(variables=("r", "a"), record_ms=rec, coarse_record_ms=rec,
              log=ctx.log if spec.n_post * spec.k >= 100_000 else None)
    ctx.log(f"{spec.n_post} cells x {spec.k} synapses; speedup {K:g}: tau_a = "
            f"{p.homeostasis.tau_a / MS_PER_MIN:.3g} min, tau_r = "
            f"{p.homeostasis.tau_r / 1000:.3g} s, treatment "
            f"{exp['treatment_ms'] / MS_PER_H:.3g} h -> {T / MS_PER_MIN:.3g} min")
    conn, state = lt.build(spec, p, ctx.seed)

    # 1. baseline: spontaneous activity
    base = run_timeline(spec, p, B, seed=ctx.seed, conn=conn, state=state,
                        snapshots=(B,), **kw)
    s0 = base.state
    w0 = base.snapshots[B]["w"]
    rate_before = float(_rate(base, 0.0, B))
    cell_before = _cell_rate(base, B - min(B, 30_000.0), B)
    ctx.log(f"baseline: {rate_before:.2f} Hz")

    # 2a. control and bicuculline: spiking, one batch at the coarse 1-ms step
    members = [_windows(p, None, T), _windows(p, "bicuculline", T)]
    pb, axes = lt.stack_params(members)
    act = run_timeline(spec, pb, T, seed=ctx.seed + 104_729, conn=conn,
                       state=_stack([s0, s0]), batch=2, params_axes=axes,
                       snapshots=(win, T - win, T), **kw)
    # 2b. TTX: no spikes at all, so a longer step (dt / tau_m <= 0.5 keeps the
    # silent membrane stable); the same culture, and one with mixed weights
    dtt = exp["ttx_dt_ms"]
    slow = max(rec / round(rec / (dtt * 10)), dtt)  # slow clock: ~10 steps, divides rec
    rng = np.random.default_rng(ctx.seed + 1)
    mixed_spec = dataclasses.replace(spec, beta_down=exp["mixed_beta_down"])
    s_mixed = init_state(mixed_spec, p, init_rho(mixed_spec, rng))
    w_mixed0 = _snap_w(spec, p, s_mixed)
    pt, axt = lt.stack_params([_windows(p, "ttx", T), _windows(p, "ttx", T)])
    ttx = run_timeline(spec, pt, T, seed=ctx.seed + 2 * 104_729, conn=conn,
                       state=_stack([s0, s_mixed]), batch=2, params_axes=axt,
                       snapshots=(T,), coarse_dt=dtt, coarse_slow_ms=slow, **kw)
    w_end = {"control": act.snapshots[T]["w"][0], "bicuculline": act.snapshots[T]["w"][1],
             "ttx": ttx.snapshots[T]["w"][0]}
    w_mixed1 = ttx.snapshots[T]["w"][1]

    # 3. washout: all three, spontaneous activity, no drug
    s_end = [_member(act.state, 0), _member(ttx.state, 0), _member(act.state, 1)]
    pw = _windows(p, None, 0.0)
    wash = run_timeline(spec, pw, W, seed=ctx.seed + 3 * 104_729, conn=conn,
                        state=_stack(s_end), batch=3, snapshots=(W - win,), **kw)

    # read-outs
    f, cv = {}, {}
    for c in CONDITIONS:
        f[c], cv[c] = _ratios(w_end[c], w0)
    f_mixed, cv_mixed = _ratios(w_mixed1, w_mixed0)
    r_act_on = _rate(act, 0.0, win)
    r_act_end = _rate(act, T - win, T)
    r_wash = _rate(wash, W - win, W)
    cell_after = _cell_rate(act, T - win, T)
    summary = {
        "ttx_factor": float(f["ttx"].mean()),
        "bicuculline_factor": float(f["bicuculline"].mean()),
        "ttx_ratio_cv": float(cv["ttx"].mean()),
        "rate_before_hz": rate_before,
        "rate_after_hz": float(r_act_end[1]),
        "control_factor": float(f["control"].mean()),
        "ttx_vs_control": float((f["ttx"] / f["control"]).mean()),
        "bicuculline_vs_control": float((f["bicuculline"] / f["control"]).mean()),
        "ttx_ratio_cv_max": float(cv["ttx"].max()),
        "bicuculline_ratio_cv": float(cv["bicuculline"].mean()),
        "ttx_factor_mixed": float(f_mixed.mean()),
        "ttx_ratio_cv_mixed": float(cv_mixed.mean()),
        "ttx_ratio_cv_mixed_max": float(cv_mixed.max()),
        "rate_bicuculline_onset_hz": float(r_act_on[1]),
        "rate_window_s": win / 1000.0,
        "rate_control_end_hz": float(r_act_end[0]),
        "rate_washout_hz": {c: float(r_wash[i]) for i, c in enumerate(CONDITIONS)},
        "rate_ttx_hz": float(_rate(ttx, 0.0, T)[0]),
        "rates": {  # population rate [Hz]: before, drug onset, drug end, washout end
            "control": [rate_before, float(r_act_on[0]), float(r_act_end[0]),
                        float(r_wash[0])],
            "ttx": [rate_before, float(_rate(ttx, 0.0, T)[0]), float(_rate(ttx, 0.0, T)[0]),
                    float(r_wash[1])],
            "bicuculline": [rate_before, float(r_act_on[1]), float(r_act_end[1]),
                            float(r_wash[2])]},
        "r_target_hz": float(np.asarray(p.homeostasis.r_target)),
        "w_before_mean": float(np.mean(w0)),
        "w_mixed_before_range": [float(np.min(w_mixed0)), float(np.max(w_mixed0))],
        "speedup": K, "tau_a_h": p.homeostasis.tau_a / MS_PER_H,
        "tau_r_s": p.homeostasis.tau_r / 1000.0,
        "treatment_h_equivalent": exp["treatment_ms"] / MS_PER_H,
        "treatment_min_model": T / MS_PER_MIN,
        "wall_s_sim": base.wall_s + act.wall_s + ttx.wall_s + wash.wall_s,
    }
    summary["se"] = {f"{c}_factor": mean_se(f[c]) for c in CONDITIONS}
    summary["trace"] = _trace(base, act, ttx, wash, B, T, K)
    summary["ranked"] = _ranked(w0, w_end, w_mixed0, w_mixed1)
    summary["factors"] = {c: f[c] for c in CONDITIONS}
    if ctx.neurons is not None:
        summary.pop("factors")
        summary["neurons"] = {
            "ttx_factor": distribution(f["ttx"]),
            "bicuculline_factor": distribution(f["bicuculline"]),
            "control_factor": distribution(f["control"]),
            "ttx_ratio_cv": distribution(cv["ttx"]),
            "bicuculline_ratio_cv": distribution(cv["bicuculline"]),
            "rate_before_hz": distribution(cell_before),
            "rate_after_hz": distribution(cell_after[1]),
            "rate_control_end_hz": distribution(cell_after[0]),
        }
        summary["factor_hist"] = {c: np.histogram(f[c], bins=40) for c in CONDITIONS}
        summary["factor_hist"] = {c: [h[0].tolist(), h[1].tolist()]
                                  for c, h in summary["factor_hist"].items()}
    ctx.log(f"factors: TTX x{summary['ttx_factor']:.3f}, bicuculline "
            f"x{summary['bicuculline_factor']:.3f}, control "
            f"x{summary['control_factor']:.3f}; rates {rate_before:.2f} Hz before, "
            f"{summary['rate_bicuculline_onset_hz']:.2f} -> "
            f"{summary['rate_after_hz']:.2f} Hz under bicuculline")
    return summary


def _snap_w(spec, params, state):
    from experiments._common import weights

    return weights(spec, params, state)


def _trace(base, act, ttx, wash, B, T, K) -> dict:
    """Mean a and rate sensor over cells against time in default-model hours."""
    def hours(t, t0, scale):
        return (t0 + t * scale) / MS_PER_H

    out = {}
    for c, (tr_, b) in {"control": (act, 0), "bicuculline": (act, 1),
                        "ttx": (ttx, 0)}.items():
        out[c] = {"t_h": hours(tr_.t, 0.0, K),
                  "a": tr_.records["a"][b].mean(-1), "r": tr_.records["r"][b].mean(-1)}
    out["baseline"] = {"t_h": hours(base.t - B, 0.0, 1.0), "a": base.records["a"].mean(-1),
                       "r": base.records["r"].mean(-1)}
    out["washout"] = {c: {"t_h": hours(wash.t, T * K, 1.0),
                          "r": wash.records["r"][i].mean(-1),
                          "a": wash.records["a"][i].mean(-1)}
                      for i, c in enumerate(CONDITIONS)}
    return out


def _ranked(w0, w_end, wm0, wm1, n: int = 400) -> dict:
    """Ranked weights (before, after) subsampled to `n` points, per condition."""
    def pair(a, b):
        a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
        i = np.linspace(0, a.size - 1, min(n, a.size)).astype(int)
        return [a[i], b[i]]

    out = {c: pair(w0, w_end[c]) for c in CONDITIONS}
    out["ttx_mixed"] = pair(wm0, wm1)
    return out


def checks(s: dict, quick: bool) -> list:
    tf, bf, cv = s["ttx_factor"], s["bicuculline_factor"], s["ttx_ratio_cv"]
    rb, ra, ron = s["rate_before_hz"], s["rate_after_hz"], s["rate_bicuculline_onset_hz"]
    f3 = "{:.3f}"
    f2 = "{:.2f}"
    if quick:
        return [
            check("ttx_factor", tf, "> 1 (TTX scales up)", tf > 1.0, f3),
            check("bicuculline_factor", bf, "< 1 (bicuculline scales down)", bf < 1.0, f3),
            check("ttx_ratio_cv", cv, "<= 0.1 (multiplicative)", cv <= 0.1, f3),
            check("rate_after_hz", ra, f"< rate at bicuculline onset ({ron:.2f} Hz)",
                  ra < ron, f2),
            check("rate_before_hz", rb, "> 0 (spontaneous activity)", rb > 0, f2),
        ]
    back = abs(ra - rb) <= 0.5 * abs(ron - rb)
    return [
        check("ttx_factor", value_se(s, "ttx_factor", f3),
              "1.3-2.0 (Turrigiano 1998: +30 to +100 % [memory])", 1.3 <= tf <= 2.0),
        check("bicuculline_factor", value_se(s, "bicuculline_factor", f3),
              "0.65-0.80 (Turrigiano 1998: -20 to -35 % [memory])",
              0.65 <= bf <= 0.80),
        check("ttx_ratio_cv", cv, "<= 0.1 (ranked amplitudes scale multiplicatively)",
              cv <= 0.1, f3),
        check("ttx_ratio_cv_mixed", s["ttx_ratio_cv_mixed"], "<= 0.1 (the same with "
              "DOWN and UP weights)", s["ttx_ratio_cv_mixed"] <= 0.1, f3),
        check("rate_before_hz", rb, f"0.5-5 Hz, near the set point "
              f"{s['r_target_hz']:g} Hz (cultures fire 0.5-5 Hz, SCIENCE.md 1f)",
              0.5 <= rb <= 5.0, f2),
        check("rate_after_hz", ra, f"back toward rate_before: |after - before| <= half "
              f"of |onset - before| (bicuculline onset {ron:.2f} Hz)", back, f2),
        check("control_factor", value_se(s, "control_factor", f3), "0.9-1.1 (untreated "
              "sister culture unchanged)", 0.9 <= s["control_factor"] <= 1.1),
    ]


def plot(s: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = {"control": "0.3", "ttx": "tab:blue", "bicuculline": "tab:red"}
    tr = s["trace"]
    fig, axs = plt.subplots(2, 2, figsize=(11, 8))
    ax, bx, cx, dx = axs.ravel()
    for c in ("control", "ttx", "bicuculline"):
        ax.plot(tr[c]["t_h"], tr[c]["a"], color=col[c], label=c)
    ax.axhspan(1.3, 2.0, color="tab:blue", alpha=0.1, label="data: TTX 1.3-2x")
    ax.axhspan(0.65, 0.8, color="tab:red", alpha=0.1, label="data: bicuculline 0.65-0.8x")
    ax.set_xlabel(f"treatment time [h of the default model; run {s['speedup']:g}x "
                  "faster]")
    ax.set_ylabel("scaling factor a (mean over cells)")
    ax.set_title("Scaling factor during treatment")
    ax.legend(fontsize=7)
    # population rates in each phase
    phases = ["before", "drug onset", "drug end", "washout"]
    x = np.arange(len(phases))
    for i, c in enumerate(("control", "ttx", "bicuculline")):
        y = np.asarray(s["rates"][c])
        bars = bx.bar(x + (i - 1) * 0.27, y, 0.27, color=col[c], label=c)
        for r_, v in zip(bars, y, strict=True):
            bx.text(r_.get_x() + r_.get_width() / 2, v, f"{v:.1f}", ha="center",
                    va="bottom", fontsize=6)
    bx.axhline(s["r_target_hz"], color="g", lw=0.8, ls=":", label="set point")
    bx.set_xticks(x, phases)
    bx.set_ylabel("population rate [Hz]")
    bx.set_title(f"Rates (drug windows: first / last {s['rate_window_s']:g} s of the run)",
                 fontsize=10)
    bx.legend(fontsize=7)
    rk = s["ranked"]
    for c, mk in (("ttx_mixed", "o"), ("ttx", "s"), ("bicuculline", "^"),
                  ("control", ".")):
        b, a = (np.asarray(x) for x in rk[c])
        cx.plot(b, a, mk, ms=3, color=col.get(c, "tab:cyan"),
                label={"ttx_mixed": "TTX, mixed DOWN/UP weights"}.get(c, c))
    lim = [0, max(np.max(np.asarray(rk[c][1])) for c in rk) * 1.05]
    cx.plot(lim, lim, "k:", lw=0.8, label="y = x")
    k = s["ttx_factor_mixed"]
    cx.plot(lim, [k * x for x in lim], color="tab:cyan", lw=0.6,
            label=f"y = {k:.2f} x")
    cx.set_xlabel("ranked weight before [g_leak]")
    cx.set_ylabel("ranked weight after [g_leak]")
    cx.set_title(f"Ranked amplitudes (CV of ratios: TTX {s['ttx_ratio_cv']:.1e}, "
                 f"mixed {s['ttx_ratio_cv_mixed']:.1e})", fontsize=9)
    cx.legend(fontsize=7)
    if "factor_hist" in s:
        for c, (h, e) in s["factor_hist"].items():
            e = np.asarray(e)
            dx.stairs(h, e, color=col[c], label=c)
        dx.set_ylabel("cells")
    else:
        fa = s["factors"]
        for i, c in enumerate(("control", "ttx", "bicuculline")):
            y = np.asarray(fa[c])
            dx.plot(np.full(y.size, i) + np.linspace(-0.2, 0.2, y.size), y, "o",
                    color=col[c], ms=4)
        dx.set_xticks([0, 1, 2], ["control", "TTX", "bicuculline"])
        dx.set_ylabel("scaling factor (after / before)")
    dx.axhline(1, color="k", lw=0.5)
    dx.set_title("Per-cell scaling factors")
    if "factor_hist" in s:
        dx.set_xlabel("scaling factor (after / before)")
        dx.legend(fontsize=7)
    fig.suptitle(f"Synaptic scaling: {s['treatment_h_equivalent']:g} h TTX / bicuculline "
                 f"(culture, homeostasis {s['speedup']:g}x faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
