"""Params: every number of the model that may be fitted, swept or vmapped.

Each group is a frozen pytree dataclass of float leaves (scalars, or arrays that
broadcast per neuron or per synapse). Units are the canonical ones of
`ltpnet.units`: ms, mV, mM, Hz, conductances in units of the leak.

`Params()` is the hippocampal reference model (docs/model.md gives every value and
its source); `Params.bench_v1(k)` is the bench-v1 table of BENCHMARK.md.
"""

from __future__ import annotations

import dataclasses

from ._pytree import pytree_dataclass


@pytree_dataclass
class NeuronParams:
    """CA1 pyramidal LIF neuron (interneurons share it)."""

    tau_m: float = 20.0  # membrane time constant [ms]
    E_L: float = -65.0  # leak reversal [mV]
    V_reset: float = -65.0  # reset [mV]
    V_th: float = -50.0  # threshold [mV]
    t_ref: float = 2.0  # refractory period [ms]
    E_E: float = 0.0  # excitatory reversal [mV]
    E_I: float = -75.0  # inhibitory (GABA_A) reversal [mV]
    tau_A: float = 5.0  # AMPA conductance decay [ms]
    tau_GABA: float = 10.0  # GABA_A conductance decay [ms]
    g_NMDA: float = 0.0  # NMDA/AMPA conductance ratio on the membrane [1]
    A_bAP: float = 96.5  # dendritic depolarisation by a back-propagating AP [mV]
    tau_bAP: float = 9.15  # decay of that depolarisation [ms]
    V_clamp: float = -65.0  # holding potential while clamped [mV]


@pytree_dataclass
class InputParams:
    """CA3 input population: Poisson drive, NMDA gating and short-term depression
    (`ModelSpec.depression`)."""

    rate: float = 0.1  # spontaneous Poisson rate, scalar or one per pathway [Hz]
    tau_N: float = 50.0  # NMDA gating trace decay [ms]
    u_rel: float = 0.0  # share of the releasable pool a spike uses (0: none) [1]
    tau_rec: float = 500.0  # recovery of the releasable pool [ms]


@pytree_dataclass
class CalciumParams:
    """Per-synapse calcium (both variants)."""

    tau_Ca: float = 20.0  # calcium decay [ms]
    alpha_N: float = 1378.0  # NMDA calcium influx rate at B = 1, s = 1 [1/s]
    C_bAP: float = 0.945  # bAP/VDCC calcium jump per post spike [1]
    Mg: float = 1.0  # extracellular [Mg2+] [mM]
    C_pre: float = 1.0  # linear variant: jump per (delayed) pre spike [1]
    C_post: float = 2.0  # linear variant: jump per post spike [1]


@pytree_dataclass
class PlasticityParams:
    """Calcium-threshold LTP/LTD of the bistable efficacy switch rho."""

    theta_d: float = 1.0  # depression threshold [1]
    theta_p: float = 4.61  # potentiation threshold [1]
    gamma_d: float = 7.95  # depression rate [1, per tau_rho]
    gamma_p: float = 89.8  # potentiation rate [1, per tau_rho]
    tau_rho: float = 150_000.0  # switch time constant [ms]
    sigma: float = 1.44  # switch noise above theta_d (G&B sigma) when ModelSpec.switch_noise [1]
    sigma_p: float = 11.2  # switch noise above theta_p (G&B: sigma_p = sigma) [1]
    rho_star: float = 0.5  # unstable point of the switch [1]
    w_min: float = 0.01515  # weight of a DOWN synapse [g_leak] (w_max / 5.28)
    w_max: float = 0.08  # weight of an UP synapse [g_leak]


@pytree_dataclass
class ConsolidationParams:
    """Early-phase decay, tags, protein synthesis and the late phase."""

    tau_e: float = 3_600_000.0  # each stage of the early-phase decay [ms] (1 h)
    theta_tag: float = 0.2  # |early change| that sets a tag [1]
    theta_pro: float = 0.04  # mean |early change| per neuron that triggers synthesis
    tau_p_syn: float = 360_000.0  # protein synthesis time constant [ms]
    tau_p_deg: float = 3_600_000.0  # protein degradation time constant [ms]
    tau_z: float = 360_000.0  # late-phase time constant [ms]
    kappa: float = 0.5  # unstable point of the late switch [1]
    gamma_z: float = 0.1  # capture rate (tag x protein) [1]
    tau_t286a: float = 600_000.0  # T286A: relaxation of rho to the late state [ms]


@pytree_dataclass
class HomeostasisParams:
    """Rate sensor and multiplicative synaptic scaling."""

    tau_r: float = 600_000.0  # rate sensor time constant [ms]
    tau_a: float = 360_000_000.0  # scaling time constant [ms]
    r_target: float = 2.0  # target firing rate [Hz]


@pytree_dataclass
class InhibitionParams:
    """Feed-forward inhibition (used when ModelSpec.n_inh > 0)."""

    w_ei: float = 0.05  # input -> interneuron weight [g_leak]
    w_ie: float = 0.1  # interneuron -> pyramidal weight [g_leak]


@pytree_dataclass
class PharmacologyParams:
    """Drugs as time windows [on, off) in ms; a window with on >= off is never active."""

    apv: float = 1.0  # fraction of NMDA receptors blocked while APV is on [1]
    apv_on: float = 0.0
    apv_off: float = 0.0
    anisomycin_on: float = 0.0
    anisomycin_off: float = 0.0
    ttx_on: float = 0.0
    ttx_off: float = 0.0
    bicuculline_on: float = 0.0
    bicuculline_off: float = 0.0
    clamp_on: float = 0.0
    clamp_off: float = 0.0


GROUPS = {
    "neuron": NeuronParams,
    "input": InputParams,
    "calcium": CalciumParams,
    "plasticity": PlasticityParams,
    "consolidation": ConsolidationParams,
    "homeostasis": HomeostasisParams,
    "inhibition": InhibitionParams,
    "pharmacology": PharmacologyParams,
}

WINDOWS = ("apv", "anisomycin", "ttx", "bicuculline", "clamp")


@pytree_dataclass
class Params:
    """All parameters, one group per part of the model."""

    neuron: NeuronParams = dataclasses.field(default_factory=NeuronParams)
    input: InputParams = dataclasses.field(default_factory=InputParams)
    calcium: CalciumParams = dataclasses.field(default_factory=CalciumParams)
    plasticity: PlasticityParams = dataclasses.field(default_factory=PlasticityParams)
    consolidation: ConsolidationParams = dataclasses.field(
        default_factory=ConsolidationParams
    )
    homeostasis: HomeostasisParams = dataclasses.field(default_factory=HomeostasisParams)
    inhibition: InhibitionParams = dataclasses.field(default_factory=InhibitionParams)
    pharmacology: PharmacologyParams = dataclasses.field(
        default_factory=PharmacologyParams
    )

    @classmethod
    def bench_v1(cls, k: int) -> Params:
        """The bench-v1 parameter table (BENCHMARK.md) for in-degree `k`."""
        return cls(
            neuron=NeuronParams(A_bAP=0.0),
            input=InputParams(rate=5.0, tau_N=50.0),
            calcium=CalciumParams(tau_Ca=20.0, alpha_N=300.0, C_bAP=1.0, Mg=1.0),
            plasticity=PlasticityParams(
                theta_d=1.0, theta_p=1.3, gamma_d=200.0, gamma_p=321.808,
                tau_rho=150_000.0, rho_star=0.5, w_min=0.0, w_max=24.0 / k,
            ),
            homeostasis=HomeostasisParams(
                tau_r=1000.0, tau_a=10_000.0, r_target=5.0
            ),
        )

    def with_values(self, group: str, **values) -> Params:
        """Copy with some leaves of one group replaced (`params.with_values("plasticity", theta_p=1.5)`)."""
        if group not in GROUPS:
            raise ValueError(f"unknown parameter group {group!r}; groups are {list(GROUPS)}")
        return self.replace(**{group: getattr(self, group).replace(**values)})

    def check(self) -> Params:
        """Raise ValueError naming `[group] key`, the value and what is allowed."""
        for msg in param_errors(self):
            raise ValueError(msg)
        return self


def _positive(x) -> bool:
    try:
        import numpy as np

        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return False
    return bool(np.all(np.isfinite(a)) and np.all(a > 0))


def _finite(x) -> bool:
    import numpy as np

    try:
        return bool(np.all(np.isfinite(np.asarray(x, dtype=float))))
    except (TypeError, ValueError):
        return False


def _val(x):
    import numpy as np

    a = np.asarray(x)
    return a.item() if a.ndim == 0 else a.tolist()


def param_errors(p: Params) -> list[str]:
    """Every violated rule, each as `[group] message`; empty when valid."""
    import numpy as np

    errs = []

    def err(group, msg):
        errs.append(f"[{group}] {msg}")

    for gname in GROUPS:
        g = getattr(p, gname)
        for f in dataclasses.fields(g):
            v = getattr(g, f.name)
            if not _finite(v):
                err(gname, f"{f.name} must be a finite number, got {f.name}={_val(v)!r}")
            elif (f.name.startswith("tau_") or f.name == "dt") and not _positive(v):
                err(gname, f"{f.name} is a time constant and must be > 0 ms, "
                           f"got {f.name}={_val(v)!r}")
    if errs:
        return errs
    n, c, pl = p.neuron, p.calcium, p.plasticity
    a = np.asarray
    if np.any(a(n.t_ref) < 0):
        err("neuron", f"t_ref must be >= 0 ms, got t_ref={_val(n.t_ref)}")
    if np.any(a(n.V_reset) >= a(n.V_th)):
        err("neuron", f"V_reset must be below V_th, got V_reset={_val(n.V_reset)}, "
                      f"V_th={_val(n.V_th)}")
    for name in ("g_NMDA", "A_bAP"):
        if np.any(a(getattr(n, name)) < 0):
            err("neuron", f"{name} must be >= 0, got {name}={_val(getattr(n, name))}")
    if np.any(a(p.input.rate) < 0):
        err("input", f"rate must be >= 0 Hz, got rate={_val(p.input.rate)}")
    if np.any((a(p.input.u_rel) < 0) | (a(p.input.u_rel) >= 1)):
        err("input", f"u_rel is the share of the releasable pool a spike uses and must "
                     f"lie in [0, 1), got u_rel={_val(p.input.u_rel)}")
    for name in ("alpha_N", "C_bAP", "Mg", "C_pre", "C_post"):
        if np.any(a(getattr(c, name)) < 0):
            err("calcium", f"{name} must be >= 0, got {name}={_val(getattr(c, name))}")
    if np.any(a(pl.theta_d) <= 0):
        err("plasticity", f"theta_d must be > 0, got theta_d={_val(pl.theta_d)}")
    if np.any(a(pl.theta_p) <= a(pl.theta_d)):
        err("plasticity", f"theta_p must exceed theta_d, got theta_p={_val(pl.theta_p)}, "
                          f"theta_d={_val(pl.theta_d)}")
    for name in ("gamma_d", "gamma_p", "sigma", "sigma_p"):
        if np.any(a(getattr(pl, name)) < 0):
            err("plasticity", f"{name} must be >= 0, got {name}={_val(getattr(pl, name))}")
    if np.any((a(pl.rho_star) <= 0) | (a(pl.rho_star) >= 1)):
        err("plasticity", f"rho_star must lie in (0, 1), got rho_star={_val(pl.rho_star)}")
    if np.any(a(pl.w_min) < 0) or np.any(a(pl.w_max) <= a(pl.w_min)):
        err("plasticity", f"need 0 <= w_min < w_max, got w_min={_val(pl.w_min)}, "
                          f"w_max={_val(pl.w_max)}")
    co = p.consolidation
    if np.any((a(co.kappa) <= 0) | (a(co.kappa) >= 1)):
        err("consolidation", f"kappa must lie in (0, 1), got kappa={_val(co.kappa)}")
    for name in ("theta_tag", "theta_pro", "gamma_z"):
        if np.any(a(getattr(co, name)) < 0):
            err("consolidation", f"{name} must be >= 0, got {name}={_val(getattr(co, name))}")
    if np.any(a(p.homeostasis.r_target) <= 0):
        err("homeostasis", f"r_target must be > 0 Hz, "
                           f"got r_target={_val(p.homeostasis.r_target)}")
    for name in ("w_ei", "w_ie"):
        if np.any(a(getattr(p.inhibition, name)) < 0):
            err("inhibition", f"{name} must be >= 0, "
                              f"got {name}={_val(getattr(p.inhibition, name))}")
    ph = p.pharmacology
    if np.any((a(ph.apv) < 0) | (a(ph.apv) > 1)):
        err("pharmacology", f"apv is a blocked fraction in [0, 1], got apv={_val(ph.apv)}")
    for w in WINDOWS:
        on = getattr(ph, w + "_on")  # [on, off) with off <= on is an empty window
        if np.any(a(on) < 0):
            err("pharmacology", f"{w}_on must be >= 0 ms, got {w}_on={_val(on)}")
    return errs


__all__ = [
    "Params", "NeuronParams", "InputParams", "CalciumParams", "PlasticityParams",
    "ConsolidationParams", "HomeostasisParams", "InhibitionParams",
    "PharmacologyParams", "GROUPS", "param_errors",
]
