"""Gradient-descent fits: conditions and random restarts as two vmapped axes.

The loss of one restart is the mean chi-square of the data under the surrogate
model at the current temperature. Each jitted call runs a chunk of optimiser steps
as a `lax.scan` over the temperature schedule, for all restarts at once; between
chunks the host prints progress and records the exact (hard-threshold) loss.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import surrogate
from . import data as _data
from .model import (
    PARAMS,
    ModelOptions,
    batch_arrays,
    names_for,
    predict,
    preset,
    times_above,
)
from .transform import FitConfigError, Space, make_space


@dataclasses.dataclass
class FitResult:
    """Outcome of `fit`.

    Attributes:
        model: Model name.
        values: Every model parameter of the best restart (free and fixed), by name.
        free: Names of the free parameters.
        loss: Mean chi-square per point with hard thresholds (the reported loss).
        loss_surrogate: The same at the final surrogate temperature.
        predicted: `(n_conditions,)` predicted ratios (hard thresholds).
        conditions: The data.
        history: step, temperature and surrogate loss of the best restart per step;
            `hard_step` and `loss_hard` at the logged steps.
        restarts: Per restart: initial and final free values and final hard loss.
        best: Index of the best restart.
        space: The parameter space; options: the static model options.
        wall_s: Wall-clock seconds of the fit (compilation included).
    """

    model: str
    values: dict
    free: tuple
    loss: float
    loss_surrogate: float
    predicted: np.ndarray
    conditions: list
    history: dict
    restarts: list
    best: int
    space: Space
    options: ModelOptions
    wall_s: float

    @property
    def chi2(self) -> float:
        return float(np.sum(self.residuals() ** 2))

    @property
    def n_points(self) -> int:
        return len(self.conditions)

    def residuals(self) -> np.ndarray:
        """(predicted - ratio) / sem per condition."""
        r = np.array([c.ratio for c in self.conditions])
        s = np.array([c.sem for c in self.conditions])
        return (self.predicted - r) / s

    def params(self) -> dict:
        """Values with a Params counterpart, keyed "group.key" (ltpnet units)."""
        return {k: v for k, v in self.values.items() if not k.startswith("extra.")}

    def extra(self) -> dict:
        """Values without a Params counterpart (D, beta, b, W), by short name."""
        return {k.split(".", 1)[1]: v for k, v in self.values.items()
                if k.startswith("extra.")}

    def predict(self, conditions, *, hard: bool = True) -> np.ndarray:
        """Ratios the fitted model predicts for other conditions (a dense curve)."""
        return predict_values(self.model, self.values, conditions, self.options,
                              hard=hard)

    def times(self, conditions=None) -> tuple[np.ndarray, np.ndarray]:
        """`(t_d, t_p)` [ms] of the fitted model per condition (default: the data)."""
        return times_values(self.model, self.values, conditions or self.conditions,
                            self.options)


def model_options(model: str, conditions, **kw) -> ModelOptions:
    """ModelOptions sized for `conditions` (raises FitConfigError on a bad choice)."""
    from .model import MODELS, SWITCHES

    if model not in MODELS:
        raise FitConfigError(f"[model] calcium must be one of {list(MODELS)}, "
                             f"got calcium={model!r}")
    n_max = max(c.pairs_per_train for c in conditions)
    opts = ModelOptions(model=model, max_pairs=n_max, **kw)
    if not (isinstance(opts.grid, int) and opts.grid >= 8):
        raise FitConfigError(f"[model] grid must be an integer >= 8, "
                             f"got grid={opts.grid!r}")
    if opts.switch not in SWITCHES:
        raise FitConfigError(f"[model] switch must be one of {list(SWITCHES)}, "
                             f"got switch={opts.switch!r}")
    if not (isinstance(opts.switch_grid, int) and opts.switch_grid >= 4
            and opts.switch_grid % 4 == 0):
        raise FitConfigError(f"[model] switch_grid must be a multiple of 4 (cells per "
                             f"unit rho; rho = 0 and 1 are then grid nodes), got "
                             f"switch_grid={opts.switch_grid!r}")
    if opts.cells is not None:
        cells = opts.cells
        ok = (isinstance(cells, list | tuple) and len(cells) == 2
              and isinstance(cells[0], int) and not isinstance(cells[0], bool)
              and cells[0] >= 1 and isinstance(cells[1], int | float)
              and not isinstance(cells[1], bool) and 0 < cells[1] <= 1)
        if not ok:
            raise FitConfigError(f"[model] cells must be [k, p]: each cell has "
                                 f"Binomial(k, p) synapses of the pathway, k an "
                                 f"integer >= 1 and 0 < p <= 1, got cells={cells!r}")
        if model != "nmda":
            raise FitConfigError(f"[model] cells needs calcium = 'nmda' (the summed "
                                 f"weight extra.W of the pathway), got calcium="
                                 f"{model!r}")
        opts = dataclasses.replace(opts, cells=(int(cells[0]), float(cells[1])))
    for key in ("transient_periods", "release_rows"):
        if not (isinstance(getattr(opts, key), int) and getattr(opts, key) >= 1):
            raise FitConfigError(f"[model] {key} must be an integer >= 1, "
                                 f"got {key}={getattr(opts, key)!r}")
    clamped = [c for c in conditions if c.clamp_mv is not None]
    if clamped and model != "nmda":
        raise FitConfigError(f"{clamped[0].source}: clamp_mv needs [model] calcium = "
                             f"'nmda' (the linear model has no membrane), got "
                             f"calcium={model!r}")
    max_dt = max((abs(c.dt_ms) for c in conditions if c.dt_ms is not None), default=0.0)
    if not opts.window_ms > max_dt:
        raise FitConfigError(f"[model] window_ms must exceed the largest |dt_ms| "
                             f"({max_dt:g} ms), got window_ms={opts.window_ms!r}")
    return opts


def _evaluate(fn, model: str, values: dict, conditions, options, temperature):
    """`fn(v, conds, opts, temperature)` for parameter values `values` (missing: the
    ltpnet preset) on `conditions`, jitted."""
    v = preset("ltpnet")
    v.update(values)
    v = {k: jnp.asarray(v[k]) for k in names_for(model)}
    opts = options or model_options(model, conditions)
    opts = dataclasses.replace(
        opts, max_pairs=max(c.pairs_per_train for c in conditions))
    conds = batch_arrays(_data.batch(conditions))
    return jax.jit(lambda v, c: fn(v, c, opts, temperature))(v, conds)


def predict_values(model: str, values: dict, conditions, options: ModelOptions | None =
                   None, *, hard: bool = True, temperature: float = 0.05) -> np.ndarray:
    """Predicted ratios for parameter values `values` (missing: the ltpnet preset)."""
    return np.asarray(_evaluate(predict, model, values, conditions, options,
                                0.0 if hard else temperature))


def times_values(model: str, values: dict, conditions,
                 options: ModelOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(t_d, t_p)` [ms] per condition: the total time the calcium of parameter values
    `values` spends above theta_d and above theta_p (hard thresholds), the only way a
    protocol reaches the read-out."""
    t_d, t_p = _evaluate(times_above, model, values, conditions, options, 0.0)
    return np.asarray(t_d), np.asarray(t_p)


def make_loss(space: Space, conds: dict, ratio, sem, opts: ModelOptions):
    """`loss(u, temperature)` (mean chi-square) and `loss_hard(u)` for one restart."""

    def loss(u, temperature):
        pred = predict(space.values(u), conds, opts, temperature)
        return jnp.mean(((pred - ratio) / sem) ** 2)

    def loss_hard(u):
        pred = predict(space.values(u), conds, opts, 0.0)
        lh = jnp.mean(((pred - ratio) / sem) ** 2)
        return jnp.where(jnp.all(jnp.isfinite(u)), lh, jnp.nan), pred

    return loss, loss_hard


def fit(conditions, *, model: str = "linear", free: dict, fixed: dict | None = None,
        preset_name: str = "ltpnet",
        optimizer: optax.GradientTransformation | None = None,
        steps: int = 300, restarts: int = 4, key: int | jax.Array = 0,
        temperature: tuple[float, float] = (0.5, 0.01), options: dict | None = None,
        restart_spread: float = 0.25, init_points: list[dict] | None = None,
        log_every: int | None = None,
        progress: Callable[[str], None] | None = None) -> FitResult:
    """Fit free parameters of a single-synapse model to plasticity data.

    Args:
        conditions: `Condition`s (e.g. from `load_csv`).
        model: ``"linear"`` (Graupner-Brunel calcium) or ``"nmda"`` (NMDA/bAP calcium).
        free: name -> `Free(init, lo, hi, scale=None)` or `{"init", "bounds", "scale"}`.
        fixed: name -> value for parameters that are not free (default: the preset).
        preset_name: Starting values of every parameter (`model.PRESETS`).
        optimizer: An optax optimiser (default `optax.adam(0.05)`).
        steps: Optimiser steps.
        restarts: Independent starts, run as one vmapped batch. Restart 0 starts at the
            given initial values, the others at random points around them.
        key: Seed (int) or PRNG key of the random restarts.
        temperature: (start, end) of the geometric annealing of the surrogate
            temperature (log-calcium units, see `ltpnet.surrogate`).
        options: ModelOptions fields (grid, window_ms, transient_periods,
            release_rows, switch, switch_grid, cells).
        restart_spread: Standard deviation of the random starting points around the
            initial values, as a fraction of each parameter's (log-)scaled range.
        init_points: One dict of starting values per restart (free parameter name ->
            value; missing names start at their `init`); overrides the rule above.
        log_every: Steps between progress lines and hard-loss evaluations.
        progress: Called with each progress line (e.g. `print`); None is silent.

    Returns:
        A `FitResult` for the restart with the lowest final hard-threshold loss.
    """
    t_wall = time.perf_counter()
    conditions = [c.check() for c in conditions]
    if not (isinstance(steps, int) and steps >= 1):
        raise FitConfigError(f"[fit] steps must be an integer >= 1, "
                             f"got steps={steps!r}")
    if not (isinstance(restarts, int) and restarts >= 1):
        raise FitConfigError(f"[fit] restarts must be an integer >= 1, "
                             f"got restarts={restarts!r}")
    if not (isinstance(restart_spread, int | float) and restart_spread >= 0):
        raise FitConfigError(f"[fit] restart_spread must be a number >= 0, "
                             f"got restart_spread={restart_spread!r}")
    t0, t1 = temperature
    if not (t0 >= t1 > 0):
        raise FitConfigError(f"[fit] temperature must be [start, end] with start >= "
                             f"end > 0, got temperature={list(temperature)}")
    opts = model_options(model, conditions, **(options or {}))
    values0 = preset(preset_name)
    for name, x in (fixed or {}).items():
        if name not in names_for(model):
            raise FitConfigError(f"[fixed] {name!r} is not a parameter of the "
                                 f"{model!r} model; allowed: {list(names_for(model))}")
        info = PARAMS[name]
        x = float(x)
        if not (math.isfinite(x) and (x > info.lo if info.open_lo else x >= info.lo)
                and x <= info.hi):
            rng = f"{'(' if info.open_lo else '['}{info.lo:g}, {info.hi:g}]"
            raise FitConfigError(f"[fixed] {name}={x:g} is outside the allowed range "
                                 f"{rng} [{info.unit}]")
        values0[name] = x
    values0 = {k: values0[k] for k in names_for(model)}
    space, u0 = make_space(model, free, values0)
    if init_points is not None:
        if len(init_points) != restarts:
            raise FitConfigError(f"init_points must hold one dict per restart "
                                 f"({restarts}), got {len(init_points)}")
        for pt in init_points:
            unknown = set(pt) - set(space.names)
            if unknown:
                raise FitConfigError(f"init_points name(s) {sorted(unknown)} are not "
                                     f"free; the free parameters are "
                                     f"{list(space.names)}")
        U0 = np.stack([space.to_u({**values0, **{k: float(x) for k, x in pt.items()}})
                       for pt in init_points])
    else:
        seed = (key if isinstance(key, int)
                else int(jax.random.randint(key, (), 0, 2**31 - 1)))
        U0 = np.concatenate([u0[None], space.jitter_u(
            u0, np.random.default_rng(seed), restarts - 1, restart_spread)])
    optimizer = optimizer or optax.adam(0.05)
    b = _data.batch(conditions)
    conds = batch_arrays(b)
    f = conds["period_ms"].dtype
    ratio, sem = jnp.asarray(b.ratio, f), jnp.asarray(b.sem, f)
    extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)
    loss, loss_hard = make_loss(space, conds, ratio, sem, opts)
    vg = jax.vmap(jax.value_and_grad(loss), in_axes=(0, None))
    log_every = min(steps, log_every or max(1, steps // 10))
    n_chunks = -(-steps // log_every)
    temps = surrogate.anneal(t0, t1, steps)
    temps_padded = np.concatenate([temps, np.full(n_chunks * log_every - steps, t1)])
    active = np.arange(n_chunks * log_every) < steps

    def one_step(carry, x):
        u, st = carry
        temp, on = x
        val, g = vg(u, temp)

        def update(g1, st1, u1, val1):  # extra args serve optimisers such as lbfgs
            if extra_args:
                return optimizer.update(g1, st1, u1, value=val1, grad=g1,
                                        value_fn=lambda w: loss(w, temp))
            return optimizer.update(g1, st1, u1)

        upd, st_new = jax.vmap(update)(g, st, u, val)
        u_new = jax.vmap(optax.apply_updates)(u, upd)
        keep = lambda new, old: jnp.where(on, new, old)  # noqa: E731
        return (keep(u_new, u), jax.tree_util.tree_map(keep, st_new, st)), val

    @jax.jit
    def run_chunk(u, st, temps, on):
        # every chunk has the same length (one compilation); the padding steps at the
        # end are inactive. The exact loss of the final point comes with it.
        (u, st), vals = jax.lax.scan(one_step, (u, st), (temps, on))
        lh, pred = jax.vmap(loss_hard)(u)
        return u, st, vals, lh, pred

    u = jnp.asarray(U0, f)
    st = jax.vmap(optimizer.init)(u)
    losses = np.zeros((steps, restarts))
    hard_steps, hard_losses = [], []
    say = progress or (lambda s: None)
    say(f"fit: model={model}, {len(conditions)} conditions, {space.size} free "
        f"parameters, {restarts} restarts, {steps} steps")
    for i in range(n_chunks):
        sl = slice(i * log_every, (i + 1) * log_every)
        u, st, vals, lh, preds = run_chunk(u, st, jnp.asarray(temps_padded[sl], f),
                                           jnp.asarray(active[sl]))
        done = min(steps, (i + 1) * log_every)
        losses[i * log_every:done] = np.asarray(vals)[:done - i * log_every]
        lh = np.asarray(lh)
        hard_steps.append(done)
        hard_losses.append(lh)
        say(f"fit: step {done:>5}/{steps}  T={temps[done - 1]:.3g}  "
            f"loss {np.nanmin(losses[done - 1]):.4g}  hard {np.nanmin(lh):.4g}  "
            f"[{time.perf_counter() - t_wall:.1f} s]")
    if not np.any(np.isfinite(lh)):
        raise FloatingPointError("every restart ended with a non-finite loss; lower "
                                 "the learning rate or narrow the bounds")
    best = int(np.nanargmin(np.where(np.isfinite(lh), lh, np.inf)))
    vals = jax.vmap(space.values)(u)
    vals0 = jax.vmap(space.values)(jnp.asarray(U0, u.dtype))
    values = {k: float(x[best]) for k, x in vals.items()}
    restart_info = [{
        "init": {k: float(vals0[k][i]) for k in space.names},
        "final": {k: float(vals[k][i]) for k in space.names},
        "loss": float(lh[i]),
    } for i in range(restarts)]
    history = {
        "step": list(range(1, steps + 1)),
        "temperature": [float(x) for x in temps],
        "loss": [float(x) for x in losses[:, best]],
        "hard_step": hard_steps,
        "loss_hard": [float(x[best]) for x in hard_losses],
    }
    return FitResult(
        model=model, values=values, free=space.names, loss=float(lh[best]),
        loss_surrogate=float(losses[-1, best]),
        predicted=np.asarray(preds[best], float),
        conditions=conditions, history=history, restarts=restart_info, best=best,
        space=space, options=opts, wall_s=time.perf_counter() - t_wall,
    )


def stderr_progress(line: str) -> None:
    """Progress sink that writes to stderr."""
    print(line, file=sys.stderr, flush=True)

