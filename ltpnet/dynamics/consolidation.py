r"""Early-phase decay, tags, protein synthesis and the late phase (slow clock).

The early change of a synapse is $e = \rho - \rho_{ref}$. Its anchor follows the
switch in two first-order stages, $\tau_e\,d\rho_{lag}/dt = \rho - \rho_{lag}$ and
$\tau_e\,d\rho_{ref}/dt = \rho_{lag} - \rho_{ref}$, so early LTP/LTD fades even while
the switch stays latched, but not at once: after a step of the switch,
$e(t) = e_0 (1 + t/\tau_e) e^{-t/\tau_e}$, flat at first (E-LTP holds for about an
hour) and then falling, with mean lifetime $2\tau_e$. The update is the exact
solution over $dt_s$ with $\rho$ held constant.
Tags: LTP tag $e > \theta_{tag}$, LTD tag $e < -\theta_{tag}$.
Protein (per neuron): $dp/dt = -p/\tau_{deg} + (1 - p)/\tau_{syn}\cdot T$, with
trigger $T = [\langle|e|\rangle_k > \theta_{pro}]$ and no synthesis under anisomycin.
Late phase: $\tau_z dz/dt = z(1-z)(z-\kappa) + \gamma_z p\,(\text{tag}_+ - \text{tag}_-)$,
clipped to [0, 1]. Efficacy read by the weight: $q = \min(\max(z + e, 0), 1)$: an
early-potentiated synapse that is captured reads UP (q = 1), not twice UP, and the
weight stays within [w_min, w_max] while the early phase hands over to the late one.
"""

from __future__ import annotations

import jax.numpy as jnp


def efficacy(rho, rho_ref, z):
    """Efficacy q = clip(z + rho - rho_ref, 0, 1) `(n_post, k)`."""
    return jnp.clip(z + rho - rho_ref, 0.0, 1.0)


def update_slow(rho, rho_lag, rho_ref, z, p, dt_s, tau_e, theta_tag, theta_pro,
                tau_p_syn, tau_p_deg, tau_z, kappa, gamma_z, synth_ok):
    """Advance rho_lag, rho_ref, z `(n_post, k)` and p `(n_post,)` by dt_s [ms]."""
    e = rho - rho_ref
    tag = (e > theta_tag).astype(rho.dtype) - (e < -theta_tag).astype(rho.dtype)
    trig = (jnp.mean(jnp.abs(e), axis=1) > theta_pro) & synth_ok
    rate = 1.0 / tau_p_deg + trig / tau_p_syn
    p_inf = (trig / tau_p_syn) / rate
    p = p_inf + (p - p_inf) * jnp.exp(-dt_s * rate)
    dz = z * (1 - z) * (z - kappa) + gamma_z * p[:, None] * tag
    z = jnp.clip(z + (dt_s / tau_z) * dz, 0.0, 1.0)
    decay = jnp.exp(-dt_s / tau_e)
    rho_ref = rho + (rho_ref - rho) * decay + (dt_s / tau_e) * decay * (rho_lag - rho)
    rho_lag = rho + (rho_lag - rho) * decay
    return rho_lag, rho_ref, z, p
