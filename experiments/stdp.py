"""STDP window (Bi & Poo 1998): 60 pairings at 1 Hz of a pulse to pathway S1 with a spike forced in every CA1 cell Δt later (Δt = t_post − t_pre from −102.3 to +100 ms: a grid and the Δt of Bi & Poo's 45 cells); the S1 fEPSP proxy (summed weight) is measured 30 min after the last pairing, relative to just before the first. Each value is given ± its standard error over cells (jackknife).

Preparation: cultured hippocampal neurons, as Bi & Poo recorded (EPSC amplitude 20-30
min after the pairing). The model is that of the hippocampal defaults
(`ltpnet.Params()`); its calcium, bAP and switch are refitted to Bi & Poo's 45 cells by
`ltpnet fit configs/fit/hippocampal_cultures.toml`, without the slice bound on the
noise of the depression band (the `[calcium]`, `[neuron]` and `[plasticity]` tables
of configs/experiments/stdp.toml; docs/model.md section 7). Every Δt is one member of
a single vmapped batch (same network, same seed). The post spike is forced by current
injection in all cells, so it also pairs the background inputs that happen to fire;
`bg` is the control pathway.
Expected (SCIENCE.md 2b and 3.2): LTP peaking at +5 to +10 ms (+50 to +100 %), LTD at
−5 to −20 ms (−20 to −40 %), no change beyond ±60 ms, and each of Bi & Poo's 8 bins
within two SEM of its mean. A bin's mean depends on where in the bin its cells lie
(the (−10, 0] bin holds LTD at −5 ms and two potentiated cells at −3.4 and −2.4 ms),
so with bins_at = "cells" (the default) every cell's Δt is a member of the sweep and
the model's bin is the mean over the bin's cells, each read at its own Δt.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

import ltpnet as lt
from experiments import ExperimentError
from experiments import _common as cm
from experiments.frequency_response import sweep

DEFAULTS = {
    "pathway": "S1",
    "control": "bg",
    "delta_t": [-100.0, -80.0, -60.0, -40.0, -30.0, -20.0, -15.0, -10.0, -5.0,
              5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 80.0, 100.0],
    "n_pairs": 60,
    "pair_freq_hz": 1.0,
    "baseline_ms": 10_000.0,
    "after_ms": 1_800_000.0,
    "bins_at": "cells",          # "cells": the bins are read at Bi & Poo's cells' Δt
}                                # (added as members); "delta_t": at the members above
BINS_AT = ("cells", "delta_t")
SUMMARY_KEYS = ("dt_ms", "change_pct")

DATA = Path(lt.__file__).resolve().parent / "data" / "bi_poo_1998_binned.csv"
BINS = (-120.0, -40.0, -20.0, -10.0, 0.0, 10.0, 20.0, 40.0, 120.0)


def bi_poo_binned() -> list[dict]:
    """Bi & Poo (1998) binned means: dt_ms, pct, sem_pct, bin (lo, hi]."""
    with open(DATA, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    out = []
    for r, lo, hi in zip(rows, BINS[:-1], BINS[1:], strict=True):
        out.append({"dt_ms": float(r["dt_ms"]), "pct": (float(r["ratio"]) - 1) * 100,
                    "sem_pct": float(r["sem"]) * 100, "bin": (lo, hi)})
    return out


def _bi_poo_points():
    """`(45, 2)` Bi & Poo (1998) points: dt_ms, % change (None if the file is absent)."""
    path = DATA.with_name("bi_poo_1998.csv")
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    return np.array([[float(r["dt_ms"]), (float(r["ratio"]) - 1) * 100] for r in rows])


def cell_dts() -> np.ndarray:
    """The Δt [ms] of Bi & Poo's 45 cells, one per cell (so repeated Δt repeat)."""
    pts = _bi_poo_points()
    if pts is None:
        raise ExperimentError(f"[experiment] bins_at='cells' needs the 45 cells of "
                              f"{DATA.with_name('bi_poo_1998.csv')}, which is missing; "
                              f"set bins_at='delta_t'")
    return pts[:, 0]


def members(exp: dict) -> list[float]:
    """The Δt of the sweep, sorted: `delta_t`, and with bins_at = "cells" every Δt of
    Bi & Poo's cells as well, so that each bin is read where its cells lie."""
    dts = {float(d) for d in exp["delta_t"]}
    if exp["bins_at"] == "cells":
        dts |= {float(d) for d in cell_dts()}
    return sorted(dts)


def validate(spec: lt.ModelSpec, params: lt.Params, exp: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    if exp["bins_at"] not in BINS_AT:
        raise ExperimentError(f"[experiment] bins_at must be one of {list(BINS_AT)}, "
                              f"got bins_at={exp['bins_at']!r}")
    for key in ("pathway", "control"):
        if exp[key] not in spec.pathway_names:
            raise ExperimentError(f"[experiment] {key} must be one of the pathways "
                                  f"{list(spec.pathway_names)}, got {key}={exp[key]!r}")
    f = exp["pair_freq_hz"]
    if not f > 0:
        raise ExperimentError(f"[experiment] pair_freq_hz must be > 0 Hz, got "
                              f"pair_freq_hz={f}")
    period = 1000.0 / f
    bad = [d for d in exp["delta_t"] if not abs(d) < period / 2]
    if bad:
        raise ExperimentError(f"[experiment] delta_t must lie strictly within ±half the pair "
                              f"period ({period / 2:g} ms at pair_freq_hz={f:g}), so each "
                              f"post spike belongs to one pre pulse; got delta_t="
                              f"{exp['delta_t']} (bad: {bad})")
    bad = [d for d in members(exp) if not abs(d) < period / 2]
    if bad:
        raise ExperimentError(f"[experiment] bins_at='cells' adds the Δt of Bi & Poo's "
                              f"cells, and {bad} ms do not lie within ±half the pair "
                              f"period ({period / 2:g} ms at pair_freq_hz={f:g}); "
                              f"set bins_at='delta_t'")
    if exp["n_pairs"] < 1:
        raise ExperimentError(f"[experiment] n_pairs must be >= 1, got n_pairs="
                              f"{exp['n_pairs']}")
    if exp["baseline_ms"] < 2_000.0 + max(0.0, -min(members(exp))):
        raise ExperimentError(f"[experiment] baseline_ms must be >= 2 s (plus the largest "
                              f"negative dt), got baseline_ms={exp['baseline_ms']} ms")
    if exp["after_ms"] <= 0:
        raise ExperimentError(f"[experiment] after_ms must be > 0 ms, got after_ms="
                              f"{exp['after_ms']} ms")


def run(ctx) -> dict:
    exp = ctx.exp
    dts = members(exp)
    cells = cell_dts() if exp["bins_at"] == "cells" else None
    t0 = exp["baseline_ms"]
    prots = [lt.Protocol().pairing(exp["pathway"], t0, exp["pair_freq_hz"],
                                   exp["n_pairs"], d) for d in dts]
    # one read-out time for all: 30 min after the last event of the longest protocol
    ends = [max(p.end() for p in prots)] * len(prots)
    res = sweep(ctx, prots, ends)
    out = {
        "dt_ms": dts,
        "change_pct": res["change"].round(2).tolist(),
        "change_se_pct": cm.finite_or_none(res["se"]),
        "control_change_pct": res["control"].round(2).tolist(),
        "n_pairs": exp["n_pairs"], "pair_freq_hz": exp["pair_freq_hz"],
        "read_after_min": exp["after_ms"] / cm.MS_PER_MIN,
        "time_min": res["t_min"].round(3).tolist(),
        "trace_pct": res["trace_pct"].round(2).tolist(),
        "bi_poo_1998": bi_poo_binned(),
        "bins_at": exp["bins_at"],
    }
    out["bins"] = _binned(dts, res["change"], cells)
    # the bin means recomputed with each neuron left out: their jackknife error
    loo = np.asarray([_binned(dts, x, cells) for x in res["loo"].T],
                     dtype=float)  # (n, bins)
    out["bins_se"] = cm.finite_or_none(cm.jackknife_se(loo.T))
    if ctx.neurons is not None:
        out["neurons"] = {"change_pct": [cm.distribution(x) for x in res["per_neuron"]]}
    return out


def _binned(dts, change, cells=None) -> list:
    """Model mean of each Bi & Poo bin (None where no Δt falls in it): over the
    members' Δt in the bin, or, given `cells` (the cells' Δt, each a member), over
    the cells in the bin, each read at its own Δt: the average the data's bin is."""
    d, c = np.asarray(dts, float), np.asarray(change, float)
    if cells is not None:
        at = {x: i for i, x in enumerate(d.tolist())}
        d = np.asarray(cells, float)
        c = c[[at[float(x)] for x in d]]
    out = []
    for b in bi_poo_binned():
        lo, hi = b["bin"]
        m = (d > lo) & (d <= hi)
        out.append(float(c[m].mean()) if m.any() else None)
    return out


def checks(summary: dict, quick: bool) -> list:
    d = np.asarray(summary["dt_ms"], float)
    c = np.asarray(summary["change_pct"], float)
    se = cm.se_list(summary, "change_se_pct", len(d))
    out = []
    if quick:
        for i in np.argsort(d):
            want = d[i] > 0
            out.append(cm.check(f"change_pct @ {d[i]:+g} ms", c[i],
                                "> 0 (LTP)" if want else "< 0 (LTD)",
                                c[i] > 0 if want else c[i] < 0))
        return out
    pos, neg = d > 0, (d >= -20) & (d <= -5)
    if pos.any():
        i = np.flatnonzero(pos)[np.argmax(c[pos])]
        out.append(cm.check("Δt of largest LTP [ms]", d[i], "+5 to +10 ms",
                            5 <= d[i] <= 10, "{:+g}"))
        out.append(cm.check("largest LTP [%]", cm.with_se(c[i], se[i]), "+50 to +100 %",
                            50 <= c[i] <= 100))
    if neg.any():
        m = np.flatnonzero(neg)[np.argmax(c[neg])]
        out.append(cm.check("change_pct, Δt in −20…−5 ms (least negative)",
                            cm.with_se(c[m], se[m]), "< 0 at every Δt (LTD)", c[m] < 0))
        j = np.flatnonzero(neg)[np.argmin(c[neg])]
        out.append(cm.check("largest LTD in −20…−5 ms [%]", cm.with_se(c[j], se[j]),
                            "−20 to −40 %", -40 <= c[j] <= -20))
    far = np.abs(d) >= 60
    if far.any():
        k = np.flatnonzero(far)[np.argmax(np.abs(c[far]))]
        out.append(cm.check(f"|change| for |Δt| ≥ 60 ms (largest, at {d[k]:+g} ms)",
                            cm.with_se(c[k], se[k]), "≈ 0 (within ±10 %)", abs(c[k]) <= 10))
    bins_se = cm.se_list(summary, "bins_se", len(summary["bins"]))
    at = " (at the cells' Δt)" if summary.get("bins_at") == "cells" else ""
    for b, m, e in zip(summary["bi_poo_1998"], summary["bins"], bins_se, strict=True):
        if m is None:
            continue
        lo, hi = b["bin"]
        out.append(cm.check(f"bin ({lo:g}, {hi:g}] ms mean{at}", cm.with_se(m, e),
                            f"{b['pct']:+.1f} ± 2×{b['sem_pct']:.1f} (Bi & Poo)",
                            abs(m - b["pct"]) <= 2 * b["sem_pct"]))
    return out


def plot(summary: dict, path) -> None:
    plt, fig, ax, bx, d, c, ctl, o = cm.sweep_figure(summary, "dt_ms")
    bp = summary["bi_poo_1998"]
    pts = _bi_poo_points()
    if pts is not None:
        ax.plot(pts[:, 0], pts[:, 1], "o", mfc="none", color="0.55", ms=4,
                label="Bi & Poo 1998, the 45 cells")
    ax.errorbar([b["dt_ms"] for b in bp], [b["pct"] for b in bp],
                yerr=[b["sem_pct"] for b in bp], fmt="s", color="k", ms=5, capsize=3,
                label="Bi & Poo 1998, binned mean ± SEM")
    x = np.linspace(-100, 100, 401)
    fit = np.where(x > 0, 78 * np.exp(-x / 15.6), -22.6 * np.exp(x / 42.3))
    ax.plot(x[x > 0], fit[x > 0], color="0.6", lw=1, label="exponential fit to the data")
    ax.plot(x[x < 0], fit[x < 0], color="0.6", lw=1)
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(0, color="k", lw=0.5, ls=":")
    cm.sweep_curve(ax, d, c, summary, o,
                   f"ltpnet, {summary['n_pairs']} pairs at {summary['pair_freq_hz']:g} Hz")
    ax.plot(d[o], ctl[o], "s--", color="C0", ms=3, lw=1, label="control pathway (bg)")
    cm.quartile_band(ax, d, summary, o)
    ax.set_xlabel("Δt = t_post − t_pre [ms]")
    ax.set_ylabel(f"change {summary['read_after_min']:g} min after [%]")
    ax.set_title("STDP window")
    ax.legend(fontsize=8)
    t = np.asarray(summary["time_min"])
    tr = np.asarray(summary["trace_pct"])
    cmap = plt.get_cmap("coolwarm")
    every = -(-len(o) // 8)  # label about 8 of the traces
    for j, i in enumerate(o):
        bx.plot(t, tr[i], color=cmap(j / max(len(o) - 1, 1)), lw=1,
                label=f"{d[i]:+g} ms" if j % every == 0 else None)
    span = summary["n_pairs"] / summary["pair_freq_hz"] / 60
    bx.axvspan(0, span, color="0.9", lw=0)
    bx.axhline(0, color="k", lw=0.8)
    bx.set_xlabel("time from the first pairing [min] (shading: pairing)")
    bx.set_ylabel("fEPSP proxy of the paired pathway [% change]")
    bx.set_title("Time courses")
    bx.legend(fontsize=7, ncol=2)
    cm.save_figure(fig, path)
