"""Memory per synapse, and weak and strong scaling over devices.

    python -m experiments.device_scaling memory
    XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
        python -m experiments.device_scaling strong --synapses 1e6 --devices 1 2 4
    XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
        python -m experiments.device_scaling weak --per-device 2.5e5 --devices 1 2 4

`memory` compiles one chunk (`ltpnet.run.run_chunk`) at two sizes and reads XLA's
memory analysis of the compiled program (arguments, outputs, temporaries, per
device); the difference between the sizes divided by the difference in synapses is
the memory per synapse. `strong` runs one network over 1, 2, 4... devices; `weak`
grows the network with the device count. Times exclude compilation (each run is
compiled once, then timed `--repeat` times; the fastest counts). Results are
printed as Markdown tables and JSON. Numbers: docs/scaling.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

MODELS = ("bench", "full")


def spec_params(model: str, n_syn: float, k: int = 100):
    """bench-v1 settings, or the full model (phases, scaling; slow clock 10 steps)."""
    import ltpnet as lt

    n_post = int(round(n_syn / k))
    if model == "bench":
        spec = lt.ModelSpec(n_post=n_post, k=k, pathways=(("input", 1000),),
                            phases=False, rho_init="uniform", slow_every=1)
        return spec, lt.Params.bench_v1(k)
    spec = lt.ModelSpec(n_post=n_post, k=k, pathways=(("S1", 100), ("S2", 100),
                        ("bg", 800)), slow_every=10)
    return spec, lt.Params().with_values("input", rate=1.0)


def memory(models=MODELS, sizes=(1e5, 2e5), devices=(1,), records: int = 10,
           every: int = 1000) -> list[dict]:
    import jax
    import jax.numpy as jnp

    import ltpnet as lt
    from ltpnet.distributed import shard_inputs
    from ltpnet.run import run_chunk

    rows = []
    for model in models:
        for d in devices:
            per = []
            for n in sizes:
                spec, params = spec_params(model, n * d)
                obs = lt.Observe(every=every, variables=("fepsp", "a"))
                conn, state = lt.build(spec, params, 0)
                key = jax.random.key(0)
                if d > 1:
                    params, conn, state, key, _ = shard_inputs(spec, params, conn,
                                                               state, key, d)
                drive = lt.Protocol().drive(spec, 0, records * every)
                comp = run_chunk.lower(spec, obs, records, params, conn, state, drive,
                                       key, jnp.int32(0)).compile()
                m = comp.memory_analysis()
                peak = (m.argument_size_in_bytes + m.output_size_in_bytes
                        - m.alias_size_in_bytes + m.temp_size_in_bytes)
                per.append(dict(n_syn=spec.n_syn, args=m.argument_size_in_bytes,
                                out=m.output_size_in_bytes,
                                alias=m.alias_size_in_bytes,
                                temp=m.temp_size_in_bytes, peak=peak))
            (a, b) = per[0], per[-1]
            dn = (b["n_syn"] - a["n_syn"]) / d  # synapses per device
            rows.append(dict(model=model, devices=d,
                             state_per_syn=(b["args"] - a["args"]) / dn,
                             temp_per_syn=(b["temp"] - a["temp"]) / dn,
                             peak_per_syn=(b["peak"] - a["peak"]) / dn,
                             fixed=a["peak"] - (b["peak"] - a["peak"]) / dn
                             * a["n_syn"] / d, sizes=per))
    return rows


def timing(mode: str, devices, n_syn: float, model: str, duration_ms: float,
           k: int = 100, repeat: int = 3) -> list[dict]:
    """Best of `repeat` timed runs per device count (after one compiling run)."""
    import jax

    import ltpnet as lt

    rows = []
    for d in devices:
        total = n_syn if mode == "strong" else n_syn * d
        spec, params = spec_params(model, total, k)
        spec = dataclasses.replace(spec, n_post=spec.n_post - spec.n_post % d)
        obs = lt.Observe(every=500, variables=("fepsp", "a"))
        kw = dict(seed=0, observe=obs, records_per_chunk=10,
                  devices=None if d == 1 else d)
        lt.simulate(spec, params, duration_ms, **kw)  # compile
        walls = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = lt.simulate(spec, params, duration_ms, **kw)
            walls.append(time.perf_counter() - t0)
        wall = min(walls)
        steps = round(duration_ms / spec.dt)
        rows.append(dict(mode=mode, model=model, devices=d, n_syn=spec.n_syn,
                         wall_s=wall, walls=walls,
                         syn_steps_per_s=spec.n_syn * steps / wall,
                         wall_per_bio_s=wall / (duration_ms / 1000.0),
                         rate_hz=float(r.mean_rate())))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        jax.clear_caches()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.device_scaling")
    p.add_argument("mode", choices=("memory", "strong", "weak"))
    p.add_argument("--devices", type=int, nargs="+",
                   help="device counts (default: 1 for memory, 1 2 4 otherwise)")
    p.add_argument("--synapses", type=float, default=1e6,
                   help="strong: synapses of the network (default 1e6)")
    p.add_argument("--per-device", type=float, default=2.5e5,
                   help="weak: synapses per device (default 2.5e5)")
    p.add_argument("--model", choices=MODELS, default="bench")
    p.add_argument("--duration", type=float, default=200.0, metavar="MS",
                   help="biological time of each timed run (default 200 ms)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per device count; the fastest counts (default 3)")
    args = p.parse_args(argv)
    if args.mode == "memory":
        rows = memory(devices=tuple(args.devices or [1]))
        print("| model | devices | state B/syn | temporaries B/syn | peak B/syn | "
              "fixed |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['devices']} | {r['state_per_syn']:.1f} | "
                  f"{r['temp_per_syn']:.1f} | {r['peak_per_syn']:.1f} | "
                  f"{r['fixed'] / 2**20:.1f} MiB |")
    else:
        n = args.synapses if args.mode == "strong" else args.per_device
        rows = timing(args.mode, args.devices or [1, 2, 4], n, args.model,
                      args.duration, repeat=args.repeat)
        base = rows[0]
        print("| devices | synapses | wall [s] | synapse-steps/s | speed-up | "
              "efficiency |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            if args.mode == "strong":
                su = base["wall_s"] / r["wall_s"]
                eff = su / (r["devices"] / base["devices"])
            else:
                su = r["syn_steps_per_s"] / base["syn_steps_per_s"]
                eff = base["wall_s"] / r["wall_s"]
            print(f"| {r['devices']} | {r['n_syn']:.2e} | {r['wall_s']:.2f} | "
                  f"{r['syn_steps_per_s']:.3g} | {su:.2f} | {eff:.2f} |")
    print(json.dumps(rows, default=lambda x: x if not isinstance(x, np.generic)
                     else x.item()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
