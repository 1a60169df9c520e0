r"""Per-synapse calcium and the bistable efficacy switch.

NMDA variant: $c \leftarrow c\,e^{-dt/\tau_{Ca}} + dt\,\alpha_N (1 - f_{APV})\,s_j\,
B(v_i + b_i) + C_{bAP} y_i$.
Linear (Graupner-Brunel) variant: $c \leftarrow c\,e^{-dt/\tau_{Ca}}
+ C_{pre} x_j(t - D) + C_{post} y_i$.
Switch: $\rho \leftarrow \mathrm{clip}(\rho + \frac{dt}{\tau_\rho}[-\rho(1-\rho)(\rho^*-\rho)
+ \gamma_p(1-\rho)H(c-\theta_p) - \gamma_d\rho H(c-\theta_d)], 0, 1)$; with CaMKII
T286A the cubic (the latch) is replaced by relaxation to the late state,
$-\frac{dt}{\tau_{T286A}}(\rho - z)$. With switch noise (Euler-Maruyama) the step adds
$\sqrt{dt/\tau_\rho}\sqrt{\sigma^2 H(c-\theta_d) + \sigma_p^2 H(c-\theta_p)}\,\xi$,
$\xi$ zero-mean with unit variance, drawn per synapse and step: the noise acts only
while calcium is above a threshold. Graupner & Brunel (2012) have $\sigma_p = \sigma$;
a separate $\sigma_p$ lets the noise of potentiating calcium (a tetanus, a pairing)
differ from that of the depressing band, which every pathway test pulse visits
(docs/model.md, section 6). A noisy switch is not clipped
(as in Graupner & Brunel's model): clipping at 0 and 1 would turn the walls into
reflecting ones and bias the noise towards potentiation of DOWN synapses (and
depression of UP ones); the cubic's attractors at 0 and 1 hold rho near them instead.
"""

from __future__ import annotations

import jax.numpy as jnp


def calcium_nmda(c, s_syn, B, y, eCa, kN, C_bAP):
    """NMDA/bAP calcium. `s_syn` `(n_post, k)`, `B` and `y` `(n_post,)`."""
    return c * eCa + kN * s_syn * B[:, None] + C_bAP * y[:, None]


def calcium_linear(c, x_syn, y, eCa, C_pre, C_post):
    """Graupner-Brunel linear calcium; `x_syn` delayed input spikes `(n_post, k)`."""
    return c * eCa + C_pre * x_syn + C_post * y[:, None]


def update_rho(rho, c, kr, theta_d, theta_p, gamma_d, gamma_p, rho_star,
               latch=True, relax_to=None, k_relax=0.0, step_fn=None, noise=None,
               sigma=0.0, sigma_p=0.0):
    r"""One step of the efficacy switch; returns rho, clipped to [0, 1] when noise-free.

    `step_fn(c, theta)` replaces the hard gate `c > theta` (e.g. a smooth surrogate
    from `ltpnet.surrogate` when gradients must reach the thresholds); None keeps
    the hard gate. `noise` is $\sqrt{dt/\tau_\rho}\,\xi$ `(n_post, k)`, scaled here by
    the gate $\sqrt{\sigma^2 H_d + \sigma_p^2 H_p}$, or None for a noise-free switch.
    """
    if step_fn is None:
        hp = (c > theta_p).astype(rho.dtype)
        hd = (c > theta_d).astype(rho.dtype)
    else:
        hp, hd = step_fn(c, theta_p), step_fn(c, theta_d)
    drive = gamma_p * (1 - rho) * hp - gamma_d * rho * hd
    if latch:
        drive = drive - rho * (1 - rho) * (rho_star - rho)
    new = rho + kr * drive
    if noise is not None:
        var = sigma**2 * hd + sigma_p**2 * hp
        # sqrt has an infinite slope at 0: keep gradients (in sigma, sigma_p) finite
        # where calcium is below both thresholds and the gate is shut
        open_ = var > 0
        new = new + noise * jnp.where(open_, jnp.sqrt(jnp.where(open_, var, 1.0)), 0.0)
    if relax_to is not None:
        new = new - k_relax * (rho - relax_to)
    return new if noise is not None else jnp.clip(new, 0.0, 1.0)
