"""Machinery shared by the canonical experiments.

`run_timeline` runs a protocol hours long. Stimulation needs the fine time step of
the spec (calcium and the bAP last milliseconds), but most of an 8-hour experiment
is quiet: a few spontaneous inputs at 0.1 Hz, and slow variables (early-phase decay,
tags, protein, late phase, scaling) with time constants of minutes to days. So the
time line is cut into *active* stretches (from `lead_ms` before each stimulus to
`settle_ms` after it), run at `spec.dt`, and *quiet* stretches between them, run at
`coarse_dt` with the slow clock every `coarse_slow_ms`. The state carries over
unchanged from one stretch to the next (its shapes do not depend on dt).
`tests/test_experiments.py` checks this against the unbroken fine-step run.

Every stretch is one `ltpnet.simulate` call from step 0 with its own noise seed;
pulse times and pharmacology windows are shifted to the stretch. Chunks are one
record long, so an experiment compiles three chunk shapes whatever its length.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

import ltpnet as lt
from ltpnet.dynamics import synapse
from ltpnet.params import WINDOWS
from ltpnet.step import efficacy

MS_PER_H = 3_600_000.0
MS_PER_MIN = 60_000.0


@dataclasses.dataclass
class Check:
    """One measured value set against its expected band."""

    key: str
    value: str
    expected: str
    passed: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check(key: str, value, expected: str, passed, fmt: str = "{:+.1f}") -> Check:
    """A Check whose `value` is formatted with `fmt` (numbers) or str()."""
    if isinstance(value, int | float | np.floating):
        text = fmt.format(float(value))
    else:
        text = str(value)
    return Check(key, text, expected, bool(passed))


def pct(x) -> np.ndarray | float:
    """Relative change `x - 1` in percent (x a ratio after/before)."""
    out = (np.asarray(x, float) - 1.0) * 100.0
    return float(out) if out.ndim == 0 else out


def distribution(x) -> dict:
    """Summary of a per-neuron quantity: mean, sd and percentiles."""
    x = np.asarray(x, float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0}
    q = np.percentile(x, [5, 25, 50, 75, 95])
    return {"n": int(x.size), "mean": float(x.mean()), "sd": float(x.std()),
            "p5": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "p95": float(q[4])}


def pooled_change_loo(before, after) -> np.ndarray:
    """The pooled change `pct(sum(after) / sum(before))` [%] with each cell left out
    in turn: `(..., n_cells)` from one value per cell `(..., n_cells)` (e.g. a
    pathway's summed weight per neuron; leading axes are members)."""
    b, a = np.asarray(before, float), np.asarray(after, float)
    if a.shape != b.shape or b.ndim == 0:
        raise ValueError(f"pooled_change_loo needs before and after of one shape with a "
                         f"cell axis, got shapes {b.shape} and {a.shape}")
    sb, sa = b.sum(-1, keepdims=True), a.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * ((sa - a) / (sb - b) - 1.0)


def jackknife_se(loo) -> np.ndarray | float:
    """Jackknife standard error from leave-one-out values along the last axis
    (`sqrt((n - 1)/n sum (x_i - mean)^2)`); NaN with fewer than 2 cells."""
    x = np.asarray(loo, float)
    n = x.shape[-1]
    if n < 2:
        out = np.full(x.shape[:-1], np.nan)
    else:
        out = np.sqrt((n - 1) / n * np.sum((x - x.mean(-1, keepdims=True)) ** 2, -1))
    return float(out) if out.ndim == 0 else out


def pooled_change_se(before, after) -> float:
    """Standard error [percentage points] of the pooled change
    `pct(sum(after) / sum(before))` over cells, by the jackknife: the pooled change
    recomputed with each cell left out once (NaN with fewer than 2 cells)."""
    return jackknife_se(pooled_change_loo(np.ravel(before), np.ravel(after)))


def mean_se(x) -> float:
    """Standard error of the mean over cells of a per-cell value `(n_cells,)`:
    sd / sqrt(n) (NaN with fewer than 2 cells)."""
    x = np.ravel(np.asarray(x, float))
    return float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def finite_or_none(x, nd: int = 2) -> list:
    """A list for summary.json: each value rounded, None where not finite."""
    return [round(float(v), nd) if np.isfinite(v) else None for v in np.ravel(x)]


def with_se(value: float, se, fmt: str = "{:+.1f}") -> str:
    """`value` formatted, with ` ± se` where a finite standard error is given (in
    the same format, unsigned)."""
    text = fmt.format(float(value))
    if se is None or not np.isfinite(se):
        return text
    return f"{text} ± {fmt.replace('+', '').format(float(se))}"


def value_se(summary: dict, key: str, fmt: str = "{:+.1f}") -> str:
    """`summary[key]` formatted with ` ± ` its standard error `summary["se"][key]`,
    where the summary has one."""
    return with_se(summary[key], summary.get("se", {}).get(key), fmt)


def se_list(summary: dict, key: str, n: int) -> list:
    """`summary[key]` (standard errors, one per member), or n Nones if it lacks them
    (summaries written before they were recorded)."""
    v = summary.get(key)
    return [None if x is None else float(x) for x in v] if v is not None else [None] * n


# --------------------------------------------------------------------------- read-outs

def sweep_figure(summary: dict, xkey: str):
    """Start the two-panel figure of a sweep (a value per member: Δt, V_c, frequency).

    Returns `(plt, fig, ax, bx, x, change, control, order)`: the measured curve goes on
    `ax`, the time courses on `bx`; `order` sorts the members by `summary[xkey]`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(summary[xkey], float)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6))
    return (plt, fig, ax, bx, x, np.asarray(summary["change_pct"], float),
            np.asarray(summary["control_change_pct"], float), np.argsort(x))


def save_figure(fig, path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_curve(ax, x, change, summary: dict, order, label: str) -> None:
    """The measured curve of a sweep, with its standard errors over cells as error
    bars where the summary has them (`change_se_pct`)."""
    se = np.asarray([np.nan if v is None else v for v in
                     se_list(summary, "change_se_pct", len(x))], float)[order]
    if np.isfinite(se).any():
        ax.errorbar(x[order], change[order], yerr=np.nan_to_num(se), fmt="o-",
                    color="C3", lw=2, capsize=3, label=f"{label} (± SE over cells)")
    else:
        ax.plot(x[order], change[order], "o-", color="C3", lw=2, label=label)


def quartile_band(ax, x, summary: dict, order, color: str = "C3") -> None:
    """Shade the 25-75 % range over neurons of `summary["neurons"]["change_pct"]`
    (written with --neurons) along `x`, points taken in `order`."""
    nd = summary.get("neurons")
    if not nd:
        return
    q = [nd["change_pct"][i] for i in order]
    ok = [i for i, v in enumerate(q) if v.get("n", 0) > 0]
    xs = np.asarray(x)[order]
    ax.fill_between(xs[ok], [q[i]["p25"] for i in ok], [q[i]["p75"] for i in ok],
                    color=color, alpha=0.2, lw=0, label="per neuron, 25-75 %")


def weights(spec: lt.ModelSpec, params: lt.Params, state: lt.State) -> np.ndarray:
    """Excitatory weights `(..., n_post, k)` [g_leak] of a (batched) state, on the host."""
    post = state.post
    q = efficacy(spec, state)
    pl = params.plasticity
    if np.ndim(post.a) == 1:
        return np.asarray(synapse.weights(q, post.a, pl.w_min, pl.w_max))
    f = lambda q_, a_: synapse.weights(q_, a_, pl.w_min, pl.w_max)  # noqa: E731
    return np.asarray(jax.vmap(f)(q, post.a))


def pathway_weights(spec: lt.ModelSpec, conn: lt.Connectivity, w) -> np.ndarray:
    """`(..., n_post, n_pathways)` summed weight per neuron and pathway (per-neuron fEPSP)."""
    lab = np.asarray(conn.pre_pathway)[np.asarray(conn.pre_idx)]
    w = np.asarray(w)
    return np.stack([np.where(lab == i, w, 0.0).sum(-1)
                     for i in range(spec.n_pathways)], axis=-1)


# --------------------------------------------------------------------------- time line

@dataclasses.dataclass
class Trace:
    """What `run_timeline` returns (times in ms from the start of the time line).

    Attributes:
        t: `(n_rec,)` record times.
        records: name -> `(..., n_rec, ...)` records (batch axis first with a batch).
        snapshots: time -> dict with `w` `(..., n_post, k)` weights and `a` scaling
            factors `(..., n_post)` at that time (the times asked for, on the record
            grid).
        rates: `(t_start, t_end, rate)` per stretch: mean post rate [Hz] (per member).
        conn, state: Connectivity and final state.
        stretches: `(t_start, t_end, "fine" | "coarse")` as run.
        wall_s: Wall-clock seconds.
    """

    t: np.ndarray
    records: dict
    snapshots: dict
    rates: list
    conn: lt.Connectivity
    state: lt.State
    stretches: list
    wall_s: float

    def fepsp(self, spec: lt.ModelSpec, pathway: str, t_base: float) -> np.ndarray:
        """fEPSP proxy of `pathway` over time, relative to its value at `t_base` ms."""
        f = self.records["fepsp"][..., spec.pathway_index(pathway)]
        i = self.index(t_base)
        return f / f[..., i:i + 1]

    def index(self, t_ms: float) -> int:
        """Index of the last record at or before `t_ms` (the first record if none)."""
        return max(int(np.searchsorted(self.t, t_ms + 1e-6, side="right")) - 1, 0)

    def at(self, x: np.ndarray, t_ms: float) -> np.ndarray:
        """`x[..., index(t_ms)]` for a record-axis-last array."""
        return x[..., self.index(t_ms)]


def _events(protocols) -> np.ndarray:
    ts = [t for p in protocols for _, times in p.pulses for t in times]
    ts += [t for p in protocols for t in p.post]
    return np.sort(np.asarray(ts, float))


def plan(protocols, duration_ms: float, *, record_ms: float, lead_ms: float,
         settle_ms: float, coarse_min_ms: float, cuts=()) -> list[tuple[float, float, str]]:
    """Stretches `(start, end, kind)` covering `[0, duration_ms)` on the record grid."""
    g = record_ms
    end = math.ceil(round(duration_ms / g, 6)) * g
    active = []
    for t in _events(protocols):
        a, b = math.floor((t - lead_ms) / g) * g, math.ceil((t + settle_ms) / g) * g
        a, b = max(a, 0.0), min(b, end)
        if active and a <= active[-1][1]:
            active[-1][1] = max(active[-1][1], b)
        else:
            active.append([a, b])
    out, t0 = [], 0.0
    for a, b in active + [[end, end]]:
        if a - t0 >= coarse_min_ms:
            out.append((t0, a, "coarse"))
        elif a > t0:
            out.append((t0, a, "fine"))
        if b > a:
            out.append((a, b, "fine"))
        t0 = max(t0, b)
    merged = []
    for s in out:  # join neighbouring fine stretches
        if merged and merged[-1][2] == s[2] == "fine" and merged[-1][1] == s[0]:
            merged[-1] = (merged[-1][0], s[1], "fine")
        else:
            merged.append(s)
    cut = sorted({math.ceil(round(c / g, 6)) * g for c in cuts if 0 < c < end})
    final = []
    for a, b, kind in merged:  # split at the snapshot times
        inner = [c for c in cut if a < c < b]
        for x, y in zip([a, *inner], [*inner, b], strict=True):
            final.append((x, y, kind))
    return final


def _shift_protocol(p: lt.Protocol, t0: float, t1: float) -> lt.Protocol:
    pulses = []
    for name, times in p.pulses:
        ts = tuple(t - t0 for t in times if t0 <= t < t1)
        if ts:
            pulses.append((name, ts))
    post = tuple(t - t0 for t in p.post if t0 <= t < t1)
    return lt.Protocol(pulses=tuple(pulses), post=post)


def _shift_windows(params: lt.Params, t0: float) -> lt.Params:
    ph = params.pharmacology
    kw = {}
    for w in WINDOWS:
        on = np.asarray(getattr(ph, w + "_on"), float)
        off = np.asarray(getattr(ph, w + "_off"), float)
        # a window that ended before t0 becomes [x, 0): never on. No np.where on
        # `off > t0`: it would give `on` the batch axis of `off` (stack_params
        # may batch one and share the other).
        on2 = np.maximum(on - t0, 0.0)
        off2 = np.maximum(off - t0, 0.0)
        kw[w + "_on"] = on2 if on2.ndim else float(on2)
        kw[w + "_off"] = off2 if off2.ndim else float(off2)
    return params.replace(pharmacology=ph.replace(**kw))


def run_timeline(spec: lt.ModelSpec, params: lt.Params, duration_ms: float,
                 protocol: lt.Protocol | list | None = None, *, seed: int = 0,
                 batch: int | None = None, params_axes=None,
                 variables=("fepsp",), neurons: int | None = None,
                 snapshots=(), record_ms: float = 1000.0,
                 coarse_record_ms: float = 60_000.0, coarse_dt: float = 1.0,
                 coarse_slow_ms: float = 10.0, lead_ms: float = 1000.0,
                 settle_ms: float = 3000.0, coarse: bool = True, log=None,
                 log_every_s: float = 60.0, conn: lt.Connectivity | None = None,
                 state: lt.State | None = None) -> Trace:
    """Run `protocol` for `duration_ms`, quiet stretches on a coarse clock.

    Args:
        spec, params: The model (its dt and slow_every are used while stimulating).
        duration_ms: Length of the time line [ms].
        protocol: A Protocol, or with `batch` one per member.
        seed: Network seed; stretch i uses noise seed `seed + 7919 * i`.
        batch, params_axes: As in `ltpnet.simulate`.
        variables, neurons: Record variables and the neurons they cover.
        snapshots: Times [ms] at which to keep every weight and scaling factor.
        record_ms, coarse_record_ms: Record interval while fine / while coarse.
        coarse_dt, coarse_slow_ms: Time step and slow-clock interval of quiet
            stretches [ms].
        lead_ms, settle_ms: Fine steps from this long before each stimulus to this
            long after it.
        coarse: False runs every stretch at `spec.dt` (the reference).
        log: Called with a progress line per stretch, and inside a long stretch at
            most once per `log_every_s` seconds of wall time (or None).
        conn, state: Start from these (state batched with `batch`).

    Returns:
        A `Trace`.
    """
    import time

    t_wall = time.perf_counter()
    protocols = (list(protocol) if isinstance(protocol, list | tuple)
                 else [protocol or lt.Protocol()])
    g = record_ms
    if coarse:
        n_slow = coarse_slow_ms / coarse_dt
        if abs(n_slow - round(n_slow)) > 1e-9 or round(n_slow) < 1:
            raise ValueError(f"coarse_slow_ms={coarse_slow_ms} must be a whole number "
                             f"of coarse_dt={coarse_dt} steps")
        for name, v in (("record_ms", record_ms), ("coarse_record_ms", coarse_record_ms)):
            k = v / coarse_slow_ms
            if abs(k - round(k)) > 1e-9:
                raise ValueError(f"{name}={v} must be a multiple of "
                                 f"coarse_slow_ms={coarse_slow_ms}")
    fine_every = round(record_ms / spec.dt)
    if abs(fine_every * spec.dt - record_ms) > 1e-6 or fine_every % spec.slow_every:
        raise ValueError(f"record_ms={record_ms} must be a whole number of slow steps "
                         f"({spec.slow_every} x dt={spec.dt} ms)")
    stretches = plan(protocols, duration_ms, record_ms=g, lead_ms=lead_ms,
                     settle_ms=settle_ms,
                     coarse_min_ms=(2 * coarse_record_ms if coarse else math.inf),
                     cuts=snapshots)
    c_slow = round(coarse_slow_ms / coarse_dt)
    # the fused engine ends a synapse block on each slow step: a block of the quiet
    # stretches must divide their slow clock (blocks only set the speed)
    cspec = dataclasses.replace(spec, dt=float(coarse_dt), slow_every=c_slow,
                                syn_block=math.gcd(spec.syn_block, c_slow))
    obs_kw = dict(variables=tuple(variables), neurons=neurons)
    ts, recs, rates, snaps = [], [], [], {}
    snap_at = {math.ceil(round(c / g, 6)) * g for c in snapshots}
    if state is None:
        first = params if batch is None else jax.tree_util.tree_map(
            lambda ax, x: x if ax is None else np.asarray(x)[0], params_axes, params,
            is_leaf=lambda x: x is None) if params_axes is not None else params
        conn_b, state = lt.build(spec, first, seed)
        conn = conn or conn_b
        if batch is not None:
            state = jax.tree_util.tree_map(
                lambda a: np.broadcast_to(a, (batch,) + np.shape(a)).copy(), state)
    if 0.0 in snap_at:
        snaps[0.0] = _snapshot(spec, params, state)
    last_log = [t_wall]

    def progress(t_ms, kind):
        now = last_log[0] = time.perf_counter()
        log(f"{t_ms / MS_PER_MIN:8.1f} min of {stretches[-1][1] / MS_PER_MIN:.1f} "
            f"({kind}, {now - t_wall:.0f} s)")

    def one(sp, t0, t1, every_ms, i, kind):
        nonlocal conn, state
        every = round(every_ms / sp.dt)
        obs = lt.Observe(every=every, **obs_kw)
        ps = [_shift_protocol(p, t0, t1) for p in protocols]

        def on_chunk(step_end, *_):  # progress inside the stretch
            if time.perf_counter() - last_log[0] >= log_every_s:
                progress(t0 + step_end * sp.dt, kind)

        res = lt.simulate(sp, _shift_windows(params, t0), t1 - t0, seed=seed,
                          noise_seed=seed + 7919 * i,
                          protocol=ps if len(ps) > 1 else ps[0], observe=obs,
                          records_per_chunk=1, conn=conn, state=state, batch=batch,
                          params_axes=params_axes,
                          on_chunk=None if log is None else on_chunk)
        conn, state = res.conn, res.state
        ts.append(res.t + t0)
        recs.append(res.records)
        n = res.spike_count.shape[-1]
        rates.append((t0, t1, res.spike_count.sum(-1) / (spec.n_post * n * sp.dt / 1e3)))

    for i, (t0, t1, kind) in enumerate(stretches):
        if kind == "fine":
            one(spec, t0, t1, g, i, kind)
        else:
            bulk = math.floor(round((t1 - t0) / coarse_record_ms, 6)) * coarse_record_ms
            if bulk > 0:  # a coarse stretch cut short by a snapshot may hold none
                one(cspec, t0, t0 + bulk, coarse_record_ms, i, kind)
            if t1 > t0 + bulk:
                one(cspec, t0 + bulk, t1, g, i + 100_003, kind)
        if t1 in snap_at:
            snaps[t1] = _snapshot(spec, params, state)
        if log is not None:
            progress(t1, kind)
    ax = 0 if batch is None else 1
    records = {k: np.concatenate([r[k] for r in recs], axis=ax) for k in variables}
    return Trace(t=np.concatenate(ts), records=records, snapshots=snaps, rates=rates,
                 conn=conn, state=state, stretches=stretches,
                 wall_s=time.perf_counter() - t_wall)


def _snapshot(spec, params, state) -> dict:
    return {"w": weights(spec, params, state), "a": np.asarray(state.post.a)}
