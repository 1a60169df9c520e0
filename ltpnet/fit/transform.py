r"""Free parameters and the unconstrained space the optimiser works in.

Each free parameter has bounds ``(lo, hi)`` and a scale. An unconstrained $u \in
\mathbb{R}$ maps to

* ``"log"``:    $p = \exp(\ln lo + (\ln hi - \ln lo)\,\sigma(u))$ (time constants,
  rates, amplitudes: the default when ``lo > 0``),
* ``"linear"``: $p = lo + (hi - lo)\,\sigma(u)$,

so every value the optimiser can reach lies strictly inside the bounds. The two
thresholds are ordered by construction: the lower end of $\theta_p$ is
$\max(lo_p, \theta_d)$ and, when only $\theta_d$ is free, its upper end is
$\min(hi_d, \theta_p)$.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from .model import PARAMS, names_for

SCALES = ("log", "linear")
TD, TP = "plasticity.theta_d", "plasticity.theta_p"


class FitConfigError(ValueError):
    """A fit specification that cannot be used; the message names what and why."""


@dataclasses.dataclass(frozen=True)
class Free:
    """One free parameter: initial value, bounds and scale (None: log when lo > 0)."""

    init: float
    lo: float
    hi: float
    scale: str | None = None


@dataclasses.dataclass(frozen=True)
class Space:
    """The map between unconstrained vectors `u` and parameter values.

    Attributes:
        model: Model name.
        names: Free parameter names, the order of `u`.
        lo, hi: Bounds of each free parameter.
        log: Whether each free parameter is on a log scale.
        fixed: Values of every model parameter that is not free.
    """

    model: str
    names: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    log: tuple[bool, ...]
    fixed: tuple[tuple[str, float], ...]

    @property
    def size(self) -> int:
        return len(self.names)

    def values(self, u) -> dict:
        """Every model parameter (free and fixed) as a dict of scalars, from `u`."""
        v = {k: jnp.asarray(x, u.dtype) for k, x in self.fixed}
        order = sorted(range(self.size), key=lambda i: self.names[i] == TP)  # TP last
        for i in order:
            name = self.names[i]
            lo, hi = self.lo[i], self.hi[i]
            lo = jnp.asarray(lo, u.dtype)
            hi = jnp.asarray(hi, u.dtype)
            if name == TP:
                lo = jnp.maximum(lo, v[TD])
            elif name == TD and TP not in self.names:
                hi = jnp.minimum(hi, v[TP])
            x = _from_unit(jax.nn.sigmoid(u[i]), lo, hi, self.log[i])
            # strict order even where the sigmoid saturates in floating point
            if name == TP:
                floor = jnp.nextafter(jax.lax.stop_gradient(v[TD]), jnp.inf)
                x = jnp.maximum(x, floor)
            elif name == TD and TP not in self.names:
                ceil = jnp.nextafter(jax.lax.stop_gradient(v[TP]), -jnp.inf)
                x = jnp.minimum(x, ceil)
            v[name] = jnp.clip(x, lo, hi)  # rounding at saturation stays in bounds
        return v

    def to_u(self, values: dict) -> np.ndarray:
        """Unconstrained vector of free-parameter values (inverse of `values`)."""
        u = np.zeros(self.size)
        td = values.get(TD, dict(self.fixed).get(TD))
        tp = values.get(TP, dict(self.fixed).get(TP))
        for i, name in enumerate(self.names):
            lo, hi, x = self.lo[i], self.hi[i], float(values[name])
            if name == TP:
                lo = max(lo, td)
            elif name == TD and TP not in self.names:
                hi = min(hi, tp)
            if not lo < x < hi:
                raise FitConfigError(
                    f"[free] {name}: init={x:g} must lie strictly inside its effective "
                    f"bounds ({lo:g}, {hi:g})" + (" (theta_p > theta_d)" if name in
                                                  (TD, TP) else ""))
            if self.log[i]:
                s = (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
            else:
                s = (x - lo) / (hi - lo)
            u[i] = math.log(s / (1.0 - s))
        return u

    def jitter_u(self, u0, rng: np.random.Generator, n: int, spread: float
                 ) -> np.ndarray:
        """`n` points around `u0`: each coordinate moves by N(0, spread) as a fraction
        of its (log-)scaled range, staying 2 % away from the bounds."""
        s0 = 1.0 / (1.0 + np.exp(-np.asarray(u0, float)))
        s = np.clip(s0 + spread * rng.standard_normal((n, self.size)), 0.02, 0.98)
        return np.log(s / (1.0 - s))


def _from_unit(s, lo, hi, log):
    if log:
        return jnp.exp(jnp.log(lo) + (jnp.log(hi) - jnp.log(lo)) * s)
    return lo + (hi - lo) * s


def make_space(model: str, free: dict, fixed: dict) -> tuple[Space, np.ndarray]:
    """Validate a free-parameter spec; return the Space and the initial `u`.

    Args:
        model: Model name.
        free: name -> `Free` (or a dict with `init`, `bounds` or `lo`/`hi`, `scale`).
        fixed: Values of every model parameter (free ones are overridden by `init`).

    Raises:
        FitConfigError naming the table ``[free]``, the parameter, the value and
        what is allowed.
    """
    allowed = names_for(model)
    if not free:
        raise FitConfigError("[free] no free parameters: name at least one of "
                             f"{list(allowed)}")
    specs = {}
    for name, f in free.items():
        if name not in allowed:
            other = [m for m in PARAMS.get(name, ()).models] if name in PARAMS else []
            hint = (f" (it belongs to the {other} model)" if other else "")
            raise FitConfigError(f"[free] {name!r} is not a parameter of the {model!r} "
                                 f"model{hint}; allowed: {list(allowed)}")
        specs[name] = _as_free(name, f)
    names = tuple(n for n in allowed if n in specs)
    lo, hi, log = [], [], []
    init = dict(fixed)
    for name in names:
        f, info = specs[name], PARAMS[name]
        if not (math.isfinite(f.lo) and math.isfinite(f.hi) and f.lo < f.hi):
            raise FitConfigError(f"[free] {name}: bounds must be finite with lo < hi, "
                                 f"got bounds=[{f.lo}, {f.hi}]")
        if f.lo < info.lo or (info.open_lo and f.lo <= info.lo) or f.hi > info.hi:
            rng = f"{'(' if info.open_lo else '['}{info.lo:g}, {info.hi:g}]"
            raise FitConfigError(f"[free] {name}: bounds=[{f.lo:g}, {f.hi:g}] leave "
                                 f"the allowed range {rng} [{info.unit}]")
        scale = f.scale if f.scale is not None else ("log" if f.lo > 0 else "linear")
        if scale not in SCALES:
            raise FitConfigError(f"[free] {name}: scale must be one of {list(SCALES)}, "
                                 f"got scale={scale!r}")
        if scale == "log" and f.lo <= 0:
            raise FitConfigError(f"[free] {name}: scale='log' needs a lower bound > 0, "
                                 f"got bounds=[{f.lo:g}, {f.hi:g}]")
        lo.append(float(f.lo))
        hi.append(float(f.hi))
        log.append(scale == "log")
        init[name] = float(f.init)
    if TD in names and TP in names and not hi[names.index(TP)] > hi[names.index(TD)]:
        raise FitConfigError(f"[free] {TP}: its upper bound must exceed the upper "
                             f"bound of {TD} (theta_p > theta_d), got "
                             f"{hi[names.index(TP)]:g} <= {hi[names.index(TD)]:g}")
    if TP in names and TD not in names and not hi[names.index(TP)] > init[TD]:
        raise FitConfigError(f"[free] {TP}: upper bound {hi[names.index(TP)]:g} must "
                             f"exceed the fixed {TD}={init[TD]:g}")
    if TD in names and TP not in names and not lo[names.index(TD)] < init[TP]:
        raise FitConfigError(f"[free] {TD}: lower bound {lo[names.index(TD)]:g} must "
                             f"be below the fixed {TP}={init[TP]:g}")
    if TD not in names and TP not in names and not init[TP] > init[TD]:
        raise FitConfigError(f"[fixed] {TP}={init[TP]:g} must exceed {TD}={init[TD]:g}")
    fixed_t = tuple((n, float(init[n])) for n in allowed if n not in names)
    space = Space(model, names, tuple(lo), tuple(hi), tuple(log), fixed_t)
    return space, space.to_u(init)


def _as_free(name, f) -> Free:
    if isinstance(f, Free):
        return f
    if isinstance(f, tuple | list) and len(f) == 3:
        return Free(float(f[0]), float(f[1]), float(f[2]))
    if isinstance(f, dict):
        unknown = set(f) - {"init", "bounds", "lo", "hi", "scale"}
        if unknown:
            raise FitConfigError(f"[free] {name}: unknown key(s) {sorted(unknown)}; "
                                 f"allowed: init, bounds, scale")
        if "init" not in f:
            raise FitConfigError(f"[free] {name}: missing init (its initial value)")
        if "bounds" in f:
            b = f["bounds"]
            if not (isinstance(b, list | tuple) and len(b) == 2):
                raise FitConfigError(f"[free] {name}: bounds must be [lo, hi], "
                                     f"got bounds={b!r}")
            lo, hi = b
        elif "lo" in f and "hi" in f:
            lo, hi = f["lo"], f["hi"]
        else:
            raise FitConfigError(f"[free] {name}: missing bounds = [lo, hi]")
        try:
            return Free(float(f["init"]), float(lo), float(hi), f.get("scale"))
        except (TypeError, ValueError):
            raise FitConfigError(f"[free] {name}: init and bounds must be numbers, "
                                 f"got init={f['init']!r}, bounds=[{lo!r}, {hi!r}]"
                                 ) from None
    raise FitConfigError(f"[free] {name}: expected {{init, bounds}} or (init, lo, hi), "
                         f"got {f!r}")
