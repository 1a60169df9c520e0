"""Input specificity of HFS LTP: the tetanised pathway potentiates, the other does not.
Values checked against a band carry ± their standard error over cells (jackknife).

The two-pathway CA1 slice of configs/default.toml: S1 and S2 (100 inputs each) and
800 background inputs, all firing spontaneously at 0.1 Hz; each CA1 cell draws its
100 synapses from all three, so S1 and S2 share every cell. Test pulses probe S1
and S2 alternately; after a 5-minute baseline S1 gets one tetanus of 100 pulses at
100 Hz (1 s), and both are followed for 30 min. Expected: S1 potentiated, S2 (test
pulses only) within 0 +- 5 % of its baseline.

The pathway changes are the fEPSP proxies (summed weights) at the end relative to
their baseline means. Per neuron, the summed S1 and S2 weight of each cell at the end
over its value just before the tetanus (weight snapshots) gives the distribution over
neurons under "neurons" (with `--neurons N`, over N cells; at 10^4 cells, 10^6
synapses, shorten the time line with `--set`, see the config).
"""

from __future__ import annotations

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
    neuron_pct,
    probe,
    timeline,
)

DEFAULTS = {
    "baseline_ms": 300_000.0,
    "after_ms": 1_800_000.0,  # follow-up after the tetanus; changes read here
    "freq_hz": 100.0,
    "n_pulses": 100,
    "test_every_ms": 60_000.0,  # test-pulse period on each pathway
}
SUMMARY_KEYS = ("s1_change_pct", "s2_change_pct")


def validate(spec: lt.ModelSpec, params: lt.Params, e: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    check_common(e)
    for name in ("S1", "S2"):
        spec.pathway_index(name)
    tet_len = e["n_pulses"] * 1000.0 / e["freq_hz"]
    if e["after_ms"] < tet_len + 5000.0:
        raise ExperimentError(
            f"[experiment] after_ms must cover the tetanus and 5 s more "
            f"({(tet_len + 5000.0) / 1000:g} s), got after_ms="
            f"{e['after_ms'] / 1000:g} s")


def run(ctx) -> dict:
    e, spec = ctx.exp, ctx.spec
    tet_len = e["n_pulses"] * 1000.0 / e["freq_hz"]
    t_tet = e["baseline_ms"]
    t_end = t_tet + e["after_ms"]
    prot = lt.Protocol().tetanus("S1", t_tet, e["freq_hz"], e["n_pulses"])
    prot = probe(prot, ("S1", "S2"), e["test_every_ms"], t_end,
                 skip=[(t_tet - 2000.0, t_tet + tet_len + 2000.0)])
    t_base = t_tet - 1000.0
    t_post = t_tet + tet_len + 5000.0  # just after the tetanus
    snaps = sorted({t_base, t_post, t_end})
    ctx.log(f"{spec.n_post} neurons x {spec.k} synapses ({spec.n_syn:.2g}); "
            f"{t_end / MIN:g} min of biological time")
    tr = timeline(ctx, spec, ctx.params, t_end, prot, snaps)
    base = (0.0, t_tet - 100.0)
    change = {p: neuron_change(tr, spec, p, t_base, t_end) for p in ("S1", "S2")}
    per = {p: c[0] for p, c in change.items()}
    per["bg"] = neuron_pct(tr, spec, "bg", t_base, t_end)
    per_post = {p: neuron_pct(tr, spec, p, t_base, t_post) for p in ("S1", "S2")}
    t_min, c1 = course(tr, spec, "S1", base, t_tet)
    _, c2 = course(tr, spec, "S2", base, t_tet)
    _, cb = course(tr, spec, "bg", base, t_tet)
    s2 = per["S2"]
    lab = np.asarray(tr.conn.pre_pathway)[np.asarray(tr.conn.pre_idx)]
    n_syn_s2 = (lab == spec.pathway_index("S2")).sum(-1)
    dur = np.asarray([r[1] - r[0] for r in tr.rates])
    rate = float(np.sum([np.mean(r[2]) for r in tr.rates] * dur) / dur.sum())
    return {
        "s1_change_pct": float(change_pct(tr, spec, "S1", base, t_end)),
        "s2_change_pct": float(change_pct(tr, spec, "S2", base, t_end)),
        "bg_change_pct": float(change_pct(tr, spec, "bg", base, t_end)),
        "s1_just_after_pct": float(change_pct(tr, spec, "S1", base, t_post)),
        "s2_just_after_pct": float(change_pct(tr, spec, "S2", base, t_post)),
        "measured_at_min": e["after_ms"] / MIN,
        "se": {"s1_change_pct": float(change["S1"][1]),
               "s2_change_pct": float(change["S2"][1])},
        "n_post": spec.n_post, "n_syn": spec.n_syn,
        "course": {"t_min": t_min, "S1": c1, "S2": c2, "bg": cb},
        "neurons": {
            "s1_change_pct": cm.distribution(per["S1"]),
            "s2_change_pct": cm.distribution(s2),
            "bg_change_pct": cm.distribution(per["bg"]),
            "s1_just_after_pct": cm.distribution(per_post["S1"]),
            "s2_just_after_pct": cm.distribution(per_post["S2"]),
            # share of cells whose S2 stayed within 5 % of its baseline
            "s2_within_5pct": float(np.mean(np.abs(s2[np.isfinite(s2)]) <= 5.0)),
            "s2_synapses_per_cell": cm.distribution(n_syn_s2),
        },
        "per_neuron": {"S1": np.round(per["S1"], 3), "S2": np.round(s2, 3)},
        "rate_hz": rate,  # mean CA1 firing rate over the run
        "timeline_wall_s": round(tr.wall_s, 1),
    }


def checks(s: dict, quick: bool) -> list:
    s1, s2 = s["s1_change_pct"], s["s2_change_pct"]
    if quick:
        return [cm.check("s1_change_pct", s1, "> 0 (S1 potentiated; quick run)",
                         s1 > 0),
                cm.check("s2_change_pct", s2, "0 +- 5 %", band(s2, -5, 5))]
    return [cm.check("s1_change_pct", cm.value_se(s, "s1_change_pct"),
                     "> +20 % (S1 potentiated)", s1 > 20),
            cm.check("s2_change_pct", cm.value_se(s, "s2_change_pct"), "0 +- 5 %",
                     band(s2, -5, 5))]


def plot(s: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8),
                           gridspec_kw={"width_ratios": [1.6, 1, 1]})
    t = np.asarray(s["course"]["t_min"])
    ax[0].axhspan(-5, 5, color="0.5", alpha=0.12, label="S2 expected: 0 ± 5 %")
    ax[0].plot(t, s["course"]["S1"], color="k", label="S1 (tetanised)")
    ax[0].plot(t, s["course"]["S2"], color="tab:blue", label="S2 (test pulses only)")
    ax[0].plot(t, s["course"]["bg"], color="0.6", ls=":", label="background")
    ax[0].axvline(0, color="tab:red", lw=0.8)
    ax[0].annotate(" 100 Hz, 1 s on S1", (0, ax[0].get_ylim()[1]), color="tab:red",
                   fontsize=8, va="top")
    ax[0].set(xlabel="time from tetanus [min]", ylabel="fEPSP proxy change [%]",
              title=f"S1 {s['s1_change_pct']:+.1f} %, S2 {s['s2_change_pct']:+.2f} % "
                    f"at {s['measured_at_min']:g} min")
    ax[0].legend(fontsize=7, loc="center right")
    p1, p2 = np.asarray(s["per_neuron"]["S1"]), np.asarray(s["per_neuron"]["S2"])
    neuron_panel(ax[1], {"S1": p1, "S2": p2},
               f"per-neuron change at {s['measured_at_min']:g} min [%]")
    ax[1].set_title(f"{s['n_post']} neurons, {s['n_syn']:.2g} synapses", fontsize=9)
    ok = np.isfinite(p1) & np.isfinite(p2)
    ax[2].scatter(p1[ok], p2[ok], s=4 if ok.sum() > 500 else 12, alpha=0.4,
                  color="tab:blue", rasterized=True)
    ax[2].axhspan(-5, 5, color="0.5", alpha=0.12)
    ax[2].axhline(0, color="0.5", lw=0.8)
    ax[2].set(xlabel="S1 change of the cell [%]", ylabel="S2 change of the cell [%]",
              title=f"per cell; S2 within ±5 %: "
                    f"{100 * s['neurons']['s2_within_5pct']:.0f} % of cells")
    ax[2].title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
