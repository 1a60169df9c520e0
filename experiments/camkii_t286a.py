"""CaMKII T286A knock-in: HFS gives short-term potentiation only (Giese et al. 1998).
Values checked against a band carry ± their standard error over cells (jackknife).

Two-pathway CA1 slice, test pulses on S1 and S2; after a 10-minute baseline S1 gets
one tetanus of 100 pulses at 100 Hz (1 s) and is followed for 60 min. The same
network and noise run twice: wild type, and T286A (`spec.t286a`: the efficacy switch
cannot latch and relaxes to the late state with tau_t286a = 10 min). The mutation is
a spec flag, so the genotypes are two runs rather than one batch. Expected: both
potentiate at first; at 60 min the wild type keeps its LTP and T286A is back at
baseline (0 +- 5 %).

Changes are relative to each genotype's mean fEPSP proxy over the baseline;
per-neuron changes (from weight snapshots) are reported as distributions over
neurons under "neurons".
"""

from __future__ import annotations

import dataclasses

import numpy as np

import ltpnet as lt
from experiments import ExperimentError
from experiments import _common as cm
from experiments.hfs_ltp import (
    MIN,
    band,
    change_pct,
    check_common,
    course,
    neuron_change,
    neuron_panel,
    probe,
    timeline,
)

DEFAULTS = {
    "baseline_ms": 600_000.0,
    "after_ms": 3_600_000.0,  # follow-up; the late change is read here
    "early_ms": 300_000.0,  # the short-term change is read this long after the tetanus
    "freq_hz": 100.0,
    "n_pulses": 100,
    "test_every_ms": 60_000.0,
}
SUMMARY_KEYS = ("wt_pct_5min", "wt_pct_60min", "t286a_pct_5min", "t286a_pct_60min")
GENOTYPES = ("wt", "t286a")


def validate(spec: lt.ModelSpec, params: lt.Params, e: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    check_common(e)
    tet_len = e["n_pulses"] * 1000.0 / e["freq_hz"]
    if not tet_len + 2000.0 <= e["early_ms"] < e["after_ms"]:
        raise ExperimentError(f"[experiment] early_ms must lie between the end of the "
                              f"tetanus (+2 s) and after_ms = {e['after_ms'] / MIN:g} "
                              f"min, got early_ms={e['early_ms'] / MIN:g} min")
    if spec.t286a:
        raise ExperimentError("[spec] t286a must be false: the experiment runs both "
                              "genotypes, got t286a=True")


def run(ctx) -> dict:
    e = ctx.exp
    tet_len = e["n_pulses"] * 1000.0 / e["freq_hz"]
    t_tet = e["baseline_ms"]
    t_end = t_tet + e["after_ms"]
    prot = lt.Protocol().tetanus("S1", t_tet, e["freq_hz"], e["n_pulses"])
    prot = probe(prot, ("S1", "S2"), e["test_every_ms"], t_end,
                 skip=[(t_tet - 2000.0, t_tet + tet_len + 2000.0)])
    t_base = t_tet - 1000.0
    t_early = t_tet + e["early_ms"]
    base = (0.0, t_tet - 100.0)
    out = {"measured_at_min": [e["early_ms"] / MIN, e["after_ms"] / MIN],
           "course": {}, "neurons": {}, "per_neuron": {}, "s2_pct_60min": {}, "se": {}}
    for g in GENOTYPES:
        spec = dataclasses.replace(ctx.spec, t286a=(g == "t286a")).check()
        ctx.log(f"{g}: {spec.n_post} neurons x {spec.k} synapses, "
                f"{t_end / MIN:.0f} min of biological time")
        tr = timeline(ctx, spec, ctx.params, t_end, prot, (t_base, t_early, t_end))
        out[f"{g}_pct_5min"] = float(change_pct(tr, spec, "S1", base, t_early))
        out[f"{g}_pct_60min"] = float(change_pct(tr, spec, "S1", base, t_end))
        out["s2_pct_60min"][g] = float(change_pct(tr, spec, "S2", base, t_end))
        t_min, c1 = course(tr, spec, "S1", base, t_tet)
        out["course"]["t_min"] = t_min
        out["course"][g] = c1
        for lab, t in (("5min", t_early), ("60min", t_end)):
            per, se = neuron_change(tr, spec, "S1", t_base, t)
            out["neurons"][f"{g}_pct_{lab}"] = cm.distribution(per)
            out["per_neuron"][f"{g}_pct_{lab}"] = per
            out["se"][f"{g}_pct_{lab}"] = float(se)
        out[f"{g}_wall_s"] = round(tr.wall_s, 1)
    return out


def checks(s: dict, quick: bool) -> list:
    w5, w60 = s["wt_pct_5min"], s["wt_pct_60min"]
    m5, m60 = s["t286a_pct_5min"], s["t286a_pct_60min"]
    e, late = (f"{x:g} min" for x in s["measured_at_min"])
    if quick:
        return [
            cm.check("wt_pct_5min", w5, f"> 0 (at {e})", w5 > 0),
            cm.check("wt_pct_60min", w60, f"> 0 (quick run, at {late})", w60 > 0),
            cm.check("t286a_pct_5min", m5, f"> 0 (short-term potentiation, at {e})",
                     m5 > 0),
            cm.check("t286a_pct_60min", m60, f"below the T286A change at {e} and the "
                     f"wild type at {late} (decaying)", m60 < m5 and m60 < w60),
        ]
    return [
        cm.check("wt_pct_5min", cm.value_se(s, "wt_pct_5min"), "> +30 % (potentiated)",
                 w5 > 30),
        cm.check("wt_pct_60min", cm.value_se(s, "wt_pct_60min"),
                 "+30 ... +60 % (LTP, as in hfs_ltp)", band(w60, 30, 60)),
        cm.check("t286a_pct_5min", cm.value_se(s, "t286a_pct_5min"),
                 "> +10 % (short-term potentiation)", m5 > 10),
        cm.check("t286a_pct_60min", cm.value_se(s, "t286a_pct_60min"),
                 "0 +- 5 % (no LTP)", band(m60, -5, 5)),
    ]


def plot(s: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8),
                           gridspec_kw={"width_ratios": [2, 1]})
    t = np.asarray(s["course"]["t_min"])
    e, late = s["measured_at_min"]
    ax[0].plot(t, s["course"]["wt"], color="k", label="wild type")
    ax[0].plot(t, s["course"]["t286a"], color="tab:red", label="CaMKII T286A")
    ax[0].axhspan(-5, 5, xmin=0.85, color="tab:red", alpha=0.12,
                  label="expected T286A, late")
    for x in (e, late):
        ax[0].axvline(x, color="0.7", lw=0.8, ls=":")
    ax[0].axvline(0, color="tab:blue", lw=0.8)
    ax[0].annotate(" 100 Hz, 1 s", (0, ax[0].get_ylim()[1]), color="tab:blue",
                   fontsize=8, va="top")
    ax[0].axhline(0, color="0.5", lw=0.8)
    ax[0].set(xlabel="time from tetanus [min]", ylabel="S1 fEPSP proxy change [%]",
              title=f"WT {s['wt_pct_5min']:+.0f} % / {s['wt_pct_60min']:+.0f} %, T286A "
                    f"{s['t286a_pct_5min']:+.0f} % / {s['t286a_pct_60min']:+.0f} % "
                    f"at {e:g} / {late:g} min")
    ax[0].legend(fontsize=8)
    p = s["per_neuron"]
    neuron_panel(ax[1], {f"WT {late:g} min": p["wt_pct_60min"],
                       f"T286A {e:g} min": p["t286a_pct_5min"],
                       f"T286A {late:g} min": p["t286a_pct_60min"]},
               "per-neuron S1 change [%]")
    ax[1].set_title("distribution over neurons", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
