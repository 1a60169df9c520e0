"""Shared test configuration, fixtures and small helpers.

Rank promotion raises, so an implicit broadcast of a `(n_post,)` array against an
`(n_post, k)` one is an error unless written with an explicit `[:, None]`. Strict
dtype promotion is not switched on: the engine mixes bool spikes into float
arithmetic (for example `gamma_p * (1 - rho) * (c > theta_p)`), which strict
promotion rejects.

Helpers here are imported by the test modules (`from conftest import ...`); the
test directory is on `sys.path` under pytest's default import mode, and this file
puts the repository root there too, for the `experiments` package.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import reference_run

import ltpnet
from ltpnet.step import slow_step

jax.config.update("jax_numpy_rank_promotion", "raise")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PATHWAYS = (("S1", 15), ("S2", 15), ("bg", 20))

# Length of the engine trajectories in the step and dynamics tests. Keeping one length
# (and one small network) lets tests share compiled programs within a session.
N_STEPS = 800


def x64_context(dtype):
    """Context in which arrays of `dtype` can exist (x64 on for float64)."""
    if np.dtype(dtype) == np.float64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()


@pytest.fixture
def x64():
    """Run the test with 64-bit types enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Parametrise a test over the state dtype (x64 enabled for float64)."""
    with x64_context(request.param):
        yield request.param


def small_spec(dtype="float64", **changes) -> ltpnet.ModelSpec:
    """A 20-neuron, k = 10 network with three pathways (50 inputs)."""
    base = dict(
        n_post=20,
        k=10,
        pathways=PATHWAYS,
        dt=0.1,
        dtype=dtype,
        rho_init="uniform",
        phases=False,
        homeostasis=True,
    )
    base.update(changes)
    return ltpnet.ModelSpec(**base).check()


def fast_params(k: int = 10, **groups) -> ltpnet.Params:
    """bench-v1 parameters with no Poisson drive and slow processes sped up.

    The slow time constants are shortened so that a run of ~100 ms exercises the
    switch, tags, protein, late phase and scaling; weights and calcium jumps are set
    so that calcium spends time below theta_d, between the thresholds and above
    theta_p under the parity-test drive. `groups` maps a group name to a
    dict of replaced values.
    """
    p = ltpnet.Params.bench_v1(k)
    changes = {
        "input": dict(rate=0.0),
        "neuron": dict(A_bAP=20.0, tau_bAP=5.0),
        "calcium": dict(tau_Ca=8.0, C_pre=0.6, C_post=0.9),
        "plasticity": dict(tau_rho=5000.0, w_max=0.4),
        "consolidation": dict(
            tau_e=300.0,
            tau_p_syn=100.0,
            tau_p_deg=400.0,
            tau_z=200.0,
            gamma_z=0.5,
            tau_t286a=300.0,
            theta_tag=0.05,
            theta_pro=0.02,
        ),
        "homeostasis": dict(tau_r=200.0, tau_a=500.0, r_target=5.0),
    }
    for group, values in groups.items():
        changes.setdefault(group, {}).update(values)
    for group, values in changes.items():
        p = p.with_values(group, **values)
    return p.check()


def state_to_dict(state) -> dict:
    """Engine State -> reference dict of float64 arrays (refrac int64; no x_hist)."""
    out = {}
    for group in (state.pre, state.post, state.syn):
        for name, value in vars(group).items():
            if value is None or name == "x_hist":
                continue
            a = np.asarray(value)
            out[name] = a.astype(np.int64) if name == "refrac" else a.astype(np.float64)
    return out


def x_history(spec, x, step):
    """Reference `x_hist` before step `step`: inputs of steps step-D..step-1."""
    D = spec.ca_delay_steps if spec.calcium == "linear" else 0
    hist = np.zeros((D, spec.n_pre), dtype=bool)
    for j in range(D):
        n = step - D + j
        if n >= 0:
            hist[j] = x[n]
    return hist


def random_state(spec, params, conn, seed):
    """A State with every variable at a random, valid value (x_hist all False).

    Starting parity tests away from rest makes every term of every equation matter
    from the first step.
    """
    rng = np.random.default_rng(seed)
    dt = jnp.dtype(spec.dtype)
    n, k = spec.n_post, spec.k
    nrn = params.neuron
    n_ref = round(float(nrn.t_ref) / spec.dt)

    def f(a):
        return jnp.asarray(a, dt)

    st = ltpnet.init_state(spec, params, rng.random((n, k)))
    pre = st.pre.replace(s=f(rng.uniform(0.0, 2.0, spec.n_pre)))
    if spec.depression:
        pre = pre.replace(pool=f(rng.uniform(0.2, 1.0, spec.n_pre)))
    post = st.post.replace(
        v=f(rng.uniform(float(nrn.E_L) - 5.0, float(nrn.V_th) - 2.0, n)),
        g=f(rng.uniform(0.0, 0.5, n)),
        bap=f(rng.uniform(0.0, 10.0, n)),
        refrac=jnp.asarray(rng.integers(0, n_ref + 1, n), jnp.int32),
        r=f(rng.uniform(0.5, 2.0, n) * float(params.homeostasis.r_target)),
        a=f(rng.uniform(0.7, 1.3, n)),
        p=f(rng.uniform(0.0, 1.0, n)) if spec.phases else None,
    )
    syn = st.syn.replace(c=f(rng.uniform(0.0, 1.5, (n, k))))
    if spec.phases:
        # early change e = rho - rho_ref: zero in the first half of the neurons (so
        # the protein trigger starts off there), random in the second half
        e = rng.normal(0.0, 0.1, (n, k)) * (np.arange(n) >= n // 2)[:, None]
        rho = np.asarray(syn.rho, np.float64)
        rho_ref = np.clip(rho - e, 0.0, 1.0)
        # the first stage of the anchor lies between the anchor and the switch
        z = rng.random((n, k))
        rho_lag = rho_ref + rng.random((n, k)) * (rho - rho_ref)
        syn = syn.replace(rho_lag=f(rho_lag), rho_ref=f(rho_ref), z=f(z))
    return st.replace(pre=pre, post=post, syn=syn)


def random_raster(spec, n_steps, p_spike, seed):
    """`(n_steps, n_pre)` bool raster, each entry True with probability p_spike."""
    return np.random.default_rng(seed).random((n_steps, spec.n_pre)) < p_spike


def make_drive(spec, n_steps, *, raster=None, pulses=None, post=None) -> ltpnet.Drive:
    """Stacked Drive for n_steps; missing parts are all False."""
    if raster is None:
        raster = np.zeros((n_steps, spec.n_pre), bool)
    if pulses is None:
        pulses = np.zeros((n_steps, spec.n_pathways), bool)
    if post is None:
        post = np.zeros(n_steps, bool)
    return ltpnet.Drive(
        pulses=np.asarray(pulses, bool),
        post=np.asarray(post, bool),
        raster=np.asarray(raster, bool),
    )


def _trajectory_impl(spec, params, conn, state, drive, key, step0):
    co = ltpnet.discretise(spec, params, conn)

    def body(st, xs):
        d, idx = xs
        st, (x, y) = ltpnet.step(
            spec, co, conn, st, d, jax.random.fold_in(key, idx), idx
        )
        st = jax.lax.cond(
            (idx + 1) % spec.slow_every == 0,
            lambda s: slow_step(spec, co, s, idx),
            lambda s: s,
            st,
        )
        return st, (st, x, y)

    n = drive.post.shape[0]
    idx = step0 + jnp.arange(n, dtype=jnp.int32)
    _, (states, x, y) = jax.lax.scan(body, state, (drive, idx))
    return states, x, y


_trajectory = jax.jit(_trajectory_impl, static_argnums=0)


def engine_trajectory(spec, params, conn, state, drive, *, key=None, step0=0):
    """Every engine state along a run: `ltpnet.step`, then `slow_step` on slow steps.

    Returns `(traj, x, y)`: `traj` maps each state variable to a host array with a
    leading step axis (the state after each step; float64, refrac int64), and x
    `(n, n_pre)`, y `(n, n_post)` are the bool spikes of each step.
    """
    key = jax.random.key(0) if key is None else key
    conn = jax.tree_util.tree_map(jnp.asarray, conn)
    states, x, y = jax.device_get(
        _trajectory(spec, params, conn, state, drive, key, jnp.int32(step0))
    )
    return state_to_dict(states), np.asarray(x), np.asarray(y)


def stack_states(states) -> dict:
    """List of state dicts -> dict of arrays with a leading step axis (no x_hist)."""
    keys = states[0].keys() - {"x_hist"}
    return {k: np.stack([s[k] for s in states]) for k in keys}


def run_reference(spec, params, conn, state, drive, n_steps=N_STEPS, **kw):
    """`reference_run` from an engine State with a stacked Drive."""
    start = dict(state_to_dict(state), x_hist=x_history(spec, None, 0))
    return reference_run(
        spec,
        params,
        conn.pre_idx,
        conn.pre_pathway,
        start,
        n_steps,
        raster=drive.raster[:n_steps],
        pulses=drive.pulses[:n_steps],
        post=drive.post[:n_steps],
        **kw,
    )


def distance_to_thresholds(params, v_free, c, e=None, e_mean=None):
    """Smallest distances to the thresholds that decide a branch, `(dv, dthr)`.

    `dv`: membrane potential after integration to V_th [mV] (NaN entries, i.e.
    refractory neurons, ignored). `dthr`: calcium to theta_d/theta_p and, when given,
    |early change| to theta_tag and its per-neuron mean to theta_pro.
    """
    v = np.asarray(v_free)
    v = v[np.isfinite(v)]
    dv = np.min(np.abs(v - float(params.neuron.V_th))) if v.size else np.inf
    pl, co = params.plasticity, params.consolidation
    d = [np.min(np.abs(c - float(pl.theta_d))), np.min(np.abs(c - float(pl.theta_p)))]
    if e is not None:
        d.append(np.min(np.abs(np.abs(e) - float(co.theta_tag))))
        d.append(np.min(np.abs(e_mean - float(co.theta_pro))))
    return dv, min(d)


def check_coverage(spec, params, start, out):
    """The run must exercise what it claims to test (else the test proves little)."""
    y = out["y"]
    assert y.sum() >= 20, f"too few post spikes ({y.sum()}) to test spiking"
    thr_spikes = y & (out["v_free"] >= float(params.neuron.V_th))
    assert thr_spikes.sum() >= 10, "no threshold crossings, only forced spikes"
    c = np.stack([s["c"] for s in out["states"]])
    pl = params.plasticity
    regimes = {
        "below theta_d": c <= float(pl.theta_d),
        "between the thresholds": (c > float(pl.theta_d)) & (c <= float(pl.theta_p)),
        "above theta_p": c > float(pl.theta_p),
    }
    for regime, where in regimes.items():
        assert where.mean() > 0.05, f"calcium too rarely {regime} ({where.mean():.3f})"
    drho = out["states"][-1]["rho"] - start["rho"]
    assert drho.max() > 1e-3 and drho.min() < -1e-3, "rho did not move both ways"
    if spec.phases:
        co = params.consolidation
        e = np.stack([e for _, e in out["e"]])
        e_mean = np.stack([m for _, m in out["e_mean"]])
        assert np.any(e > float(co.theta_tag)) and np.any(e < -float(co.theta_tag)), (
            "tags of both signs never set"
        )
        assert np.any(e_mean > float(co.theta_pro)) and np.any(
            e_mean < float(co.theta_pro)
        ), "protein trigger never both on and off"


def assert_trajectories_close(actual, desired, tol, steps=None):
    """Compare stacked state dicts key by key and report the first failing step."""
    assert actual.keys() == desired.keys()
    steps = np.arange(len(desired["v"])) if steps is None else np.asarray(steps)
    for key in sorted(desired):
        a, d = actual[key], desired[key]
        assert a.shape == d.shape, key
        bad = ~np.isclose(a, d, rtol=tol["rtol"], atol=tol["atol"])
        if bad.any():
            i = int(np.argmax(bad.reshape(len(a), -1).any(axis=1)))
            np.testing.assert_allclose(
                a[i], d[i], **tol, err_msg=f"{key} after step {steps[i]}"
            )


def assert_preconditions(params, out, v_margin, threshold_margin):
    """No value of a reference run is so close to a threshold that rounding could
    decide a branch (spike, LTP/LTD, tag, protein trigger)."""
    slow = {
        idx: (e, m) for (idx, e), (_, m) in zip(out["e"], out["e_mean"], strict=True)
    }
    for n, st in enumerate(out["states"]):
        e, e_mean = slow.get(n, (None, None))
        dv, dthr = distance_to_thresholds(params, out["v_free"][n], st["c"], e, e_mean)
        assert dv > v_margin, (
            f"precondition: v within {v_margin} mV of V_th at step {n}"
        )
        assert dthr > threshold_margin, (
            f"precondition: a value at a threshold at step {n}"
        )
