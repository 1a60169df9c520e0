"""Single-spine structural LTP (glutamate uncaging, Matsuzaki et al. 2004): one input,
U, reaches one synapse (column 0) on every CA1 cell and nowhere else; it is
stimulated with 60 pulses at 1 Hz in 0 Mg2+ with no spontaneous activity. On half
the cells the uncaged synapse starts DOWN (a small spine), on the other half UP (a
large spine). The read-out `ltpnet.record.spine` turns each synapse's weight into
a spine-head volume fold (AMPA conductance proportional to volume) and a surface
area fold (volume^(2/3)), relative to the weight just before uncaging, soon after
(`early_ms`) and long after (`late_ms`) the train; the other synapses of the same
cells are the neighbours.

Preparation (not the hippocampal default): uncaging slices are bathed in Mg2+-free
solution (`[calcium] Mg = 0`, SCIENCE.md section 2g: "low-frequency uncaging in 0
Mg2+"), and spontaneous firing is absent (such experiments add TTX [memory]; the
model's TTX window would also block the uncaging input, so the spontaneous Poisson
rate is set to 0 instead). Every other parameter is the default.

Expected (SCIENCE.md sections 2g, 3.13): a small spine grows about 2-3-fold within
1-5 min and stays about 1.5-2x for 1-2 h; large spines enlarge only transiently;
AMPA conductance follows volume; neighbouring spines do not change.
"""

from __future__ import annotations

import numpy as np

import ltpnet as lt
from experiments import ExperimentError
from experiments._common import (
    MS_PER_MIN,
    check,
    distribution,
    mean_se,
    run_timeline,
    value_se,
)
from ltpnet.connectivity import draw_indegree
from ltpnet.state import init_rho, init_state

DEFAULTS = {
    "n_pulses": 60,  # uncaging pulses
    "freq_hz": 1.0,  # their frequency [Hz]
    "start_ms": "1 min",  # first pulse
    "early_ms": "5 min",  # early read-out, after the last pulse
    "late_ms": "1 h",  # late read-out, after the last pulse
}

SUMMARY_KEYS = ("volume_fold", "conductance_fold", "area_fold")

UNCAGED = "U"  # the pathway of the single uncaged input


def validate(spec: lt.ModelSpec, params: lt.Params, exp: dict) -> None:
    """ExperimentError naming the key unless the config suits the protocol."""
    if exp["n_pulses"] < 1:
        raise ExperimentError(
            f"[experiment] n_pulses must be >= 1, got n_pulses={exp['n_pulses']}")
    if not exp["freq_hz"] > 0:
        raise ExperimentError(
            f"[experiment] freq_hz must be > 0 Hz, got freq_hz={exp['freq_hz']}")
    if exp["start_ms"] < 0:
        raise ExperimentError(
            f"[experiment] start_ms must be >= 0 ms, got start_ms={exp['start_ms']}")
    if not 0 < exp["early_ms"] < exp["late_ms"]:
        raise ExperimentError(f"[experiment] need 0 < early_ms < late_ms, got early_ms="
                              f"{exp['early_ms']}, late_ms={exp['late_ms']} (ms)")
    names = spec.pathway_names
    if names[0] != UNCAGED or spec.pathways[0][1] != 1 or len(names) != 2:
        raise ExperimentError(
            f"[spec] pathways must be {{ {UNCAGED} = 1, <background> = n }} "
            f"(the single uncaged input first), got {dict(spec.pathways)}")
    if spec.pathways[1][1] < spec.k - 1:
        raise ExperimentError(
            f"[spec] the background pathway needs >= k - 1 = {spec.k - 1} "
            f"inputs, got {spec.pathways[1][1]}")
    if spec.n_post < 2:
        raise ExperimentError(f"[spec] n_post must be >= 2 (small and large spines), "
                              f"got n_post={spec.n_post}")


def network(spec: lt.ModelSpec, params: lt.Params, seed: int):
    """`(conn, state, small)`: input U (index 0) reaches synapse 0 of every cell.

    The other k - 1 synapses of a cell come from the background pathway, drawn
    like `fixed_indegree`. Synapse 0 starts DOWN on even cells (`small[i]` True)
    and UP on odd cells; the other switches are drawn as usual (`rho_init`).
    """
    rng = np.random.default_rng(seed)
    n_bg = spec.pathways[1][1]
    pre = np.empty((spec.n_post, spec.k), np.int32)
    pre[:, 0] = 0  # rows stay sorted: U is input 0
    pre[:, 1:] = 1 + draw_indegree(rng, n_bg, spec.n_post, spec.k - 1, True)
    lab = np.repeat(np.arange(2, dtype=np.int32), [1, n_bg])
    conn = lt.Connectivity(pre_idx=pre, pre_pathway=lab)
    rho0 = init_rho(spec, rng)
    small = np.arange(spec.n_post) % 2 == 0
    rho0[:, 0] = np.where(small, 0.0, 1.0)
    return conn, init_state(spec, params, rho0), small


def run(ctx) -> dict:
    spec, params, exp = ctx.spec, ctx.params, ctx.exp
    conn, state, small = network(spec, params, ctx.seed)
    t0 = exp["start_ms"]
    prot = lt.Protocol().train(UNCAGED, t0, exp["freq_hz"], exp["n_pulses"])
    t_end = prot.end()
    t_ref = np.floor(t0 / 1000.0) * 1000.0  # last record before the first pulse
    t_early, t_late = t_end + exp["early_ms"], t_end + exp["late_ms"]
    n_rec = min(spec.n_post, 8)
    ctx.log(f"{exp['n_pulses']} pulses at {exp['freq_hz']:g} Hz on one synapse of "
            f"each of {spec.n_post} cells; read-outs {exp['early_ms'] / MS_PER_MIN:g} "
            f"and {exp['late_ms'] / MS_PER_MIN:g} min after the train")
    # No spontaneous input: the quiet stretches have no spikes at all, so they run
    # on 10-ms steps (dt / tau_m = 0.5: the membrane relaxation stays stable).
    tr = run_timeline(spec, params, t_late, prot, seed=ctx.seed, conn=conn,
                      state=state, variables=("w",), neurons=n_rec,
                      snapshots=(t_ref, t_early, t_late), coarse_dt=10.0,
                      coarse_slow_ms=100.0, coarse_record_ms=60_000.0, log=ctx.log)
    w_ref = tr.snapshots[_grid(t_ref)]["w"]
    out = {}
    for tag, t in (("early", t_early), ("late", t_late)):
        w = tr.snapshots[_grid(t)]["w"]
        folds = lt.record.spine(w, w_ref)
        out[tag] = {"volume": folds.volume, "area": folds.area,
                    "conductance": w / w_ref}  # AMPA conductance = weight
    late, early = out["late"], out["early"]
    vol_small = late["volume"][small, 0]
    neigh = late["volume"][:, 1:]
    dev = np.abs(neigh - 1.0).max(axis=1)  # per cell: largest neighbour change
    up = _up(params, tr, t_late)
    summary = {
        # small uncaged spines, late read-out, mean over cells
        "volume_fold": float(vol_small.mean()),
        "conductance_fold": float(late["conductance"][small, 0].mean()),
        "area_fold": float(late["area"][small, 0].mean()),
        "volume_fold_early": float(early["volume"][small, 0].mean()),
        "area_fold_early": float(early["area"][small, 0].mean()),
        "large_volume_fold_early": float(early["volume"][~small, 0].mean()),
        "large_volume_fold": float(late["volume"][~small, 0].mean()),
        "neighbour_fold_median": float(np.median(neigh)),
        "neighbour_fold_min": float(neigh.min()),
        "neighbour_fold_max": float(neigh.max()),
        "neighbour_max_dev": float(dev.max()),
        "area_vs_volume_err": float(np.max(np.abs(
            late["area"][small, 0] / vol_small ** (2.0 / 3.0) - 1.0))),
        "early_min": exp["early_ms"] / MS_PER_MIN, "late_min": exp["late_ms"] / MS_PER_MIN,
        "n_cells": int(spec.n_post), "n_small": int(small.sum()),
        "w_ref_small": float(w_ref[small, 0].mean()),
        "w_ref_large": float(w_ref[~small, 0].mean()),
        # all or none: the uncaged synapses above the mid-weight of the switch at the
        # late read-out, among small (grown) and large (kept) spines
        "small_up_fraction": float(up[small].mean()),
        "large_up_fraction": float(up[~small].mean()),
        "wall_s_sim": tr.wall_s,
    }
    summary["se"] = {  # standard errors of the means over cells
        "volume_fold": mean_se(vol_small),
        "conductance_fold": mean_se(late["conductance"][small, 0]),
        "area_fold": mean_se(late["area"][small, 0]),
        "volume_fold_early": mean_se(early["volume"][small, 0]),
        "large_volume_fold": mean_se(late["volume"][~small, 0]),
    }
    # time course of the first cells (records), relative to t_ref
    i_ref = tr.index(t_ref)
    w_t = tr.records["w"]  # (n_rec_t, n_rec, k)
    f_t = w_t / w_t[i_ref]
    sm = small[:n_rec]
    tmin = (tr.t - t_end) / MS_PER_MIN
    keep = tr.t >= t_ref
    summary["trace"] = {
        "t_min": tmin[keep], "small": f_t[keep][:, sm, 0].T,
        "large": f_t[keep][:, ~sm, 0].T,
        "neigh_median": np.median(f_t[keep][:, :, 1:], axis=(1, 2)),
        "neigh_min": f_t[keep][:, :, 1:].min(axis=(1, 2)),
        "neigh_max": f_t[keep][:, :, 1:].max(axis=(1, 2)),
        "train_min": [(t0 - t_end) / MS_PER_MIN, 0.0],
    }
    if ctx.neurons is None:  # the uncaged spine of every cell
        summary["cells"] = {"volume_fold": vol_small.round(4).tolist(),
                            "volume_fold_early":
                                early["volume"][small, 0].round(4).tolist(),
                            "large_volume_fold":
                                late["volume"][~small, 0].round(4).tolist()}
    else:
        summary["neurons"] = {
            "volume_fold": distribution(vol_small),
            "volume_fold_early": distribution(early["volume"][small, 0]),
            "area_fold": distribution(late["area"][small, 0]),
            "large_volume_fold": distribution(late["volume"][~small, 0]),
            "neighbour_max_dev": distribution(dev),
        }
    ctx.log(f"small spine volume x{summary['volume_fold_early']:.2f} at "
            f"{summary['early_min']:g} min, x{summary['volume_fold']:.2f} at "
            f"{summary['late_min']:g} min (UP: {summary['small_up_fraction']:.2f} of "
            f"small, {summary['large_up_fraction']:.2f} of large spines); neighbours "
            "within "
            f"{100 * summary['neighbour_max_dev']:.2f} %")
    return summary


def _up(params, tr, t: float) -> np.ndarray:
    """`(n_post,)`: the uncaged synapse of each cell is above the switch's mid-weight
    a (w_min + w_max) / 2 in the snapshot at `t`."""
    pl, snap = params.plasticity, tr.snapshots[_grid(t)]
    return snap["w"][:, 0] > snap["a"] * 0.5 * (float(pl.w_min) + float(pl.w_max))


def _grid(t: float) -> float:
    return float(np.ceil(round(t / 1000.0, 6)) * 1000.0)


def checks(s: dict, quick: bool) -> list:
    v, c, a = s["volume_fold"], s["conductance_fold"], s["area_fold"]
    same = abs(c / v - 1.0) < 1e-5
    pow23 = s["area_vs_volume_err"] < 1e-5
    nb = s["neighbour_max_dev"]
    fmt = "{:.3f}"
    if quick:
        return [
            check("volume_fold", v, "> 1 (the uncaged small spine grows)", v > 1.0, fmt),
            check("conductance_fold", c, "= volume_fold (AMPA ~ volume)", same, fmt),
            check("area_fold", a, "= volume_fold^(2/3), between 1 and volume_fold",
                  pow23 and 1.0 < a < v, fmt),
            check("neighbour_max_dev", nb, "< 0.05 (neighbours unchanged)", nb < 0.05, fmt),
            check("large_volume_fold", s["large_volume_fold"],
                  "< volume_fold (large spines grow less)",
                  s["large_volume_fold"] < v, fmt),
        ]
    return [
        check("volume_fold_early", value_se(s, "volume_fold_early", fmt),
              f"2-3 at {s['early_min']:g} min (Matsuzaki 2004: 2-3-fold within 1-5 min "
              "[memory])", 2.0 <= s["volume_fold_early"] <= 3.0),
        check("volume_fold", value_se(s, "volume_fold", fmt), f"1.5-2 at "
              f"{s['late_min']:g} min (Matsuzaki 2004: ~1.5-2x for >= 1-2 h in small "
              "spines [memory])", 1.5 <= v <= 2.0),
        check("conductance_fold", value_se(s, "conductance_fold", fmt),
              "= volume_fold (AMPA conductance ~ spine volume, Matsuzaki 2001)", same),
        check("area_fold", value_se(s, "area_fold", fmt), "= volume_fold^(2/3)", pow23),
        check("large_volume_fold", value_se(s, "large_volume_fold", fmt),
              f"0.9-1.1 at {s['late_min']:g} min (large spines: transient only)",
              0.9 <= s["large_volume_fold"] <= 1.1),
        check("neighbour_max_dev", nb, "<= 0.05: every neighbour within 5 % "
              "(neighbours unchanged; SCIENCE.md 2h)", nb <= 0.05, fmt),
    ]


def plot(s: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = s["trace"]
    t = np.asarray(tr["t_min"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2),
                                 gridspec_kw={"width_ratios": [2.2, 1]})
    ax.axvspan(*tr["train_min"], color="0.85", label="uncaging (60 x 1 Hz, 0 Mg)")
    ax.fill_between([1, 5], 2, 3, color="tab:green", alpha=0.15, lw=0,
                    label="data: small spine 2-3x (1-5 min)")
    if t.max() >= 60:
        ax.fill_between([60, t.max() + 3], 1.5, 2, color="tab:green", alpha=0.3,
                        lw=0, label="data: small spine 1.5-2x (>= 1 h)")
    for i, y in enumerate(np.atleast_2d(tr["small"])):
        y = np.asarray(y)
        ax.plot(t, y, color="tab:red", lw=1.5, label="uncaged small spine: volume"
                if i == 0 else None)
        ax.plot(t, y ** (2 / 3), color="tab:red", lw=1, ls="--",
                label="uncaged small spine: area" if i == 0 else None)
    for i, y in enumerate(np.atleast_2d(tr["large"])):
        ax.plot(t, y, color="tab:blue", lw=1.5,
                label="uncaged large spine: volume" if i == 0 else None)
    ax.fill_between(t, tr["neigh_min"], tr["neigh_max"], color="0.4", alpha=0.3,
                    label="neighbours (range)")
    ax.plot(t, tr["neigh_median"], color="k", lw=1, label="neighbours (median)")
    ax.axhline(1, color="0.5", lw=0.5)
    ax.set_xlabel("time after the last uncaging pulse [min]")
    ax.set_ylabel("fold of pre-uncaging value")
    ax.set_title("Single-spine structural LTP")
    ax.legend(fontsize=7, loc="center right")
    names = ["volume\n(small)", "AMPA g\n(small)", "area\n(small)", "volume\n(large)",
             "neighbours\n(median)"]
    keys = ["volume_fold", "conductance_fold", "area_fold", "large_volume_fold"]
    vals = [s[k] for k in keys] + [s["neighbour_fold_median"]]
    se = s.get("se", {})
    err = [se.get(k, np.nan) for k in keys] + [np.nan]
    bx.bar(names, vals, color=["tab:red", "tab:orange", "salmon", "tab:blue", "0.5"],
           yerr=err, capsize=3, alpha=0.8)
    cells = s.get("cells", {})
    jitter = np.random.default_rng(0)  # spread the dots sideways (display only)
    for i, key in ((0, "volume_fold"), (3, "large_volume_fold")):
        y = np.asarray(cells.get(key, []), float)
        bx.plot(i + jitter.uniform(-0.25, 0.25, y.size), y, "o", ms=3, color="k",
                alpha=0.6, label="single spines" if i == 0 and y.size else None)
    bx.axhspan(1.5, 2.0, color="tab:green", alpha=0.3, label="data, small spine")
    bx.axhline(1, color="k", lw=0.5)
    for i, v in enumerate(vals):
        bx.text(i + 0.3, v, f"{v:.2f}", ha="left", va="bottom", fontsize=7)
    bx.set_ylabel("fold")
    bx.set_title(f"{s['late_min']:g} min after uncaging (mean ± SE over cells)",
                 fontsize=9)
    bx.tick_params(axis="x", labelsize=7)
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
