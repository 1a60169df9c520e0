"""TOML configuration: one file describes a whole run.

A config has one table per part of the model and of the run::

    [spec]            ModelSpec fields (sizes, dt, feature flags);
                      pathways = { S1 = 100, S2 = 100, bg = 800 }
    [neuron] [input] [calcium] [plasticity] [consolidation] [homeostasis]
    [inhibition] [pharmacology]
                      one table per Params group, keys = field names
    [[protocol.tetanus]] [[protocol.train]] [[protocol.test_pulses]]
    [[protocol.pairing]] [[protocol.pulses]] [[protocol.post]]
                      arrays of tables, one per call of the Protocol builder
    [run]             duration_ms, seed, records_per_chunk, checkpoint_every
    [record]          Observe fields (`every` in steps, or `every_ms`)
    [output]          dir, plots

Every key is optional: defaults live in code (`ModelSpec()`, `Params()`,
`Observe()`, `RunConfig()`, `OutputConfig()`). Times are in ms; every time key
(`tau_*`, `t_ref`, `*_ms`, `dt`, protocol times, drug windows) also takes a string
with a unit: `"500 ms"`, `"2 s"`, `"30 min"`, `"8 h"`. `input.rate`, `input.u_rel`
and `input.tau_rec` take one value or an inline table per pathway (`{ S1 = 2, bg =
0.5 }`; pathways left out get the default).

Everything is checked before any work, and each problem raises one `ConfigError`
naming the table, the key, the value and what is allowed. The file is read with
`tomllib` only: a config holds data, never code.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import re
import tomllib
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .params import GROUPS, WINDOWS, Params, param_errors
from .protocols import Protocol
from .record import Observe
from .spec import ModelSpec
from .units import MS_PER_H, MS_PER_MIN, MS_PER_S


class ConfigError(ValueError):
    """A config (file, `--set` override or params file) that cannot be run."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How long and how a run goes.

    Attributes:
        duration_ms: Biological time to simulate [ms] (rounded up to whole records).
        seed: Seed of the network and of the spike noise, in [0, 2**32).
        records_per_chunk: Records per compiled chunk; the host receives data,
            reports progress and checks for NaN once per chunk.
        checkpoint_every: Save the state every this many chunks (0: only at the
            end). `"auto"` in a config resolves to about two minutes of wall time
            at 1e8 synapse-steps/s.
    """

    duration_ms: float = 1000.0
    seed: int = 0
    records_per_chunk: int = 100
    checkpoint_every: int = 0


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Where results go.

    Attributes:
        dir: Output directory (`results.h5`, `config.toml`, figures).
        plots: Write figures after the run.
    """

    dir: str = "results"
    plots: bool = True


@dataclasses.dataclass(frozen=True, eq=False)
class Config:
    """A resolved, validated config: everything a run needs.

    Attributes:
        spec, params, protocol, observe: What `simulate` takes.
        run, output: Run length, seeds, chunking, output directory.
        protocol_entries: `((kind, {key: value}), ...)` the protocol as written,
            with defaults filled in (what `to_toml` writes back).
        kept_over_params: `"group.key"` of each value that the config file sets
            itself and that a params file would otherwise have set (see
            `apply_params_file`); not part of the config's content.
    """

    spec: ModelSpec
    params: Params
    protocol: Protocol
    observe: Observe
    run: RunConfig
    output: OutputConfig
    protocol_entries: tuple[tuple[str, dict], ...] = ()
    kept_over_params: tuple[str, ...] = ()

    def to_toml(self) -> str:
        """The fully resolved config as TOML: every key, defaults included.

        `loads_config(config.to_toml())` gives back an equal Config.
        """
        return _dump(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return self.to_toml() == other.to_toml()

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- schema

TIME_UNITS = {
    "ms": 1.0, "s": MS_PER_S, "sec": MS_PER_S, "min": MS_PER_MIN,
    "h": MS_PER_H, "hr": MS_PER_H,
}
_TIME_HELP = ('a number in ms, or a string with a unit (ms, s, min, h) such as '
              '"500 ms", "2 s", "30 min", "8 h"')
_TIME_RE = re.compile(
    r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z]+)\s*$")

PROTOCOL_KINDS = {
    # kind: (builder method, {key: kind of value}), in the builder's argument order
    "pulses": ("add_pulses", {"pathway": "str", "times": "times"}),
    "test_pulses": ("test_pulses", {"pathway": "str", "start": "time", "stop": "time",
                                    "every": "time"}),
    "train": ("train", {"pathway": "str", "at": "time", "freq": "float", "n": "int"}),
    "tetanus": ("tetanus", {"pathway": "str", "at": "time", "freq": "float",
                            "n": "int", "trains": "int", "interval": "time"}),
    "pairing": ("pairing", {"pathway": "str", "at": "time", "freq": "float", "n": "int",
                            "dt_ms": "time"}),
    "post": ("add_post", {"times": "times"}),
}
_RUN_KEYS = {"duration_ms": "time", "seed": "int", "records_per_chunk": "int",
             "checkpoint_every": "int|auto"}
_RECORD_KEYS = {"every": "int", "every_ms": "time", "variables": "strs",
                "neurons": "int|all", "spike_neurons": "int", "input_neurons": "int"}
_OUTPUT_KEYS = {"dir": "str", "plots": "bool"}
TABLES = ("spec", *GROUPS, "protocol", "run", "record", "output")
_STEP_COST_S = 2e-5  # fixed cost per step [s] (CPU) for checkpoint_every = "auto"
_SYN_STEPS_PER_S = 1e8  # synapse-steps/s assumed for checkpoint_every = "auto"
_AUTO_CHECKPOINT_S = 120.0


def _spec_keys() -> dict[str, str]:
    hints = typing.get_type_hints(ModelSpec)
    out = {}
    for f in dataclasses.fields(ModelSpec):
        t = hints[f.name]
        out[f.name] = ("pathways" if f.name == "pathways" else
                       "time" if f.name == "dt" else
                       {int: "int", float: "float", str: "str", bool: "bool"}[t])
    return out


def _param_keys(group: str) -> dict[str, str]:
    out = {}
    for f in dataclasses.fields(GROUPS[group]):
        n = f.name
        timed = (n.startswith("tau_") or n == "t_ref" or n.endswith("_ms")
                 or (group == "pharmacology" and n.endswith(("_on", "_off"))))
        kind = "time" if timed else "float"
        out[n] = ("pathway " + kind if (group, n) in PER_PATHWAY else kind)
    return out


# keys that take one value for all pathways or an inline table per pathway, and the
# unit a plain number of theirs is read in (for messages)
PER_PATHWAY = {("input", "rate"): "Hz", ("input", "u_rel"): "",
               ("input", "tau_rec"): "ms"}


def table_keys(table: str) -> dict[str, str]:
    """Keys allowed in `[table]` and the kind of value each takes."""
    if table == "spec":
        return _spec_keys()
    if table in GROUPS:
        return _param_keys(table)
    return {"run": _RUN_KEYS, "record": _RECORD_KEYS, "output": _OUTPUT_KEYS,
            "protocol": {k: "entries" for k in PROTOCOL_KINDS}}[table]


# --------------------------------------------------------------------------- values

def _what(v) -> str:
    if isinstance(v, bool):
        return "a boolean"
    return {str: "a string", int: "an integer", float: "a number", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def parse_time(value, where: str = "time") -> float:
    """`value` as a time in ms: a number (ms) or a string with a unit ("2 s")."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where} must be {_TIME_HELP}, "
                          f"got {value!r} ({_what(value)})")
    if isinstance(value, str):
        m = _TIME_RE.match(value)
        unit = m and m.group(2)
        if not m or unit not in TIME_UNITS:
            why = f"unknown unit {unit!r}" if m else "cannot read it as a time"
            raise ConfigError(f"{where}: {why} in {value!r}; use {_TIME_HELP}")
        return float(m.group(1)) * TIME_UNITS[unit]
    return float(value)


class _Ctx:
    """Where values come from, to say so in messages."""

    def __init__(self, origins: dict[str, str] | None = None):
        self.origins = origins or {}

    def fail(self, where: str, msg: str):
        src = self.origins.get(where)
        raise ConfigError(msg + (f" (from {src})" if src else ""))


def _value(ctx: _Ctx, table: str, key: str, v, kind: str):
    """Check and convert one value of kind `kind` (see `table_keys`)."""
    where = f"{table}.{key}"
    label = f"[{table}] {key}"

    def bad(allowed):
        ctx.fail(where, f"{label} must be {allowed}, got {key}={v!r} ({_what(v)})")

    if kind == "time":
        try:
            return parse_time(v, label)
        except ConfigError as e:
            ctx.fail(where, str(e))
    if kind == "times":
        items = v if isinstance(v, list) else [v]
        try:
            return [parse_time(x, label) for x in items]
        except ConfigError as e:
            ctx.fail(where, str(e))
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, int | float):
            bad("a number")
        return float(v)
    if kind == "int" or (kind.startswith("int|") and not isinstance(v, str)):
        if isinstance(v, bool) or not isinstance(v, int):
            bad("an integer" + (' or "' + kind[4:] + '"' if "|" in kind else ""))
        return v
    if kind.startswith("int|"):
        if v != kind[4:]:
            bad(f'an integer or "{kind[4:]}"')
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            bad("true or false")
        return v
    if kind == "str":
        if not isinstance(v, str):
            bad("a string")
        return v
    if kind == "strs":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            bad('an array of strings such as ["fepsp", "r"]')
        return tuple(v)
    raise AssertionError(kind)


def _check_keys(ctx: _Ctx, table: str, given: dict, allowed: Iterable[str],
                label: str | None = None):
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = (f"did you mean {near[0]!r}?" if near else
                    f"allowed keys: {', '.join(allowed)}")
            ctx.fail(f"{table}.{key}",
                     f"unknown key {key!r} in {label or f'[{table}]'}; {hint}")


def _table(ctx: _Ctx, raw: dict, table: str) -> dict:
    t = raw.get(table, {})
    if not isinstance(t, dict):
        ctx.fail(table, f"[{table}] must be a table, got {table}={t!r} ({_what(t)})")
    return t


# --------------------------------------------------------------------------- resolve

def _resolve(raw: dict, ctx: _Ctx) -> Config:
    for name, t in raw.items():
        if name not in TABLES:
            near = difflib.get_close_matches(name, TABLES, n=1)
            hint = (f"did you mean [{near[0]}]?" if near
                    else f"tables are {', '.join(TABLES)}")
            if not isinstance(t, dict):
                hint = (f"every key belongs in a table such as [run]; "
                        f"tables are {', '.join(TABLES)}")
            ctx.fail(name, f"unknown table [{name}]; {hint}")
    spec = _resolve_spec(ctx, _table(ctx, raw, "spec"))
    params = _resolve_params(ctx, raw, spec)
    observe = _resolve_record(ctx, _table(ctx, raw, "record"), spec)
    protocol, entries = _resolve_protocol(ctx, _table(ctx, raw, "protocol"), spec)
    run = _resolve_run(ctx, _table(ctx, raw, "run"), spec, observe)
    t = _table(ctx, raw, "output")
    _check_keys(ctx, "output", t, _OUTPUT_KEYS)
    output = OutputConfig(**{k: _value(ctx, "output", k, v, _OUTPUT_KEYS[k])
                             for k, v in t.items()})
    if not output.dir:
        ctx.fail("output.dir", "[output] dir must be a non-empty path, got dir=''")
    return Config(spec=spec, params=params, protocol=protocol, observe=observe,
                  run=run, output=output, protocol_entries=entries)


def _resolve_spec(ctx: _Ctx, t: dict) -> ModelSpec:
    keys = _spec_keys()
    _check_keys(ctx, "spec", t, keys)
    kw = {}
    for k, v in t.items():
        if keys[k] != "pathways":
            kw[k] = _value(ctx, "spec", k, v, keys[k])
            continue
        if not isinstance(v, dict) or not v:
            ctx.fail("spec.pathways", "[spec] pathways must be an inline table of "
                     "name = n_inputs such as { S1 = 100, bg = 800 }, "
                     f"got pathways={v!r}")
        for name, n in v.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                ctx.fail("spec.pathways", f"[spec] pathways: {name} must be a positive "
                         f"number of inputs, got {name}={n!r}")
        kw[k] = tuple(v.items())
    try:
        return ModelSpec(**kw).check()
    except ValueError as e:
        ctx.fail("spec", "[spec] " + str(e).replace("ModelSpec.", ""))


def _resolve_params(ctx: _Ctx, raw: dict, spec: ModelSpec) -> Params:
    groups, given = {}, {}
    for g, cls in GROUPS.items():
        t = given[g] = _table(ctx, raw, g)
        keys = _param_keys(g)
        _check_keys(ctx, g, t, keys)
        kw = {}
        for k, v in t.items():
            kind = keys[k].removeprefix("pathway ")
            kw[k] = (_per_pathway(ctx, g, k, v, spec, kind) if kind != keys[k]
                     else _value(ctx, g, k, v, kind))
        groups[g] = cls(**kw)
    params = Params(**groups)
    errs = param_errors(params)
    if errs:
        where = re.match(r"\[(\w+)\] (\w+)", errs[0])
        ctx.fail(f"{where.group(1)}.{where.group(2)}" if where else "", errs[0])
    if not spec.depression and np.any(np.asarray(params.input.u_rel) != 0):
        ctx.fail("input.u_rel", "[input] u_rel must be 0 unless spec.depression is "
                 "true (u_rel is the share of the releasable pool a spike uses; "
                 "[spec] depression = true turns short-term depression on), got "
                 f"u_rel={np.asarray(params.input.u_rel).tolist()!r}")
    ph = params.pharmacology
    for w in WINDOWS:  # a window set in the file must open before it closes
        if {f"{w}_on", f"{w}_off"} & set(given["pharmacology"]):
            on, off = float(getattr(ph, f"{w}_on")), float(getattr(ph, f"{w}_off"))
            if off <= on and (on, off) != (0.0, 0.0):  # [0, 0): no window
                ctx.fail(f"pharmacology.{w}_off",
                         f"[pharmacology] {w}_off must be later than {w}_on (the "
                         f"drug acts from {w}_on to {w}_off, in ms), got "
                         f"{w}_on={on:g}, {w}_off={off:g}")
    return params


def _per_pathway(ctx: _Ctx, group: str, key: str, v, spec: ModelSpec, kind: str):
    """A key of `PER_PATHWAY` of kind `kind` ("float" or "time"): one value,
    `{pathway = value}` or one value per pathway.

    Pathways left out of a table get the class default."""
    names = spec.pathway_names
    unit = PER_PATHWAY[(group, key)]
    one = ("a time" if kind == "time" else "a number") + (f" [{unit}]" if unit else "")
    allowed = (f"{one} or an inline table of pathway = value for pathways "
               f"{list(names)}")
    where = f"{group}.{key}"
    if isinstance(v, dict):
        default = getattr(GROUPS[group](), key)
        for name in v:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                ctx.fail(where, f"[{group}] {key} has no pathway {name!r}; {hint}"
                         f"the pathways are {list(names)}")
        vals = [v.get(name, default) for name in names]
    elif isinstance(v, list):
        if len(v) != len(names):
            ctx.fail(where, f"[{group}] {key} must be {allowed}, got an array of "
                     f"{len(v)} values for {len(names)} pathways")
        vals = v
    else:
        return _value(ctx, group, key, v, kind)
    out = []
    for x in vals:
        if kind == "time" and isinstance(x, str):
            out.append(_value(ctx, group, key, x, "time"))
        elif isinstance(x, bool) or not isinstance(x, int | float):
            ctx.fail(where, f"[{group}] {key} must be {allowed}, got {key}={v!r}")
        else:
            out.append(x)
    return np.array(out, dtype=float)


def _resolve_record(ctx: _Ctx, t: dict, spec: ModelSpec) -> Observe:
    _check_keys(ctx, "record", t, _RECORD_KEYS)
    kw = {k: _value(ctx, "record", k, v, _RECORD_KEYS[k]) for k, v in t.items()}
    if "every_ms" in kw:
        if "every" in kw:
            ctx.fail("record.every_ms", "[record] give every (steps) or every_ms, not "
                     f"both; got every={kw['every']}, every_ms={kw['every_ms']}")
        ms = kw.pop("every_ms")
        every = round(ms / spec.dt)
        if every < 1 or not math.isclose(every * spec.dt, ms, rel_tol=1e-9):
            ctx.fail("record.every_ms", "[record] every_ms must be a positive "
                     f"multiple of dt={spec.dt} ms, got every_ms={ms}")
        kw["every"] = every
    if kw.get("neurons") == "all":
        kw["neurons"] = None
    try:
        return Observe(**kw).check(spec)
    except ValueError as e:
        ctx.fail("record", "[record] " + str(e).replace("Observe.", ""))


def _resolve_protocol(ctx: _Ctx, t: dict, spec: ModelSpec):
    _check_keys(ctx, "protocol", t, PROTOCOL_KINDS, label="[protocol]")
    protocol, entries = Protocol(), []
    for kind, items in t.items():
        method, keys = PROTOCOL_KINDS[kind]
        sig = inspect.signature(getattr(Protocol, method)).parameters
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
            ctx.fail(f"protocol.{kind}", f"[[protocol.{kind}]] must be an array of "
                     f"tables, got protocol.{kind}={items!r}")
        for i, e in enumerate(items, 1):
            label = f"[[protocol.{kind}]] #{i}"
            _check_keys(ctx, f"protocol.{kind}", e, keys, label=label)
            missing = [k for k in keys if k not in e
                       and sig[k].default is inspect.Parameter.empty]
            if missing:
                ctx.fail(f"protocol.{kind}", f"{label} lacks {', '.join(missing)}; "
                         f"it takes {', '.join(keys)}")
            kw = {}
            for k, kind_k in keys.items():
                v = e.get(k, sig[k].default)
                kw[k] = _value(ctx, f"protocol.{kind}", k, v, kind_k)
            _check_entry(ctx, label, kind, kw, spec)
            try:
                protocol = getattr(protocol, method)(**kw)
            except ValueError as err:
                ctx.fail(f"protocol.{kind}", f"{label}: {err}")
            entries.append((kind, kw))
    try:
        protocol.check(spec)
    except ValueError as err:
        ctx.fail("protocol", f"[protocol] {err}")
    return protocol, tuple(entries)


def _check_entry(ctx: _Ctx, label: str, kind: str, kw: dict, spec: ModelSpec):
    if "pathway" in kw:
        try:
            spec.pathway_index(kw["pathway"])
        except ValueError as e:
            ctx.fail("", f"{label}: {e}")
    rules = [("freq", lambda x: x > 0, "> 0 Hz"), ("n", lambda x: x >= 1, ">= 1"),
             ("trains", lambda x: x >= 1, ">= 1"), ("every", lambda x: x > 0, "> 0 ms"),
             ("interval", lambda x: x > 0, "> 0 ms"),
             ("at", lambda x: x >= 0, ">= 0 ms"),
             ("start", lambda x: x >= 0, ">= 0 ms")]
    for key, ok, allowed in rules:
        if key in kw and not ok(kw[key]):
            ctx.fail("", f"{label}: {key} must be {allowed}, got {key}={kw[key]!r}")
    if kind == "test_pulses" and kw["stop"] <= kw["start"]:
        ctx.fail("", f"{label}: stop must exceed start, got start={kw['start']}, "
                 f"stop={kw['stop']}")
    if any(t < 0 for t in kw.get("times", ())):
        ctx.fail("", f"{label}: times must be >= 0 ms, got times={kw['times']}")


def _resolve_run(ctx: _Ctx, t: dict, spec: ModelSpec, obs: Observe) -> RunConfig:
    _check_keys(ctx, "run", t, _RUN_KEYS)
    kw = {k: _value(ctx, "run", k, v, _RUN_KEYS[k]) for k, v in t.items()}
    run = RunConfig(**{**kw, "checkpoint_every": 0})
    if not run.duration_ms > 0 or not math.isfinite(run.duration_ms):
        ctx.fail("run.duration_ms", f"[run] duration_ms must be a time > 0, "
                 f"got duration_ms={run.duration_ms}")
    if not 0 <= run.seed < 2**32:
        ctx.fail("run.seed", f"[run] seed must be in [0, 2**32), got seed={run.seed}")
    if run.records_per_chunk < 1:
        ctx.fail("run.records_per_chunk", "[run] records_per_chunk must be >= 1, "
                 f"got records_per_chunk={run.records_per_chunk}")
    every = kw.get("checkpoint_every", "auto")
    if every == "auto":
        steps = run.records_per_chunk * obs.every
        chunk_s = steps * (_STEP_COST_S + spec.n_syn / _SYN_STEPS_PER_S)
        every = max(1, int(_AUTO_CHECKPOINT_S // chunk_s))
    elif every < 0:
        ctx.fail("run.checkpoint_every", "[run] checkpoint_every must be >= 0 chunks "
                 f'(0: only at the end) or "auto", got checkpoint_every={every}')
    return dataclasses.replace(run, checkpoint_every=every)


# --------------------------------------------------------------------------- overrides

_SEG = re.compile(r"^([A-Za-z0-9_-]+)(?:\[(\d+)\])?$")


def parse_value(text: str):
    """A `--set` value: a TOML value (`1.5`, `true`, `[1, 2]`, `{S1 = 2}`, `"x"`);
    anything else that does not start like one (`linear`, `2 s`) is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as e:
        s = text.strip()
        if not s or s[0] in "[{\"'" or "\n" in s:
            raise ConfigError(f"cannot read {text!r} as a TOML value: {e}") from None
        return s


def parse_override(text: str) -> tuple[list[tuple[str, int | None]], object]:
    """Split `table.key=value` into a key path `[(name, index or None), ...]` and a
    value."""
    usage = ("expected table.key=value, e.g. --set neuron.tau_m=20 or "
             "--set 'protocol.tetanus[0].at=\"2 min\"'")
    name, sep, value = text.partition("=")
    parts = name.strip().split(".")
    segs = [_SEG.match(p) for p in parts]
    if not sep or len(parts) < 2 or not all(segs):
        raise ConfigError(f"bad --set {text!r}: {usage}")
    try:
        v = parse_value(value)
    except ConfigError as e:
        raise ConfigError(f"bad --set {text!r}: {e}") from None
    return [(m.group(1), None if m.group(2) is None else int(m.group(2)))
            for m in segs], v


def _apply(raw: dict, path, value, text: str):
    node = raw
    for i, (name, idx) in enumerate(path):
        last = i == len(path) - 1
        if not isinstance(node, dict):
            raise ConfigError(f"cannot apply {text!r}: "
                              f"{'.'.join(p for p, _ in path[:i])} is not a table")
        if idx is None:
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
            continue
        items = node.get(name)
        if not isinstance(items, list) or idx >= len(items):
            n = len(items) if isinstance(items, list) else 0
            raise ConfigError(f"cannot apply {text!r}: {name} has {n} entries, "
                              f"so index {idx} does not exist")
        if last:
            items[idx] = value
        else:
            node = items[idx]


def apply_overrides(raw: dict, overrides: Sequence[str],
                    origins: dict[str, str] | None = None) -> dict:
    """Apply `table.key=value` strings to a raw config dict (in place) and return it."""
    for text in overrides:
        path, value = parse_override(text)
        _apply(raw, path, value, text)
        if origins is not None:
            origins[".".join(p for p, _ in path[:2])] = f"--set {text}"
    return raw


def _params_file_overrides(path: str | Path) -> dict[str, object]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file not found: {str(p)!r}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"params file {str(p)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        raise ConfigError(f"params file {str(p)!r} must hold an object "
                          '{"params": {"group.name": value, ...}}')
    out = {}
    for key, v in data["params"].items():
        group, _, name = key.partition(".")
        if group not in GROUPS or not name:
            raise ConfigError(f"params file {str(p)!r}: {key!r} is not a parameter; "
                              f"keys are group.name with group one of {list(GROUPS)}")
        out[key] = v
    return out


def apply_params_file(raw: dict, params_file: str | Path | None,
                      origins: dict[str, str]) -> tuple[str, ...]:
    """Let the values of a fit result (`fit.json`) stand in for the defaults of the
    raw config `raw`, and record where they came from in `origins`.

    A params file replaces ltpnet's defaults, not the config: a value the config sets
    itself holds (an experiment's preparation, such as a Mg2+-free bath or a held
    switch), and `--set` overrides both. Returns the `"group.key"` of the values kept
    that way (None: nothing to apply, nothing kept).
    """
    if params_file is None:
        return ()
    kept = []
    for key, v in _params_file_overrides(params_file).items():
        group, name = key.split(".", 1)
        _table(_Ctx(), raw, group)
        table = raw.setdefault(group, {})
        if name in table:
            kept.append(key)
            continue
        table[name] = v
        origins[key] = f"params file {str(params_file)!r}"
    return tuple(kept)


# --------------------------------------------------------------------------- load

def loads_config(text: str, overrides: Sequence[str] = (),
                 params_file: str | Path | None = None, *,
                 source: str = "<string>") -> Config:
    """Parse and validate config text (see `load_config`)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    origins: dict[str, str] = {}
    kept = apply_params_file(raw, params_file, origins)
    apply_overrides(raw, overrides, origins)
    return dataclasses.replace(_resolve(raw, _Ctx(origins)), kept_over_params=kept)


def load_config(path: str | Path, overrides: Sequence[str] = (),
                params_file: str | Path | None = None) -> Config:
    """Read, override and validate a TOML config.

    Args:
        path: The config file.
        overrides: `table.key=value` strings (`--set`), applied after the file and
            the params file, before validation.
        params_file: A fit result JSON `{"params": {"plasticity.theta_p": 1.3, ...}}`
            whose entries replace the defaults: they set what the file does not
            (`Config.kept_over_params` names the rest).

    Returns:
        The resolved `Config`.

    Raises:
        ConfigError: The first problem found, naming the table, key and value.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {str(p)!r}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {str(p)!r}: {e}") from None
    return loads_config(text, overrides, params_file, source=str(p))


# --------------------------------------------------------------------------- dump

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _fmt(v) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return repr(float(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple | np.ndarray):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_fmt(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _dump(cfg: Config) -> str:
    out = ["# ltpnet config, fully resolved: every key, defaults included.",
           "# Times in ms, rates in Hz, weights in units of the leak conductance.", ""]

    def table(name, items):
        out.append(f"[{name}]")
        out.extend(f"{_key(k)} = {_fmt(v)}" for k, v in items)
        out.append("")

    spec = cfg.spec
    table("spec", [(f.name, dict(spec.pathways) if f.name == "pathways"
                    else getattr(spec, f.name)) for f in dataclasses.fields(spec)])
    for g in GROUPS:
        grp = getattr(cfg.params, g)
        items = []
        for f in dataclasses.fields(grp):
            v = np.asarray(getattr(grp, f.name))
            if (g, f.name) in PER_PATHWAY and v.ndim == 1:
                items.append((f.name, dict(zip(spec.pathway_names, v.tolist(),
                                               strict=True))))
            elif v.ndim == 0:
                items.append((f.name, float(v)))
            else:
                raise ValueError(f"[{g}] {f.name} holds an array of shape {v.shape}, "
                                 "which a config cannot express")
        table(g, items)
    for kind, kw in cfg.protocol_entries:
        out.append(f"[[protocol.{kind}]]")
        out.extend(f"{k} = {_fmt(v)}" for k, v in kw.items())
        out.append("")
    table("run", [(f.name, getattr(cfg.run, f.name))
                  for f in dataclasses.fields(RunConfig)])
    obs = cfg.observe
    table("record", [("every", obs.every), ("variables", list(obs.variables)),
                     ("neurons", "all" if obs.neurons is None else obs.neurons),
                     ("spike_neurons", obs.spike_neurons),
                     ("input_neurons", obs.input_neurons)])
    table("output", [(f.name, getattr(cfg.output, f.name))
                     for f in dataclasses.fields(OutputConfig)])
    return "\n".join(out)


__all__ = [
    "Config", "ConfigError", "OutputConfig", "RunConfig", "apply_overrides",
    "load_config", "loads_config", "parse_override", "parse_time", "parse_value",
    "table_keys",
]
