"""Analytic cases: the engine against closed-form solutions of the model equations.

Each test puts the network in a state where one process runs on its own (no input,
no calcium, no protein, ...), runs the engine (`ltpnet.step` and the slow clock) in
float64 and compares with the exact solution of the discrete update. The networks
are those of the parity tests, so the compiled programs are shared.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from _tolerances import EXACT, MG_TABLE, X64_RUN
from conftest import N_STEPS, engine_trajectory, fast_params, make_drive, small_spec
from reference import mg_block as reference_mg_block

import ltpnet
from ltpnet.dynamics.neuron import mg_block
from ltpnet.step import discretise, efficacy, syn_weights

pytestmark = pytest.mark.usefixtures("x64")

DT = 0.1
STEPS = np.arange(N_STEPS)  # index n: the state after step n


def quiet_network(spec_changes=None, params_changes=None, seed=0):
    """A resting float64 network without input; returns (spec, params, conn, state)."""
    spec = small_spec("float64", **(spec_changes or {}))
    params = fast_params(spec.k, **(params_changes or {}))
    conn, state = ltpnet.build(spec, params, seed)
    return spec, params, conn, state


def with_syn(state, **arrays):
    return state.replace(
        syn=state.syn.replace(
            **{k: jnp.asarray(v, jnp.float64) for k, v in arrays.items()}
        )
    )


def with_post(state, **arrays):
    return state.replace(
        post=state.post.replace(
            **{k: jnp.asarray(v, jnp.float64) for k, v in arrays.items()}
        )
    )


def run(spec, params, conn, state, **drive):
    return engine_trajectory(
        spec, params, conn, state, make_drive(spec, N_STEPS, **drive)
    )


def test_pure_decay_after_one_input_spike():
    """s, g and (linear) calcium decay as exp(-n dt / tau) after one input spike."""
    spec, params, conn, state = quiet_network(
        {"calcium": "linear", "slow_every": 2}, {"plasticity": dict(w_max=0.05)}
    )
    state = with_syn(state, rho=np.ones((spec.n_post, spec.k)))
    j = 3  # the one input that spikes, at step 0
    raster = np.zeros((N_STEPS, spec.n_pre), bool)
    raster[0, j] = True
    traj, _, y = run(spec, params, conn, state, raster=raster)
    assert not y.any(), "the test needs a network that stays below threshold"

    nrn, ca = params.neuron, params.calcium
    s_want = np.exp(-STEPS * DT / float(params.input.tau_N))
    np.testing.assert_allclose(traj["s"][:, j], s_want, **X64_RUN)
    np.testing.assert_array_equal(np.delete(traj["s"], j, axis=1), 0.0)

    synapses = np.asarray(conn.pre_idx) == j  # (n_post, k)
    n_in = synapses.sum(axis=1)
    assert n_in.any() and not n_in.all()
    a = np.asarray(state.post.a)
    g_want = (a * float(params.plasticity.w_max) * n_in)[None, :] * np.exp(
        -STEPS * DT / float(nrn.tau_A)
    )[:, None]
    np.testing.assert_allclose(traj["g"], g_want, **X64_RUN)

    c_want = float(ca.C_pre) * np.exp(-STEPS * DT / float(ca.tau_Ca))
    np.testing.assert_allclose(
        traj["c"][:, synapses],
        np.repeat(c_want[:, None], synapses.sum(), axis=1),
        **X64_RUN,
    )
    np.testing.assert_array_equal(traj["c"][:, ~synapses], 0.0)

    r0 = float(params.homeostasis.r_target)
    r_want = r0 * np.exp(-(STEPS + 1) * DT / float(params.homeostasis.tau_r))
    np.testing.assert_allclose(
        traj["r"], np.repeat(r_want[:, None], spec.n_post, 1), **X64_RUN
    )


def test_bap_adds_exactly_C_bAP():
    """A post spike adds C_bAP to every synapse's calcium (no NMDA input: s = 0)."""
    spec, params, conn, state = quiet_network()
    rng = np.random.default_rng(0)
    state = with_syn(state, c=rng.uniform(0.0, 2.0, (spec.n_post, spec.k)))
    n_spike = 100
    post = np.zeros(N_STEPS, bool)
    post[n_spike] = True
    traj, _, y = run(spec, params, conn, state, post=post)
    np.testing.assert_array_equal(y.any(axis=1), post)
    assert y[n_spike].all()

    nrn, ca, h = params.neuron, params.calcium, params.homeostasis
    before, at = n_spike - 1, n_spike
    eCa = np.exp(-DT / float(ca.tau_Ca))
    np.testing.assert_allclose(
        traj["c"][at] - traj["c"][before] * eCa, float(ca.C_bAP), **X64_RUN
    )
    ebAP = np.exp(-DT / float(nrn.tau_bAP))
    np.testing.assert_allclose(
        traj["bap"][at] - traj["bap"][before] * ebAP, float(nrn.A_bAP), **X64_RUN
    )
    eR = np.exp(-DT / float(h.tau_r))
    np.testing.assert_allclose(
        traj["r"][at] - traj["r"][before] * eR, 1000.0 / float(h.tau_r), **X64_RUN
    )
    np.testing.assert_array_equal(traj["v"][at], float(nrn.V_reset))
    np.testing.assert_array_equal(traj["refrac"][at], round(float(nrn.t_ref) / DT))
    # without the spike, calcium only decays
    np.testing.assert_allclose(
        traj["c"][before], np.asarray(state.syn.c) * eCa**n_spike, **X64_RUN
    )


# B(V) at [Mg] = 1 mM (Jahr & Stevens 1990 with the constants 3.57 mM and 0.062 / mV)
MG_TABLE_V = [-80, -70, -65, -60, -50, -40, -30, -20, -10, 0, 20]
MG_TABLE_B = [
    0.024,
    0.045,
    0.060,
    0.080,
    0.139,
    0.230,
    0.357,
    0.508,
    0.658,
    0.781,
    0.925,
]


@pytest.mark.parametrize("impl", ["engine", "reference"])
def test_mg_block_matches_table(impl):
    v = np.array(MG_TABLE_V, np.float64)
    B = (
        mg_block(jnp.asarray(v), 1.0)
        if impl == "engine"
        else reference_mg_block(v, 1.0)
    )
    np.testing.assert_allclose(np.asarray(B), MG_TABLE_B, **MG_TABLE)
    # no magnesium, no block; more magnesium, more block
    B0 = (
        mg_block(jnp.asarray(v), 0.0)
        if impl == "engine"
        else reference_mg_block(v, 0.0)
    )
    np.testing.assert_array_equal(np.asarray(B0), 1.0)
    B2 = (
        mg_block(jnp.asarray(v), 2.0)
        if impl == "engine"
        else reference_mg_block(v, 2.0)
    )
    assert np.all(np.asarray(B2) < np.asarray(B))


def test_rho_fixed_points_without_calcium():
    """With c = 0, rho in {0, rho*, 1} stays put and other values leave rho*."""
    spec, params, conn, state = quiet_network()
    rho_star = float(params.plasticity.rho_star)
    row = np.array([0.0, rho_star, 1.0, 0.2, 0.45, 0.55, 0.8, 0.0, 1.0, rho_star])
    rho0 = np.tile(row, (spec.n_post, 1))
    state = with_syn(state, rho=rho0)
    traj, _, y = run(spec, params, conn, state)
    assert not y.any()
    np.testing.assert_array_equal(traj["c"], 0.0)

    fixed = np.isin(rho0, [0.0, rho_star, 1.0])
    rho = traj["rho"]
    np.testing.assert_allclose(
        rho[:, fixed], np.broadcast_to(rho0[fixed], rho[:, fixed].shape), **EXACT
    )
    moved = rho[-1] - rho0
    assert np.all(moved[(rho0 < rho_star) & ~fixed] < -1e-5)
    assert np.all(moved[(rho0 > rho_star) & ~fixed] > 1e-5)
    # the free switch is the Euler map of -rho (1 - rho) (rho* - rho)
    k = DT / float(params.plasticity.tau_rho)
    want = rho0.copy()
    for n in range(N_STEPS):
        want = want + k * (-want * (1 - want) * (rho_star - want))
        if n in (0, 99, N_STEPS - 1):
            np.testing.assert_allclose(rho[n], want, **X64_RUN)


def test_scaling_fixed_point_is_the_target_rate():
    """a stays 1 when r = r_target, and moves at rate (r_target - r)/r_target/tau_a."""
    spec, params, conn, state = quiet_network(
        params_changes={"homeostasis": dict(tau_r=1e30)}
    )  # the rate sensor holds r
    r_target = float(params.homeostasis.r_target)
    factor = np.repeat([1.0, 2.0, 0.5, 1.0], spec.n_post // 4)
    state = with_post(state, r=r_target * factor)
    traj, _, y = run(spec, params, conn, state)
    assert not y.any()
    np.testing.assert_array_equal(
        traj["r"], np.broadcast_to(r_target * factor, traj["r"].shape)
    )
    ka = spec.slow_every * DT / float(params.homeostasis.tau_a)
    a_want = (1.0 + ka * (1.0 - factor))[None, :] ** (STEPS + 1)[:, None]
    np.testing.assert_allclose(traj["a"], a_want, **X64_RUN)
    np.testing.assert_array_equal(traj["a"][:, factor == 1.0], 1.0)
    assert np.all(traj["a"][-1, factor == 2.0] < 0.99)
    assert np.all(traj["a"][-1, factor == 0.5] > 1.01)


def test_rate_sensor_reads_the_firing_rate():
    """With a spike every N steps, r averages 1000 / (N dt) Hz over a period (exactly
    r_inc / (N (1 - e^{-dt/tau_r})) for the discrete filter)."""
    tau_r = 5.0
    spec, params, conn, state = quiet_network(
        params_changes={"homeostasis": dict(tau_r=tau_r)}
    )
    period = 100  # 10 ms: 100 Hz
    post = np.zeros(N_STEPS, bool)
    post[::period] = True
    traj, _, y = run(spec, params, conn, state, post=post)
    np.testing.assert_array_equal(y.sum(axis=0), N_STEPS // period)
    last = traj["r"][-period:]  # one full period, 14 tau_r after the start
    eR = np.exp(-DT / tau_r)
    want = (1000.0 / tau_r) / (period * (1.0 - eR))
    transient = eR ** (N_STEPS - period)  # what is left of the initial condition
    np.testing.assert_allclose(last.mean(axis=0), want, rtol=10 * transient)
    np.testing.assert_allclose(want, 1000.0 / (period * DT), rtol=DT / tau_r)


def phases_network(params_changes=None):
    spec, params, conn, state = quiet_network(
        {"phases": True, "slow_every": 5}, params_changes
    )
    return spec, params, conn, state


def slow_times(spec):
    """Slow-clock time [ms] reached after each step (constant between slow steps)."""
    return ((STEPS + 1) // spec.slow_every) * spec.slow_every * DT


def test_late_switch_fixed_points_without_protein():
    """With p = 0 and no early change, z in {0, kappa, 1} stays put; others move."""
    spec, params, conn, state = phases_network()
    kappa = float(params.consolidation.kappa)
    row = np.array([0.0, kappa, 1.0, 0.3, 0.45, 0.55, 0.7, 0.0, 1.0, kappa])
    z0 = np.tile(row, (spec.n_post, 1))
    rho0 = (np.arange(spec.k) % 2).astype(float)[None, :] * np.ones((spec.n_post, 1))
    state = with_syn(state, z=z0, rho=rho0, rho_lag=rho0, rho_ref=rho0)
    state = with_post(state, p=np.zeros(spec.n_post))
    traj, _, y = run(spec, params, conn, state)
    assert not y.any()
    np.testing.assert_array_equal(traj["p"], 0.0)
    np.testing.assert_array_equal(traj["rho"], np.broadcast_to(rho0, traj["rho"].shape))
    fixed = np.isin(z0, [0.0, kappa, 1.0])
    z = traj["z"]
    np.testing.assert_allclose(
        z[:, fixed], np.broadcast_to(z0[fixed], z[:, fixed].shape), **EXACT
    )
    dz = z[-1] - z0
    assert np.all(dz[(z0 < kappa) & ~fixed] < -1e-4)
    assert np.all(dz[(z0 > kappa) & ~fixed] > 1e-4)


def test_protein_relaxes_to_its_analytic_value():
    """Under a constant trigger p -> p_inf exponentially; without it (no early change,
    or anisomycin) p decays with tau_p_deg."""
    aniso_on = 40.2  # ms: inside the slow block of steps 400-404
    spec, params, conn, state = phases_network(
        {
            "consolidation": dict(tau_e=1e30),  # the early change is held
            "pharmacology": dict(anisomycin_on=aniso_on, anisomycin_off=1e6),
        }
    )
    n_post, k = spec.n_post, spec.k
    trig = np.arange(n_post) < n_post // 2
    rho = np.ones((n_post, k))
    rho_ref = np.where(trig[:, None], 0.0, 1.0) * np.ones((1, k))  # e = 1 or 0
    p0 = 0.3
    state = with_syn(state, rho=rho, rho_lag=rho_ref, rho_ref=rho_ref,
                     z=np.ones((n_post, k)))
    state = with_post(state, p=np.full(n_post, p0))
    traj, _, y = run(spec, params, conn, state)
    assert not y.any()

    co = params.consolidation
    t = slow_times(spec)
    slow_idx = STEPS[(STEPS + 1) % spec.slow_every == 0]
    # the slow step after fast step n is in the window when n >= round(on / dt)
    t_on = slow_idx[slow_idx >= round(aniso_on / DT)][0] * DT + DT  # first blocked tick
    t_before = t_on - spec.slow_every * DT
    rate = 1.0 / float(co.tau_p_deg) + 1.0 / float(co.tau_p_syn)
    p_inf = (1.0 / float(co.tau_p_syn)) / rate
    synth = p_inf + (p0 - p_inf) * np.exp(-np.minimum(t, t_before) * rate)
    synth = synth * np.exp(-np.maximum(t - t_before, 0.0) / float(co.tau_p_deg))
    decay = p0 * np.exp(-t / float(co.tau_p_deg))
    want = np.where(trig[None, :], synth[:, None], decay[:, None])
    np.testing.assert_allclose(traj["p"], want, **X64_RUN)
    assert traj["p"][:, trig].max() > p0 + 0.1  # synthesis did raise p


def test_early_change_decays_in_two_stages():
    """With no calcium the anchor follows the switch in two stages over tau_e: after a
    step of the switch (rho_lag = rho_ref) e(t) = e0 (1 + t/tau_e) exp(-t/tau_e), flat
    at first; once the first stage has caught up (rho_lag = rho) e decays as
    exp(-t/tau_e); in general rho - rho_ref = exp(-t/tau_e) (e0 - t/tau_e (rho_lag0 - rho))."""
    spec, params, conn, state = phases_network()
    n_post, k = spec.n_post, spec.k
    rho = (np.arange(k) % 2).astype(float)[None, :] * np.ones((n_post, 1))
    frac = (np.arange(k) // 2 % 3 / 2.0)[None, :]  # first stage 0, 1/2, all the way
    rho_lag = 0.5 + frac * (rho - 0.5)
    state = with_syn(state, rho=rho, rho_lag=rho_lag, rho_ref=np.full((n_post, k), 0.5))
    traj, _, _ = run(spec, params, conn, state)
    np.testing.assert_array_equal(traj["rho"], np.broadcast_to(rho, traj["rho"].shape))
    e0 = rho - 0.5
    x = (slow_times(spec) / float(params.consolidation.tau_e))[:, None, None]
    want = np.exp(-x) * (e0[None] + x * (rho - rho_lag)[None])
    np.testing.assert_allclose(traj["rho"] - traj["rho_ref"], want, **X64_RUN)
    np.testing.assert_allclose(traj["rho"] - traj["rho_lag"],
                               np.exp(-x) * (rho - rho_lag)[None], **X64_RUN)
    step, caught_up = frac[0] == 0.0, frac[0] == 1.0
    assert np.abs(want[-1][:, caught_up]).max() < 0.5 * 0.9  # long enough to decay
    # the plateau: after a step, e has lost less than a single-stage decay would have
    lost = 1.0 - want[-1] / e0
    assert np.all(lost[:, step] < 1.0 - np.exp(-x[-1, 0, 0]) - 0.05)


def test_efficacy_is_bounded_by_down_and_up():
    """q = clip(z + rho - rho_ref, 0, 1): a synapse potentiated early and then captured
    (z = 1, e = 1) reads UP, not twice UP, and its weight is a w_max; one depressed
    early and captured by an LTD tag (z = 0, e = -1) reads DOWN; in between, q = z + e.
    Without phases q = clip(rho, 0, 1)."""
    spec, params, conn, state = phases_network()
    n_post = spec.n_post
    z = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.6, 0.2, 1.0, 0.0])
    rho = np.array([1.0, 0.0, 1.0, 0.0, 0.7, 0.3, 0.5, 0.5, 1.0, 0.0])
    rho_ref = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.7, 0.1, 1.0, 0.0])
    want = np.array([1.0, 0.0, 1.0, 0.0, 0.2, 0.8, 0.4, 0.6, 1.0, 0.0])
    state = with_syn(state, z=np.tile(z, (n_post, 1)), rho=np.tile(rho, (n_post, 1)),
                     rho_ref=np.tile(rho_ref, (n_post, 1)))
    q = np.asarray(efficacy(spec, state))
    np.testing.assert_allclose(q, np.tile(want, (n_post, 1)), atol=1e-6)
    co = discretise(spec, params, conn)
    w = np.asarray(syn_weights(spec, co, state))
    pl = params.plasticity
    a = np.asarray(state.post.a)[:, None]
    assert np.all(w <= a * float(pl.w_max) * (1 + 1e-6))
    np.testing.assert_allclose(w[:, 0], a[:, 0] * float(pl.w_max), rtol=1e-6)

    # phases off: q = rho, read within [0, 1] (a noisy rho leaves it unclipped)
    spec, params, conn, state = quiet_network({"phases": False})
    rho = np.linspace(-0.4, 1.4, spec.k)
    state = with_syn(state, rho=np.tile(rho, (spec.n_post, 1)))
    q = np.asarray(efficacy(spec, state))
    np.testing.assert_allclose(q, np.tile(np.clip(rho, 0.0, 1.0), (spec.n_post, 1)),
                               atol=1e-6)


def test_t286a_rho_relaxes_to_the_late_state():
    """With T286A and no calcium, rho - z shrinks by (1 - dt/tau_t286a) per step."""
    spec, params, conn, state = quiet_network(
        {"phases": True, "t286a": True, "homeostasis": False},
        {"consolidation": dict(tau_p_syn=1e30)},
    )  # no protein, so z holds at 0 or 1
    n_post, k = spec.n_post, spec.k
    rng = np.random.default_rng(1)
    rho0 = rng.uniform(0.05, 0.95, (n_post, k))
    z = (rng.random((n_post, k)) < 0.5).astype(float)
    state = with_syn(state, rho=rho0, rho_ref=rho0, z=z)
    state = with_post(state, p=np.zeros(n_post))
    traj, _, y = run(spec, params, conn, state)
    assert not y.any()
    np.testing.assert_array_equal(traj["z"], np.broadcast_to(z, traj["z"].shape))
    f = 1.0 - DT / float(params.consolidation.tau_t286a)
    want = z[None] + (rho0 - z)[None] * f ** (STEPS + 1)[:, None, None]
    np.testing.assert_allclose(traj["rho"], want, **X64_RUN)
