"""HFS LTP and its NMDA-receptor dependence (Bliss & Lomo 1973; Collingridge 1983).
Values checked against a band carry ± their standard error over cells (jackknife).

Two-pathway CA1 slice: after a baseline of test pulses (S1 and S2 alternately,
`test_every_ms` apart on each), S1 gets one tetanus of 100 pulses at 100 Hz (1 s);
test pulses go on for 60 min. The same network runs twice as one vmapped batch: in
control ACSF, and with APV (full NMDA-receptor block) from 5 min before to 10 min
after the tetanus. The fEPSP proxy of a pathway (its summed weight) is read
relative to its mean over the baseline; the change of S1 at 60 min is expected at
+30...+60 %, and with APV at 0 +- 5 %.

Per-neuron changes (summed S1 weight of each cell at 60 min over its value just
before the tetanus) are reported as distributions over neurons under "neurons".
The helpers of this module (test pulses, baseline-normalised read-outs) are shared
by `lfs_ltd`, `camkii_t286a` and `input_specificity`.
"""

from __future__ import annotations

import numpy as np

import ltpnet as lt
from experiments import ExperimentError
from experiments import _common as cm

MIN = cm.MS_PER_MIN

DEFAULTS = {
    "baseline_ms": 600_000.0,  # baseline before the tetanus
    "after_ms": 3_600_000.0,  # follow-up after the tetanus; the change is read here
    "freq_hz": 100.0,  # tetanus frequency
    "n_pulses": 100,  # tetanus pulses
    "test_every_ms": 60_000.0,  # test-pulse period on each pathway
    "apv_before_ms": 300_000.0,  # APV applied from this long before the tetanus...
    "apv_after_ms": 600_000.0,  # ...to this long after it
    "apv": 1.0,  # blocked fraction of NMDA receptors under APV
}
SUMMARY_KEYS = ("change_pct_60min", "apv_change_pct_60min")

# Fine steps from LEAD before each stimulus to SETTLE after it; records every REC ms
# while stimulating, every COARSE_REC ms in quiet stretches.
TIMELINE = {"record_ms": 200.0, "lead_ms": 200.0, "settle_ms": 1000.0,
            "coarse_record_ms": 10_000.0}
# --quick: one record length for fine and coarse stretches (two compiled chunk shapes
# instead of three: compiling dominates a run of a few minutes)
TIMELINE_QUICK = {"record_ms": 1000.0, "lead_ms": 200.0, "settle_ms": 1000.0,
                  "coarse_record_ms": 1000.0}


# ------------------------------------------------------------------ shared helpers

def need(exp: dict, key: str, ok: bool, allowed: str):
    """ValueError naming `[experiment] key`, its value and what is allowed."""
    if not ok:
        v = exp[key]
        shown = f"{v / MIN:g} min ({v:g} ms)" if key.endswith("_ms") else repr(v)
        raise ExperimentError(
            f"[experiment] {key} must be {allowed}, got {key}={shown}")


def check_common(exp: dict):
    """Checks of the keys the induction experiments share."""
    for k in ("baseline_ms", "after_ms", "test_every_ms"):
        if k in exp:
            need(exp, k, exp[k] > 0, "a positive time")
    if "baseline_ms" in exp and "test_every_ms" in exp:
        need(exp, "baseline_ms", exp["baseline_ms"] >= exp["test_every_ms"],
             f"at least one test-pulse period (test_every_ms = "
             f"{exp['test_every_ms'] / 1000:g} s)")
    if "freq_hz" in exp:
        need(exp, "freq_hz", 0 < exp["freq_hz"] <= 500, "in (0, 500] Hz")
    if "n_pulses" in exp:
        need(exp, "n_pulses", exp["n_pulses"] >= 1, "a positive number of pulses")
    if "apv" in exp:
        need(exp, "apv", 0.0 <= exp["apv"] <= 1.0, "a blocked fraction in [0, 1]")


def probe(prot: lt.Protocol, pathways, every: float, stop: float, skip=(),
          skip_pathway=None) -> lt.Protocol:
    """Test pulses on each of `pathways` every `every` ms until 1 s before `stop`,
    interleaved (pathway i at offset (i + 0.5) every / n); none inside the windows
    `skip` [(a, b), ...], nor on pathway X inside `skip_pathway[X]`."""
    n = len(pathways)
    for i, name in enumerate(pathways):
        ts = np.arange((i + 0.5) * every / n, stop - 1000.0, every)
        win = list(skip) + list((skip_pathway or {}).get(name, ()))
        ts = [t for t in ts if not any(a <= t < b for a, b in win)]
        if ts:
            prot = prot.add_pulses(name, ts)
    return prot


def change_pct(tr: cm.Trace, spec, pathway: str, base: tuple[float, float], t: float):
    """% change of a pathway's fEPSP proxy at `t` from its mean over `base` = [a, b)."""
    f = tr.records["fepsp"][..., spec.pathway_index(pathway)]
    sel = (tr.t > base[0]) & (tr.t <= base[1])
    ref = f[..., sel].mean(-1)
    return cm.pct(tr.at(f, t) / ref)


def course(tr: cm.Trace, spec, pathway: str, base: tuple[float, float], t0: float):
    """`(t_min, pct)` time course of a pathway, time from `t0` in min."""
    f = tr.records["fepsp"][..., spec.pathway_index(pathway)]
    sel = (tr.t > base[0]) & (tr.t <= base[1])
    pct = cm.pct(f / f[..., sel].mean(-1, keepdims=True))
    return ((tr.t - t0) / MIN).tolist(), np.round(pct, 3).tolist()


def _sums(tr: cm.Trace, spec, pathway: str, t_before: float, t_after: float):
    """`(before, after)` `(..., n_post)`: the summed weight of `pathway` per neuron in
    the snapshots at `t_before` and `t_after`."""
    i = spec.pathway_index(pathway)
    return tuple(cm.pathway_weights(spec, tr.conn, _snap(tr.snapshots, t)["w"])[..., i]
                 for t in (t_before, t_after))


def neuron_pct(tr: cm.Trace, spec, pathway: str, t_before: float, t_after: float):
    """Per-neuron % change `(..., n_post)` of the summed weight of `pathway`."""
    return _per_neuron(*_sums(tr, spec, pathway, t_before, t_after))


def _per_neuron(before, after):
    with np.errstate(invalid="ignore", divide="ignore"):
        return cm.pct(after / before)


def neuron_change(tr: cm.Trace, spec, pathway: str, t_before: float, t_after: float):
    """`(per_neuron, se)`: `neuron_pct`, and the standard error over neurons `(...)`
    (one per batch member) of the pooled change of `pathway`'s summed weight from the
    snapshot at `t_before` to the one at `t_after`, by the jackknife (each neuron left
    out once); both from one read of the two snapshots."""
    before, after = _sums(tr, spec, pathway, t_before, t_after)
    return (_per_neuron(before, after),
            cm.jackknife_se(cm.pooled_change_loo(before, after)))


def _snap(snap: dict, t: float):
    key = min(snap, key=lambda s: abs(s - t))
    if abs(key - t) > 1000.0:
        raise KeyError(f"no snapshot at {t} ms (have {sorted(snap)})")
    return snap[key]


def timeline(ctx, spec, params, duration, protocol, snapshots, **kw) -> cm.Trace:
    """`run_timeline` with this module's step plan and a progress line per 5 %."""
    state = {"last": -1}

    def log(msg):
        done, total = msg.split(" min of ")
        frac = float(done) / float(total.split()[0])
        if int(20 * frac) > state["last"]:
            state["last"] = int(20 * frac)
            ctx.log(msg)

    plan = TIMELINE_QUICK if ctx.quick else TIMELINE
    return cm.run_timeline(spec, params, duration, protocol, seed=ctx.seed,
                           snapshots=snapshots, log=log, **{**plan, **kw})


def band(x, lo, hi) -> bool:
    return lo <= x <= hi


def neurons_summary(d: dict) -> dict:
    """`{key: distribution}` over neurons of per-neuron arrays."""
    return {k: cm.distribution(v) for k, v in d.items()}


def neuron_panel(ax, groups: dict, ylabel: str):
    """Per-neuron changes of each group {label: values}: points (up to 1500 per group,
    jittered), a violin when there are enough, and the median."""
    rng = np.random.default_rng(0)
    for i, v in enumerate(groups.values()):
        v = np.asarray(v, float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        if v.size >= 10 and np.ptp(v) > 0:
            parts = ax.violinplot([v], [i], widths=0.8, showextrema=False)
            for body in parts["bodies"]:
                body.set_alpha(0.25)
                body.set_facecolor(f"C{i}")
        pts = v if v.size <= 1500 else rng.choice(v, 1500, replace=False)
        ax.scatter(i + rng.uniform(-0.2, 0.2, pts.size), pts,
                   s=6 if v.size > 200 else 12, alpha=0.5, color=f"C{i}",
                   rasterized=True)
        ax.plot([i - 0.3, i + 0.3], [np.median(v)] * 2, color="k", lw=1.5)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=7, rotation=15)
    ax.set_ylabel(ylabel)


# --------------------------------------------------------------------------- experiment

def validate(spec: lt.ModelSpec, params: lt.Params, e: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    check_common(e)
    need(e, "apv_before_ms", e["apv_before_ms"] >= 0, "a time >= 0")
    need(e, "apv_after_ms", e["apv_after_ms"] > e["n_pulses"] * 1000.0 / e["freq_hz"],
         "longer than the tetanus")
    for name in ("S1", "S2"):
        spec.pathway_index(name)


def run(ctx) -> dict:
    e, spec = ctx.exp, ctx.spec
    t_tet = e["baseline_ms"]
    tet_end = t_tet + e["n_pulses"] * 1000.0 / e["freq_hz"]
    t_end = t_tet + e["after_ms"]
    prot = lt.Protocol().tetanus("S1", t_tet, e["freq_hz"], e["n_pulses"])
    prot = probe(prot, ("S1", "S2"), e["test_every_ms"], t_end,
                 skip=[(t_tet - 2000.0, tet_end + 2000.0)])
    apv = ctx.params.with_values(
        "pharmacology", apv=e["apv"], apv_on=max(t_tet - e["apv_before_ms"], 0.0),
        apv_off=t_tet + e["apv_after_ms"])
    params, axes = lt.stack_params([ctx.params, apv])
    t_base = t_tet - 1000.0  # snapshot just before the tetanus (record grid)
    times = {"1min": t_tet + MIN, "5min": t_tet + 5 * MIN, "30min": t_tet + 30 * MIN,
             "end": t_end}
    times = {k: v for k, v in times.items() if v <= t_end}
    ctx.log(f"{spec.n_post} neurons x {spec.k} synapses, control and APV batched; "
            f"{t_end / MIN:.0f} min of biological time")
    tr = timeline(ctx, spec, params, t_end, prot, (t_base, *times.values()),
                  batch=2, params_axes=axes)
    base = (0.0, t_tet - 100.0)
    s1 = {k: change_pct(tr, spec, "S1", base, t) for k, t in times.items()}
    s2 = {k: change_pct(tr, spec, "S2", base, t) for k, t in times.items()}
    per_s1, se = neuron_change(tr, spec, "S1", t_base, t_end)  # se (2,): control, APV
    per = {"S1": per_s1, "S2": neuron_pct(tr, spec, "S2", t_base, t_end)}
    t_min, c1 = course(tr, spec, "S1", base, t_tet)
    _, c2 = course(tr, spec, "S2", base, t_tet)
    return {
        "change_pct_60min": float(s1["end"][0]),
        "apv_change_pct_60min": float(s1["end"][1]),
        "measured_at_min": e["after_ms"] / MIN,
        "se": {"change_pct_60min": float(se[0]), "apv_change_pct_60min": float(se[1])},
        "s1_pct": {k: [float(x) for x in v] for k, v in s1.items()},
        "s2_pct": {k: [float(x) for x in v] for k, v in s2.items()},
        "conditions": ["control", "APV"],
        "apv_window_min": [-e["apv_before_ms"] / MIN, e["apv_after_ms"] / MIN],
        "course": {"t_min": t_min, "S1": c1, "S2": c2},
        "neurons": {
            "change_pct_60min": cm.distribution(per["S1"][0]),
            "apv_change_pct_60min": cm.distribution(per["S1"][1]),
            "s2_change_pct_60min": cm.distribution(per["S2"][0]),
        },
        "per_neuron": {"S1_control": per["S1"][0], "S1_apv": per["S1"][1],
                       "S2_control": per["S2"][0]},
        "timeline_wall_s": round(tr.wall_s, 1),
    }


def checks(s: dict, quick: bool) -> list:
    c, a = s["change_pct_60min"], s["apv_change_pct_60min"]
    at = f"{s['measured_at_min']:g} min"
    if quick:
        return [cm.check("change_pct_60min", c, f"> 0 (LTP; quick run, at {at})",
                         c > 0),
                cm.check("apv_change_pct_60min", a,
                         "below half the control change (APV blocks LTP)", a < c / 2)]
    return [cm.check("change_pct_60min", cm.value_se(s, "change_pct_60min"),
                     "+30 ... +60 %", band(c, 30, 60)),
            cm.check("apv_change_pct_60min", cm.value_se(s, "apv_change_pct_60min"),
                     "0 +- 5 %", band(a, -5, 5))]


def plot(s: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8),
                           gridspec_kw={"width_ratios": [2, 1]})
    t = np.asarray(s["course"]["t_min"])
    s1, s2 = np.asarray(s["course"]["S1"]), np.asarray(s["course"]["S2"])
    lo, hi = s["apv_window_min"]
    ax[0].axvspan(lo, hi, color="tab:orange", alpha=0.12, label="APV (APV run)")
    ax[0].axhspan(30, 60, color="tab:green", alpha=0.1, label="expected at 60 min")
    ax[0].plot(t, s1[0], color="k", label="S1 (tetanised), control")
    ax[0].plot(t, s1[1], color="tab:orange", label="S1 (tetanised), APV")
    ax[0].plot(t, s2[0], color="0.6", ls="--", label="S2 (test pulses only), control")
    ax[0].axvline(0, color="tab:red", lw=0.8)
    ax[0].annotate("100 Hz, 1 s", (0, ax[0].get_ylim()[1]), color="tab:red",
                   fontsize=8, va="top", ha="left")
    ax[0].axhline(0, color="0.5", lw=0.8)
    ax[0].set(xlabel="time from tetanus [min]", ylabel="fEPSP proxy change [%]",
              title=f"HFS LTP: S1 {s['change_pct_60min']:+.1f} %, with APV "
                    f"{s['apv_change_pct_60min']:+.1f} % at "
                    f"{s['measured_at_min']:g} min")
    ax[0].legend(fontsize=7, loc="center right")
    p = s["per_neuron"]
    neuron_panel(ax[1], {"S1 control": p["S1_control"], "S1 APV": p["S1_apv"],
                       "S2 control": p["S2_control"]},
               f"per-neuron change at {s['measured_at_min']:g} min [%]")
    ax[1].set_title("distribution over neurons", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
