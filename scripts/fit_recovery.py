"""Parameter recovery: fit data made by the model back to the parameters that made it.

The Graupner-Brunel "cortical slices" set (SCIENCE.md section 1a) generates the ratios
of 10 conditions that mix the three protocol families of the data format: an STDP
window (60 pairs at 1 Hz), rate x timing trains (5 pairs at 20-50 Hz, 15 trains every
10 s), 100 pairs at 40 Hz and 900 presynaptic pulses at 100 Hz. Gaussian noise with
the size of a typical experimental SEM (0.03 in ratio units, unless --sem) is added.
Five parameters are then fitted from starting points 30-50 % away from the truth (all
4 restarts), with 300 Adam steps, and compared with the truth.

The fit is the runtime benchmark too: 10 conditions x 4 restarts x 300 steps.

    python scripts/fit_recovery.py                 # one noise draw (seed 0)
    python scripts/fit_recovery.py --seeds 5       # five independent noise draws
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import numpy as np
import optax

from ltpnet.fit import Condition, Free, fit, predict_values, preset

TRUTH = "cortical_slices"
FREE = {  # name: bounds
    "calcium.tau_Ca": (5.0, 80.0),
    "calcium.C_pre": (0.1, 3.0),
    "calcium.C_post": (0.1, 5.0),
    "plasticity.theta_p": (1.05, 5.0),
    "plasticity.gamma_p": (10.0, 1e4),
}


def design() -> list[Condition]:
    """The 10 protocols (ratio and sem are filled in later)."""
    stdp = [Condition(float(d), 1.0, 60) for d in (-10, -5, 5, 20)]
    trains = [Condition(float(d), f, 5, 15, 10.0)
              for d, f in ((10, 40.0), (-5, 20.0), (-10, 50.0), (-5, 50.0))]
    return stdp + trains + [Condition(10.0, 40.0, 100), Condition(None, 100.0, 900)]


def starts(truth: dict, rng: np.random.Generator, n: int) -> list[dict]:
    """`n` starting points, every parameter 30-50 % off the truth (theta_p above it:
    30 % below 1.3 would cross theta_d = 1)."""
    out = []
    for _ in range(n):
        pt = {}
        for name in FREE:
            off = rng.uniform(0.3, 0.5)
            sign = 1.0 if name == "plasticity.theta_p" else rng.choice([-1.0, 1.0])
            pt[name] = truth[name] * (1.0 + sign * off)
        out.append(pt)
    return out


def run(seed: int, sem: float, steps: int, restarts: int, verbose: bool) -> dict:
    truth = preset(TRUTH)
    conds = design()
    clean = predict_values("linear", truth, conds)
    rng = np.random.default_rng(seed)
    noisy = clean + sem * rng.standard_normal(len(clean))
    data = [dataclasses.replace(c, ratio=float(r), sem=sem)
            for c, r in zip(conds, noisy, strict=True)]
    init = starts(truth, rng, restarts)
    free = {n: Free(init[0][n], lo, hi) for n, (lo, hi) in FREE.items()}
    t0 = time.perf_counter()
    res = fit(data, model="linear", preset_name=TRUTH, free=free,
              optimizer=optax.adam(0.05), steps=steps, restarts=restarts,
              temperature=(0.5, 0.01), init_points=init, log_every=50,
              progress=print if verbose else None)
    wall = time.perf_counter() - t0
    fitted = res.values
    truth_pred = predict_values("linear", truth, data)
    chi2_truth = float(np.mean(((truth_pred - noisy) / sem) ** 2))
    return dict(res=res, wall=wall, truth=truth, init=init, fitted=fitted,
                chi2_truth=chi2_truth,
                errors={n: 100.0 * (fitted[n] / truth[n] - 1.0) for n in FREE})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="noise seed of the first draw")
    ap.add_argument("--seeds", type=int, default=1, help="independent noise draws")
    ap.add_argument("--sem", type=float, default=0.03, help="noise SD = reported SEM")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--restarts", type=int, default=4)
    args = ap.parse_args()
    print(f"ltpnet parameter recovery: truth = G&B '{TRUTH}' set, {len(design())} "
          f"conditions, noise SD = SEM = {args.sem}, {args.restarts} restarts x "
          f"{args.steps} steps")
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU cores visible")
    ok_all = []
    for k in range(args.seeds):
        r = run(args.seed + k, args.sem, args.steps, args.restarts, verbose=(k == 0))
        res = r["res"]
        print(f"\nnoise seed {args.seed + k}:")
        print(f"  {'parameter':<22}{'truth':>10}{'initial (restart 0)':>21}"
              f"{'init off':>10}{'fitted':>11}{'error':>9}")
        for n in FREE:
            t, i0, f = r["truth"][n], r["init"][0][n], r["fitted"][n]
            print(f"  {n:<22}{t:>10.4g}{i0:>21.4g}{100 * (i0 / t - 1):>9.0f}%"
                  f"{f:>11.4g}{r['errors'][n]:>8.1f}%")
        offs = [min(abs(p[n] / r["truth"][n] - 1) for n in FREE) for p in r["init"]]
        worst = max(abs(e) for e in r["errors"].values())
        ok = worst < 10.0
        ok_all.append(ok)
        print(f"  every restart started >= {100 * min(offs):.0f} % off in every "
              f"parameter; restart losses {[round(x['loss'], 3) for x in res.restarts]}"
              f", best = {res.best}")
        print(f"  chi2/point: fit {res.loss:.3f} (hard thresholds), "
              f"surrogate {res.loss_surrogate:.3f}, truth {r['chi2_truth']:.3f}")
        print(f"  largest error {worst:.1f} %  ->  {'PASS' if ok else 'FAIL'} "
              f"(each parameter within 10 %)")
        print(f"  wall time of the fit ({len(design())} conditions x {args.restarts} "
              f"restarts x {args.steps} steps, compilation included): "
              f"{r['wall']:.1f} s")
    if args.seeds > 1:
        print(f"\n{sum(ok_all)}/{len(ok_all)} noise draws recovered every parameter "
              f"within 10 %")


if __name__ == "__main__":
    main()
