"""fit.png: the data with error bars, the fitted curves and the loss history."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from .data import Condition, DataError
from .optimize import FitResult

MAX_PANELS = 6


@dataclasses.dataclass
class Family:
    """Conditions that differ in one variable (dt or frequency): one curve."""

    title: str
    xlabel: str
    index: list  # condition indices
    x: np.ndarray
    dense: list  # conditions of the fitted curve
    dense_x: np.ndarray
    logx: bool = False


def _trains(c: Condition) -> str:
    if c.n_trains == 1:
        return ""
    return f", {c.n_trains} trains every {c.train_interval_s:g} s"


def _label(c: Condition) -> str:
    """Short label of a condition for the 'other conditions' panel."""
    what = "pre only" if c.dt_ms is None else f"dt {c.dt_ms:g}"
    if c.clamp_mv is not None:
        what = f"clamp {c.clamp_mv:g} mV"
    trains = f"x{c.n_trains}" if c.n_trains > 1 else ""
    return f"{what}\n{c.pairs_per_train}{trains} @ {c.pair_freq_hz:g} Hz"


def _valid(conds, xs):
    keep = []
    for c, x in zip(conds, xs, strict=True):
        try:
            c.check()
            keep.append((c, x))
        except DataError:
            pass
    return [c for c, _ in keep], np.array([x for _, x in keep])


def _by_protocol(conditions, keep) -> list[list[int]]:
    """Indices of the conditions `keep` selects, grouped by frequency, pairs per train,
    trains and train interval."""
    groups = defaultdict(list)
    for i, c in enumerate(conditions):
        if keep(c):
            groups[(c.pair_freq_hz, c.pairs_per_train, c.n_trains,
                    c.train_interval_s)].append(i)
    return list(groups.values())


def _sweep(conditions, idx, field: str, n: int, limit: float = np.inf):
    """`(c0, x, dense, dense_x)` of conditions `idx` that differ in `field` only (None
    unless two values differ): the values, and a grid of `n` points over their range
    widened by 10 % (clipped to +-limit) as conditions like the first."""
    x = np.array([getattr(conditions[i], field) for i in idx])
    if len(set(x)) < 2:
        return None
    c0 = conditions[idx[0]]
    span = x.max() - x.min()
    lo, hi = max(x.min() - 0.1 * span, -limit), min(x.max() + 0.1 * span, limit)
    xd = np.union1d(np.linspace(lo, hi, n), x)
    dense, xd = _valid([dataclasses.replace(c0, source="", **{field: float(v)})
                        for v in xd], xd)
    return c0, x, dense, xd


def families(conditions) -> list[Family]:
    """Group conditions into timing curves, frequency curves and the rest."""
    out, used = [], set()
    for idx in _by_protocol(conditions, lambda c: c.clamp_mv is not None):
        sweep = _sweep(conditions, idx, "clamp_mv", 121)
        if sweep is None:
            continue
        c0, vs, dense, xd = sweep
        out.append(Family(
            title=f"{c0.pairs_per_train} pulses at {c0.pair_freq_hz:g} Hz{_trains(c0)}, "
                  "clamped",
            xlabel="holding potential [mV]", index=idx, x=vs, dense=dense, dense_x=xd))
        used.update(idx)
    for idx in _by_protocol(conditions, lambda c: c.dt_ms is not None):
        period = conditions[idx[0]].period_ms
        sweep = _sweep(conditions, idx, "dt_ms", 161, limit=0.95 * period)
        if sweep is None:
            continue
        c0, dts, dense, xd = sweep
        out.append(Family(
            title=f"{c0.pairs_per_train} pairs at {c0.pair_freq_hz:g} Hz{_trains(c0)}",
            xlabel="dt = t_post - t_pre [ms]", index=idx, x=dts, dense=dense,
            dense_x=xd))
        used.update(idx)
    by_dt = defaultdict(list)
    for i, c in enumerate(conditions):
        if i not in used and c.clamp_mv is None:
            key = (c.dt_ms, c.pairs_per_train, c.n_trains, c.train_interval_s)
            by_dt[key].append(i)
    for idx in by_dt.values():
        fs = np.array([conditions[i].pair_freq_hz for i in idx])
        if len(set(fs)) < 2:
            continue
        c0 = conditions[idx[0]]
        f_hi = fs.max() * 1.5
        if c0.dt_ms is not None and c0.dt_ms != 0:
            f_hi = min(f_hi, 0.95 * 1000.0 / abs(c0.dt_ms))
        xd = np.union1d(np.geomspace(fs.min() / 1.5, f_hi, 60), fs)
        dense, xd = _valid([dataclasses.replace(c0, pair_freq_hz=float(x), source="")
                            for x in xd], xd)
        what = "pulses" if c0.dt_ms is None else f"pairs (dt = {c0.dt_ms:g} ms)"
        out.append(Family(
            title=f"{c0.pairs_per_train} {what}{_trains(c0)}, vs frequency",
            xlabel="frequency [Hz]",
            index=idx, x=fs, dense=dense, dense_x=xd, logx=True))
        used.update(idx)
    rest = [i for i in range(len(conditions)) if i not in used]
    while len(out) > MAX_PANELS - 1:
        rest.extend(out.pop().index)
    if rest:
        rest.sort()
        out.append(Family(title="other conditions", xlabel="condition", index=rest,
                          x=np.arange(len(rest), dtype=float), dense=[],
                          dense_x=np.zeros(0)))
    return out


def plot_fit(result: FitResult, path, title: str = "") -> None:
    """Write the figure of a fit to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = result.conditions
    fams = families(conds)
    dense = [c for f in fams for c in f.dense]
    curve = result.predict(dense) if dense else np.zeros(0)
    n = len(fams) + 1
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows),
                             squeeze=False)
    axes = axes.ravel()
    ratio = np.array([c.ratio for c in conds])
    sem = np.array([c.sem for c in conds])
    start = 0
    for ax, fam in zip(axes, fams, strict=False):
        idx = np.array(fam.index)
        ax.errorbar(fam.x, ratio[idx], yerr=sem[idx], fmt="o", ms=4, color="0.2",
                    ecolor="0.5", capsize=2, label="data")
        if fam.dense:
            y = curve[start:start + len(fam.dense)]
            start += len(fam.dense)
            ax.plot(fam.dense_x, y, "-", color="C3", label="fit")
        else:
            ax.plot(fam.x, result.predicted[idx], "s", color="C3", ms=5, label="fit")
            ax.set_xticks(fam.x)
            ax.set_xticklabels([_label(conds[i]) for i in idx], fontsize=7)
        ax.axhline(1.0, color="0.7", lw=0.8, zorder=0)
        if fam.logx:
            ax.set_xscale("log")
        ax.set_xlabel(fam.xlabel)
        ax.set_ylabel("ratio after / before")
        ax.set_title(fam.title, fontsize=9)
        ax.legend(fontsize=8, frameon=False)
    ax = axes[len(fams)]
    h = result.history
    ax.semilogy(h["step"], h["loss"], color="C0", lw=1, label="surrogate")
    ax.semilogy(h["hard_step"], h["loss_hard"], "o-", color="C3", ms=3, lw=1,
                label="hard thresholds")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean chi2 per point)")
    ax.set_title(f"loss: final {result.loss:.3g} (chi2 {result.chi2:.1f} / "
                 f"{result.n_points} points)", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    for ax in axes[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(f"{title}: {result.model} model, free: "
                     + ", ".join(x.split(".")[1] for x in result.free), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
