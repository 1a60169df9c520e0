"""Figures of a results file (PNG, matplotlib without a display).

`plot_file(path, out_dir)` draws what the file holds and skips the rest: spike raster,
population rate, fEPSP per pathway (percent of baseline), calcium, weights and the
homeostatic scaling factor. Long series are decimated for drawing, time axes switch to
seconds, minutes or hours with the length of the run, and batched files show batch
member 0 (line plots overlay the first few members).
"""

from __future__ import annotations

import math
import os

import h5py
import numpy as np
from matplotlib.figure import Figure

from . import units
from .io import INPUT, POST, open_results

MAX_RASTER_NEURONS = 200
MAX_RASTER_SPIKES = 200_000
MAX_POINTS = 3000  # time points drawn per line
MAX_ELEMENTS = 2000  # neurons or synapses read for population statistics
MAX_MEMBERS = 4  # batch members overlaid in line plots
DPI = 110


def _time_unit(t_max_ms: float) -> tuple[float, str]:
    """Divisor and axis label for times up to `t_max_ms`."""
    if t_max_ms >= 2 * units.MS_PER_H:
        return units.MS_PER_H, "time (h)"
    if t_max_ms >= 2 * units.MS_PER_MIN:
        return units.MS_PER_MIN, "time (min)"
    if t_max_ms >= 2 * units.MS_PER_S:
        return units.MS_PER_S, "time (s)"
    return 1.0, "time (ms)"


class _File:
    """Read helpers over an open results file (valid length, batch, decimation)."""

    def __init__(self, f: h5py.File):
        self.f = f
        nb = int(f.attrs.get("n_batch", -1))
        self.n_batch = None if nb < 0 else nb
        self.tax = 0 if self.n_batch is None else 1
        self.members = (1 if self.n_batch is None else min(self.n_batch, MAX_MEMBERS))
        n = f["readout/time"].shape[self.tax] if "readout/time" in f else 0
        rw = int(f.attrs.get("records_written", n))
        self.n_rec = min(n, rw) if rw > 0 else n
        self.stride = max(1, math.ceil(self.n_rec / MAX_POINTS))
        self.t = self.series("readout/time") if self.n_rec else np.zeros(0)
        t_end = float(self.t[-1]) if len(self.t) else 0.0
        self.tdiv, self.tlabel = _time_unit(t_end)

    def series(self, path, member=0):
        """1-D series (decimated by stride) of one batch member."""
        ds = self.f[path]
        sl = slice(0, self.n_rec, self.stride)
        return ds[sl] if self.n_batch is None else ds[member, sl]

    def rate(self, member=0):
        """Population rate, averaged over the decimation blocks (not sampled)."""
        ds = self.f["readout/rate"]
        y = ds[: self.n_rec] if self.n_batch is None else ds[member, : self.n_rec]
        s = self.stride
        n = len(y) // s * s
        if s > 1 and n:
            head = y[:n].reshape(-1, s).mean(axis=1)
            y = np.concatenate([head, y[n:].mean(keepdims=True)]) if n < len(y) else head
        return y

    def matrix(self, path, member=0):
        """`(time, elements)` report data, decimated in time and elements."""
        ds = self.f[path]
        n_el = ds.shape[-1]
        es = max(1, math.ceil(n_el / MAX_ELEMENTS))
        sl = (slice(0, self.n_rec, self.stride), slice(0, n_el, es))
        return ds[sl] if self.n_batch is None else ds[(member,) + sl]

    def last_row(self, path, member=0):
        ds = self.f[path]
        if not self.n_rec:
            return np.zeros(0)
        return ds[self.n_rec - 1] if self.n_batch is None else ds[member, self.n_rec - 1]

    def has(self, path):
        return path in self.f and self.n_rec > 0

    def title(self, what, stem):
        note = "" if self.n_batch is None else f", batch member 0 of {self.n_batch}"
        if not bool(self.f.attrs.get("complete", True)):
            note += ", incomplete"
        return f"{what} ({stem}{note})"


def _band(ax, t, m, color, label):
    """Mean over elements with a 5-95 percentile band."""
    with np.errstate(all="ignore"):
        ax.plot(t, np.nanmean(m, axis=1), color=color, lw=1.5, label=label)
        lo, hi = np.nanpercentile(m, [5, 95], axis=1)
    ax.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0, label="5-95 % range")


def _save(fig, out_dir, stem, name, paths):
    path = os.path.join(out_dir, f"{stem}_{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    paths.append(path)


def _raster(fh: _File, stem, out_dir, paths):
    f = fh.f
    pops = [p for p in (POST, INPUT) if f"spikes/{p}/timestamps" in f]
    if not pops:
        return
    fig = Figure(figsize=(9, 2.2 + 2.2 * len(pops)))
    axes = fig.subplots(len(pops), 1, sharex=True, squeeze=False)[:, 0]
    t_end = max(float(f.attrs.get("step_end", 0)) * float(f.attrs.get("dt", 0.0)), 0.0)
    tdiv, tlabel = _time_unit(t_end)
    pre_pathway = f["connectivity/pre_pathway"][()] if "connectivity/pre_pathway" in f \
        else None
    names = [str(x) for x in f.attrs.get("pathways", [])]
    for ax, pop in zip(axes, pops, strict=True):
        g = f[f"spikes/{pop}"]
        if fh.n_batch is None:
            ts, ids = g["timestamps"][()], g["node_ids"][()]
        else:
            n = int(g["n_spikes"][0])
            ts, ids = g["timestamps"][0, :n], g["node_ids"][0, :n]
        n_nodes = int(g.attrs.get("n_nodes", int(ids.max(initial=0)) + 1))
        note = []
        step = max(1, math.ceil(n_nodes / MAX_RASTER_NEURONS))
        if step > 1:
            keep = ids % step == 0
            ts, ids = ts[keep], ids[keep]
            note.append(f"1 in {step} of {n_nodes} neurons")
        thin = max(1, math.ceil(len(ts) / MAX_RASTER_SPIKES))
        if thin > 1:
            ts, ids = ts[::thin], ids[::thin]
            note.append(f"1 in {thin} spikes")
        x = ts / tdiv
        if pop == INPUT and pre_pathway is not None and names:
            path_of = pre_pathway[ids.astype(np.int64)]
            for i, name in enumerate(names):
                sel = path_of == i
                if sel.any():
                    ax.scatter(x[sel], ids[sel], s=2, marker="|", lw=0.6, color=f"C{i}",
                               label=name)
            ax.legend(loc="upper right", fontsize=7, markerscale=4)
        else:
            ax.scatter(x, ids, s=2, marker="|", lw=0.6, color="k")
        label = "CA1 (post)" if pop == POST else "CA3 (input)"
        ax.set_ylabel(f"{label}\nneuron")
        ax.set_ylim(-0.5, n_nodes - 0.5)
        ax.set_title(f"{label}: {len(ts)} spikes" + (f" ({', '.join(note)})" if note
                                                       else ""), fontsize=9)
    axes[-1].set_xlabel(tlabel)
    if t_end > 0:
        axes[-1].set_xlim(float(f.attrs.get("step_start", 0)) * float(f.attrs["dt"]) / tdiv,
                          t_end / tdiv)
    fig.suptitle(fh.title("spike raster", stem), fontsize=10)
    _save(fig, out_dir, stem, "raster", paths)


def _rate(fh: _File, stem, out_dir, paths):
    if not fh.has("readout/rate"):
        return
    fig = Figure(figsize=(9, 3.5))
    ax = fig.subplots()
    t = fh.t / fh.tdiv
    interval = float(fh.f["readout/spike_count"].attrs.get("interval_ms", np.nan)) \
        if "readout/spike_count" in fh.f else np.nan
    for b in range(fh.members):
        y = fh.rate(b)
        ax.plot(t[: len(y)], y, color="C0", lw=1, alpha=1.0 if b == 0 else 0.4,
                label=f"population rate ({interval * fh.stride:g} ms bins)" if b == 0
                else None)
    r = f"report/{POST}/r/data"
    if fh.has(r):
        m = fh.matrix(r)
        with np.errstate(all="ignore"):
            ax.plot(t, np.nanmean(m, axis=1), color="C3", lw=1.5,
                    label="rate sensor r (mean)")
    ax.set_xlabel(fh.tlabel)
    ax.set_ylabel("rate (Hz)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title(fh.title("CA1 firing rate", stem), fontsize=10)
    _save(fig, out_dir, stem, "rate", paths)


def _fepsp(fh: _File, stem, out_dir, paths):
    if not fh.has("readout/fepsp"):
        return
    g = fh.f["readout/fepsp"]
    names = [str(x) for x in fh.f.attrs.get("pathways", list(g))]
    names = [n for n in names if n in g]
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    t = fh.t / fh.tdiv
    for i, name in enumerate(names):
        base = np.atleast_1d(g[name].attrs.get("baseline", np.nan))
        for b in range(fh.members):
            y = fh.series(f"readout/fepsp/{name}", b).astype(np.float64)
            b0 = float(base[b]) if b < len(base) else np.nan
            if not np.isfinite(b0) or b0 == 0:
                b0 = y[0] if len(y) and y[0] != 0 else 1.0
            ax.plot(t, 100.0 * y / b0, color=f"C{i}", lw=1.5 if b == 0 else 1,
                    alpha=1.0 if b == 0 else 0.4, label=name if b == 0 else None)
        pulses = f"protocol/pulses/{name}"
        if pulses in fh.f and fh.f[pulses].shape[0]:
            pt = np.unique(np.round(fh.f[pulses][()] / fh.tdiv, 6))
            ax.plot(pt, np.full(len(pt), 0.98 - 0.04 * i), "|", color=f"C{i}", ms=8,
                    transform=ax.get_xaxis_transform())
    ax.axhline(100.0, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel(fh.tlabel)
    ax.set_ylabel("fEPSP (% of baseline)")
    ax.legend(title="pathway (ticks: stimulation)", fontsize=8, title_fontsize=8)
    ax.set_title(fh.title("fEPSP proxy (summed synaptic weight per pathway)", stem),
                 fontsize=10)
    _save(fig, out_dir, stem, "fepsp", paths)


def _calcium(fh: _File, stem, out_dir, paths):
    cm, c = f"report/{POST}/c_mean/data", f"report/{POST}/c/data"
    panels = [p for p in (cm, c) if fh.has(p)]
    if not panels:
        return
    fig = Figure(figsize=(9, 3.2 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    t = fh.t / fh.tdiv
    for ax, p in zip(axes, panels, strict=True):
        if p == cm:
            _band(ax, t, fh.matrix(p), "C1", "mean over neurons")
            ax.set_ylabel("mean synaptic calcium [1]")
        else:
            ds = fh.f[p]
            n_syn = min(5, ds.shape[-1])
            sl = (slice(0, fh.n_rec, fh.stride), slice(0, n_syn))
            m = ds[sl] if fh.n_batch is None else ds[(0,) + sl]
            for j in range(n_syn):
                ax.plot(t, m[:, j], lw=1, label=f"neuron 0, synapse {j}")
            ax.set_ylabel("synaptic calcium [1]")
        ax.legend(fontsize=7, ncols=2)
    axes[-1].set_xlabel(fh.tlabel)
    fig.suptitle(fh.title("calcium", stem), fontsize=10)
    _save(fig, out_dir, stem, "calcium", paths)


def _weights(fh: _File, stem, out_dir, paths):
    wm = f"report/{POST}/w_mean/data"
    syn = next((f"report/{POST}/{v}/data" for v in ("w", "q")
                if fh.has(f"report/{POST}/{v}/data")), None)
    over_time = wm if fh.has(wm) else syn
    if over_time is None:
        return
    n = 1 + (syn is not None)
    fig = Figure(figsize=(9 if n == 1 else 12, 3.8))
    axes = fig.subplots(1, n, squeeze=False, width_ratios=[2, 1][:n])[0]
    t = fh.t / fh.tdiv
    unit = fh.f[over_time].attrs.get("units", "")
    label = ("w_mean (mean over neurons)" if over_time == wm
             else f"{over_time.split('/')[-2]} (mean over synapses)")
    _band(axes[0], t, fh.matrix(over_time), "C2", label)
    axes[0].set_xlabel(fh.tlabel)
    axes[0].set_ylabel(f"weight [{unit}]")
    axes[0].legend(fontsize=8)
    if syn is not None:
        name = syn.split("/")[-2]
        last = fh.last_row(syn)
        last = last[np.isfinite(last)]
        axes[1].hist(last, bins=50, color="C2")
        axes[1].set_xlabel(f"{name} [{fh.f[syn].attrs.get('units', '')}]")
        axes[1].set_ylabel("synapses")
        t_last = float(fh.last_row("readout/time"))
        axes[1].set_title(f"{name} at t = {t_last / fh.tdiv:g} "
                          f"{fh.tlabel.split('(')[-1].rstrip(')')}", fontsize=9)
    fig.suptitle(fh.title("synaptic weights", stem), fontsize=10)
    _save(fig, out_dir, stem, "weights", paths)


def _scaling(fh: _File, stem, out_dir, paths):
    p = f"report/{POST}/a/data"
    if not fh.has(p):
        return
    fig = Figure(figsize=(9, 3.5))
    ax = fig.subplots()
    t = fh.t / fh.tdiv
    m = fh.matrix(p)
    _band(ax, t, m, "C4", "mean over neurons")
    with np.errstate(all="ignore"):
        ax.plot(t, np.nanmin(m, axis=1), color="C4", lw=0.8, ls=":", label="min / max")
        ax.plot(t, np.nanmax(m, axis=1), color="C4", lw=0.8, ls=":")
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel(fh.tlabel)
    ax.set_ylabel("scaling factor a [1]")
    ax.legend(fontsize=8)
    ax.set_title(fh.title("homeostatic scaling factor", stem), fontsize=10)
    _save(fig, out_dir, stem, "scaling", paths)


def plot_file(path, out_dir) -> list[str]:
    """Draw the figures of the results file `path` into `out_dir`.

    Writes `<stem>_<figure>.png` for each of raster, rate, fepsp, calcium, weights and
    scaling whose data the file holds, and returns their paths in that order.
    """
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    paths: list[str] = []
    with open_results(path) as f:
        fh = _File(f)
        for draw in (_raster, _rate, _fepsp, _calcium, _weights, _scaling):
            draw(fh, stem, out_dir, paths)
    return paths
