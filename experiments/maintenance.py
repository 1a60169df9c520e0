"""Maintenance of late LTP (SCIENCE.md section 3.10). After a 30-min baseline, pathway
S1 gets a strong tetanus (STET: 3 trains of 100 pulses at 100 Hz, 10 min apart); then
both pathways S1 and S2 get single test pulses at 0.05 Hz (every 20 s, S2 10 s after
S1) for 24 h, on top of 0.1 Hz spontaneous (Poisson) input to every synapse, the noise.
S1's fEPSP proxy (summed weight) is read 1 h and 24 h after the first train, relative
to 1 s before it.

Expected: the late LTP is held: >= +30 % at 24 h, and at least half of the potentiation
at 1 h (UP-state synapses stay potentiated; early-only LTP would have decayed with tau
of 1-3 h). The control pathway S2 gets the same test pulses and noise without the STET.

Numerics: the tetanus runs at the fine step of the spec (from 1 s before each train to
3 s after it); everything else, test pulses included, runs at `coarse_dt_ms` (1 ms) with
a 10-ms slow clock. Test pulses every 10 s (two pathways) leave no quiet stretch for
`experiments._common.run_timeline` to coarsen, and fine steps all day would take about
5 times longer. With exponential calcium, the calcium of a pulse does not depend on dt;
the time above the thresholds is sampled once per step. Per-neuron read-outs
(`--neurons N`) every `snapshot_every_ms`.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

import ltpnet as lt
from experiments import ExperimentError
from experiments._common import (
    MS_PER_H,
    _shift_windows,
    check,
    distribution,
    pathway_weights,
    pct,
    pooled_change_se,
    value_se,
    weights,
)
from experiments.early_late import (
    box,
    check_baseline,
    check_clock,
    check_stet,
    fmt_h,
    positive,
    stet,
)

DEFAULTS = {
    "baseline_ms": 1_800_000.0,  # test pulses before the first train
    "duration_ms": 86_400_000.0,  # followed after the first train
    "test_every_ms": 20_000.0,  # test-pulse period of each pathway (0.05 Hz)
    "freq_hz": 100.0,
    "stet_pulses": 100,
    "stet_trains": 3,
    "stet_interval_ms": 600_000.0,
    "early_ms": 3_600_000.0,  # first read-out after the first train
    "snapshot_every_ms": 7_200_000.0,  # per-neuron read-outs
    "coarse_dt_ms": 1.0,  # time step outside the tetanus
    "coarse_record_ms": 60_000.0,
}

SUMMARY_KEYS = ("pct_at_1h", "pct_at_24h")


def validate(spec: lt.ModelSpec, params: lt.Params, exp: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    positive(exp, "duration_ms", "test_every_ms", "freq_hz", "stet_pulses",
             "stet_trains", "stet_interval_ms", "early_ms", "snapshot_every_ms")
    check_clock(exp)
    check_baseline(exp)
    check_stet(exp)
    if exp["early_ms"] >= exp["duration_ms"]:
        raise ExperimentError(
            f"[experiment] early_ms={exp['early_ms']} must be shorter "
            f"than duration_ms={exp['duration_ms']}")
    if exp["test_every_ms"] < 2 * exp["coarse_dt_ms"]:
        raise ExperimentError(
            f"[experiment] test_every_ms={exp['test_every_ms']} must be "
            f"at least two coarse steps (coarse_dt_ms="
            f"{exp['coarse_dt_ms']})")
    for k in ("baseline_ms", "stet_interval_ms"):
        if abs(exp[k] / 1000.0 - round(exp[k] / 1000.0)) > 1e-9:
            raise ExperimentError(
                f"[experiment] {k} must be a whole number of seconds, "
                f"got {k}={exp[k]}")


def segments(exp: dict, t0: float, end: float, cuts=()) -> list:
    """`(start, end, kind)` on a 1-s grid: "fine" from 1 s before each train to 3 s
    after it; "coarse" elsewhere, cut at `cuts` (snapshot times)."""
    out, t = [], 0.0
    train = exp["stet_pulses"] * 1000.0 / exp["freq_hz"]
    fine = []
    for i in range(exp["stet_trains"]):
        a = np.floor((t0 + i * exp["stet_interval_ms"] - 1000.0) / 1000.0) * 1000.0
        b = np.ceil((a + 1000.0 + train + 3000.0) / 1000.0) * 1000.0
        fine.append((float(a), float(b)))
    for a, b in fine + [(end, end)]:
        inner = sorted(c for c in cuts if t < c < a)
        for x, y in zip([t, *inner], [*inner, a], strict=True):
            if y > x:
                out.append((x, y, "coarse"))
        if b > a:
            out.append((a, b, "fine"))
        t = max(t, b)
    return out


def test_pulses(exp: dict, t0: float, t1: float) -> lt.Protocol:
    """Test pulses of S1 (at half a period) and S2 (at whole periods) in [t0, t1),
    shifted by t0."""
    every = exp["test_every_ms"]
    prot = lt.Protocol()
    for name, phase in (("S1", 0.5 * every), ("S2", every)):
        k0 = max(np.floor((t0 - phase) / every), 0)
        ts = phase + every * np.arange(k0, np.ceil((t1 - phase) / every) + 1)
        ts = ts[(ts >= t0) & (ts < t1)] - t0
        if ts.size:
            prot = prot.add_pulses(name, ts)
    return prot


def run(ctx) -> dict:
    exp, spec = ctx.exp, ctx.spec
    t0 = exp["baseline_ms"]
    t_base, t_early, end = t0 - 1000.0, t0 + exp["early_ms"], t0 + exp["duration_ms"]
    g = exp["coarse_record_ms"]
    cspec = dataclasses.replace(spec, dt=float(exp["coarse_dt_ms"]),
                                slow_every=round(10.0 / exp["coarse_dt_ms"]))
    n_snap = int(exp["duration_ms"] // exp["snapshot_every_ms"])
    sec = lambda t: float(np.ceil(round(t / 1000.0, 6)) * 1000.0)  # noqa: E731
    snap_t = sorted({t_base, sec(t_early), sec(end),
                     *(sec(t0 + (i + 1) * exp["snapshot_every_ms"])
                       for i in range(n_snap))})
    end = snap_t[-1]
    strong = stet("S1", t0, exp)
    ctx.log(f"{spec.n_post} neurons x {spec.k} synapses, {end / MS_PER_H:.1f} h, test "
            f"pulses every {exp['test_every_ms'] / 1000:g} s per pathway")
    conn = state = None
    ts, recs, snaps, j = [], [], {}, 0
    t_wall = time.perf_counter()

    def advance(sp, a, b, every_ms, prot):
        nonlocal conn, state, j
        res = lt.simulate(sp, _shift_windows(ctx.params, a), b - a, seed=ctx.seed,
                          noise_seed=ctx.seed + 7919 * j, protocol=prot,
                          observe=lt.Observe(every=round(every_ms / sp.dt),
                                             variables=("fepsp", "p")),
                          records_per_chunk=1, conn=conn, state=state)
        conn, state, j = res.conn, res.state, j + 1
        ts.append(res.t + a)
        recs.append(res.records)

    for a, b, kind in segments(exp, t0, end, cuts=snap_t):
        if kind == "fine":  # the tetanus, no test pulses
            sh = [(n, tuple(t - a for t in times if a <= t < b))
                  for n, times in strong.pulses]
            advance(spec, a, b, 1000.0,
                    lt.Protocol(pulses=tuple((n, x) for n, x in sh if x)))
        else:
            bulk = a + np.floor(round((b - a) / g, 6)) * g
            if bulk > a:
                advance(cspec, a, bulk, g, test_pulses(exp, a, bulk))
            if b > bulk:
                advance(cspec, bulk, b, 1000.0, test_pulses(exp, bulk, b))
        if b in snap_t:
            snaps[b] = pathway_weights(spec, conn, weights(spec, ctx.params, state))
        ctx.log(f"{b / MS_PER_H:6.2f} h of {end / MS_PER_H:.2f} ({kind}, "
                f"{time.perf_counter() - t_wall:.0f} s)")
    wall = time.perf_counter() - t_wall
    t = np.concatenate(ts)
    fe = np.concatenate([r["fepsp"] for r in recs])
    prot_p = np.concatenate([r["p"] for r in recs]).mean(-1)

    def at(t_ms):
        return max(int(np.searchsorted(t, t_ms + 1e-6, side="right")) - 1, 0)

    i1, i2 = spec.pathway_index("S1"), spec.pathway_index("S2")
    ib = at(t_base)
    f1 = pct(fe[:, i1] / fe[ib, i1])
    f2 = pct(fe[:, i2] / fe[ib, i2])
    keep = t >= t0 - 10 * 60_000.0
    out = {"time_h": ((t[keep] - t0) / MS_PER_H).round(5).tolist(),
           "s1_pct": f1[keep].round(3).tolist(), "s2_pct": f2[keep].round(3).tolist(),
           "protein": prot_p[keep].round(4).tolist(),
           "early_h": exp["early_ms"] / MS_PER_H,
           "late_h": exp["duration_ms"] / MS_PER_H,
           "pct_at_1h": float(f1[at(t_early)]), "pct_at_24h": float(f1[at(end)]),
           "control_at_1h": float(f2[at(t_early)]),
           "control_at_24h": float(f2[at(end)])}
    base = snaps[t_base]
    out["se"] = {key: pooled_change_se(base[:, i1], snaps[t][:, i1])
                 for key, t in (("pct_at_1h", sec(t_early)), ("pct_at_24h", end))}
    out["neurons"], out["neuron_times_h"] = {}, []
    for s in snap_t:
        if s <= t0:
            continue
        rel = pct(snaps[s] / base)
        h = (s - t0) / MS_PER_H
        lab = fmt_h(h).replace(" ", "")
        out["neuron_times_h"].append(h)
        out["neurons"][f"s1_pct_{lab}"] = distribution(rel[:, i1])
        out["neurons"][f"s2_pct_{lab}"] = distribution(rel[:, i2])
    z = np.asarray(state.syn.z)
    lab = np.asarray(conn.pre_pathway)[np.asarray(conn.pre_idx)]
    out["late_fraction_end"] = {
        name: float((z[lab == spec.pathway_index(name)] > 0.5).mean())
        for name in ("S1", "S2", "bg")}
    out["wall_timeline_s"] = round(wall, 1)
    return out


def checks(summary: dict, quick: bool) -> list:
    e, late = fmt_h(summary["early_h"]), fmt_h(summary["late_h"])
    a, b = summary["pct_at_1h"], summary["pct_at_24h"]
    if quick:
        return [check(f"pct_at_1h ({e})", a, "> 0 (LTP)", a > 0),
                check(f"pct_at_24h ({late})", b, "> 0 (held)", b > 0)]
    frac = b / a if a > 0 else float("nan")
    return [check(f"pct_at_1h ({e})", value_se(summary, "pct_at_1h"), ">= +30 (LTP)",
                  a >= 30),
            check(f"pct_at_24h ({late})", value_se(summary, "pct_at_24h"),
                  ">= +30 (late LTP held)", b >= 30),
            check("pct_at_24h / pct_at_1h", frac, ">= 0.50 (held)", frac >= 0.5,
                  "{:.2f}")]


def plot(summary: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(summary["time_h"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6),
                             gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    ax.plot(t, summary["s1_pct"], color="tab:red", lw=1.4, label="S1 (STET at 0 h)")
    ax.plot(t, summary["s2_pct"], color="0.4", lw=1.2, label="S2 (control pathway)")
    ax.axhline(0, color="k", lw=0.6)
    ax.axhline(30, color="tab:red", lw=0.6, ls=":", label="+30 %")
    ax.set_xlabel("time after the first tetanus [h]")
    ax.set_ylabel("fEPSP proxy (summed weight) [% change]")
    ax.set_title("late LTP under 0.05 Hz test pulses and 0.1 Hz noise")
    ax2 = ax.twinx()
    ax2.plot(t, summary["protein"], color="tab:green", lw=0.8, alpha=0.6)
    ax2.set_ylabel("protein p (mean over neurons)", color="tab:green")
    ax2.set_ylim(-0.02, 1.5)
    ax.legend(fontsize=8, loc="upper right", framealpha=0.6)
    ax = axes[1]
    nd = summary.get("neurons", {})
    th = summary.get("neuron_times_h", [])
    n = 0
    for i, h in enumerate(th):
        lab = fmt_h(h).replace(" ", "")
        for dx, name, c in ((-0.2, "s1", "tab:red"), (0.2, "s2", "0.4")):
            n = box(ax, i + dx, nd.get(f"{name}_pct_{lab}"), c, width=0.3) or n
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(range(len(th)), [fmt_h(h) for h in th], fontsize=8)
    ax.set_title(f"per neuron (n = {n}): S1 red, S2 grey", fontsize=10)
    ax.set_ylabel("summed weight per neuron [% change]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
