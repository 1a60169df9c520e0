"""The `ltpnet` command: run, resume, sweep, inspect, plot and fit from TOML configs.

    ltpnet run CONFIG [-o OUT_DIR] [--set table.key=value ...] [--seed N]
               [--params FIT_JSON] [--overwrite]
    ltpnet run --resume OUT_DIR
    ltpnet sweep CONFIG --grid table.key=v1,v2,... [--grid ...] [--trials N]
                 [-o OUT_DIR] [--set ...]
    ltpnet inspect FILE.h5
    ltpnet plot FILE.h5 [-o DIR]
    ltpnet fit CONFIG [-o DIR] [--set ...]
    ltpnet experiment NAME|all [-o DIR] [--quick] [--fused] [--neurons N] [--set ...]

`run` and `sweep` take `--devices N` (split the run over N devices) and, for runs
over several hosts, `--coordinator HOST:PORT --num-processes P --process-id I` (or
the variables LTPNET_COORDINATOR, LTPNET_NUM_PROCESSES, LTPNET_PROCESS_ID); see
docs/scaling.md.

Exit codes: 0 success, 1 unexpected error, 2 bad config or not enough memory
(nothing is written), 3 NaN or Inf in the recorded data or the state, 130
interrupted (resume with `ltpnet run --resume OUT_DIR`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import (
    Config,
    ConfigError,
    load_config,
    loads_config,
    parse_override,
    parse_value,
)

RESULTS = "results.h5"
CONFIG = "config.toml"
_SWEEP_STATIC = ("spec", "run", "record", "protocol")  # tables run member by member


class NonFiniteError(RuntimeError):
    """NaN or Inf in recorded data or in a checkpointed state."""


class MemoryRefused(RuntimeError):
    """The run would not fit in the memory available."""


# --------------------------------------------------------------------------- devices

def _is_main() -> bool:
    """True in the process that writes files (process 0; the only one, usually)."""
    import jax

    return jax.process_index() == 0


class _NoWriter:
    """The results writer of processes other than 0: process 0 writes the file."""

    def on_chunk(self, step_end, records, spikes, state):
        pass

    def close(self, complete: bool):
        pass


def _writer(*args, **kw):
    from .io import ResultsWriter

    return ResultsWriter(*args, **kw) if _is_main() else _NoWriter()


def _host_build(devices):
    """Build a network that will be sharded in host memory (see ltpnet.distributed)."""
    from .distributed import host_build_context

    return host_build_context(devices)


def _check_devices(cfg: Config, devices: int | None, n_batch: int | None = None):
    """ConfigError unless the run splits evenly over `devices`."""
    if devices is None:
        return
    from .distributed import placement

    try:
        placement(cfg.spec, devices, batch=n_batch)
    except ValueError as e:
        raise ConfigError(f"--devices {devices}: {e}") from None


def _start_distributed(args):
    """Start jax.distributed when the flags or LTPNET_* variables ask for it."""
    if args.command not in ("run", "sweep"):
        return
    from .distributed import initialize_from_env

    try:
        initialize_from_env(args.coordinator, args.num_processes, args.process_id)
    except ValueError as e:
        raise ConfigError(str(e)) from None


# --------------------------------------------------------------------------- memory

def estimate_memory(cfg: Config, n_batch: int = 1) -> dict[str, int]:
    """Bytes a run of `cfg` needs, by part (`"device"` and `"host"` totals included).

    Counts the state (every leaf of `ltpnet.state.state_shapes`; the per-synapse
    arrays dominate), the connectivity, one chunk of
    records, spikes and drive (twice: one on the device, one being pulled), the
    temporaries of a step, the host copy of a checkpoint and the arrays of the
    network build.
    """
    import jax

    from .state import state_shapes

    spec, obs = cfg.spec, cfg.observe
    f = np.dtype(spec.dtype).itemsize
    n_syn, n_pre, n_post = spec.n_syn, spec.n_pre, spec.n_post
    state = sum(math.prod(x.shape) * x.dtype.itemsize
                for x in jax.tree.leaves(state_shapes(spec)))
    conn = 4 * (n_syn + n_pre + spec.n_inh * spec.k_inh + n_post * spec.k_ie)
    steps = cfg.run.records_per_chunk * obs.every
    rec = cfg.run.records_per_chunk * sum(
        math.prod(obs.shape(spec, v)) * f for v in obs.variables)
    spikes = steps * (obs.spike_neurons + obs.input_neurons + 4)
    drive = steps * (spec.n_pathways + 1)
    work = 3 * n_syn * f  # weights, calcium influx and the like within a step
    rows = max(1, min(n_post, 20_000_000 // max(n_pre, 1)))
    build = rows * n_pre * 12 + n_syn * (4 + f)  # random keys, argpartition, rho0
    parts = {
        "state": n_batch * state, "connectivity": conn,
        "records+spikes": 2 * n_batch * (rec + spikes) + drive,
        "work": n_batch * (state + work), "checkpoint copy": n_batch * state,
        "build": build,
    }
    parts["device"] = (parts["state"] + conn + parts["records+spikes"]
                       + parts["work"])
    parts["host"] = parts["checkpoint copy"] + parts["records+spikes"] + build
    return parts


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def check_memory(cfg: Config, n_batch: int = 1,
                 n_devices: int = 1) -> dict[str, int]:
    """Raise MemoryRefused if the run will not fit; return `estimate_memory`.

    With `n_devices` accelerators, each holds about 1/n_devices of the device part.
    """
    need = estimate_memory(cfg, n_batch)
    host_free = _mem_available()
    import jax

    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    hint = ("make the network smaller ([spec] n_post, k), record fewer or smaller "
            "variables, or lower [run] records_per_chunk")
    detail = ", ".join(f"{k} {_gib(v)}" for k, v in need.items()
                       if k not in ("device", "host"))
    if stats and "bytes_limit" in stats:
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        per_dev = -(-need["device"] // n_devices)
        if per_dev > free:
            on = f" on each of {n_devices} devices" if n_devices > 1 else ""
            raise MemoryRefused(f"this run needs about {_gib(per_dev)} of "
                                f"{dev.platform} memory{on} ({detail}) but only "
                                f"{_gib(free)} is free on {dev}; {hint}")
        host_need = need["host"]
    else:
        host_need = need["device"] + need["host"]
    if host_free is not None and host_need > host_free:
        raise MemoryRefused(f"this run needs about {_gib(host_need)} of memory "
                            f"({detail}) but only {_gib(host_free)} is available "
                            f"(MemAvailable in /proc/meminfo); {hint}")
    return need


# --------------------------------------------------------------------------- progress

def _fmt_ms(ms: float) -> str:
    s = ms / 1000.0
    if s < 1:
        return f"{ms:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _fmt_wall(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


class _Progress:
    """One status line on stderr: simulated time, speed and time left."""

    def __init__(self, spec, step0: int, end: int, n_batch: int = 1, label: str = ""):
        self.dt, self.n_syn = spec.dt, spec.n_syn * n_batch
        self.step0, self.end, self.label = step0, end, label
        self.t0 = time.perf_counter()
        self.first = None  # (time, step) after the first chunk: speed excludes compile
        self.last_print = -math.inf
        self.tty = sys.stderr.isatty()

    def update(self, step: int):
        now = time.perf_counter()
        if self.first is None:
            self.first = (now, step)
            rate = (step - self.step0) / max(now - self.t0, 1e-9)
        elif step > self.first[1]:
            rate = (step - self.first[1]) / max(now - self.first[0], 1e-9)
        else:
            rate = math.nan
        done = step >= self.end
        if not done and now - self.last_print < (0.5 if self.tty else 10.0):
            return
        self.last_print = now
        left = (self.end - step) / rate if rate > 0 else math.inf
        line = (f"{self.label}t = {_fmt_ms(step * self.dt)} / "
                f"{_fmt_ms(self.end * self.dt)}"
                f" | {rate * self.dt / 1000:.3g} bio-s/s"
                f" | {rate * self.n_syn:.3g} synapse-steps/s"
                f" | {_fmt_wall(left)} left")
        if self.tty:
            print("\r" + line.ljust(100), end="\n" if done else "", file=sys.stderr,
                  flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- chunks

def _leaf_name(path) -> str:
    import jax

    return jax.tree_util.keystr(path).lstrip(".")


class _Monitor:
    """`on_chunk` of a run: NaN/Inf check, then the writer, statistics and progress."""

    def __init__(self, cfg: Config, writer, path: Path, step0: int, end: int,
                 n_batch: int | None = None, progress: _Progress | None = None):
        self.cfg, self.writer, self.path = cfg, writer, path
        self.batch = n_batch
        self.prev = step0
        self.last_ckpt = step0 if step0 else None
        self.progress = progress
        self.end = end
        self.fepsp_first = self.fepsp_last = None
        self.spikes, self.steps = 0, 0

    def __call__(self, step_end, records, spikes, state):
        self._check(step_end, records, state)
        if self.writer is not None:
            self.writer.on_chunk(step_end, records, spikes, state)
        if state is not None:
            self.last_ckpt = step_end
        ax = 0 if self.batch is None else 1
        if "fepsp" in records:
            f = np.asarray(records["fepsp"], float)
            if self.fepsp_first is None:
                self.fepsp_first = np.take(f, 0, axis=ax)
            self.fepsp_last = np.take(f, -1, axis=ax)
        self.spikes = self.spikes + np.sum(spikes["count"], axis=ax)
        self.steps += step_end - self.prev
        self.prev = step_end
        if self.progress is not None:
            self.progress.update(step_end)

    def _check(self, step_end, records, state):
        import jax

        dt, every = self.cfg.spec.dt, self.cfg.observe.every
        for name, a in records.items():
            a = np.asarray(a)
            if not np.issubdtype(a.dtype, np.floating) or np.isfinite(a).all():
                continue
            bad = ~np.isfinite(a)
            if self.batch is None:
                i = int(np.argmax(bad.reshape(bad.shape[0], -1).any(1)))
                who = ""
            else:
                per = bad.reshape(bad.shape[0], bad.shape[1], -1).any(2)
                i = int(np.argmax(per.any(0)))
                who = f" (batch members {np.flatnonzero(per[:, i]).tolist()})"
            self._fail(self.prev + (i + 1) * every, dt, f"record {name!r}{who}")
        if state is not None:
            for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
                leaf = np.asarray(leaf)
                floating = np.issubdtype(leaf.dtype, np.floating)
                if floating and not np.isfinite(leaf).all():
                    self._fail(step_end, dt, f"state variable {_leaf_name(path)!r}")

    def _fail(self, step, dt, what):
        if self.last_ckpt is None:
            ck = "no checkpoint was written before it"
        else:
            ck = (f"the last good checkpoint is at step {self.last_ckpt} "
                  f"(t = {_fmt_ms(self.last_ckpt * dt)}) in {self.path}")
        raise NonFiniteError(f"NaN or Inf in {what} at step {step} "
                             f"(t = {_fmt_ms(step * dt)}); the run was stopped; {ck}")


def _summary(cfg: Config, mon: _Monitor, wall: float, files: list[Path],
             members: list[str] | None = None, baseline=None) -> str:
    spec = cfg.spec
    T = mon.steps * spec.dt
    syn_steps = mon.steps * spec.n_syn * (len(members) if members else 1)
    lines = [f"simulated {_fmt_ms(T)} in {_fmt_wall(wall)} wall "
             f"({T / 1000 / max(wall, 1e-9):.3g} bio-s/s, "
             f"{syn_steps / max(wall, 1e-9):.3g} synapse-steps/s)"]
    rate = np.atleast_1d(mon.spikes / (spec.n_post * max(T, 1e-12) / 1000.0))
    first = mon.fepsp_first if baseline is None else baseline
    for b, label in enumerate(members or [""]):
        parts = [f"mean rate {rate[b]:.3g} Hz"]
        if first is not None:
            f0 = np.atleast_2d(first)[b]
            f1 = np.atleast_2d(mon.fepsp_last)[b]
            with np.errstate(divide="ignore", invalid="ignore"):
                ch = 100.0 * (f1 / f0 - 1.0)
            parts.append("fEPSP change " + ", ".join(
                f"{name} {c:+.1f} %" for name, c in zip(spec.pathway_names, ch,
                                                        strict=True)))
        lines.append((f"{label}: " if label else "") + "; ".join(parts))
    lines += [f"wrote {p}" for p in files]
    return "\n".join(lines)


def _plots(cfg: Config, path: Path, out: Path) -> list[Path]:
    if not cfg.output.plots:
        return []
    try:
        from .plot import plot_file

        return [Path(p) for p in plot_file(str(path), str(out))]
    except Exception as e:  # a finished run is not lost because a figure failed
        print(f"warning: plotting failed ({type(e).__name__}: {e}); "
              f"retry with: ltpnet plot {path}", file=sys.stderr)
        return []


# --------------------------------------------------------------------------- run

def _simulate(cfg: Config, writer, path: Path, conn, state, step0: int,
              n_batch=None, label: str = "", **batch_kw):
    """Run `cfg` from `step0` to its end; return (monitor, wall seconds, Result)."""
    from .run import n_steps_for, simulate

    spec, obs = cfg.spec, cfg.observe
    end = n_steps_for(spec, cfg.run.duration_ms, obs.every)
    prog = _Progress(spec, step0, end, n_batch or 1, label)
    mon = _Monitor(cfg, writer, path, step0, end, n_batch, prog)
    t0 = time.perf_counter()
    res = simulate(spec, batch_kw.pop("params", cfg.params), (end - step0) * spec.dt,
                   seed=cfg.run.seed, protocol=cfg.protocol, observe=obs,
                   records_per_chunk=cfg.run.records_per_chunk, conn=conn, state=state,
                   step0=step0, on_chunk=mon, checkpoint_every=cfg.run.checkpoint_every,
                   batch=n_batch, **batch_kw)
    return mon, time.perf_counter() - t0, res


def _run_to_end(cfg: Config, writer, out: Path, conn, state, step0: int,
                baseline=None, **kw) -> int:
    path = out / RESULTS
    try:
        mon, wall, _ = _simulate(cfg, writer, path, conn, state, step0,
                                 keep=False, **kw)
    except NonFiniteError as e:
        writer.close(complete=False)
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        writer.close(complete=False)
        print(f"\ninterrupted; continue with: ltpnet run --resume {out}",
              file=sys.stderr)
        return 130
    except BaseException:
        writer.close(complete=False)
        raise
    writer.close(complete=True)
    if not _is_main():
        return 0
    figs = _plots(cfg, path, out)
    print(_summary(cfg, mon, wall, [path, out / CONFIG, *figs], baseline=baseline))
    return 0


def _build(cfg: Config, params_list=None):
    """Network from `cfg.run.seed` and its initial state (stacked, one per params)."""
    import jax

    from .connectivity import fixed_indegree
    from .state import init_rho, init_state

    rng = np.random.default_rng(cfg.run.seed)
    conn = fixed_indegree(cfg.spec, rng)  # the draws of state.build, in its order
    rho0 = init_rho(cfg.spec, rng)
    if params_list is None:
        return conn, init_state(cfg.spec, cfg.params, rho0)
    states = [init_state(cfg.spec, p, rho0) for p in params_list]
    return conn, jax.tree_util.tree_map(lambda *xs: np.stack(xs), *states)


def _prepare_out(out: Path, overwrite: bool):
    if (out / RESULTS).exists() and not overwrite:
        raise ConfigError(f"{out / RESULTS} already exists; choose another output "
                          "directory (-o), pass --overwrite, or continue it with "
                          f"ltpnet run --resume {out}")


def cmd_run(args) -> int:
    if args.resume:
        given = [o for o, v in (("CONFIG", args.config), ("--set", args.set),
                                ("--seed", args.seed is not None),
                                ("--params", args.params), ("-o", args.out)) if v]
        if given:
            raise ConfigError(f"--resume takes its config from {args.resume}/{CONFIG}; "
                              f"drop {', '.join(given)}")
        return _resume(Path(args.resume), args.devices)
    if not args.config:
        raise ConfigError("ltpnet run needs a CONFIG file (or --resume OUT_DIR)")
    cfg = load_config(args.config, _overrides(args), args.params)
    out = Path(cfg.output.dir)
    _prepare_out(out, args.overwrite or not _is_main())  # process 0 decides
    _check_devices(cfg, args.devices)
    check_memory(cfg, n_devices=args.devices or 1)
    _note_protocol(cfg)
    with _host_build(args.devices):
        conn, state = _build(cfg)
    out.mkdir(parents=True, exist_ok=True)
    text = cfg.to_toml()
    (out / CONFIG).write_text(text)
    writer = _writer(str(out / RESULTS), cfg.spec, cfg.params, cfg.observe, conn,
                     config_toml=text, seed=cfg.run.seed, protocol=cfg.protocol)
    return _run_to_end(cfg, writer, out, conn, state, 0, devices=args.devices)


def _resume(out: Path, devices: int | None = None) -> int:
    import jax
    import jax.numpy as jnp

    from .run import n_steps_for

    if not (out / RESULTS).is_file():
        raise ConfigError(f"cannot resume: {out / RESULTS} not found")
    cfg = load_config(out / CONFIG)
    from .io import load_checkpoint, open_results

    with open_results(str(out / RESULTS)) as f:
        if int(f.attrs.get("n_batch", -1)) >= 0:
            raise ConfigError(f"{out / RESULTS} holds a sweep; only single runs can "
                              "be resumed (run the sweep again)")
    try:
        ck = load_checkpoint(str(out / RESULTS))
    except ValueError as e:
        raise ConfigError(f"cannot resume: {e}; start the run again") from None
    if loads_config(ck.config_toml).to_toml() != cfg.to_toml():
        raise ConfigError(f"{out / CONFIG} differs from the config stored in "
                          f"{out / RESULTS}; a run resumes with the config it "
                          "started with")
    if int(ck.seed) != cfg.run.seed:
        raise ConfigError(f"seed {ck.seed} in {out / RESULTS} differs from "
                          f"[run] seed={cfg.run.seed} in {out / CONFIG}")
    end = n_steps_for(cfg.spec, cfg.run.duration_ms, cfg.observe.every)
    if ck.step_end >= end:
        print(f"{out / RESULTS} is already complete ({_fmt_ms(end * cfg.spec.dt)})")
        return 0
    _check_devices(cfg, devices)
    check_memory(cfg, n_devices=devices or 1)
    t = _fmt_ms(ck.step_end * cfg.spec.dt)
    print(f"resuming from step {ck.step_end} (t = {t})", file=sys.stderr)
    conn = ck.conn if ck.conn is not None else _build(cfg)[0]
    state = jax.tree_util.tree_map(jnp.asarray, ck.state)
    baseline = _first_fepsp(out / RESULTS, cfg.spec)
    writer = _writer(str(out / RESULTS), cfg.spec, cfg.params, cfg.observe, conn,
                     config_toml=cfg.to_toml(), seed=cfg.run.seed,
                     protocol=cfg.protocol, resume=True)
    return _run_to_end(cfg, writer, out, conn, state, int(ck.step_end),
                       baseline=baseline, devices=devices)


def _first_fepsp(path: Path, spec):
    """First fEPSP record per pathway already in a results file (summary baseline)."""
    from .io import open_results

    try:
        with open_results(path) as f:
            return np.array([float(f[f"readout/fepsp/{p}"].attrs["baseline"])
                             for p in spec.pathway_names])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _overrides(args) -> list[str]:
    out = list(args.set or [])
    if getattr(args, "seed", None) is not None:
        out.append(f"run.seed={args.seed}")
    if getattr(args, "out", None):
        out.append(f"output.dir={json.dumps(str(args.out))}")
    return out


def _note_kept(kept) -> None:
    """Name the values a config sets itself, which a params file does not replace."""
    if kept:
        print(f"note: the config's own values hold over the params file for "
              f"{', '.join(kept)} (--set overrides both)", file=sys.stderr)


def _note_protocol(cfg: Config):
    _note_kept(cfg.kept_over_params)
    end = cfg.run.duration_ms
    late = sum(t >= end for _, ts in cfg.protocol.pulses for t in ts)
    late += sum(t >= end for t in cfg.protocol.post)
    if late:
        print(f"note: {late} protocol events fall after the end of the run "
              f"({_fmt_ms(end)}) and are not simulated", file=sys.stderr)


# --------------------------------------------------------------------------- sweep

def _parse_grid(texts: Sequence[str]) -> list[tuple[str, list[str]]]:
    grid, seen = [], set()
    for text in texts:
        key, sep, values = text.partition("=")
        if not sep or not values.strip():
            raise ConfigError(f"bad --grid {text!r}: expected table.key=v1,v2,... "
                              "e.g. --grid plasticity.theta_p=1.2,1.3,1.4")
        parse_override(f"{key}=0")  # key syntax
        items, depth, cur = [], 0, ""
        for ch in values:  # split on top-level commas ({S1 = 1, S2 = 2} stays whole)
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
            if ch == "," and depth == 0:
                items.append(cur)
                cur = ""
            else:
                cur += ch
        items.append(cur)
        if any(not v.strip() for v in items):
            raise ConfigError(f"bad --grid {text!r}: empty value in the list")
        if key in seen:
            raise ConfigError(f"--grid {key} is given twice")
        seen.add(key)
        grid.append((key.strip(), [v.strip() for v in items]))
    return grid


def _grid_column(texts: list[str]) -> np.ndarray:
    """Grid values of one key, one per member, as stored beside the results.

    Numbers stay numbers; strings, tables and arrays are stored as (JSON) text.
    """
    import h5py

    vals = [parse_value(t) for t in texts]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return np.asarray(vals)
    text = [v if isinstance(v, str) else json.dumps(v) for v in vals]
    return np.array(text, dtype=h5py.string_dtype())


def cmd_sweep(args) -> int:
    from .params import GROUPS
    from .run import stack_params

    grid = _parse_grid(args.grid or [])
    if not grid and args.trials < 2:
        raise ConfigError("ltpnet sweep needs at least one --grid table.key=v1,v2,... "
                          "or --trials N with N >= 2")
    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got --trials={args.trials}")
    base = _overrides(args)
    combos = list(itertools.product(*(vals for _, vals in grid)))
    members, cfgs, seeds = [], [], []
    for combo in combos:
        sets = [f"{k}={v}" for (k, _), v in zip(grid, combo, strict=True)]
        try:
            cfg = load_config(args.config, base + sets, args.params)
        except ConfigError as e:
            name = ", ".join(sets) or "(base)"
            raise ConfigError(f"sweep member {name}: {e}") from None
        for t in range(args.trials):
            cfgs.append(cfg)
            seeds.append(cfg.run.seed + t)
            trial = [f"trial {t}"] if args.trials > 1 else []
            members.append(", ".join(sets + trial))
    _note_kept(list(dict.fromkeys(k for c in cfgs for k in c.kept_over_params)))
    tables = {k.split(".")[0] for k, _ in grid}
    if tables & {"output"}:
        raise ConfigError("[output] keys cannot be swept; a sweep writes one "
                          "directory")
    sequential = sorted(tables - set(GROUPS))
    cfg0 = cfgs[0]
    n = len(cfgs)
    batch_grid = {k: _grid_column([c[i] for c in combos for _ in range(args.trials)])
                  for i, (k, _) in enumerate(grid)}
    batch_grid["run.noise_seed"] = np.asarray(seeds, np.int64)
    if sequential:
        _check_same_shapes(cfgs, grid)
    out = Path(cfg0.output.dir)
    _prepare_out(out, args.overwrite or not _is_main())  # process 0 decides
    for c in cfgs if sequential else cfgs[:1]:  # sequential: each member is split
        _check_devices(c, args.devices, None if sequential else n)
    check_memory(cfg0, 1 if sequential else n, n_devices=args.devices or 1)
    params, axes = stack_params([c.params for c in cfgs])
    text = cfg0.to_toml()
    header = "".join(f"# sweep: --grid {k}={','.join(v)}\n" for k, v in grid)
    header += f"# sweep: --trials {args.trials}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG).write_text(header + text)
    path = out / RESULTS
    if sequential:
        print(f"note: {', '.join(f'[{t}]' for t in sequential)} keys change the static "
              f"structure of the model, so the {n} members run one after another "
              "(not as one vmapped batch)", file=sys.stderr)
        return _sweep_sequential(cfgs, seeds, members, params, batch_grid, text, out,
                                 args.devices)
    with _host_build(args.devices):
        conn, state = _build(cfg0, [c.params for c in cfgs])
    writer = _writer(str(path), cfg0.spec, params, cfg0.observe, conn,
                     config_toml=text, seed=cfg0.run.seed, protocol=cfg0.protocol,
                     n_batch=n, batch_grid=batch_grid)
    print(f"sweep: {n} members as one vmapped batch", file=sys.stderr)
    try:
        mon, wall, _ = _simulate(cfg0, writer, path, conn, state, 0, n_batch=n,
                                 keep=False, params=params, params_axes=axes,
                                 noise_seeds=seeds, devices=args.devices)
    except NonFiniteError as e:
        writer.close(complete=False)
        print(f"error: {e}", file=sys.stderr)
        return 3
    except BaseException:
        writer.close(complete=False)
        raise
    writer.close(complete=True)
    if not _is_main():
        return 0
    figs = _plots(cfg0, path, out)
    print(_summary(cfg0, mon, wall, [path, out / CONFIG, *figs], members=members))
    return 0


def _shape_key(cfg: Config):
    from .run import n_steps_for

    spec, obs = cfg.spec, cfg.observe
    return (n_steps_for(spec, cfg.run.duration_ms, obs.every), obs.every,
            cfg.run.records_per_chunk, obs.variables,
            tuple(obs.shape(spec, v) for v in obs.variables), obs.spike_neurons,
            obs.input_neurons, spec.n_post, spec.k, spec.n_pre, spec.n_pathways,
            spec.pathway_names, spec.n_inh, spec.phases, spec.dtype,
            spec.calcium == "linear" and spec.ca_delay_steps)


def _check_same_shapes(cfgs: list[Config], grid):
    keys = {_shape_key(c) for c in cfgs}
    if len(keys) > 1:
        names = ", ".join(k for k, _ in grid if k.split(".")[0] in _SWEEP_STATIC)
        raise ConfigError(f"sweeping {names} changes the shapes or length of the "
                          "recorded data, so the members cannot share one results "
                          "file; run them separately with ltpnet run --set")


def _sweep_sequential(cfgs, seeds, members, params, batch_grid, text, out: Path,
                      devices: int | None = None) -> int:
    """Members one by one (static structure differs), written as one batch file."""
    import jax

    from .distributed import to_host

    n = len(cfgs)
    results, mons, wall = [], [], 0.0
    for b, (cfg, ns) in enumerate(zip(cfgs, seeds, strict=True)):
        try:
            mon, w, res = _simulate(cfg, None, out / RESULTS, None, None, 0,
                                    label=f"[{b + 1}/{n}] ", keep=True, noise_seed=ns,
                                    devices=devices)
        except NonFiniteError as e:
            print(f"error: member {members[b]}: {e}", file=sys.stderr)
            return 3
        results.append(res)
        mons.append(mon)
        wall += w
    cfg0 = cfgs[0]
    conn = to_host(results[0].conn)
    writer = _writer(str(out / RESULTS), cfg0.spec, params, cfg0.observe, conn,
                     config_toml=text, seed=cfg0.run.seed, protocol=cfg0.protocol,
                     n_batch=n, batch_grid=batch_grid)
    every, rpc = cfg0.observe.every, cfg0.run.records_per_chunk
    n_rec = len(results[0].t)
    try:
        for r0 in range(0, n_rec, rpc):
            r1 = min(n_rec, r0 + rpc)
            recs = {k: np.stack([r.records[k][r0:r1] for r in results])
                    for k in cfg0.observe.variables}
            s0, s1 = r0 * every, r1 * every
            spikes = {"post": np.stack([r.post_spikes[s0:s1] for r in results]),
                      "input": np.stack([r.input_spikes[s0:s1] for r in results]),
                      "count": np.stack([r.spike_count[s0:s1] for r in results])}
            state = None
            if r1 == n_rec:
                finals = [to_host(r.state) for r in results]
                state = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *finals)
            writer.on_chunk(s1, recs, spikes, state)
    except BaseException:
        writer.close(complete=False)
        raise
    writer.close(complete=True)
    # one summary over all members
    agg = mons[0]
    agg.spikes = np.array([m.spikes for m in mons])
    if agg.fepsp_first is not None:
        agg.fepsp_first = np.stack([m.fepsp_first for m in mons])
        agg.fepsp_last = np.stack([m.fepsp_last for m in mons])
    if not _is_main():
        return 0
    figs = _plots(cfg0, out / RESULTS, out)
    print(_summary(cfg0, agg, wall, [out / RESULTS, out / CONFIG, *figs],
                   members=members))
    return 0


# --------------------------------------------------------------------------- others

def cmd_inspect(args) -> int:
    if not Path(args.file).is_file():
        raise ConfigError(f"no such file: {args.file!r}")
    from .io import inspect

    print(inspect(str(args.file)))
    return 0


def cmd_plot(args) -> int:
    if not Path(args.file).is_file():
        raise ConfigError(f"no such file: {args.file!r}")
    from .plot import plot_file

    out = args.out or str(Path(args.file).parent)
    Path(out).mkdir(parents=True, exist_ok=True)
    for p in plot_file(str(args.file), out):
        print(p)
    return 0


def cmd_fit(args) -> int:
    if not Path(args.config).is_file():
        raise ConfigError(f"config file not found: {args.config!r}")
    from .fit import fit_command

    out = args.out or str(Path("results") / (Path(args.config).stem + "-fit"))
    return int(fit_command(str(args.config), out, list(args.set or [])))


# --------------------------------------------------------------------------- main

def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="ltpnet", description="Long-term synaptic plasticity in populations of "
        "hippocampal neurons, from TOML configs.")
    p.add_argument("--version", action="version", version=f"ltpnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(q, seed=True):
        q.add_argument("-o", "--out", metavar="OUT_DIR",
                       help="output directory (default: [output] dir)")
        q.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                       help="override a config value (TOML syntax; repeatable), e.g. "
                       "--set neuron.tau_m=20 --set 'run.duration_ms=2 min'")
        if seed:
            q.add_argument("--seed", type=int, help="same as --set run.seed=N")
            q.add_argument("--params", metavar="FIT_JSON",
                           help="use the parameters of a fit result in place of "
                           "the defaults (values the config sets itself hold)")
            q.add_argument("--overwrite", action="store_true",
                           help="replace an existing OUT_DIR/results.h5")

    def devices(q):
        g = q.add_argument_group("devices and hosts (docs/scaling.md)")
        g.add_argument("--devices", type=int, metavar="N",
                       help="split the run over N devices: the neurons of a run (N "
                       "must divide [spec] n_post), the members of a sweep (N must "
                       "divide their number); default: one device")
        g.add_argument("--coordinator", metavar="HOST:PORT",
                       help="several hosts: address of process 0 (or "
                       "LTPNET_COORDINATOR)")
        g.add_argument("--num-processes", metavar="P",
                       help="several hosts: number of processes (or "
                       "LTPNET_NUM_PROCESSES)")
        g.add_argument("--process-id", metavar="I",
                       help="several hosts: this process, 0..P-1 (or "
                       "LTPNET_PROCESS_ID); process 0 writes the results")

    q = sub.add_parser("run", help="simulate a config, or continue a run (--resume)")
    q.add_argument("config", nargs="?", metavar="CONFIG")
    common(q)
    q.add_argument("--resume", metavar="OUT_DIR",
                   help="continue an interrupted run from its last checkpoint")
    devices(q)
    q.set_defaults(func=cmd_run)

    q = sub.add_parser("sweep", help="run a grid of configs as one batch")
    q.add_argument("config", metavar="CONFIG")
    q.add_argument("--grid", action="append", default=[], metavar="TABLE.KEY=V1,V2,...",
                   help="values of one key (repeatable: the cartesian product is run)")
    q.add_argument("--trials", type=int, default=1,
                   help="noise seeds seed..seed+N-1 per grid point (default 1)")
    common(q)
    devices(q)
    q.set_defaults(func=cmd_sweep)

    q = sub.add_parser("inspect", help="describe a results file")
    q.add_argument("file", metavar="FILE.h5")
    q.set_defaults(func=cmd_inspect)

    q = sub.add_parser("plot", help="write figures of a results file")
    q.add_argument("file", metavar="FILE.h5")
    q.add_argument("-o", "--out", metavar="DIR", help="default: the file's directory")
    q.set_defaults(func=cmd_plot)

    q = sub.add_parser("fit", help="fit parameters to plasticity data")
    q.add_argument("config", metavar="CONFIG")
    common(q, seed=False)
    q.set_defaults(func=cmd_fit)

    q = sub.add_parser("experiment", help="run a canonical experiment (or all) "
                       "and report it against the expected bands")
    q.add_argument("name", metavar="NAME", help="an experiment, or all")
    q.add_argument("-o", "--out", metavar="DIR", default="results/experiments",
                   help="output folder (default results/experiments)")
    q.add_argument("--quick", action="store_true",
                   help="the short version that checks the sign of each effect")
    q.add_argument("--neurons", type=int, metavar="N",
                   help="run the protocol on N neurons and report the distribution")
    q.add_argument("--seed", type=int, help="override [run] seed")
    q.add_argument("--set", action="append", metavar="TABLE.KEY=VALUE",
                   help="override a config value, e.g. experiment.n_pulses=300")
    q.add_argument("--params", metavar="FIT.json",
                   help="parameter values from `ltpnet fit` (fit.json) in place of "
                   "the defaults; the experiment's own values hold")
    q.add_argument("--fused", action="store_true",
                   help="run on the fused engine (same model, about twice as fast)")
    q.set_defaults(func=cmd_experiment)
    return p


def _experiments():
    """The `experiments` package of the source checkout ltpnet runs from."""
    root = Path(__file__).resolve().parents[1]
    for base in (root, Path.cwd()):
        if (base / "experiments" / "__init__.py").is_file():
            if str(base) not in sys.path:
                sys.path.insert(0, str(base))
            import experiments

            return experiments
    raise ConfigError("ltpnet experiment needs the experiments/ and configs/experiments/ "
                      f"folders of an ltpnet source checkout; none beside {root} or in "
                      f"{Path.cwd()} (install with `pip install -e .` from the checkout)")


def cmd_experiment(args) -> int:
    ex = _experiments()
    try:
        return ex.main(args)
    except ex.ExperimentError as e:
        raise ConfigError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ltpnet` command; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else 2
    try:
        _start_distributed(args)
        return args.func(args)
    except ConfigError as e:
        print(f"ConfigError: {e}", file=sys.stderr)
        return 2
    except MemoryRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
