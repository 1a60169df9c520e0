r"""Firing-rate sensor and multiplicative synaptic scaling.

$r \leftarrow r\,e^{-dt/\tau_r} + y/\tau_r$ (Hz), and on the slow clock
$a \leftarrow a + \frac{dt_s}{\tau_a} a \frac{r_{target} - r}{r_{target}}$: one factor
per neuron that multiplies all of its excitatory weights.
"""

from __future__ import annotations


def update_rate(r, y, eR, r_inc):
    """Rate sensor `(n_post,)` [Hz]; `r_inc` = 1000/tau_r[ms]."""
    return r * eR + r_inc * y


def update_scaling(a, r, ka, r_target):
    """Scaling factor `(n_post,)`; `ka` = dt_slow / tau_a."""
    return a + ka * a * (r_target - r) / r_target
