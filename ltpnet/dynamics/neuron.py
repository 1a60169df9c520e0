r"""Leaky integrate-and-fire membrane with AMPA, NMDA and GABA_A conductances.

$v \leftarrow v + \frac{dt}{\tau_m}\left[(E_L - v) + g(E_E - v)
   + g_N B(v)(E_E - v) + g_I(E_I - v)\right]$, held at $V_{reset}$ while refractory;
a spike when $v \ge V_{th}$, then $v \leftarrow V_{reset}$ for $t_{ref}$.
Conductances decay exactly: $g \leftarrow g\,e^{-dt/\tau_A} + \text{input}$.
A back-propagating AP depolarises the dendrite:
$b \leftarrow b\,e^{-dt/\tau_{bAP}} + A_{bAP}\,y$.
"""

from __future__ import annotations

import jax.numpy as jnp


def mg_block(v, Mg):
    r"""Jahr-Stevens Mg2+ block $B(v) = 1/(1 + [Mg]/3.57\,e^{-0.062 v})$, v in mV, Mg in mM."""
    return 1.0 / (1.0 + (Mg / 3.57) * jnp.exp(-0.062 * v))


def integrate(v, refrac, current, kv, V_th, V_reset, n_ref, force=False, block=False):
    """One Euler step of the membrane with threshold, reset and refractoriness.

    Args:
        v: Membrane potential `(n,)` [mV].
        refrac: Refractory steps left `(n,)` int32.
        current: Bracketed drive `(E_L - v) + sum_x g_x (E_x - v)` `(n,)` [mV].
        kv: dt / tau_m.
        V_th, V_reset: Threshold and reset [mV].
        n_ref: Refractory period [steps].
        force: Spikes forced this step (current injection), bool.
        block: No spikes at all (TTX, voltage clamp), bool.

    Returns:
        `(v, refrac, y)` with y the bool spikes of this step.
    """
    refrac = jnp.maximum(refrac - 1, 0)
    free = refrac == 0
    v = jnp.where(free, v + kv * current, v)
    y = free & ((v >= V_th) | force) & ~block
    v = jnp.where(y, V_reset, v)
    refrac = jnp.where(y, n_ref, refrac)
    return v, refrac, y
