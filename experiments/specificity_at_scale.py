"""Input specificity and homeostatic scaling in large CA1 populations.

A population of `n_post` CA1 cells, each with `k` synapses. Pathway T and pathways
P(o) for several overlaps o each project `k_path` synapses onto every cell of
their territory: half of the population, a contiguous block of cells. The territory
of P(o) shares a fraction o of its cells with that of T. Every other synapse comes
from a background pathway. All inputs fire at 0.1 Hz (a quiet slice); T gets one
100 Hz, 1 s tetanus. Homeostatic scaling and the early/late phases are on.

The change of each pathway is its fEPSP proxy (summed weight) at the end, relative
to a paired control run: the same network and the same noise without the tetanus,
so that the drift both runs share (scaling up of silent cells, slow decay of
switches) cancels. The study reports, for each population size:

- dT: change on T; d(o): change on P(o);
- the specificity index SI(o) = dT / d(o), as defined for input specificity
  (large when P(o) hardly changes), and its inverse d(o)/dT, the spread to P(o),
  which stays finite;
- the scaling factor of every cell at the end, inside and outside T's territory.

    python -m experiments.specificity_at_scale --quick -o /tmp/spec
    python -m experiments.specificity_at_scale -o results/specificity
    python -m experiments.specificity_at_scale --neurons 1000000 --devices 1 -o DIR

Commands, results and figures: docs/validation/specificity_at_scale.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

OVERLAPS = (0.0, 0.25, 0.5, 0.75, 1.0)


def pathway_name(o: float) -> str:
    return f"P{round(100 * o):03d}"


def territories(n_post: int, overlaps=OVERLAPS) -> dict[str, tuple[int, int]]:
    """Cell range `[start, stop)` that each pathway projects to (half the cells)."""
    half = n_post // 2
    out = {"T": (0, half)}
    for o in overlaps:
        start = round((1.0 - o) * half)
        out[pathway_name(o)] = (start, start + half)
    return out


def make_spec(n_post: int, k: int = 100, k_path: int = 10, n_in: int = 100,
              n_bg: int = 1000, overlaps=OVERLAPS, dt: float = 0.2,
              slow_every: int = 5):
    """The ModelSpec of the study (pathways T, P000..P100, bg)."""
    import ltpnet as lt

    names = ["T"] + [pathway_name(o) for o in overlaps]
    if (len(names)) * k_path >= k:
        raise ValueError(f"k={k} must exceed {len(names)} pathways x k_path={k_path}")
    return lt.ModelSpec(n_post=n_post, k=k,
                        pathways=tuple((n, n_in) for n in names) + (("bg", n_bg),),
                        dt=dt, slow_every=slow_every, phases=True,
                        homeostasis=True, switch_noise=True, rng="hash",
                        calcium_step="exponential").check()


def overlap_network(spec, k_path: int, overlaps=OVERLAPS, seed: int = 0,
                    rows_per_block: int = 20_000):
    """Connectivity with pathway territories (numpy, built in blocks of rows).

    A cell in the territory of pathway X gets `k_path` distinct inputs of X; the
    rest of its `k` synapses come from `bg`. Rows are sorted by input index.
    """
    import ltpnet as lt

    rng = np.random.default_rng(seed)
    terr = territories(spec.n_post, overlaps)
    n, k = spec.n_post, spec.k
    pre_idx = np.empty((n, k), np.int32)
    bg = spec.pathway_slice("bg")
    n_bg = bg.stop - bg.start
    for a in range(0, n, rows_per_block):
        b = min(n, a + rows_per_block)
        rows = np.arange(a, b)
        parts, used = [], np.zeros(b - a, np.int64)
        for name, (t0, t1) in terr.items():
            inside = (rows >= t0) & (rows < t1)
            sl = spec.pathway_slice(name)
            keys = rng.random((b - a, sl.stop - sl.start), dtype=np.float32)
            pick = np.argpartition(keys, k_path - 1, axis=1)[:, :k_path] + sl.start
            parts.append(np.where(inside[:, None], pick, -1))
            used += inside * k_path
        keys = rng.random((b - a, n_bg), dtype=np.float32)
        order = np.argsort(keys, axis=1)[:, :k] + bg.start  # enough for any row
        need = k - used  # background synapses of each row
        take = np.arange(k)[None, :] < need[:, None]
        parts.append(np.where(take, order, -1))
        allp = np.concatenate(parts, axis=1)
        allp = np.sort(np.where(allp < 0, np.iinfo(np.int32).max, allp), axis=1)[:, :k]
        pre_idx[a:b] = allp
    pre_pathway = np.repeat(np.arange(spec.n_pathways, dtype=np.int32),
                            [m for _, m in spec.pathways])
    return lt.Connectivity(pre_idx=pre_idx, pre_pathway=pre_pathway), rng


def make_params(tau_a_s: float = 100.0, tau_r_s: float = 2.0, r_target: float = 2.0,
                rate: float = 0.1):
    """The reference model with scaling sped up to act within seconds."""
    import ltpnet as lt

    return (lt.Params()
            .with_values("input", rate=rate)
            .with_values("homeostasis", tau_a=tau_a_s * 1000.0, tau_r=tau_r_s * 1000.0,
                         r_target=r_target))


def run_size(n_post: int, *, k: int = 100, k_path: int = 10, seed: int = 0,
             t_tet_ms: float = 500.0, duration_ms: float = 6000.0,
             devices: int | None = None, record_ms: float = 500.0,
             overlaps=OVERLAPS, params=None, log=print) -> dict:
    """Tetanus and control runs of one population; the study's numbers."""
    import jax

    import ltpnet as lt
    from ltpnet.distributed import host_build_context
    from ltpnet.state import init_rho

    spec = make_spec(n_post, k=k, k_path=k_path, overlaps=overlaps)
    params = make_params() if params is None else params
    t0 = time.perf_counter()
    conn, rng = overlap_network(spec, k_path, overlaps, seed)
    rho0 = init_rho(spec, rng)
    t_build = time.perf_counter() - t0
    every = round(record_ms / spec.dt)
    obs = lt.Observe(every=every, variables=("fepsp", "a", "r"))
    tet = lt.Protocol().tetanus("T", at=t_tet_ms, freq=100.0, n=100)
    out = {"n_post": n_post, "k": k, "n_syn": spec.n_syn, "devices": devices or 1,
           "build_s": t_build}
    res = {}
    for label, prot in (("tetanus", tet), ("control", lt.Protocol())):
        with host_build_context(devices):
            state = lt.init_state(spec, params, rho0)
        t1 = time.perf_counter()
        r = lt.simulate(spec, params, duration_ms, seed=seed, protocol=prot,
                        observe=obs, records_per_chunk=max(1, round(2000 / record_ms)),
                        conn=conn, state=state, devices=devices)
        res[label] = r
        out[f"wall_{label}_s"] = time.perf_counter() - t1
        log(f"  n_post={n_post} {label}: {r.wall_s:.1f} s wall, "
            f"mean rate {r.mean_rate():.3g} Hz")
    ft, fc = res["tetanus"].records["fepsp"], res["control"].records["fepsp"]
    change = ft[-1] / fc[-1] - 1.0  # per pathway, relative to the paired control
    names = spec.pathway_names
    dT = float(change[names.index("T")])
    out["t_s"] = (res["tetanus"].t / 1000.0).tolist()
    out["dT"] = dT
    out["d"] = {pathway_name(o): float(change[names.index(pathway_name(o))])
                for o in overlaps}
    out["d_bg"] = float(change[names.index("bg")])
    # SI = dT / d(o); None where d(o) = 0 exactly (SI infinite)
    out["SI"] = {p: (dT / d if d != 0 else None) for p, d in out["d"].items()}
    out["spread"] = {p: d / dT for p, d in out["d"].items()}
    out["fepsp_T"] = (ft[:, names.index("T")] / fc[:, names.index("T")]).tolist()
    a_t = np.asarray(res["tetanus"].records["a"][-1], float)
    a_c = np.asarray(res["control"].records["a"][-1], float)
    t0_, t1_ = territories(n_post, overlaps)["T"]
    inside = np.zeros(n_post, bool)
    inside[t0_:t1_] = True
    out["a_tetanus"] = a_t
    out["a_control"] = a_c
    out["a_stats"] = {
        "T territory": _stats(a_t[inside]), "other cells": _stats(a_t[~inside]),
        "control, all": _stats(a_c)}
    out["rate_hz"] = {"tetanus": float(res["tetanus"].mean_rate()),
                      "control": float(res["control"].mean_rate())}
    del res
    jax.clear_caches()
    return out


def _stats(x) -> dict:
    x = np.asarray(x, float)
    return {"mean": float(x.mean()), "sd": float(x.std()),
            "p5": float(np.percentile(x, 5)), "p95": float(np.percentile(x, 95))}


def figures(results: list[dict], out: Path, overlaps=OVERLAPS) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    for r in results:
        lab = f"{r['n_syn']:.0e} synapses".replace("e+0", "e")
        ax[0].plot(overlaps, [100 * r["d"][pathway_name(o)] for o in overlaps], "o-",
                   label=lab)
        ax[1].plot(overlaps, [r["spread"][pathway_name(o)] for o in overlaps], "o-",
                   label=lab)
    ax[0].axhline(0, color="0.6", lw=0.8)
    ax[0].set(xlabel="overlap with T's territory", ylabel="change on P(o) [%]",
              title="unstimulated pathways")
    ax[1].axhline(0, color="0.6", lw=0.8)
    ax[1].set(xlabel="overlap with T's territory", ylabel="d(o) / dT = 1 / SI",
              title="spread of the change on T")
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    p = out / "specificity_vs_overlap.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.0),
                           squeeze=False)
    for a, r in zip(ax[0], results, strict=True):
        n = r["n_post"]
        t0, t1 = territories(n, overlaps)["T"]
        inside = np.zeros(n, bool)
        inside[t0:t1] = True
        lo = min(r["a_tetanus"].min(), r["a_control"].min())
        hi = max(r["a_tetanus"].max(), r["a_control"].max())
        bins = np.linspace(lo, hi, 40)
        a.hist(r["a_control"], bins, color="0.7", label="control")
        a.hist(r["a_tetanus"][inside], bins, alpha=0.7, label="T territory")
        a.hist(r["a_tetanus"][~inside], bins, alpha=0.7, label="other cells")
        a.set(xlabel="scaling factor a", title=f"n_post = {n}")
    ax[0][0].set_ylabel("cells")
    ax[0][0].legend(fontsize=7)
    fig.tight_layout()
    p = out / "scaling_factors.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def _fmt_si(x) -> str:
    return "∞" if x is None else f"{x:.3g}"


def table(results: list[dict], overlaps=OVERLAPS) -> str:
    head = ("| synapses | n_post | dT | " + " | ".join(
        f"d({o:g})" for o in overlaps) + " | " + " | ".join(
        f"SI({o:g})" for o in overlaps) + " |")
    lines = [head, "|" + "---|" * (3 + 2 * len(overlaps))]
    for r in results:
        d = [f"{100 * r['d'][pathway_name(o)]:+.2f} %" for o in overlaps]
        si = [_fmt_si(r["SI"][pathway_name(o)]) for o in overlaps]
        lines.append(f"| {r['n_syn']:.0e} | {r['n_post']} | "
                     f"{100 * r['dT']:+.1f} % | " + " | ".join(d + si) + " |")
    lines += ["", "| n_post | cells | mean a | sd | 5th pct | 95th pct |",
              "|---|---|---|---|---|---|"]
    for r in results:
        for who, s in r["a_stats"].items():
            lines.append(f"| {r['n_post']} | {who} | {s['mean']:.4f} | {s['sd']:.4f} "
                         f"| {s['p5']:.4f} | {s['p95']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.specificity_at_scale",
        description="Specificity index against pathway overlap and population size, "
        "and the distribution of scaling factors.")
    p.add_argument("--neurons", type=int, nargs="+", metavar="N",
                   help="population sizes (default 1000 3000 10000; --quick 200 400)")
    p.add_argument("-k", type=int, default=100, help="synapses per cell (default 100)")
    p.add_argument("--duration", type=float, metavar="MS",
                   help="biological time [ms] (default 6000; --quick 2000)")
    p.add_argument("--devices", type=int, help="split each run over N devices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="small and short (a smoke test)")
    p.add_argument("-o", "--out", default="results/specificity_at_scale",
                   help="output directory (figures, table, JSON)")
    args = p.parse_args(argv)
    sizes = args.neurons or ([200, 400] if args.quick else [1000, 3000, 10000])
    duration = args.duration or (2000.0 if args.quick else 6000.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import jax

    print(f"devices: {jax.devices()[:args.devices or 1]}", file=sys.stderr)
    results = []
    for n in sizes:
        results.append(run_size(n, k=args.k, seed=args.seed, duration_ms=duration,
                                devices=args.devices,
                                log=lambda m: print(m, file=sys.stderr)))
    figs = figures(results, out)
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    keep = [{k: v for k, v in r.items() if k not in ("a_tetanus", "a_control")}
            for r in results]
    (out / "results.json").write_text(json.dumps(
        {"duration_ms": duration, "overlaps": OVERLAPS, "results": keep}, indent=1))
    for r in results:
        np.savez_compressed(out / f"scaling_factors_{r['n_post']}.npz",
                            tetanus=r["a_tetanus"], control=r["a_control"])
    print(text)
    for f in figs:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
