"""`ltpnet fit CONFIG [-o DIR]`: TOML fit configurations, overrides and outputs.

A configuration has these tables (docs/fitting.md shows a full example)::

    [model]      calcium = "linear" | "nmda"; preset; grid, window_ms,
                 transient_periods, release_rows; switch = "gb" | "fokker_planck",
                 switch_grid; cells = [k, p]
    [data]       files = ["bi_poo_1998.csv", ...]   (relative to the config, or shipped)
    [fixed]      "group.key" = value                (optional; overrides the preset)
    [free]       "group.key" = { init = x, bounds = [lo, hi], scale = "log" | "linear" }
    [optimizer]  name = "adam" (any optax optimiser), then its keyword arguments
    [fit]        steps, restarts, seed, temperature = [start, end], restart_spread,
                 log_every

Overrides are ``table.key=value`` strings with TOML values (bare words are strings):
``fit.steps=100``, ``optimizer.learning_rate=0.02``, ``model.calcium=nmda``,
``free.plasticity.theta_p.init=1.6``, ``fixed.extra.beta=0.6``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import sys
import tomllib
from pathlib import Path

import numpy as np
import optax

from .. import __version__
from .data import DataError, load_csv
from .model import MODELS, PARAMS, PRESETS
from .optimize import FitResult, fit, stderr_progress
from .transform import FitConfigError

TABLES = {
    "model": {"calcium", "preset", "grid", "window_ms", "transient_periods",
              "release_rows", "switch", "switch_grid", "cells"},
    "data": {"files"},
    "fixed": None,  # any parameter name
    "free": None,
    "optimizer": None,  # name + the optimiser's keyword arguments
    "fit": {"steps", "restarts", "seed", "temperature", "restart_spread", "log_every"},
}
FREE_FIELDS = ("init", "bounds", "scale")


class ConfigError(FitConfigError):
    """A configuration that cannot be run; names the table, key, value and the rule."""


@dataclasses.dataclass
class FitConfig:
    """A validated configuration, ready for `fit`."""

    path: str
    model: str
    preset: str
    options: dict
    files: list[str]
    conditions: list
    fixed: dict
    free: dict
    optimizer_name: str
    optimizer_settings: dict
    optimizer: optax.GradientTransformation
    steps: int
    restarts: int
    seed: int
    temperature: tuple[float, float]
    restart_spread: float
    log_every: int | None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Copy of the raw TOML dict with ``table.key=value`` overrides applied."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like table.key=value")
        lhs, value = item.split("=", 1)
        path = [p.strip().strip('"') for p in lhs.strip().split(".")]
        if len(path) < 2 or not all(path):
            raise ConfigError(f"override {item!r} must look like table.key=value")
        table = path[0]
        if table not in TABLES:
            raise ConfigError(f"override {item!r}: unknown table [{table}]; tables are "
                              f"{list(TABLES)}")
        val = _parse_value(value)
        section = raw.setdefault(table, {})
        if table == "free":
            if path[-1] in FREE_FIELDS and len(path) > 2:
                name = ".".join(path[1:-1])
                entry = section.get(name)
                entry = dict(entry) if isinstance(entry, dict) else {}
                entry[path[-1]] = val
                section[name] = entry
            else:
                section[".".join(path[1:])] = val
        elif table == "fixed":
            section[".".join(path[1:])] = val
        else:
            if len(path) != 2:
                raise ConfigError(f"override {item!r}: [{table}] has no nested keys")
            section[path[1]] = val
    return raw


def _parse_value(text: str):
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(path: str | os.PathLike, overrides: list[str] | None = None
                ) -> FitConfig:
    """Read, override and validate a fit configuration (ConfigError, DataError)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    raw = apply_overrides(raw, overrides or [])
    for table, content in raw.items():
        if table not in TABLES:
            raise ConfigError(f"unknown table [{table}]; tables are {list(TABLES)}")
        if not isinstance(content, dict):
            raise ConfigError(f"[{table}] must be a table, got {table}={content!r}")
        allowed = TABLES[table]
        if allowed is not None:
            for key in content:
                if key not in allowed:
                    raise ConfigError(f"[{table}] unknown key {key!r}="
                                      f"{content[key]!r}; allowed: {sorted(allowed)}")
    m = raw.get("model", {})
    model = m.get("calcium", "linear")
    if model not in MODELS:
        raise ConfigError(f"[model] calcium must be one of {list(MODELS)}, "
                          f"got calcium={model!r}")
    preset = m.get("preset", "ltpnet")
    if preset not in PRESETS:
        raise ConfigError(f"[model] preset must be one of {list(PRESETS)}, "
                          f"got preset={preset!r}")
    if model == "nmda" and preset != "ltpnet":
        raise ConfigError(f"[model] preset={preset!r} is a Graupner-Brunel (linear "
                          f"calcium) set; the nmda model allows preset='ltpnet'")
    options = {}
    for key, kind in (("grid", int), ("transient_periods", int), ("release_rows", int),
                      ("switch_grid", int), ("window_ms", float)):
        if key in m:
            options[key] = _typed("model", key, m[key], kind, minimum=1)
    for key in ("switch", "cells"):  # checked with the other options, by fit()
        if key in m:
            options[key] = m[key]
    files = raw.get("data", {}).get("files")
    if (not isinstance(files, list) or not files
            or not all(isinstance(x, str) for x in files)):
        raise ConfigError(f"[data] files must be a non-empty list of CSV paths, "
                          f"got files={files!r}")
    conditions = []
    for name in files:
        conditions.extend(load_csv(name, base=path.parent))
    fixed = {}
    for name, val in raw.get("fixed", {}).items():
        if name not in PARAMS:
            raise ConfigError(f"[fixed] unknown parameter {name!r}; parameters are "
                              f"{list(PARAMS)}")
        fixed[name] = _typed("fixed", name, val, float)
    free = raw.get("free", {})
    for name, spec in free.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"[free] {name} must be a table {{ init = x, bounds = "
                              f"[lo, hi] }}, got {name}={spec!r}")
    opt = dict(raw.get("optimizer", {"name": "adam", "learning_rate": 0.05}))
    opt_name = opt.pop("name", "adam")
    optimizer = make_optimizer(opt_name, opt)
    f = raw.get("fit", {})
    temperature = f.get("temperature", [0.5, 0.01])
    if (not isinstance(temperature, list) or len(temperature) != 2
            or not all(isinstance(t, int | float) for t in temperature)
            or not temperature[0] >= temperature[1] > 0):
        raise ConfigError(f"[fit] temperature must be [start, end] with start >= end "
                          f"> 0, got temperature={temperature!r}")
    return FitConfig(
        path=str(path), model=model, preset=preset, options=options, files=files,
        conditions=conditions, fixed=fixed, free=free, optimizer_name=opt_name,
        optimizer_settings=opt, optimizer=optimizer,
        steps=_typed("fit", "steps", f.get("steps", 300), int, minimum=1),
        restarts=_typed("fit", "restarts", f.get("restarts", 4), int, minimum=1),
        seed=_typed("fit", "seed", f.get("seed", 0), int, minimum=0),
        temperature=(float(temperature[0]), float(temperature[1])),
        restart_spread=_typed("fit", "restart_spread", f.get("restart_spread", 0.25),
                              float, minimum=0),
        log_every=(None if "log_every" not in f else
                   _typed("fit", "log_every", f["log_every"], int, minimum=1)),
    )


def _typed(table, key, value, kind, minimum=None):
    ok = (isinstance(value, int) and not isinstance(value, bool)) if kind is int else (
        isinstance(value, int | float) and not isinstance(value, bool)
        and np.isfinite(value))
    if not ok or (minimum is not None and value < minimum):
        what = "an integer" if kind is int else "a finite number"
        rule = f"{what}" + (f" >= {minimum}" if minimum is not None else "")
        raise ConfigError(f"[{table}] {key} must be {rule}, got {key}={value!r}")
    return kind(value)


def make_optimizer(name: str, settings: dict) -> optax.GradientTransformation:
    """`optax.<name>(**settings)`, with errors that name the table, key and value."""
    fn = getattr(optax, name, None) if isinstance(name, str) else None
    if fn is None or not callable(fn) or isinstance(fn, type):
        raise ConfigError(f"[optimizer] name must be an optax optimiser such as "
                          f"'adam', 'sgd', 'adamw', 'rmsprop' or 'lbfgs', "
                          f"got name={name!r}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        for key in settings:
            if key not in params:
                raise ConfigError(f"[optimizer] optax.{name} has no argument {key!r} "
                                  f"(got {key}={settings[key]!r}); its arguments are "
                                  f"{list(params)}")
    try:
        opt = fn(**settings)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[optimizer] optax.{name}({_kw(settings)}) failed: "
                          f"{e}") from None
    if not isinstance(opt, optax.GradientTransformation):
        raise ConfigError(f"[optimizer] optax.{name} is not an optimiser (it returned "
                          f"{type(opt).__name__}, not a GradientTransformation)")
    return opt


def _kw(d):
    return ", ".join(f"{k}={v!r}" for k, v in d.items())


def run_config(cfg: FitConfig, progress=stderr_progress) -> FitResult:
    """Run the fit a validated configuration describes."""
    return fit(cfg.conditions, model=cfg.model, free=cfg.free, fixed=cfg.fixed,
               preset_name=cfg.preset, optimizer=cfg.optimizer, steps=cfg.steps,
               restarts=cfg.restarts, key=cfg.seed, temperature=cfg.temperature,
               options=cfg.options, restart_spread=cfg.restart_spread,
               log_every=cfg.log_every, progress=progress)


def result_json(result: FitResult, cfg: FitConfig | None = None) -> dict:
    """The content of fit.json (see docs/fitting.md for the schema)."""
    conds = []
    t_d, t_p = result.times()
    for c, p, r, td, tp in zip(result.conditions, result.predicted, result.residuals(),
                               t_d, t_p, strict=True):
        conds.append({
            "source": c.source, "dt_ms": c.dt_ms, "pair_freq_hz": c.pair_freq_hz,
            "pairs_per_train": c.pairs_per_train, "n_trains": c.n_trains,
            "train_interval_s": c.train_interval_s, "ratio": c.ratio, "sem": c.sem,
            "predicted": float(p), "chi2": float(r ** 2),
            "t_d_ms": float(td), "t_p_ms": float(tp),
        })
        if c.clamp_mv is not None:
            conds[-1]["clamp_mv"] = c.clamp_mv
    n, k = result.n_points, len(result.free)
    sp = result.space
    out = {
        "format": "ltpnet-fit/1",
        "ltpnet_version": __version__,
        "model": result.model,
        "options": {k: x for k, x in dataclasses.asdict(result.options).items()
                    if k != "model"},
        "params": result.params(),
        "extra": result.extra(),
        "free": list(result.free),
        "bounds": {nm: [lo, hi]
                   for nm, lo, hi in zip(sp.names, sp.lo, sp.hi, strict=True)},
        "units": {nm: PARAMS[nm].unit for nm in result.values},
        "loss": result.loss,
        "loss_surrogate": result.loss_surrogate,
        "chi2": {"total": result.chi2, "per_point": result.chi2 / n, "n_points": n,
                 "n_free": k, "reduced": result.chi2 / (n - k) if n > k else None},
        "conditions": conds,
        "history": result.history,
        "restarts": result.restarts,
        "best_restart": result.best,
        "wall_s": result.wall_s,
    }
    if cfg is not None:
        out.update({
            "config": cfg.path, "preset": cfg.preset, "data": cfg.files,
            "optimizer": {"name": cfg.optimizer_name, **cfg.optimizer_settings},
            "steps": cfg.steps, "restarts_requested": cfg.restarts, "seed": cfg.seed,
            "temperature": list(cfg.temperature),
        })
    return out


def fit_command(config_path: str, out_dir: str, overrides: list[str]) -> int:
    """`ltpnet fit CONFIG -o DIR [table.key=value ...]`; returns the exit code.

    Writes DIR/fit.json and DIR/fit.png. A bad configuration or data file prints one
    error line naming the table (or file), key, value and what is allowed, writes
    nothing and returns 2.
    """
    try:
        cfg = load_config(config_path, overrides)
        result = run_config(cfg)
    except (FitConfigError, DataError) as e:
        print(f"ltpnet fit: error: {e}", file=sys.stderr)
        return 2
    from .plot import plot_fit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(result_json(result, cfg)), indent=1, allow_nan=False)
    tmp = out / "fit.json.tmp"
    tmp.write_text(text + "\n")
    os.replace(tmp, out / "fit.json")
    plot_fit(result, out / "fit.png", title=Path(config_path).stem)
    c2 = result.chi2
    print(f"ltpnet fit: loss (hard thresholds) {result.loss:.4g}, chi2 {c2:.4g} over "
          f"{result.n_points} points ({c2 / result.n_points:.3g} per point); "
          f"wrote {out / 'fit.json'} and {out / 'fit.png'} in {result.wall_s:.1f} s",
          file=sys.stderr)
    return 0


def _finite(x):
    """JSON-safe copy: non-finite floats (a diverged restart) become null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def load_params(path: str | os.PathLike, params=None):
    """Apply the ``params`` of a fit.json to a `Params` (default `Params()`).

    Every ``"group.key"`` entry replaces that leaf; ``extra`` values (D, beta, b,
    W) have no Params counterpart and are not applied (they belong to the ModelSpec).
    """
    from ..params import GROUPS, Params

    with open(path) as f:
        doc = json.load(f)
    if "params" not in doc or not isinstance(doc["params"], dict):
        raise ValueError(f"{path}: no 'params' table (is it a fit.json?)")
    p = params if params is not None else Params()
    by_group: dict[str, dict] = {}
    for name, val in doc["params"].items():
        group, _, key = name.partition(".")
        if group not in GROUPS or key not in {f.name for f in
                                              dataclasses.fields(GROUPS[group])}:
            raise ValueError(f"{path}: params key {name!r} is not a Params leaf "
                             f"(group.key with groups {list(GROUPS)})")
        by_group.setdefault(group, {})[key] = float(val)
    for group, vals in by_group.items():
        p = p.with_values(group, **vals)
    return p.check()
