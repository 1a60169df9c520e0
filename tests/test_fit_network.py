"""The NMDA read-out that calibrates the hippocampal defaults (`ltpnet fit
configs/fit/hippocampal.toml`) must see the calcium that the network makes: times
above theta_d and theta_p of the fit's single-synapse model against those of the
engine's calcium, recorded every step, under the same protocol."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import ltpnet as lt
from ltpnet.fit import Condition
from ltpnet.fit.data import batch
from ltpnet.fit.model import ModelOptions, batch_arrays, names_for, preset, times_above

N_PULSES, DT = 20, 0.2  # 20 pulses, 0.2 ms steps


def _engine_times(params, k, clamp_mv, rho, freq=1.0, post_dt=None):
    """(t_d, t_p) [ms] of the engine's calcium: one cell, k synapses of pathway S1,
    all pulsed together at `freq` Hz (first at 0.5 s); switch frozen at `rho`; with
    `post_dt`, a spike forced in the cell `post_dt` ms after each pulse."""
    spec = lt.ModelSpec(n_post=1, k=k, pathways=(("S1", k),), dt=DT, phases=False,
                        homeostasis=False, calcium_step="exponential", slow_every=1,
                        depression=float(params.input.u_rel) > 0)
    p = (params.with_values("input", rate=0.0)
         .with_values("plasticity", gamma_d=0.0, gamma_p=0.0, tau_rho=1e15))
    if clamp_mv is not None:
        p = (p.with_values("neuron", V_clamp=clamp_mv)
             .with_values("pharmacology", clamp_on=0.0, clamp_off=1e12))
    conn, state = lt.build(spec, p, 0)
    state = state.replace(syn=state.syn.replace(rho=jnp.full((1, k), rho, jnp.float32)))
    period = 1000.0 / freq
    prot = lt.Protocol().add_pulses("S1", [500.0 + period * i for i in range(N_PULSES)])
    if post_dt is not None:
        prot = prot.add_post([500.0 + post_dt + period * i for i in range(N_PULSES)])
    res = lt.simulate(spec, p, N_PULSES * period + 1000.0, protocol=prot, state=state,
                      conn=conn, observe=lt.Observe(every=1, variables=("c",)))
    c = np.asarray(res.records["c"])[:, 0, 0]
    # the fit's membrane spikes only where the protocol forces it
    assert res.spike_count.sum() == (0 if post_dt is None else N_PULSES)
    pl = p.plasticity
    return (DT * np.sum(c > float(pl.theta_d)), DT * np.sum(c > float(pl.theta_p)))


def _fit_times(W, clamp_mv, freq=1.0, post_dt=None, **values):
    v = preset("ltpnet")
    v["extra.W"] = W
    v.update(values)
    o = ModelOptions("nmda", max_pairs=N_PULSES, grid=512)
    td, tp = times_above({k: jnp.asarray(v[k]) for k in names_for("nmda")},
                         batch_arrays(batch([Condition(post_dt, freq, N_PULSES,
                                                       clamp_mv=clamp_mv)])), o, 0.0)
    return float(td[0]), float(tp[0])


@pytest.mark.parametrize("clamp_mv", [-50.0, -25.0])
def test_fit_read_out_sees_the_network_calcium_under_clamp(clamp_mv):
    """Clamped: the fit's calcium is the engine's exactly (fixed B, exponential step)
    up to the grid of each (0.2 ms steps, about 1 ms nodes)."""
    want = _engine_times(lt.Params(), 1, clamp_mv, 0.5)
    got = _fit_times(0.0, clamp_mv)
    assert want[0] > 100.0 and (want[1] > 100.0 or clamp_mv == -50.0)
    np.testing.assert_allclose(got, want, rtol=0.03, atol=N_PULSES * 1.0)


def test_fit_read_out_sees_the_pathway_epsp():
    """Free membrane, 20 pulses at 1 Hz to 10 synapses of summed weight W = 0.35:
    the fit's linearised EPSP gives the engine's times above theta_d within 10 %;
    without the EPSP (W = 0) a pulse at rest stays below theta_d."""
    p = lt.Params()
    k, pl = 10, p.plasticity
    rho = (0.035 - float(pl.w_min)) / float(pl.w_max - pl.w_min)  # w = 0.035 each
    want = _engine_times(p, k, None, rho)
    got = _fit_times(0.35, None)
    bare = _fit_times(0.0, None)
    assert want[0] > 100.0
    assert got[0] == pytest.approx(want[0], rel=0.1)
    assert bare[0] == 0.0



@pytest.mark.parametrize("v_reset", [-65.0, -58.0])
@pytest.mark.parametrize("post_dt", [5.9, 16.4, -15.9])
def test_fit_read_out_sees_the_reset_of_a_paired_spike(post_dt, v_reset):
    """Pairings (pulse to 10 synapses of W = 0.35, spike forced post_dt ms later): the
    spike resets the membrane to V_reset and so takes the EPSP away, in the engine and
    in the fit's read-out alike. Their times above theta_p (theta_d with pre after
    post) agree within 3 % for the default reset (= E_L). With a reset 7 mV above it
    both rise, and agree within 10 % (the engine's membrane also carries NMDA current,
    which the fit's linearised EPSP leaves out and which grows as the block lifts)."""
    p = lt.Params().with_values("neuron", V_reset=v_reset)
    k, pl = 10, p.plasticity
    rho = (0.035 - float(pl.w_min)) / float(pl.w_max - pl.w_min)
    want = _engine_times(p, k, None, rho, post_dt=post_dt)
    got = _fit_times(0.35, None, post_dt=post_dt, **{"neuron.V_reset": v_reset})
    i = 1 if post_dt > 0 else 0  # LTP side: t_p; LTD side: t_d
    assert want[i] > 10.0 * N_PULSES
    assert got[i] == pytest.approx(want[i], rel=0.03 if v_reset == -65.0 else 0.1)


@pytest.mark.parametrize("clamp_mv, freq", [(-25.0, 20.0), (None, 10.0)])
def test_fit_read_out_sees_short_term_depression(clamp_mv, freq):
    """20 pulses with short-term depression (u_rel = 0.2, tau_rec = 500 ms): each
    pulse releases less of the pool into the NMDA trace (and the EPSP), in the
    engine and in the fit's read-out alike. Clamped at -25 mV (fixed B) they agree
    within 3 %, on a free membrane with the pathway's EPSP within 10 %. Without
    depression the read-out gives about twice the time above theta_p under the
    clamp, and 20 times the time above theta_d on the free membrane (at 10 Hz the
    depressed pulses stay under theta_d after the first few)."""
    dep = {"input.u_rel": 0.2, "input.tau_rec": 500.0}
    p = lt.Params().with_values("input", u_rel=0.2, tau_rec=500.0)
    k, W = (1, 0.0) if clamp_mv is not None else (10, 0.35)
    pl = p.plasticity
    rho = 0.5 if clamp_mv is not None else (
        (0.035 - float(pl.w_min)) / float(pl.w_max - pl.w_min))
    want = _engine_times(p, k, clamp_mv, rho, freq=freq)
    got = _fit_times(W, clamp_mv, freq=freq, **dep)
    full = _fit_times(W, clamp_mv, freq=freq)
    assert want[0] > 30.0
    rtol = 0.03 if clamp_mv is not None else 0.1
    np.testing.assert_allclose(got, want, rtol=rtol, atol=N_PULSES * 1.0)
    assert max(f - w for f, w in zip(full, want, strict=True)) > 400.0
