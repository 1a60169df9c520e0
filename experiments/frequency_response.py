"""Frequency-response function (Dudek & Bear 1992): 900 pulses to pathway S1 at 0.5, 1, 3, 5, 10, 20, 50 or 100 Hz, no postsynaptic current injection, cells at rest; the fEPSP proxy of S1 (its summed weight) is measured 30 min after the end of the train, relative to just before it. Each value is given ± its standard error over cells (jackknife).

Preparation: the hippocampal default parameters (`ltpnet.Params()`), a CA1 slice.
Every frequency is one member of a single vmapped batch (same network, same
seed); all trains start together after a baseline, so each condition is read at its
own end + `after_ms`. The unstimulated background pathway `bg` is the control.
Expected (SCIENCE.md 2a): LTD largest at 1-3 Hz (about -20 %), no change near 10 Hz,
LTP at 50 Hz (about +10 to +20 %); the values are recalled from the figure, so each
band is the recalled value +-10 %.
"""

from __future__ import annotations

import math

import numpy as np

import ltpnet as lt
from experiments import ExperimentError
from experiments import _common as cm

DEFAULTS = {
    "pathway": "S1",             # the stimulated pathway
    "control": "bg",             # an unstimulated pathway (heterosynaptic control)
    "freqs_hz": [0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0],
    "n_pulses": 900,
    "baseline_ms": 10_000.0,     # before the trains
    "after_ms": 1_800_000.0,     # read-out this long after the end of each train
}
SUMMARY_KEYS = ("frequency_hz", "change_pct")

# SCIENCE.md 2a, recalled band of each frequency [%], widened by +-10 % when checked
BANDS = {0.5: (-10.0, -5.0), 1.0: (-20.0, -20.0), 3.0: (-20.0, -15.0),
         5.0: (-10.0, -5.0), 10.0: (0.0, 0.0), 50.0: (10.0, 20.0)}
TOL = 10.0


def validate(spec: lt.ModelSpec, params: lt.Params, exp: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    for key in ("pathway", "control"):
        if exp[key] not in spec.pathway_names:
            raise ExperimentError(f"[experiment] {key} must be one of the pathways "
                             f"{list(spec.pathway_names)}, got {key}={exp[key]!r}")
    if exp["pathway"] == exp["control"]:
        raise ExperimentError(f"[experiment] control must differ from pathway, got both "
                         f"{exp['pathway']!r}")
    max_f = 1000.0 / (2 * spec.dt)
    bad = [f for f in exp["freqs_hz"] if not 0 < f <= max_f]
    if bad:
        raise ExperimentError(f"[experiment] freqs_hz must be > 0 Hz and at most "
                         f"{max_f:g} Hz (two steps of dt={spec.dt} ms per period), "
                         f"got freqs_hz={exp['freqs_hz']} (bad: {bad})")
    if exp["n_pulses"] < 1:
        raise ExperimentError(f"[experiment] n_pulses must be >= 1, got n_pulses="
                         f"{exp['n_pulses']}")
    if exp["baseline_ms"] < 2_000.0:
        raise ExperimentError(f"[experiment] baseline_ms must be >= 2 s (the reference is "
                         f"read 1 s before the trains), got baseline_ms="
                         f"{exp['baseline_ms']} ms")
    if exp["after_ms"] <= 0:
        raise ExperimentError(f"[experiment] after_ms must be > 0 ms, got after_ms="
                         f"{exp['after_ms']} ms")


def sweep(ctx, protocols, ends, *, params=None, params_axes=None,
          record_ms: float = 1000.0):
    """Run one member per protocol; read pathway and control at `ends + after_ms`.

    Returns a dict with the change of the stimulated and the control pathway per
    member [%], the per-neuron changes `(B, n_post)`, the change with each neuron
    left out `loo` `(B, n_post)` and its jackknife standard error `se` `(B,)`, and
    downsampled time courses.
    Shared by the sweeps of frequency_response, stdp and voltage_clamp_pairing.
    """
    spec, exp = ctx.spec, ctx.exp
    params = ctx.params if params is None else params
    t_base = exp["baseline_ms"] - record_ms
    t_read = [e + exp["after_ms"] for e in ends]
    duration = max(t_read) + record_ms
    B = len(protocols)
    ctx.log(f"{B} conditions x {spec.n_post} neurons x {spec.k} synapses, "
            f"{duration / cm.MS_PER_MIN:.1f} min of model time")
    tr = cm.run_timeline(spec, params, duration, list(protocols), seed=ctx.seed,
                         batch=B, params_axes=params_axes, record_ms=record_ms,
                         snapshots=(t_base, *t_read),
                         log=lambda m: None)
    ctx.log(f"ran in {tr.wall_s:.0f} s")
    snaps = tr.snapshots
    key = lambda t: math.ceil(round(t / record_ms, 6)) * record_ms  # noqa: E731
    ip, ic = spec.pathway_index(exp["pathway"]), spec.pathway_index(exp["control"])
    pw0 = cm.pathway_weights(spec, tr.conn, snaps[key(t_base)]["w"])  # (B, n, P)
    change, control, per_neuron, loo = [], [], [], []
    for b, t in enumerate(t_read):
        pw1 = cm.pathway_weights(spec, tr.conn, snaps[key(t)]["w"][b])  # (n, P)
        change.append(cm.pct(pw1[:, ip].sum() / pw0[b, :, ip].sum()))
        loo.append(cm.pooled_change_loo(pw0[b, :, ip], pw1[:, ip]))
        control.append(cm.pct(pw1[:, ic].sum() / pw0[b, :, ic].sum()))
        with np.errstate(invalid="ignore", divide="ignore"):
            per_neuron.append(cm.pct(pw1[:, ip] / pw0[b, :, ip]))
    # time courses, relative to the reference, on a grid of at most ~240 points
    f = tr.fepsp(spec, exp["pathway"], t_base)
    keep = np.unique(np.linspace(0, len(tr.t) - 1, 240).round().astype(int))
    return {
        "change": np.asarray(change), "control": np.asarray(control),
        "per_neuron": np.asarray(per_neuron),
        "loo": np.asarray(loo), "se": np.atleast_1d(cm.jackknife_se(np.asarray(loo))),
        "t_min": (tr.t[keep] - exp["baseline_ms"]) / cm.MS_PER_MIN,
        "trace_pct": cm.pct(f[:, keep]),
        "wall_s": tr.wall_s,
    }


def crossover(freqs, change) -> float | None:
    """First frequency [Hz] where the curve crosses from LTD to LTP (log-interpolated)."""
    f, c = np.asarray(freqs, float), np.asarray(change, float)
    order = np.argsort(f)
    f, c = f[order], c[order]
    for i in range(len(f) - 1):
        if c[i] < 0 <= c[i + 1]:
            lf = np.log(f[i]) + (np.log(f[i + 1]) - np.log(f[i])) * (-c[i]) / (c[i + 1] - c[i])
            return float(np.exp(lf))
    return None


def run(ctx) -> dict:
    exp = ctx.exp
    freqs = [float(f) for f in exp["freqs_hz"]]
    t0, n = exp["baseline_ms"], exp["n_pulses"]
    prots = [lt.Protocol().train(exp["pathway"], t0, f, n) for f in freqs]
    ends = [p.end() for p in prots]
    res = sweep(ctx, prots, ends)
    out = {
        "frequency_hz": freqs,
        "change_pct": res["change"].round(2).tolist(),
        "change_se_pct": cm.finite_or_none(res["se"]),
        "control_change_pct": res["control"].round(2).tolist(),
        "crossover_hz": crossover(freqs, res["change"]),
        "n_pulses": n,
        "read_after_min": exp["after_ms"] / cm.MS_PER_MIN,
        "train_end_min": [(e - t0) / cm.MS_PER_MIN for e in ends],
        "time_min": res["t_min"].round(3).tolist(),
        "trace_pct": res["trace_pct"].round(2).tolist(),
    }
    if ctx.neurons is not None:
        out["neurons"] = {"change_pct": [cm.distribution(x) for x in res["per_neuron"]]}
    return out


def checks(summary: dict, quick: bool) -> list:
    f = np.asarray(summary["frequency_hz"], float)
    c = np.asarray(summary["change_pct"], float)
    at = {float(x): float(y) for x, y in zip(f, c, strict=True)}
    se = dict(zip(f.tolist(), cm.se_list(summary, "change_se_pct", len(f)), strict=True))
    out = []
    if quick:
        lo, hi = f.min(), f.max()
        out.append(cm.check(f"change_pct @ {lo:g} Hz", at[lo], "< 0 (LTD)", at[lo] < 0))
        out.append(cm.check(f"change_pct @ {hi:g} Hz", at[hi], "> 0 (LTP)", at[hi] > 0))
        return out
    for fr, (a, b) in BANDS.items():
        if fr in at:
            band = f"{a:+.0f} %" if a == b else f"{a:+.0f} to {b:+.0f} %"
            out.append(cm.check(f"change_pct @ {fr:g} Hz", cm.with_se(at[fr], se[fr]),
                                f"≈ {band} (±{TOL:.0f}: {a - TOL:+.0f} to {b + TOL:+.0f})",
                                a - TOL <= at[fr] <= b + TOL))
    i = int(np.argmin(c))
    out.append(cm.check("frequency of largest LTD [Hz]", f[i], "1 to 3 Hz",
                        1.0 <= f[i] <= 3.0, "{:g}"))
    out.append(cm.check("largest LTD [%]", cm.with_se(c[i], se[f[i]]),
                        "≈ -20 % (-30 to -10)",
                        -30.0 <= c[i] <= -10.0))
    x = summary.get("crossover_hz")
    out.append(cm.check("crossover_hz", "none" if x is None else f"{x:.1f}",
                        "near 10 Hz (5 to 20)", x is not None and 5.0 <= x <= 20.0))
    if 100.0 in at:
        out.append(cm.check("change_pct @ 100 Hz", cm.with_se(at[100.0], se[100.0]),
                            "> 0 (LTP)", at[100.0] > 0))
    return out


def plot(summary: dict, path) -> None:
    plt, fig, ax, bx, f, c, ctl, order = cm.sweep_figure(summary, "frequency_hz")
    for fr, (a, b) in BANDS.items():
        ax.fill_between([fr / 1.25, fr * 1.25], a - TOL, b + TOL, color="0.85", lw=0,
                        label="Dudek & Bear 1992 band (±10 %)" if fr == 0.5 else None)
        ax.plot([fr / 1.25, fr * 1.25], [(a + b) / 2] * 2, color="0.45", lw=1.5)
    ax.axhline(0, color="k", lw=0.8)
    cm.sweep_curve(ax, f, c, summary, order, f"ltpnet, {summary['n_pulses']} pulses")
    ax.plot(f[order], ctl[order], "s--", color="C0", ms=4, lw=1,
            label="unstimulated control pathway")
    cm.quartile_band(ax, f, summary, order)
    ax.set_xscale("log")
    ax.set_xticks(f[order])
    ax.set_xticklabels([f"{x:g}" for x in f[order]])
    ax.set_xlabel("stimulation frequency [Hz]")
    ax.set_ylabel(f"fEPSP proxy {summary['read_after_min']:g} min after [% change]")
    ax.set_title("Frequency-response function")
    ax.legend(fontsize=8, loc="upper left")
    t = np.asarray(summary["time_min"])
    tr = np.asarray(summary["trace_pct"])
    cmap = plt.get_cmap("viridis")
    for j, i in enumerate(order):
        col = cmap(j / max(len(order) - 1, 1))
        bx.plot(t, tr[i], color=col, lw=1.3, label=f"{f[i]:g} Hz")
        bx.axvspan(0, summary["train_end_min"][i], color=col, alpha=0.06, lw=0)
        tread = summary["train_end_min"][i] + summary["read_after_min"]
        bx.plot([tread], [c[i]], "o", color=col, ms=5)
    bx.axhline(0, color="k", lw=0.8)
    bx.set_xlabel("time from the start of the train [min]")
    bx.set_ylabel("fEPSP proxy of the stimulated pathway [% change]")
    bx.set_title("Time courses (shading: train; dot: read-out)")
    bx.legend(fontsize=7, ncol=2)
    cm.save_figure(fig, path)
