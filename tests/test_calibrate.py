"""scripts/calibrate.py searches on one synapse: that synapse must follow the engine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import pytest

import ltpnet as lt

ROOT = Path(__file__).resolve().parents[1]


def _calibrate():
    spec = importlib.util.spec_from_file_location("calibrate", ROOT / "scripts" / "calibrate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _engine_rho(params, clamp, rho0, n, rest_ms):
    """rho of one synapse after n pulses at 1 Hz under clamp and `rest_ms` of rest."""
    spec = lt.ModelSpec(n_post=1, k=1, pathways=(("S1", 1),), dt=0.2, phases=False,
                        homeostasis=False, calcium_step="exponential", slow_every=1)
    p = (params.with_values("input", rate=0.0)
         .with_values("neuron", V_clamp=clamp)
         .with_values("pharmacology", clamp_on=0.0, clamp_off=1e12))
    conn, state = lt.build(spec, p, 0)
    state = state.replace(syn=state.syn.replace(rho=jnp.full((1, 1), rho0, jnp.float32)))
    prot = lt.Protocol().add_pulses("S1", [1000.0 * i for i in range(n)])
    res = lt.simulate(spec, p, n * 1000.0 + rest_ms, protocol=prot, state=state,
                      conn=conn, observe=lt.Observe(every=5000, variables=("rho",)))
    return float(res.records["rho"][-1, 0, 0])


@pytest.mark.parametrize("clamp, rho0", [(-50.0, 1.0), (-20.0, 0.0), (-70.0, 1.0)])
def test_calibration_synapse_follows_the_engine(clamp, rho0):
    cal = _calibrate()
    p = lt.Params()
    values = (p.calcium.alpha_N, p.calcium.C_bAP, p.neuron.A_bAP, p.neuron.tau_bAP,
              p.plasticity.theta_p, p.plasticity.gamma_d, p.plasticity.gamma_p)
    P = tuple(jnp.asarray([v], jnp.float32) for v in values)
    n = 20
    got = float(cal.simulate(P, rho0, 1000.0, n, 0.0, None, clamp, 0.35)[0])
    # calibrate.simulate rests 12 000 coarse steps of 10 ms after the last period
    want = _engine_rho(p, clamp, rho0, n, 120_000.0)
    assert abs(got - want) < 0.01, (got, want)
    assert abs(want - rho0) > 0.05 or clamp == -70.0  # the protocol moved the switch
