#!/usr/bin/env python
"""bench-v1 through ltpnet's own model and engine; one JSON line per run.

bench-v1 (the shared BENCHMARK.md) is the ltpnet model with parts switched off
(docs/model.md section 4): `Params.bench_v1(k)` and a ModelSpec with one Poisson
pathway, NMDA calcium, no phases, scaling every step and rho ~ U(0, 1). The network
is `ltpnet.build(spec, params, seed)`, the same draw as the peer implementations for
the same seed. The run is `ltpnet.simulate`, recording what a user would: the spikes
of the post neurons every step and the pathway read-out (fEPSP proxy) every 1 ms.

    python scripts/benchmark.py --size M --t 1.0
    python scripts/benchmark.py --size L --t 0.2 --engine step   # the per-step engine
    python scripts/benchmark.py --size M --t 0.5 --vs brainpy --reps 3

Fields: simulator, size, n_syn, steps, compile_s (tracing + XLA compilation),
simulate_s (after compilation), synapse_steps_per_s, real_time_factor (simulated s
per wall s), peak_rss_mb, mean_post_rate_hz, mean_rho_start, mean_rho_end,
mean_a_end, dtype, device, bytes_per_syn_step (`ltpnet.fused.traffic`: the arrays
read and written per step, counted with their dtypes), copy_bandwidth_gbs (a large
device array streamed in and out, best of 5), floor_synapse_steps_per_s (bandwidth /
20 B, BENCHMARK.md's float32 floor) and fraction_of_floor, plus the engine options.

`--vs brainpy` runs the BrainPy peer (`bench_brainpy.py` from the peers directory,
with the peers' Python) and this benchmark alternately, `--reps` times each, and
prints every JSON line and then one summary line with the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

SIZES = {  # name: (n_pre, n_post, k), BENCHMARK.md
    "S": (1_000, 1_000, 100),
    "M": (10_000, 1_000, 1_000),
    "L": (10_000, 10_000, 1_000),
    "XL": (100_000, 100_000, 1_000),
    "XXL": (1_000_000, 1_000_000, 1_000),
}
FLOOR_BYTES = 20.0  # bytes per synapse-step of BENCHMARK.md's float32 floor
PEERS_DIR = os.environ.get("LTPNET_PEERS_DIR", "/work/shared/peers")
PEERS_PYTHON = os.environ.get("LTPNET_PEERS_PYTHON", "/tmp/peers-venv/bin/python")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=list(SIZES), default="S")
    ap.add_argument("--t", type=float, default=1.0, help="simulated seconds")
    ap.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="per-synapse storage of calcium and efficacy (arithmetic is "
        "float32; bfloat16 rounds stochastically once per block)",
    )
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--seed", type=int, default=1234, help="network seed (peers: 1234)")
    ap.add_argument("--noise-seed", type=int, default=1235)
    ap.add_argument("--engine", choices=["fused", "step"], default="fused")
    ap.add_argument(
        "--syn-block",
        type=int,
        default=10,
        help="fused: steps per synapse pass (divides the 1 ms record interval)",
    )
    ap.add_argument("--rho-drift", choices=["step", "block"], default="block")
    ap.add_argument("--ampa", choices=["event", "dense"], default="event")
    ap.add_argument("--rng", choices=["hash", "threefry"], default="hash")
    ap.add_argument(
        "--depression",
        type=float,
        default=0.0,
        metavar="U_REL",
        help="short-term depression of release with input.u_rel = U_REL (input.tau_rec "
        "500 ms; spec.depression); 0, the default: none, as bench-v1",
    )
    ap.add_argument(
        "--record",
        choices=["bench", "spikes", "readout", "none"],
        default="bench",
        help="bench: post spikes every step and the pathway read-out every "
        "1 ms; spikes, readout: one of them; none: neither",
    )
    ap.add_argument(
        "--chunk-ms", type=float, default=100.0, help="simulated ms per compiled chunk"
    )
    ap.add_argument(
        "--network",
        choices=["auto", "standard", "fast"],
        default="auto",
        help="standard: ltpnet.build (the peers' draw for the same seed); "
        "fast: the same law, drawn in a way that scales (auto: XL, XXL)",
    )
    ap.add_argument("--no-bandwidth", action="store_true")
    ap.add_argument(
        "--vector-width",
        choices=["auto", "256", "512"],
        default="auto",
        help="XLA:CPU vector width (auto: 512 where the CPU has AVX-512); "
        "ignored when XLA_FLAGS already sets it",
    )
    ap.add_argument(
        "--vs",
        choices=["brainpy", "numpy"],
        default=None,
        help="run a peer from the peers directory alternately with ltpnet",
    )
    ap.add_argument("--reps", type=int, default=3, help="with --vs: runs of each")
    ap.add_argument(
        "--peer-t",
        type=float,
        default=None,
        help="with --vs: simulated seconds of the peer (default --t)",
    )
    args = ap.parse_args(argv)
    if not 0.0 <= args.depression < 1.0:
        ap.error(f"--depression is input.u_rel, the share of the releasable pool a "
                 f"spike uses, and must lie in [0, 1), got {args.depression}")
    return args


def bench_spec(args):
    import ltpnet

    n_pre, n_post, k = SIZES[args.size]
    opts = {}
    if args.engine == "fused":
        opts = dict(
            fused=True,
            syn_block=args.syn_block,
            rho_drift=args.rho_drift,
            ampa=args.ampa,
            syn_dtype=args.dtype,
        )
    elif args.dtype != "float32":
        raise SystemExit("--dtype bfloat16 needs the fused engine")
    return ltpnet.ModelSpec(
        n_post=n_post,
        k=k,
        pathways=(("input", n_pre),),
        dt=0.1,
        dtype="float32",
        calcium="nmda",
        phases=False,
        homeostasis=True,
        nmda_current=False,
        n_inh=0,
        t286a=False,
        slow_every=1,
        rho_init="uniform",
        rng=args.rng,
        depression=args.depression > 0,
        **opts,
    ).check()


def draw_fast(spec, seed, rows_per_chunk=4096):
    """Fixed in-degree network and rho ~ U(0, 1) for sizes beyond the peers' (XL, XXL).

    BENCHMARK.md's law (k distinct inputs per neuron, uniform without replacement)
    by a method that scales: per neuron, draw m = k + margin inputs with replacement,
    give the distinct ones random keys and keep the k smallest (any k-subset of the
    distinct values is equally likely, so the result is a uniform k-subset); redraw
    the rare neurons with fewer than k distinct values. About 2 s per 10^8 synapses,
    where the peers' method (k smallest of n_pre random keys) costs n_pre draws per
    neuron. A different random stream than `ltpnet.build`.
    """
    import numpy as np

    import ltpnet

    n_pre, n_post, k = spec.n_pre, spec.n_post, spec.k
    rng = np.random.default_rng(seed)
    margin = int(4 * k * k / n_pre + 8 * math.sqrt(k * k / n_pre + 1) + 8)
    m = min(n_pre, k + margin)
    pre_idx = np.empty((n_post, k), np.int32)
    for a in range(0, n_post, rows_per_chunk):
        b = min(n_post, a + rows_per_chunk)
        todo = np.arange(a, b)
        while todo.size:
            v = np.sort(rng.integers(0, n_pre, (todo.size, m), dtype=np.int32), axis=1)
            dup = np.zeros(v.shape, bool)
            dup[:, 1:] = v[:, 1:] == v[:, :-1]
            ok = (m - dup.sum(1)) >= k
            keys = rng.random(v.shape, dtype=np.float32)
            keys[dup] = 2.0
            sel = np.argpartition(keys, k - 1, axis=1)[:, :k]
            rows = np.sort(np.take_along_axis(v, sel, axis=1), axis=1)
            pre_idx[todo[ok]] = rows[ok]
            todo = todo[~ok]
    conn = ltpnet.Connectivity(pre_idx=pre_idx, pre_pathway=np.zeros(n_pre, np.int32))
    rho0 = rng.random((n_post, k), dtype=np.float32)
    return conn, rho0


def copy_bandwidth_gbs(n_bytes=256 << 20, reps=5):
    """Device memory bandwidth: an array read once and written once, best of `reps`."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones(n_bytes // 4, jnp.float32)
    f = jax.jit(lambda a: a + 1.0, donate_argnums=0)
    x = f(x).block_until_ready()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        x = f(x).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    del x
    return 2 * n_bytes / best / 1e9


def configure_xla(args) -> str:
    """Set XLA:CPU flags before JAX starts; returns the vector width in use."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "jax" in sys.modules:  # too late: XLA reads its flags when JAX starts
        return "as started"
    if "xla_cpu_prefer_vector_width" in flags:
        return flags.split("xla_cpu_prefer_vector_width=")[1].split()[0]
    width = args.vector_width
    if width == "auto":
        try:
            with open("/proc/cpuinfo") as f:
                width = "512" if " avx512f" in f.read() else "256"
        except OSError:
            width = "256"
    if width == "512":
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_prefer_vector_width=512").strip()
    return width


def run_ltpnet(args) -> dict:
    vector_width = configure_xla(args)
    import jax
    import numpy as np
    from jax import monitoring

    import ltpnet
    from ltpnet import fused

    compile_events = []
    monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: (
            compile_events.append(secs)
            if name.startswith("/jax/core/compile/")
            else None
        )
    )

    spec = bench_spec(args)
    params = ltpnet.Params.bench_v1(spec.k).with_values("input", u_rel=args.depression)
    t0 = time.perf_counter()
    network = args.network
    if network == "auto":
        network = "fast" if args.size in ("XL", "XXL") else "standard"
    if network == "standard":
        conn, state = ltpnet.build(spec, params, args.seed)
    else:
        conn, rho0 = draw_fast(spec, args.seed)
        state = ltpnet.init_state(spec, params, rho0)
        del rho0
    if spec.fused:
        conn = fused.prepare(spec, conn)
    build_s = time.perf_counter() - t0
    rho_start = float(np.mean(np.asarray(state.syn.rho), dtype=np.float64))

    every = round(1.0 / spec.dt)  # 1 ms
    every = math.lcm(every, spec.syn_block)
    obs = ltpnet.Observe(
        every=every,
        variables=("fepsp",) if args.record in ("bench", "readout") else (),
        spike_neurons=spec.n_post if args.record in ("bench", "spikes") else 0,
    )
    steps = round(args.t * 1000.0 / spec.dt)
    steps = max(every, steps // every * every)
    per_chunk = max(1, round(args.chunk_ms / spec.dt / every))
    n_rec = steps // every
    while n_rec % per_chunk:  # equal chunks: one compiled program
        per_chunk -= 1
    duration_ms = steps * spec.dt
    run = dict(
        observe=obs, records_per_chunk=per_chunk, noise_seed=args.noise_seed, conn=conn
    )

    # compilation (and one chunk) on a copy of the state; the timed run reuses it
    t0 = time.perf_counter()
    warm = jax.tree_util.tree_map(lambda a: np.array(a, copy=True), state)
    ltpnet.simulate(spec, params, per_chunk * every * spec.dt, state=warm, **run)
    warm_s = time.perf_counter() - t0
    compile_s = sum(compile_events)
    del warm
    compile_events.clear()

    t0 = time.perf_counter()
    res = ltpnet.simulate(spec, params, duration_ms, state=state, **run)
    simulate_s = time.perf_counter() - t0
    recompiled_s = sum(compile_events)

    n_spikes = int(np.sum(res.spike_count, dtype=np.int64))
    rho_end = np.mean(np.asarray(res.state.syn.rho), dtype=np.float64)
    a_end = np.mean(np.asarray(res.state.post.a), dtype=np.float64)
    T = duration_ms / 1000.0
    out = dict(
        simulator="ltpnet",
        size=args.size,
        n_syn=spec.n_syn,
        steps=steps,
        compile_s=round(compile_s, 3),
        simulate_s=round(simulate_s, 3),
        synapse_steps_per_s=float(f"{spec.n_syn * steps / simulate_s:.4g}"),
        real_time_factor=float(f"{T / simulate_s:.4g}"),
        peak_rss_mb=round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1
        ),
        mean_post_rate_hz=float(f"{n_spikes / (spec.n_post * T):.6g}"),
        mean_rho_start=float(f"{rho_start:.6g}"),
        mean_rho_end=float(f"{rho_end:.6g}"),
        mean_a_end=float(f"{a_end:.6g}"),
        dtype=args.dtype,
        device=_device_name(),
    )
    if spec.fused:
        out["bytes_per_syn_step"] = round(
            fused.traffic(spec, conn, obs)["per_syn_step"], 3
        )
    else:
        out["bytes_per_syn_step"] = None
    if not args.no_bandwidth:
        bw = copy_bandwidth_gbs()
        floor = bw * 1e9 / FLOOR_BYTES
        out.update(
            copy_bandwidth_gbs=round(bw, 2),
            floor_synapse_steps_per_s=float(f"{floor:.4g}"),
            fraction_of_floor=round(out["synapse_steps_per_s"] / floor, 3),
        )
    out.update(
        engine=args.engine,
        syn_block=spec.syn_block,
        rho_drift=spec.rho_drift,
        ampa=spec.ampa,
        rng=spec.rng,
        depression=args.depression,
        record=args.record,
        chunk_steps=per_chunk * every,
        xla_cpu_vector_width=vector_width,
        network=network,
        build_s=round(build_s, 3),
        warmup_s=round(warm_s, 3),
        recompile_s=round(recompiled_s, 3),
        jax_version=jax.__version__,
        load_avg_1min=round(os.getloadavg()[0], 2),
    )
    return out


def _device_name() -> str:
    import jax

    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    return f"{d.platform} {d.device_kind}"


def _run_json(cmd) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_versus(args, argv) -> None:
    """Peer and ltpnet alternately in fresh processes; then the ratio of medians."""
    script = os.path.join(PEERS_DIR, f"bench_{args.vs}.py")
    if not (os.path.exists(script) and os.path.exists(PEERS_PYTHON)):
        raise SystemExit(
            f"--vs needs {script} and {PEERS_PYTHON} "
            "(LTPNET_PEERS_DIR, LTPNET_PEERS_PYTHON)"
        )
    own = [a for a in argv if a not in ("--json",)]
    skip = {"--vs", "--reps", "--peer-t"}
    mine, i = [], 0
    while i < len(own):
        if own[i] in skip:
            i += 2
            continue
        mine.append(own[i])
        i += 1
    peer_t = args.peer_t if args.peer_t is not None else args.t
    peer_cmd = [PEERS_PYTHON, script, "--size", args.size, "--t", str(peer_t)]
    own_cmd = [sys.executable, os.path.abspath(__file__), *mine, "--json"]
    peer, ours = [], []
    for _ in range(args.reps):
        peer.append(_run_json(peer_cmd))
        print(json.dumps(peer[-1]), flush=True)
        ours.append(_run_json(own_cmd))
        print(json.dumps(ours[-1]), flush=True)
    mp = statistics.median(r["synapse_steps_per_s"] for r in peer)
    mo = statistics.median(r["synapse_steps_per_s"] for r in ours)
    print(
        json.dumps(
            {
                "summary": f"ltpnet vs {args.vs}",
                "size": args.size,
                "reps": args.reps,
                "peer_median_synapse_steps_per_s": mp,
                "ltpnet_median_synapse_steps_per_s": mo,
                "ratio": round(mo / mp, 2),
                "ratios_per_pair": [
                    round(o["synapse_steps_per_s"] / p["synapse_steps_per_s"], 2)
                    for o, p in zip(ours, peer, strict=True)
                ],
            }
        ),
        flush=True,
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.vs:
        run_versus(args, argv)
        return
    out = run_ltpnet(args)
    if not args.json:
        for key in (
            "synapse_steps_per_s",
            "compile_s",
            "simulate_s",
            "mean_post_rate_hz",
        ):
            print(f"# {key}: {out[key]}", file=sys.stderr)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
