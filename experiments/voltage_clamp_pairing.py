"""Pairing under voltage clamp (Shouval, Bear & Cooper 2002, Fig. 3A): 100 pulses at 1 Hz to pathway S1 while every CA1 cell is clamped at V_c (−70 to −10 mV, from 1 s before the first pulse to 1 s after the last); the S1 fEPSP proxy (summed weight) is measured 30 min after the end of the clamp, relative to just before it. Each value is given ± its standard error over cells (jackknife).

Preparation: the hippocampal default parameters (`ltpnet.Params()`); only the holding
potential `neuron.V_clamp` differs between conditions. Every V_c is one member of a
single vmapped batch (same network, same seed). Under clamp the cells cannot spike,
so the synaptic calcium is NMDA influx through the Mg block at V_c.
Expected (SCIENCE.md 3.6): no change at −70 to −60 mV, LTD at about −55 to −40 mV,
LTP above about −30 mV (the calcium-control hypothesis: the LTD window lies below the
LTP window in voltage).
"""

from __future__ import annotations

import numpy as np

import ltpnet as lt
from experiments import ExperimentError
from experiments import _common as cm
from experiments.frequency_response import sweep

DEFAULTS = {
    "pathway": "S1",
    "control": "bg",
    "clamp_mv": [-70.0, -65.0, -60.0, -55.0, -50.0, -45.0, -40.0, -35.0, -30.0,
                 -25.0, -20.0, -15.0, -10.0],
    "n_pulses": 100,
    "freq_hz": 1.0,
    "clamp_lead_ms": 1000.0,     # clamp on this long before the first pulse
    "clamp_tail_ms": 1000.0,     # and off this long after the last
    "baseline_ms": 10_000.0,
    "after_ms": 1_800_000.0,     # read-out this long after the clamp ends
}
SUMMARY_KEYS = ("clamp_mv", "change_pct")
NONE_BAND = 5.0  # |change| [%] that counts as "no change"


def validate(spec: lt.ModelSpec, params: lt.Params, exp: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    for key in ("pathway", "control"):
        if exp[key] not in spec.pathway_names:
            raise ExperimentError(f"[experiment] {key} must be one of the pathways "
                                  f"{list(spec.pathway_names)}, got {key}={exp[key]!r}")
    bad = [v for v in exp["clamp_mv"] if not -120.0 <= v <= 60.0]
    if bad:
        raise ExperimentError(f"[experiment] clamp_mv must be holding potentials in "
                              f"[-120, 60] mV, got clamp_mv={exp['clamp_mv']} (bad: {bad})")
    if not 0 < exp["freq_hz"] <= 1000.0 / (2 * spec.dt):
        raise ExperimentError(f"[experiment] freq_hz must be > 0 Hz and at most "
                              f"{1000.0 / (2 * spec.dt):g} Hz, got freq_hz={exp['freq_hz']}")
    if exp["n_pulses"] < 1:
        raise ExperimentError(f"[experiment] n_pulses must be >= 1, got n_pulses="
                              f"{exp['n_pulses']}")
    for key in ("clamp_lead_ms", "clamp_tail_ms"):
        if exp[key] < 0:
            raise ExperimentError(f"[experiment] {key} must be >= 0 ms, got {key}="
                                  f"{exp[key]} ms")
    if exp["baseline_ms"] < exp["clamp_lead_ms"] + 2_000.0:
        raise ExperimentError(f"[experiment] baseline_ms must exceed clamp_lead_ms by 2 s "
                              f"(the reference is read before the clamp), got baseline_ms="
                              f"{exp['baseline_ms']} ms, clamp_lead_ms="
                              f"{exp['clamp_lead_ms']} ms")
    if exp["after_ms"] <= 0:
        raise ExperimentError(f"[experiment] after_ms must be > 0 ms, got after_ms="
                              f"{exp['after_ms']} ms")


def run(ctx) -> dict:
    exp = ctx.exp
    vs = [float(v) for v in exp["clamp_mv"]]
    t0 = exp["baseline_ms"]
    prot = lt.Protocol().train(exp["pathway"], t0, exp["freq_hz"], exp["n_pulses"])
    on, off = t0 - exp["clamp_lead_ms"], prot.end() + exp["clamp_tail_ms"]
    base = ctx.params.with_values("pharmacology", clamp_on=on, clamp_off=off)
    # one voltage: nothing differs, and the single member shares every parameter
    params, axes = lt.stack_params([base.with_values("neuron", V_clamp=v) for v in vs])
    # the reference is read before the clamp; the read-out `after_ms` after it ends
    res = sweep(ctx, [prot] * len(vs), [off] * len(vs), params=params, params_axes=axes)
    out = {
        "clamp_mv": vs,
        "change_pct": res["change"].round(2).tolist(),
        "change_se_pct": cm.finite_or_none(res["se"]),
        "control_change_pct": res["control"].round(2).tolist(),
        "n_pulses": exp["n_pulses"], "freq_hz": exp["freq_hz"],
        "clamp_min": [(on - t0) / cm.MS_PER_MIN, (off - t0) / cm.MS_PER_MIN],
        "read_after_min": exp["after_ms"] / cm.MS_PER_MIN,
        "time_min": res["t_min"].round(3).tolist(),
        "trace_pct": res["trace_pct"].round(2).tolist(),
    }
    if ctx.neurons is not None:
        out["neurons"] = {"change_pct": [cm.distribution(x) for x in res["per_neuron"]]}
    return out


def checks(summary: dict, quick: bool) -> list:
    v = np.asarray(summary["clamp_mv"], float)
    c = np.asarray(summary["change_pct"], float)
    se = cm.se_list(summary, "change_se_pct", len(v))
    out = []
    if quick:
        for i in np.argsort(v):
            if v[i] <= -60:
                out.append(cm.check(f"change_pct @ {v[i]:g} mV", c[i],
                                    f"≈ 0 (|change| ≤ {NONE_BAND:g} %)",
                                    abs(c[i]) <= NONE_BAND))
            elif v[i] <= -40:
                out.append(cm.check(f"change_pct @ {v[i]:g} mV", c[i], "< 0 (LTD)", c[i] < 0))
            elif v[i] >= -30:
                out.append(cm.check(f"change_pct @ {v[i]:g} mV", c[i], "> 0 (LTP)", c[i] > 0))
        return out
    rest, ltd, ltp = v <= -60, (v >= -55) & (v <= -40), v >= -30
    if rest.any():
        k = np.flatnonzero(rest)[np.argmax(np.abs(c[rest]))]
        out.append(cm.check(f"|change| at −70…−60 mV (largest, at {v[k]:g} mV)",
                            cm.with_se(c[k], se[k]), f"≈ 0 (within ±{NONE_BAND:g} %)",
                            abs(c[k]) <= NONE_BAND))
    if ltd.any():
        k = np.flatnonzero(ltd)[np.argmax(c[ltd])]
        out.append(cm.check(f"change at −55…−40 mV (least negative, at {v[k]:g} mV)",
                            cm.with_se(c[k], se[k]), "< 0 at every V_c (LTD)", c[k] < 0))
    if ltp.any():
        k = np.flatnonzero(ltp)[np.argmin(c[ltp])]
        out.append(cm.check(f"change above −30 mV (smallest, at {v[k]:g} mV)",
                            cm.with_se(c[k], se[k]), "> 0 at every V_c (LTP)", c[k] > 0))
    i, j = int(np.argmin(c)), int(np.argmax(c))
    out.append(cm.check("V_c of largest LTD < V_c of largest LTP [mV]",
                        f"{v[i]:g} vs {v[j]:g}", "LTD window below the LTP window",
                        c[i] < 0 < c[j] and v[i] < v[j]))
    return out


def plot(summary: dict, path) -> None:
    plt, fig, ax, bx, v, c, ctl, o = cm.sweep_figure(summary, "clamp_mv")
    ax.axvspan(-72, -60, color="0.92", lw=0)
    ax.axvspan(-55, -40, color="C0", alpha=0.12, lw=0)
    ax.axvspan(-30, -8, color="C3", alpha=0.10, lw=0)
    ymax = max(np.abs(np.concatenate([c, ctl])).max() * 1.1, 20)
    for x, txt in ((-66, "expected:\nno change"), (-47.5, "expected:\nLTD"),
                   (-19, "expected:\nLTP")):
        ax.text(x, -0.97 * ymax, txt, ha="center", va="bottom", fontsize=8, color="0.3")
    ax.axhline(0, color="k", lw=0.8)
    cm.sweep_curve(ax, v, c, summary, o,
                   f"ltpnet, {summary['n_pulses']} pulses at {summary['freq_hz']:g} Hz")
    ax.plot(v[o], ctl[o], "s--", color="C0", ms=3, lw=1, label="control pathway (bg)")
    cm.quartile_band(ax, v, summary, o)
    ax.set_ylim(-ymax, ymax)
    ax.set_xlim(-72, -8)
    ax.set_xlabel("holding potential V_c [mV]")
    ax.set_ylabel(f"change {summary['read_after_min']:g} min after the clamp [%]")
    ax.set_title("Pairing under voltage clamp (cf. Shouval et al. 2002, Fig. 3A)")
    ax.legend(fontsize=8, loc="upper left")
    t = np.asarray(summary["time_min"])
    tr = np.asarray(summary["trace_pct"])
    cmap = plt.get_cmap("viridis")
    for j, i in enumerate(o):
        bx.plot(t, tr[i], color=cmap(j / max(len(o) - 1, 1)), lw=1.2,
                label=f"{v[i]:g} mV" if len(o) <= 7 or j % 2 == 0 else None)
    bx.axvspan(*summary["clamp_min"], color="0.9", lw=0)
    bx.axhline(0, color="k", lw=0.8)
    bx.set_xlabel("time from the first pulse [min] (shading: clamp)")
    bx.set_ylabel("fEPSP proxy of the stimulated pathway [% change]")
    bx.set_title("Time courses")
    bx.legend(fontsize=7, ncol=2)
    cm.save_figure(fig, path)
