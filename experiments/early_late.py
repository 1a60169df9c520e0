"""Early vs late LTP (Frey et al. 1988; Frey & Morris 1997). Pathway S1 of one network
gets, in three batched runs: a weak tetanus (WTET: one train of 21 pulses at 100 Hz); a
strong tetanus (STET: 3 trains of 100 pulses at 100 Hz, 10 min apart; SCIENCE.md section
3.7, TagTriC protocol table); or the STET under anisomycin (protein synthesis blocked
from 30 min before to 3 h after the first train). S1's fEPSP proxy (summed weight) is
followed for 8 h after the first train, relative to 1 s before it, with 0.1 Hz
spontaneous input and no test pulses (the proxy is read without stimulating). A value
checked against its band is this pooled change ± its standard error over neurons
(jackknife: the change recomputed with each neuron left out).

Expected: WTET gives early LTP that is back to baseline (<= +10 %) by 3 h; STET gives
late LTP >= +30 % at 8 h; under anisomycin the early LTP is intact at 1 h (>= +30 % and
at least 70 % of the control STET potentiation) and gone (<= +10 %) at 8 h (Frey et al.
1988: +15 +- 19 % vs +96 +- 14 % at 8 h).

The three conditions share the network and the noise; they differ only in the protocol
and the anisomycin window (`lt.stack_params`). The control pathway S2 is followed too
(in the figure and in `control_pct`), not subtracted from the values checked. Quiet
stretches run on the coarse clock of `experiments._common.run_timeline`
(`coarse_dt_ms`, 1 ms); the stimuli at the spec's dt.
"""

from __future__ import annotations

import numpy as np

import ltpnet as lt
from experiments import ExperimentError
from experiments._common import (
    MS_PER_H,
    check,
    distribution,
    pathway_weights,
    pct,
    pooled_change_se,
    run_timeline,
    with_se,
)

DEFAULTS = {
    "baseline_ms": 1_800_000.0,  # quiet time before the (first) tetanus
    "duration_ms": 28_800_000.0,  # followed after the first tetanus
    "freq_hz": 100.0,  # tetanus frequency
    "wtet_pulses": 21,
    "stet_pulses": 100,
    "stet_trains": 3,
    "stet_interval_ms": 600_000.0,
    "anisomycin_before_ms": 1_800_000.0,  # drug on this long before the first train
    "anisomycin_after_ms": 10_800_000.0,  # ... and off this long after it
    "induced_ms": 1_800_000.0,  # read-out "WTET gave early LTP"
    "early_ms": 3_600_000.0,  # read-out "E-LTP intact" (anisomycin)
    "decay_ms": 10_800_000.0,  # read-out "WTET back to baseline"
    "coarse_dt_ms": 1.0,  # time step of quiet stretches
    "coarse_record_ms": 60_000.0,  # record interval of quiet stretches
}

SUMMARY_KEYS = ("time_h", "wtet_pct", "stet_pct", "stet_anisomycin_pct")
CONDITIONS = ("wtet", "stet", "stet_anisomycin")


def positive(exp: dict, *keys, integer=False):
    """ExperimentError naming the key unless every `exp[key]` is > 0."""
    for k in keys:
        v = exp[k]
        if not (np.isfinite(v) and v > 0):
            kind = "a positive integer" if integer else "> 0"
            raise ExperimentError(
                f"[experiment] {k} must be {kind}, got {k}={v!r}")


def check_anisomycin(exp: dict):
    """ExperimentError unless the drug window's `anisomycin_before_ms` and
    `anisomycin_after_ms` are >= 0."""
    for k in ("anisomycin_before_ms", "anisomycin_after_ms"):
        if exp[k] < 0:
            raise ExperimentError(
                f"[experiment] {k} must be >= 0 ms, got {k}={exp[k]}")


def anisomycin(p: lt.Params, at: float, exp: dict) -> lt.Params:
    """`p` with protein synthesis blocked from `anisomycin_before_ms` before `at` to
    `anisomycin_after_ms` after it."""
    return p.with_values("pharmacology", anisomycin_on=at - exp["anisomycin_before_ms"],
                         anisomycin_off=at + exp["anisomycin_after_ms"])


def check_clock(exp: dict):
    """ExperimentError unless the coarse clock fits run_timeline (10-ms slow step)."""
    cdt = exp["coarse_dt_ms"]
    positive(exp, "coarse_dt_ms", "coarse_record_ms")
    if cdt > 10.0 or abs(10.0 / cdt - round(10.0 / cdt)) > 1e-9:
        raise ExperimentError(
            f"[experiment] coarse_dt_ms must divide 10 ms (e.g. 1, 2, 5 "
            f"or 10 ms), got coarse_dt_ms={cdt}")
    n = exp["coarse_record_ms"] / 1000.0
    if abs(n - round(n)) > 1e-9:
        raise ExperimentError(
            f"[experiment] coarse_record_ms must be a whole number of "
            f"seconds, got coarse_record_ms={exp['coarse_record_ms']}")


def clock(exp: dict) -> dict:
    """run_timeline keywords of the coarse clock."""
    return dict(coarse_dt=exp["coarse_dt_ms"], coarse_slow_ms=10.0,
                coarse_record_ms=exp["coarse_record_ms"])


def stet(pathway: str, at: float, exp: dict) -> lt.Protocol:
    return lt.Protocol().tetanus(pathway, at, exp["freq_hz"], exp["stet_pulses"],
                                 trains=exp["stet_trains"],
                                 interval=exp["stet_interval_ms"])


def wtet(pathway: str, at: float, exp: dict) -> lt.Protocol:
    return lt.Protocol().train(pathway, at, exp["freq_hz"], exp["wtet_pulses"])


def check_baseline(exp: dict):
    """ExperimentError unless the baseline, read 1 s before, fits in baseline_ms."""
    if exp["baseline_ms"] < 2000.0:
        raise ExperimentError(
            f"[experiment] baseline_ms must be >= 2 s (the baseline is "
            f"read 1 s before the first stimulus), got baseline_ms="
            f"{exp['baseline_ms']}")


def check_stet(exp: dict):
    """ExperimentError unless the trains of the STET fit in their interval."""
    if exp["stet_pulses"] * 1000.0 / exp["freq_hz"] >= exp["stet_interval_ms"]:
        raise ExperimentError(
            f"[experiment] stet_interval_ms={exp['stet_interval_ms']} "
            f"must exceed one train ({exp['stet_pulses']} pulses at "
            f"{exp['freq_hz']} Hz)")


def validate(spec: lt.ModelSpec, params: lt.Params, exp: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    positive(exp, "duration_ms", "freq_hz", "wtet_pulses", "stet_pulses",
             "stet_trains", "stet_interval_ms", "induced_ms", "early_ms", "decay_ms")
    check_clock(exp)
    check_baseline(exp)
    check_stet(exp)
    check_anisomycin(exp)
    if exp["anisomycin_before_ms"] > exp["baseline_ms"]:
        raise ExperimentError(
            f"[experiment] anisomycin_before_ms="
            f"{exp['anisomycin_before_ms']} must not exceed baseline_ms="
            f"{exp['baseline_ms']}")
    for k in ("induced_ms", "early_ms", "decay_ms"):
        if exp[k] > exp["duration_ms"]:
            raise ExperimentError(
                f"[experiment] {k}={exp[k]} must not exceed duration_ms="
                f"{exp['duration_ms']}")


def readouts(exp: dict) -> dict:
    """Read-out label -> time after the first tetanus [ms]."""
    return {"induced": exp["induced_ms"], "early": exp["early_ms"],
            "decay": exp["decay_ms"], "late": exp["duration_ms"]}


def per_neuron(spec, tr, t_base: float, times: dict, pathway: str, names):
    """`({name_label: distribution}, {name: {label: se}})`: the per-neuron change of
    `pathway` [%], and the standard error over neurons of its pooled change (the
    summed weight of all neurons, as the fEPSP proxy reads it)."""
    i = spec.pathway_index(pathway)
    base = pathway_weights(spec, tr.conn, tr.snapshots[_grid(t_base)]["w"])[..., i]
    out, se = {}, {name: {} for name in names}
    for label, t in times.items():
        x = pathway_weights(spec, tr.conn, tr.snapshots[_grid(t)]["w"])[..., i]
        rel = pct(x / base)
        for b, name in enumerate(names):
            out[f"{name}_{label}"] = distribution(rel[b])
            se[name][label] = pooled_change_se(base[b], x[b])
    return out, se


def fmt_h(h: float) -> str:
    """A time in hours as "30 min" or "8 h"."""
    return f"{h * 60:.3g} min" if h < 1 else f"{h:.3g} h"


def _grid(t: float, g: float = 1000.0) -> float:
    """Snapshot key of time `t` (run_timeline puts snapshots on the record grid)."""
    return float(np.ceil(round(t / g, 6)) * g)


def run(ctx) -> dict:
    exp, spec = ctx.exp, ctx.spec
    t0 = exp["baseline_ms"]
    t_base = t0 - 1000.0
    end = t0 + exp["duration_ms"]
    p = ctx.params
    params, axes = lt.stack_params([p, p, anisomycin(p, t0, exp)])
    prots = [wtet("S1", t0, exp), stet("S1", t0, exp), stet("S1", t0, exp)]
    times = {k: t0 + v for k, v in readouts(exp).items()}
    ctx.log(f"{spec.n_post} neurons x {spec.k} synapses, {len(CONDITIONS)} conditions, "
            f"{end / MS_PER_H:.1f} h")
    tr = run_timeline(spec, params, end, prots, seed=ctx.seed, batch=3,
                      params_axes=axes, variables=("fepsp", "p"),
                      snapshots=(t_base, *times.values()), log=ctx.log, **clock(exp))
    ctx.log(f"time line: {tr.wall_s:.0f} s, {len(tr.stretches)} stretches")
    f1 = pct(tr.fepsp(spec, "S1", t_base))
    f2 = pct(tr.fepsp(spec, "S2", t_base))
    keep = tr.t >= t0 - 10 * 60_000.0
    th = (tr.t[keep] - t0) / MS_PER_H
    out = {"time_h": th.round(5).tolist(),
           "readout_h": {k: v / MS_PER_H for k, v in readouts(exp).items()},
           "anisomycin_h": [-exp["anisomycin_before_ms"] / MS_PER_H,
                            exp["anisomycin_after_ms"] / MS_PER_H],
           "at": {}, "control_pct": {}, "protein": {}}
    for b, name in enumerate(CONDITIONS):
        out[f"{name}_pct"] = f1[b, keep].round(3).tolist()
        out["control_pct"][name] = f2[b, keep].round(3).tolist()
        out["protein"][name] = tr.records["p"][b][keep].mean(-1).round(4).tolist()
        out["at"][name] = {k: float(tr.at(f1[b], t)) for k, t in times.items()}
    out["at"]["control"] = {k: float(tr.at(f2[1], t)) for k, t in times.items()}
    out["neurons"], out["se"] = per_neuron(spec, tr, t_base, times, "S1", CONDITIONS)
    out["wall_timeline_s"] = round(tr.wall_s, 1)
    return out


def checks(summary: dict, quick: bool) -> list:
    a, h = summary["at"], summary["readout_h"]
    w, s, n = a["wtet"], a["stet"], a["stet_anisomycin"]
    i, e, d, late = (fmt_h(h[k]) for k in ("induced", "early", "decay", "late"))
    if quick:
        return [
            check(f"wtet_pct ({i})", w["induced"], "> 0 (early LTP)", w["induced"] > 0),
            check(f"wtet_pct ({late})", w["late"], f"< wtet_pct ({i}) (decays)",
                  w["late"] < w["induced"]),
            check(f"stet_pct ({late})", s["late"], f"> wtet_pct ({late})",
                  s["late"] > w["late"]),
            check(f"stet_anisomycin_pct ({e})", n["early"], "> 0 (early LTP)",
                  n["early"] > 0),
            check(f"stet_anisomycin_pct ({late})", n["late"], f"< stet_pct ({late})",
                  n["late"] < s["late"]),
        ]
    ratio = n["early"] / s["early"] if s["early"] > 0 else float("nan")
    se = summary.get("se", {})

    def value(name, label):
        """The pooled change and, where the summary has it, its standard error."""
        return with_se(a[name][label], se.get(name, {}).get(label))

    return [
        check(f"wtet_pct ({i})", value("wtet", "induced"), ">= +10 (early LTP)",
              w["induced"] >= 10),
        check(f"wtet_pct ({d})", value("wtet", "decay"), "<= +10 (back to baseline)",
              w["decay"] <= 10),
        check(f"stet_pct ({late})", value("stet", "late"), ">= +30 (late LTP)",
              s["late"] >= 30),
        check(f"stet_anisomycin_pct ({e})", value("stet_anisomycin", "early"),
              ">= +30 (early LTP intact)", n["early"] >= 30),
        check(f"anisomycin / STET potentiation ({e})", ratio, ">= 0.70 (intact)",
              ratio >= 0.7, "{:.2f}"),
        check(f"stet_anisomycin_pct ({late})", value("stet_anisomycin", "late"),
              "<= +10 (no late LTP)", n["late"] <= 10),
    ]


def box(ax, x: float, d: dict | None, color, width: float = 0.7) -> int:
    """Draw a `distribution` as a box (25-75 %), whiskers (5-95 %) and median at x;
    returns its n (0 if there is none)."""
    import matplotlib.patches

    if not d or not d.get("n"):
        return 0
    ax.plot([x, x], [d["p5"], d["p95"]], color=color, lw=1)
    ax.add_patch(matplotlib.patches.Rectangle(
        (x - width / 2, d["p25"]), width, d["p75"] - d["p25"], color=color, alpha=0.5))
    ax.plot([x - width / 2, x + width / 2], [d["median"]] * 2, color="k", lw=1.2)
    return d["n"]


def plot(summary: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(summary["time_h"])
    colors = {"wtet": "tab:blue", "stet": "tab:red", "stet_anisomycin": "tab:purple"}
    labels = {"wtet": "WTET (21 pulses, 100 Hz)", "stet": "STET (3 x 100 pulses)",
              "stet_anisomycin": "STET + anisomycin"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6),
                             gridspec_kw={"width_ratios": [2.2, 1, 1.1]})
    ax = axes[0]
    an = summary["anisomycin_h"]
    ax.axvspan(an[0], an[1], color="tab:purple", alpha=0.08, label="anisomycin")
    for name in CONDITIONS:
        ax.plot(t, summary[f"{name}_pct"], color=colors[name], lw=1.6,
                label=labels[name])
    ax.plot(t, summary["control_pct"]["stet"], color="0.4", lw=1, ls="--",
            label="S2 (control pathway)")
    ax.axhline(0, color="k", lw=0.6)
    ax.axhline(30, color="tab:red", lw=0.6, ls=":")
    ax.axhline(10, color="tab:purple", lw=0.6, ls=":")
    ax.set_xlabel("time after the first tetanus [h]")
    ax.set_ylabel("S1 fEPSP proxy (summed weight) [% change]")
    ax.set_title("early vs late LTP")
    ax.legend(fontsize=8, loc="best", framealpha=0.6)
    ax = axes[1]
    for name, ls in zip(CONDITIONS, ("-", "--", "-"), strict=True):
        ax.plot(t, summary["protein"][name], color=colors[name], lw=1.4, ls=ls,
                label=labels[name])
    ax.axvspan(an[0], an[1], color="tab:purple", alpha=0.08)
    ax.set_xlabel("time after the first tetanus [h]")
    ax.set_ylabel("protein p (mean over neurons)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("plasticity-related protein")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[2]
    nd = summary.get("neurons", {})
    h = summary["readout_h"]
    ticks, n = [], 0
    for j, label in enumerate(("induced", "early", "decay", "late")):
        for i, name in enumerate(CONDITIONS):
            n = box(ax, j * 4 + i, nd.get(f"{name}_{label}"), colors[name]) or n
        ticks.append((j * 4 + 1, fmt_h(h[label])))
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks([x for x, _ in ticks], [s for _, s in ticks])
    ax.set_title(f"per neuron (n = {n}): median, 25-75 %, 5-95 %", fontsize=10)
    ax.set_ylabel("S1 summed weight per neuron [% change]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
