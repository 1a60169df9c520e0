"""The canonical experiments: ltpnet against the biology.

Each experiment NAME is a module `experiments/NAME.py` and a config
`configs/experiments/NAME.toml`; run one with

    ltpnet experiment NAME [-o DIR] [--quick] [--neurons N] [--seed S] [--set K=V]
    ltpnet experiment all -o DIR [--fused]

It writes `DIR/NAME/summary.json` (the measured values, the checks against the
expected bands, how it was run), `DIR/NAME/NAME.png`, and rewrites `DIR/report.md`
from every summary in DIR.

A module defines:

- its docstring (the first paragraph is the protocol shown in the report);
- `DEFAULTS`: the keys of the config's `[experiment]` table and their defaults;
- `validate(spec, params, exp)`: raises ExperimentError naming the key, its value and
  what is allowed unless the config suits the protocol (called by `load`, so
  `ltpnet experiment all` checks every config before it runs any);
- `run(ctx) -> dict`: the measured values (JSON-able) under the documented keys;
- `checks(summary, quick) -> list[Check]`: each value beside its expected band
  (with `quick`, the sign of each effect only);
- `plot(summary, path)`: the figure.

The config holds `[spec]` and parameter tables as in `ltpnet run` (the hippocampal
defaults unless an experiment is about another preparation), `[run] seed`, the
`[experiment]` table, and a `[quick]` table of overrides for `--quick`, such as
`quick.experiment.n_pulses = 100` or `quick.spec.n_post = 4`.

Other studies in this folder (`specificity_at_scale`, `device_scaling`) run as
`python -m experiments.NAME`.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import importlib
import json
import os
import platform
import sys
import time
import tomllib
from pathlib import Path

NAMES = ("frequency_response", "stdp", "hfs_ltp", "lfs_ltd", "voltage_clamp_pairing",
         "early_late", "tagging_capture", "input_specificity", "camkii_t286a",
         "scaling", "spine_structure", "maintenance")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "experiments"


class ExperimentError(ValueError):
    """A bad experiment name or config (raised before any work starts)."""


@dataclasses.dataclass
class Context:
    """What `run(ctx)` of an experiment module receives.

    Attributes:
        name: The experiment.
        spec, params: Model (from the config's [spec] and parameter tables; with
            `--neurons N`, `spec.n_post = N`).
        seed: Network and noise seed.
        exp: The `[experiment]` table, defaults filled in and times in ms.
        quick: `--quick` (a shortened version that checks signs only).
        neurons: `--neurons N`, or None.
        out: Folder of this experiment's files.
        log: Print a progress line.
    """

    name: str
    spec: object
    params: object
    seed: int
    exp: dict
    quick: bool
    neurons: int | None
    out: Path
    log: object


def available() -> list[str]:
    """Experiments that have a config, in report order."""
    return [n for n in NAMES if (CONFIGS / f"{n}.toml").is_file()]


def _module(name: str):
    return importlib.import_module(f"experiments.{name}")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _kind_error(key: str, v, default) -> str | None:
    """Why `v` cannot stand where the default is `default` (None if it can)."""
    num = (int, float)
    if isinstance(default, bool):
        ok, want = isinstance(v, bool), "true or false"
    elif key.endswith("_ms") and isinstance(default, num):
        ok, want = (isinstance(v, str) or (isinstance(v, num) and not isinstance(v, bool))), \
            'a time: a number of ms or a string such as "30 min"'
    elif isinstance(default, int):
        ok, want = isinstance(v, int) and not isinstance(v, bool), "an integer"
    elif isinstance(default, float):
        ok, want = isinstance(v, num) and not isinstance(v, bool), "a number"
    elif isinstance(default, str):
        ok, want = isinstance(v, str), "a string"
    elif isinstance(default, list):
        ok = isinstance(v, list) and all(
            isinstance(x, num) and not isinstance(x, bool) for x in v) and len(v) > 0
        want = "a non-empty array of numbers"
    else:
        ok, want = True, ""
    return None if ok else f"must be {want}, got {key}={v!r}"


def fused_block(slow_every: int) -> int:
    """Steps per synapse pass for `--fused`: the largest of 5, 4, 3, 2, 1 that divides
    the slow clock (the synaptic slow step ends a block)."""
    return next(b for b in (5, 4, 3, 2, 1) if slow_every % b == 0)


def load(name: str, *, quick: bool = False, neurons: int | None = None,
         overrides=(), params_file=None, fused: bool = False):
    """Read and check the config of `name`: `(Config, exp)`; ExperimentError if bad.

    `fused`: run on the fused engine (`spec.fused`, event-driven AMPA input, and
    `syn_block` from `fused_block` unless the config or `overrides` set it).
    """
    from ltpnet.config import (
        ConfigError,
        _Ctx,
        _resolve,
        apply_overrides,
        apply_params_file,
        parse_time,
    )

    names = available()
    if name not in names:
        near = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ExperimentError(f"unknown experiment {name!r}; {hint}experiments are: "
                              f"{', '.join(names)} (or all)")
    path = CONFIGS / f"{name}.toml"
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"{path}: invalid TOML: {e}") from None
    quick_t = raw.pop("quick", {})
    if quick:
        raw = _merge(raw, quick_t)
    try:
        origins: dict[str, str] = {}
        kept = apply_params_file(raw, params_file, origins)
        apply_overrides(raw, overrides, origins)
    except ConfigError as e:
        raise ExperimentError(f"{path}: {e}") from None
    if fused:
        sp = raw.setdefault("spec", {})
        sp["fused"] = True
        sp.setdefault("ampa", "event")
        from ltpnet import ModelSpec

        slow = sp.get("slow_every", ModelSpec.slow_every)
        if isinstance(slow, int) and not isinstance(slow, bool) and slow >= 1:
            sp.setdefault("syn_block", fused_block(slow))  # else ModelSpec names it
    exp_raw = raw.pop("experiment", {})
    for t in ("protocol", "record", "output"):
        if t in raw:
            raise ExperimentError(f"{path}: [{t}] is not used by experiments: the "
                                  f"protocol is built from [experiment]")
    if neurons is not None:
        if not isinstance(neurons, int) or neurons < 1:
            raise ExperimentError(f"--neurons must be a positive integer, got {neurons!r}")
        raw.setdefault("spec", {})["n_post"] = neurons
    try:
        cfg = dataclasses.replace(_resolve(raw, _Ctx(origins)), kept_over_params=kept)
    except ConfigError as e:
        raise ExperimentError(f"{path}: {e}") from None
    mod = _module(name)
    exp = dict(mod.DEFAULTS)
    for k, v in exp_raw.items():
        if k not in mod.DEFAULTS:
            near = difflib.get_close_matches(k, list(mod.DEFAULTS), n=1)
            hint = (f"did you mean {near[0]!r}?" if near
                    else f"allowed keys: {', '.join(mod.DEFAULTS)}")
            raise ExperimentError(f"{path}: unknown key {k!r} in [experiment]; {hint}")
        why = _kind_error(k, v, mod.DEFAULTS[k])
        if why:
            raise ExperimentError(f"{path}: [experiment] {k} {why}")
        exp[k] = v
    for k, v in exp.items():
        if k.endswith("_ms"):
            try:
                exp[k] = parse_time(v, f"[experiment] {k}")
            except ConfigError as e:
                raise ExperimentError(f"{path}: {e}") from None
    try:
        mod.validate(cfg.spec, cfg.params, exp)
    except ValueError as e:  # ExperimentError, or ModelSpec's own (unknown pathway)
        raise ExperimentError(f"{path}: {e}") from None
    return cfg, exp


def run(name: str, out_dir, *, quick: bool = False, neurons: int | None = None,
        seed: int | None = None, overrides=(), params_file=None, fused: bool = False,
        log=print) -> dict:
    """Run experiment `name` into `out_dir/name` and rewrite `out_dir/report.md`."""
    cfg, exp = load(name, quick=quick, neurons=neurons, overrides=overrides,
                    params_file=params_file, fused=fused)
    mod = _module(name)
    out = Path(out_dir) / name
    seed = cfg.run.seed if seed is None else seed
    t0 = time.perf_counter()
    ctx = Context(name=name, spec=cfg.spec, params=cfg.params, seed=seed, exp=exp,
                  quick=quick, neurons=neurons, out=out,
                  log=lambda msg: log(f"[{name}] {msg}"))
    if cfg.kept_over_params:
        ctx.log(f"the experiment's own values hold over the params file for "
                f"{', '.join(cfg.kept_over_params)}")
    summary = mod.run(ctx)  # load() has checked the config: nothing is written before
    wall = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    checks = [c.as_dict() for c in mod.checks(summary, quick)]
    import jax

    meta = {
        "experiment": name, "quick": quick, "neurons": neurons, "seed": seed,
        "n_post": cfg.spec.n_post, "k": cfg.spec.k, "n_syn": cfg.spec.n_syn,
        "wall_s": round(wall, 1),
        "engine": "fused" if cfg.spec.fused else "per-step",
        "command": " ".join(["ltpnet experiment", name]
                            + (["--quick"] if quick else [])
                            + (["--fused"] if fused else [])
                            + ([f"--neurons {neurons}"] if neurons else [])
                            + ([f"--params {params_file}"] if params_file else [])
                            + [f"--set {o}" for o in overrides]),
        "config": f"configs/experiments/{name}.toml",
        "device": str(jax.devices()[0].platform), "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "experiment_keys": exp,
        "kept_over_params": list(cfg.kept_over_params),
    }
    doc = {"summary": summary, "checks": checks, "meta": meta}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=_json))
    tmp.replace(out / "summary.json")
    mod.plot(summary, out / f"{name}.png")
    write_report(out_dir)
    n_pass = sum(c["passed"] for c in checks)
    log(f"[{name}] {n_pass}/{len(checks)} checks pass ({wall:.0f} s); "
        f"wrote {out / 'summary.json'}, {out / (name + '.png')}")
    return doc


def _json(x):
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def _description(name: str) -> str:
    doc = (_module(name).__doc__ or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ")


def write_report(out_dir) -> Path:
    """Rewrite `out_dir/report.md` from every `out_dir/NAME/summary.json`."""
    out_dir = Path(out_dir)
    lines = ["# ltpnet: the canonical experiments", "",
             "Each value measured by ltpnet beside the band expected from the "
             "literature (SCIENCE.md sections 2-3). Made by:", ""]
    docs = {}
    for name in NAMES:
        f = out_dir / name / "summary.json"
        if f.is_file():
            docs[name] = json.loads(f.read_text())
    cmds = sorted({d["meta"]["command"] for d in docs.values()})
    lines += ["```", *cmds, "```", ""]
    total = [c["passed"] for d in docs.values() for c in d["checks"]]
    lines += [f"{sum(total)} of {len(total)} checks pass over {len(docs)} experiments.",
              "", "| experiment | checks passed | wall time |", "|---|---|---|"]
    for name, d in docs.items():
        ok = sum(c["passed"] for c in d["checks"])
        lines.append(f"| [{name}](#{name.replace('_', '-')}) | {ok}/{len(d['checks'])} "
                     f"| {d['meta']['wall_s']:.0f} s |")
    missing = [n for n in NAMES if n not in docs]
    if missing:
        lines += ["", "Not run: " + ", ".join(missing) + "."]
    for name, d in docs.items():
        m = d["meta"]
        lines += ["", f"## {name}", "", _description(name), "",
                  f"`{m['command']}`: {m['n_post']} neurons x {m['k']} synapses, seed "
                  f"{m['seed']}, {m['wall_s']:.0f} s on {m['cpus']} {m['device']} cores"
                  f"{', fused engine' if m.get('engine') == 'fused' else ''}"
                  f"{' (quick version: signs only)' if m['quick'] else ''}.", "",
                  "| key | measured | expected | |", "|---|---|---|---|"]
        for c in d["checks"]:
            lines.append(f"| `{c['key']}` | {c['value']} | {c['expected']} | "
                         f"{'pass' if c['passed'] else '**fail**'} |")
        lines += ["", f"![{name}]({name}/{name}.png)"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(args) -> int:
    """`ltpnet experiment` (args from the ltpnet command line)."""
    names = available() if args.name == "all" else [args.name]
    if args.name != "all":
        load(args.name, quick=args.quick, neurons=args.neurons,
             overrides=args.set or (), params_file=args.params,
             fused=args.fused)  # fail before work
    else:
        for n in names:
            load(n, quick=args.quick, neurons=args.neurons, params_file=args.params,
                 fused=args.fused)
        if args.set:
            raise ExperimentError("--set applies to one experiment, not to all")
    for n in names:
        run(n, args.out, quick=args.quick, neurons=args.neurons, seed=args.seed,
            overrides=args.set or (), params_file=args.params, fused=args.fused)
    print(f"ltpnet experiment: wrote {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run experiments with `ltpnet experiment NAME`")
