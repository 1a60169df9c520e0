"""LFS LTD and depotentiation (Dudek & Bear 1992; Mulkey & Malenka 1992).
Values checked against a band carry ± their standard error over cells (jackknife).

Two-pathway CA1 slice, test pulses on S1 and S2 throughout. S1 gets 900 pulses at
1 Hz (15 min) 30 min after the end of a 10-minute baseline, and is followed for
60 min after the end of the LFS. Four conditions of the same network run as one
vmapped batch: (1) naive S1; (2) S1 potentiated by a 100 Hz, 1 s tetanus 30 min
before the LFS (depotentiation); (3) naive S1 with APV (full NMDA-receptor block)
from 5 min before to 5 min after the LFS; (4) the tetanus without LFS, the
reference of the potentiated pathway. Expected: naive -15...-30 % at 60 min, the
potentiated pathway back towards its pre-tetanus baseline, APV 0 +- 5 %.

Changes of naive S1 are relative to its mean over the 10 min before the LFS; the
potentiated S1 (`depotentiation_pct`) is read against its mean over the baseline
before the tetanus. Per-neuron changes (from weight snapshots) are reported as
distributions over neurons under "neurons".
"""

from __future__ import annotations

import numpy as np

import ltpnet as lt
from experiments import _common as cm
from experiments.hfs_ltp import (
    MIN,
    band,
    change_pct,
    check_common,
    course,
    need,
    neuron_change,
    neuron_panel,
    probe,
    timeline,
)

DEFAULTS = {
    "baseline_ms": 600_000.0,  # baseline before the tetanus (condition 2, 4)
    "gap_ms": 1_800_000.0,  # tetanus -> LFS
    "after_ms": 3_600_000.0,  # follow-up after the end of the LFS; changes read here
    "lfs_freq_hz": 1.0,
    "lfs_pulses": 900,
    "freq_hz": 100.0,  # tetanus frequency
    "n_pulses": 100,  # tetanus pulses
    "test_every_ms": 60_000.0,  # test-pulse period on each pathway
    "apv_before_ms": 300_000.0,  # APV from this long before the LFS...
    "apv_after_ms": 300_000.0,  # ...to this long after its end
    "apv": 1.0,
}
SUMMARY_KEYS = ("change_pct_60min", "depotentiation_pct", "apv_change_pct_60min")
CONDITIONS = ("naive LFS", "tetanus, then LFS", "naive LFS + APV", "tetanus only")


def validate(spec: lt.ModelSpec, params: lt.Params, e: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    check_common(e)
    need(e, "lfs_freq_hz", 0 < e["lfs_freq_hz"] <= 50, "in (0, 50] Hz")
    need(e, "lfs_pulses", e["lfs_pulses"] >= 1, "a positive number of pulses")
    tet_len = e["n_pulses"] * 1000.0 / e["freq_hz"]
    need(e, "gap_ms", e["gap_ms"] > tet_len + 5000.0,
         f"longer than the tetanus plus 5 s ({(tet_len + 5000.0) / 1000:g} s)")
    need(e, "apv_before_ms", 0 <= e["apv_before_ms"] < e["gap_ms"] - tet_len,
         "a time >= 0 that ends after the tetanus (shorter than gap_ms)")
    need(e, "apv_after_ms", e["apv_after_ms"] >= 0, "a time >= 0")
    for name in ("S1", "S2"):
        spec.pathway_index(name)


def run(ctx) -> dict:
    e, spec = ctx.exp, ctx.spec
    tet_len = e["n_pulses"] * 1000.0 / e["freq_hz"]
    t_tet = e["baseline_ms"]
    t_lfs = t_tet + e["gap_ms"]
    lfs_len = (e["lfs_pulses"] - 1) * 1000.0 / e["lfs_freq_hz"]
    t_lfs_end = t_lfs + lfs_len
    t_end = t_lfs_end + e["after_ms"]
    skip = [(t_tet - 2000.0, t_tet + tet_len + 2000.0)]
    # test pulses pause during the LFS: on S2 they would coincide with LFS pulses on
    # S1, and two pathways at once fire the cells (pairing LTP of S2)
    base = probe(lt.Protocol(), ("S1", "S2"), e["test_every_ms"], t_end,
                 skip=skip + [(t_lfs - 2000.0, t_lfs_end + 2000.0)])
    lfs = lambda p: p.train("S1", t_lfs, e["lfs_freq_hz"], e["lfs_pulses"])  # noqa: E731
    tet = lambda p: p.tetanus("S1", t_tet, e["freq_hz"], e["n_pulses"])  # noqa: E731
    prots = [lfs(base), lfs(tet(base)), lfs(base), tet(base)]
    apv = ctx.params.with_values(
        "pharmacology", apv=e["apv"], apv_on=t_lfs - e["apv_before_ms"],
        apv_off=t_lfs_end + e["apv_after_ms"])
    params, axes = lt.stack_params([ctx.params, ctx.params, apv, ctx.params])
    snaps = {"pre_tet": t_tet - 1000.0, "pre_lfs": t_lfs - 1000.0,
             "lfs_end": t_lfs_end + 3000.0, "end": t_end}
    ctx.log(f"{spec.n_post} neurons x {spec.k} synapses, {len(prots)} conditions "
            f"batched; {t_end / MIN:.0f} min of biological time")
    tr = timeline(ctx, spec, params, t_end, prots, tuple(snaps.values()),
                  batch=len(prots), params_axes=axes)
    base_tet = (0.0, t_tet - 100.0)
    base_lfs = (max(t_lfs - 10 * MIN, t_tet + tet_len + 5000.0), t_lfs - 100.0)
    naive = change_pct(tr, spec, "S1", base_lfs, t_end)  # members 0, 2
    pot = change_pct(tr, spec, "S1", base_tet, t_end)  # members 1, 3
    pre_lfs = change_pct(tr, spec, "S1", base_tet, t_lfs - 1000.0)
    s2 = change_pct(tr, spec, "S2", base_tet, t_end)
    # per neuron: naive and APV from just before the LFS, potentiated from pre-tetanus
    per_lfs, se_lfs = neuron_change(tr, spec, "S1", snaps["pre_lfs"], t_end)
    per_tet, se_tet = neuron_change(tr, spec, "S1", snaps["pre_tet"], t_end)
    ltp_only = float(pot[3])
    depot = float(pot[1])
    t_min, c_tet = course(tr, spec, "S1", base_tet, t_lfs)
    _, c_lfs = course(tr, spec, "S1", base_lfs, t_lfs)
    _, c_s2 = course(tr, spec, "S2", base_tet, t_lfs)
    return {
        "change_pct_60min": float(naive[0]),
        "depotentiation_pct": depot,
        "apv_change_pct_60min": float(naive[2]),
        "ltp_only_pct": ltp_only,
        "potentiated_before_lfs_pct": float(pre_lfs[1]),
        "reversal_pct": (100.0 * (ltp_only - depot) / ltp_only if ltp_only > 0
                         else float("nan")),
        "s2_change_pct": [float(x) for x in s2],
        "se": {"change_pct_60min": float(se_lfs[0]),
               "depotentiation_pct": float(se_tet[1]),
               "apv_change_pct_60min": float(se_lfs[2])},
        "measured_at_min": e["after_ms"] / MIN,
        "lfs_min": [0.0, lfs_len / MIN],
        "tetanus_min": -e["gap_ms"] / MIN,
        "apv_window_min": [-e["apv_before_ms"] / MIN,
                           (lfs_len + e["apv_after_ms"]) / MIN],
        "conditions": list(CONDITIONS),
        "course": {"t_min": t_min,
                   "S1": [c_lfs[0], c_tet[1], c_lfs[2], c_tet[3]],
                   "S2": c_s2[0]},
        "neurons": {
            "change_pct_60min": cm.distribution(per_lfs[0]),
            "depotentiation_pct": cm.distribution(per_tet[1]),
            "apv_change_pct_60min": cm.distribution(per_lfs[2]),
            "ltp_only_pct": cm.distribution(per_tet[3]),
        },
        "per_neuron": {"naive": per_lfs[0], "depotentiated": per_tet[1],
                       "apv": per_lfs[2], "ltp_only": per_tet[3]},
        "timeline_wall_s": round(tr.wall_s, 1),
    }


def checks(s: dict, quick: bool) -> list:
    c, d, a = s["change_pct_60min"], s["depotentiation_pct"], s["apv_change_pct_60min"]
    pre, ltp = s["potentiated_before_lfs_pct"], s["ltp_only_pct"]
    if quick:
        return [
            cm.check("change_pct_60min", c, "< 0 (LTD; quick run)", c < 0),
            cm.check("depotentiation_pct", d,
                     f"below the tetanus-only pathway ({ltp:+.1f} %)", d < ltp),
            cm.check("apv_change_pct_60min", a, "above half the LTD (APV blocks LTD)",
                     a > c / 2),
        ]
    return [
        cm.check("change_pct_60min", cm.value_se(s, "change_pct_60min"), "-30 ... -15 %",
                 band(c, -30, -15)),
        cm.check("depotentiation_pct", cm.value_se(s, "depotentiation_pct"),
                 f"back towards baseline: -30 % ... half the tetanus-only change "
                 f"({ltp:+.1f} %; {pre:+.1f} % before LFS)", band(d, -30, ltp / 2)),
        cm.check("apv_change_pct_60min", cm.value_se(s, "apv_change_pct_60min"),
                 "0 +- 5 %", band(a, -5, 5)),
    ]


def plot(s: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.9),
                           gridspec_kw={"width_ratios": [2, 1]})
    t = np.asarray(s["course"]["t_min"])
    s1 = np.asarray(s["course"]["S1"])
    colors = ("k", "tab:purple", "tab:orange", "tab:green")
    ax[0].axvspan(*s["lfs_min"], color="tab:blue", alpha=0.12, label="1 Hz LFS on S1")
    ax[0].axvspan(*s["apv_window_min"], ymax=0.05, color="tab:orange", alpha=0.5,
                  label="APV (APV run)")
    ax[0].axhspan(-30, -15, color="tab:blue", alpha=0.07, label="expected naive LTD")
    for i, (lab, col) in enumerate(zip(s["conditions"], colors, strict=True)):
        ax[0].plot(t, s1[i], color=col, label=f"S1, {lab}")
    ax[0].plot(t, s["course"]["S2"], color="0.6", ls="--",
               label="S2 (test pulses only)")
    ax[0].axvline(s["tetanus_min"], color="tab:red", lw=0.8)
    ax[0].annotate(" 100 Hz, 1 s", (s["tetanus_min"], ax[0].get_ylim()[1]),
                   color="tab:red", fontsize=8, va="top")
    ax[0].axhline(0, color="0.5", lw=0.8)
    ax[0].set(xlabel="time from LFS onset [min]", ylabel="fEPSP proxy change [%]",
              title=f"LFS: naive {s['change_pct_60min']:+.1f} %, potentiated "
                    f"{s['depotentiation_pct']:+.1f} % (tetanus only "
                    f"{s['ltp_only_pct']:+.1f} %), APV "
                    f"{s['apv_change_pct_60min']:+.1f} %",
              )
    ax[0].title.set_fontsize(9)
    ax[0].legend(fontsize=7, loc="lower left")
    p = s["per_neuron"]
    neuron_panel(ax[1], {"naive": p["naive"], "potentiated + LFS": p["depotentiated"],
                       "APV": p["apv"], "tetanus only": p["ltp_only"]},
               f"per-neuron change {s['measured_at_min']:g} min after LFS [%]")
    ax[1].set_title("distribution over neurons", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
