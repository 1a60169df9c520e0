r"""Smooth stand-ins for calcium thresholds, used when gradients must pass through them.

A hard gate $\Theta[c - \theta]$ has zero derivative almost everywhere. The surrogate
used throughout ltpnet works on the log-ratio $z = \ln(c/\theta)$:

$$\Theta_\varepsilon(c, \theta)
  = \sigma\!\left(\frac{\ln(c/\theta)}{\varepsilon}\right),$$

so the temperature $\varepsilon$ is a *relative* calcium width (0.1 means "about 10 %
of the threshold") and means the same for both thresholds and every calcium model.
$\varepsilon = 0$ is the hard gate.

For calcium that decays as a single exponential $c(s) = c_0 e^{-s/\tau}$ over an
interval $[0, L]$, $\ln c$ is linear in $s$, so the time spent above $\theta$ has a
closed form, exact for the hard gate and for the surrogate alike:

$$t_\varepsilon = \tau\,\varepsilon\left[
  \operatorname{softplus}\!\left(\frac{z_0}{\varepsilon}\right)
  - \operatorname{softplus}\!\left(\frac{z_0 - L/\tau}{\varepsilon}\right)\right]
  \xrightarrow{\ \varepsilon \to 0\ } \tau\,\operatorname{clip}(z_0, 0, L/\tau),$$

with $z_0 = \ln(c_0/\theta)$. This is what the Graupner-Brunel fit uses between spikes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_TINY = 1e-30


def heaviside(x):
    """Hard step `x > 0` as a float array of the dtype of `x`."""
    x = jnp.asarray(x)
    return (x > 0).astype(x.dtype)


def sigmoid_step(x, temperature):
    r"""$\sigma(x/\varepsilon)$; the hard step when `temperature` is a Python 0."""
    if _is_zero(temperature):
        return heaviside(x)
    return jax.nn.sigmoid(x / temperature)


def log_ratio(c, theta):
    r"""$\ln(c/\theta)$; finite (about -69) where $c \le 0$, with zero gradient."""
    return jnp.log(jnp.maximum(c, _TINY)) - jnp.log(theta)


def threshold_gate(c, theta, temperature=0.0):
    r"""Gate $\Theta_\varepsilon(c, \theta) = \sigma(\ln(c/\theta)/\varepsilon)$.

    With `temperature=0` (a Python number) this is exactly the hard gate `c > theta`
    (as a float). Use it as the `step_fn` of `ltpnet.dynamics.plasticity.update_rho`:
    `step_fn=lambda c, th: threshold_gate(c, th, 0.05)`.
    """
    if _is_zero(temperature):
        return (jnp.asarray(c) > theta).astype(jnp.result_type(c, theta, float))
    return jax.nn.sigmoid(log_ratio(c, theta) / temperature)


def soft_clip(z, hi, temperature):
    r"""Smooth $\operatorname{clip}(z, 0, hi)$.

    $\varepsilon[\mathrm{sp}(z/\varepsilon) - \mathrm{sp}((z - hi)/\varepsilon)]$ with
    sp the softplus; its derivative in `z` is
    $\sigma(z/\varepsilon) - \sigma((z - hi)/\varepsilon)$. With
    `temperature=0` (a Python number) it is the hard clip. `hi >= 0` may be huge
    (an unbounded interval).
    """
    if _is_zero(temperature):
        return jnp.clip(z, 0.0, hi)
    eps = temperature
    return eps * (jax.nn.softplus(z / eps) - jax.nn.softplus((z - hi) / eps))


def time_above_decay(c0, theta, tau, length, temperature=0.0):
    r"""Time that $c_0 e^{-s/\tau}$ spends above $\theta$, $s \in [0, \mathrm{length}]$.

    Exact for the hard gate (`temperature=0`): $\tau\,\mathrm{clip}(\ln(c_0/\theta), 0,
    \mathrm{length}/\tau)$. For `temperature > 0` it is the exact integral of the gate
    `threshold_gate(c(s), theta, temperature)` over the interval. Units follow `tau`.
    """
    return tau * soft_clip(log_ratio(c0, theta), length / tau, temperature)


def anneal(start: float, end: float, steps: int) -> np.ndarray:
    """Geometric schedule of `steps` temperatures from `start` down to `end` (> 0)."""
    if steps < 1:
        raise ValueError(f"anneal needs steps >= 1, got steps={steps}")
    if not (start >= end > 0):
        raise ValueError(f"anneal needs start >= end > 0, got start={start}, end={end}")
    return np.geomspace(start, end, steps) if steps > 1 else np.array([float(end)])


def _is_zero(t) -> bool:
    return isinstance(t, int | float) and t == 0


__all__ = [
    "anneal", "heaviside", "log_ratio", "sigmoid_step", "soft_clip", "threshold_gate",
    "time_above_decay",
]
