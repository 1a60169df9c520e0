"""`ltpnet.run`: the scan runner, chunking, batching, recording, Poisson drive, errors.

- `run_chunk` against the float64 reference, across a chunk boundary, with every
  recorded variable; `simulate` with Poisson input against the reference replaying
  the recorded input spikes;
- chunked `simulate` equals one chunk; `run_batch` equals a loop over trials;
- the second chunk of a run does not compile again;
- the Poisson drive fires at r dt (means over seeds, CLT tolerance);
- rho, z in [0, 1] and a > 0 under noisy drive;
- invalid specs and parameters are rejected in Python, naming the field.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tolerances import (
    DISTRIBUTIONAL,
    SAME_PROGRAM,
    V_MARGIN,
    X64_RUN,
    X64_THRESHOLD_MARGIN,
    tree_allclose,
)
from conftest import (
    assert_preconditions,
    check_coverage,
    fast_params,
    make_drive,
    random_raster,
    random_state,
    run_reference,
    small_spec,
    stack_states,
    state_to_dict,
)
from reference import reference_run

import ltpnet
from ltpnet.record import VARIABLES
from ltpnet.step import switch_variates

# --------------------------------------------------------------------------------------
# run_chunk against the reference

ALL_RECORDS = tuple(VARIABLES)  # every variable Observe can record


def copy_tree(tree):
    """A fresh copy (run_chunk donates its state argument)."""
    return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)


def expected_records(spec, params, conn, ref_state):
    """The recorded variables, computed with NumPy from a reference state."""
    pl = params.plasticity
    q = np.clip(ref_state["z"] + ref_state["rho"] - ref_state["rho_ref"], 0.0, 1.0)
    w = ref_state["a"][:, None] * (
        float(pl.w_min) + q * (float(pl.w_max) - float(pl.w_min))
    )
    syn_pathway = np.asarray(conn.pre_pathway)[np.asarray(conn.pre_idx)]
    out = {name: ref_state[name] for name in ("v", "r", "a", "p", "c", "rho", "z")}
    out.update(
        fepsp=np.array([w[syn_pathway == i].sum() for i in range(spec.n_pathways)]),
        w_mean=w.mean(axis=1),
        c_mean=ref_state["c"].mean(axis=1),
        rho_mean=ref_state["rho"].mean(axis=1),
        q=q,
        w=w,
    )
    return out


def test_run_chunk_matches_reference_across_chunks(x64):
    """Two chunks of run_chunk = the reference, record by record and spike by spike
    (linear calcium with a delay carried across the boundary, slow clock every 2
    steps, drug windows that start and end inside chunks and inside slow blocks)."""
    spec = small_spec(
        "float64", calcium="linear", ca_delay_steps=4, phases=True, slow_every=2
    )
    params = fast_params(
        spec.k,
        pharmacology=dict(
            ttx_on=12.3,
            ttx_off=20.1,
            clamp_on=47.7,
            clamp_off=55.1,
            anisomycin_on=10.1,
            anisomycin_off=50.3,
        ),
    )
    n_chunk, every = 300, 10
    n_steps = 2 * n_chunk
    seed = 25  # meets the preconditions checked below
    conn, _ = ltpnet.build(spec, params, seed)
    state0 = random_state(spec, params, conn, seed + 1)
    raster = random_raster(spec, n_steps, 0.003, seed + 2)
    post = np.zeros(n_steps, bool)
    post[[50, 140, 299, 300, 480]] = True  # 140: under TTX, 480: under clamp
    pulses = np.zeros((n_steps, spec.n_pathways), bool)
    pulses[[100, 298], 0] = True
    drive = make_drive(spec, n_steps, raster=raster, pulses=pulses, post=post)

    out = run_reference(spec, params, conn, state0, drive, n_steps)
    assert_preconditions(params, out, V_MARGIN, X64_THRESHOLD_MARGIN)
    check_coverage(spec, params, state_to_dict(state0), out)

    obs = ltpnet.Observe(
        every=every,
        variables=ALL_RECORDS,
        spike_neurons=spec.n_post,
        input_neurons=spec.n_pre,
    ).check(spec)
    connj = jax.tree_util.tree_map(jnp.asarray, conn)
    key = jax.random.key(0)
    state, records, spikes = copy_tree(state0), [], []
    for c in range(2):
        chunk = slice(c * n_chunk, (c + 1) * n_chunk)
        part = jax.tree_util.tree_map(lambda a, s=chunk: a[s], drive)
        state, rec, sp = ltpnet.run_chunk(
            spec,
            obs,
            n_chunk // every,
            params,
            connj,
            state,
            part,
            key,
            jnp.int32(c * n_chunk),
        )
        records.append(jax.device_get(rec))
        spikes.append(jax.device_get(sp))

    np.testing.assert_array_equal(
        np.concatenate([s["input"] for s in spikes]), out["x"]
    )
    np.testing.assert_array_equal(np.concatenate([s["post"] for s in spikes]), out["y"])
    np.testing.assert_array_equal(
        np.concatenate([s["count"] for s in spikes]), out["y"].sum(axis=1)
    )
    rec_steps = np.arange(every - 1, n_steps, every)
    for name in ALL_RECORDS:
        got = np.concatenate([r[name] for r in records])
        want = np.stack(
            [
                expected_records(spec, params, conn, out["states"][n])[name]
                for n in rec_steps
            ]
        )
        np.testing.assert_allclose(got, want, **X64_RUN, err_msg=name)
    final = state_to_dict(jax.device_get(state))
    ref_final = {k: v[-1] for k, v in stack_states(out["states"]).items()}
    for name, want in ref_final.items():
        np.testing.assert_allclose(final[name], want, **X64_RUN, err_msg=name)


def test_poisson_run_matches_reference_replay(x64):
    """`simulate` with Poisson input (no raster) equals the reference fed the input
    spikes that the run recorded."""
    spec = small_spec("float64", phases=True, slow_every=4)
    params = fast_params(spec.k, input=dict(rate=30.0))
    every, duration = 100, 60.0
    obs = ltpnet.Observe(
        every=every,
        variables=("v", "r", "a", "p", "c", "rho", "z"),
        spike_neurons=spec.n_post,
        input_neurons=spec.n_pre,
    )
    seed = 2
    conn, _ = ltpnet.build(spec, params, seed)
    state0 = random_state(spec, params, conn, seed)
    start = dict(state_to_dict(state0), x_hist=np.zeros((0, spec.n_pre), bool))
    res = ltpnet.simulate(
        spec, params, duration, seed=seed, observe=obs, conn=conn, state=state0
    )
    x = res.input_spikes
    n_steps = len(x)
    assert x.shape == (n_steps, spec.n_pre) and x.sum() > 50

    out = reference_run(
        spec, params, conn.pre_idx, conn.pre_pathway, start, n_steps, x_override=x
    )
    assert_preconditions(params, out, V_MARGIN, X64_THRESHOLD_MARGIN)
    assert out["y"].sum() >= 10
    np.testing.assert_array_equal(res.post_spikes, out["y"])
    for i, n in enumerate(range(every - 1, n_steps, every)):
        for name in obs.variables:
            np.testing.assert_allclose(
                res.records[name][i],
                out["states"][n][name],
                **X64_RUN,
                err_msg=f"{name} at step {n}",
            )


@pytest.mark.parametrize("rng", ["threefry", "hash"])
def test_switch_noise_run_matches_reference_replay(x64, rng):
    """With switch noise, `simulate` equals the reference fed the same input spikes
    and the same unit variates (`ltpnet.step.switch_variates` of each step's key):
    the noise is sqrt(dt/tau_rho) sqrt(sigma^2 H_d + sigma_p^2 H_p) xi, gated by calcium."""
    spec = small_spec("float64", phases=False, switch_noise=True, rng=rng)
    params = fast_params(spec.k, input=dict(rate=30.0), plasticity=dict(sigma=3.0,
                                                                             sigma_p=7.0))
    every, duration, seed = 50, 30.0, 4
    obs = ltpnet.Observe(every=every, variables=("c", "rho"),
                         spike_neurons=spec.n_post, input_neurons=spec.n_pre)
    conn, _ = ltpnet.build(spec, params, seed)
    state0 = random_state(spec, params, conn, seed)
    start = dict(state_to_dict(state0), x_hist=np.zeros((0, spec.n_pre), bool))
    res = ltpnet.simulate(spec, params, duration, seed=seed, observe=obs, conn=conn,
                          state=state0)
    x = res.input_spikes
    n_steps = len(x)
    key = jax.random.key(seed)
    shape = (spec.n_post, spec.k)
    xi = np.stack([np.asarray(switch_variates(
        spec, key if rng == "hash" else jax.random.fold_in(key, n), n, shape,
        jnp.float64)) for n in range(n_steps)])
    out = reference_run(spec, params, conn.pre_idx, conn.pre_pathway, start, n_steps,
                        x_override=x, xi=xi)
    assert_preconditions(params, out, V_MARGIN, X64_THRESHOLD_MARGIN)
    rho = np.stack([s["rho"] for s in out["states"]])
    c = np.stack([s["c"] for s in out["states"]])
    gated = c > params.plasticity.theta_d
    assert 0.05 < gated.mean() < 0.95  # noise on in some steps, off in others
    assert (c > params.plasticity.theta_p).mean() > 0.01  # and sigma_p in some
    for i, n in enumerate(range(every - 1, n_steps, every)):
        np.testing.assert_allclose(res.records["rho"][i], rho[n], **X64_RUN,
                                   err_msg=f"rho at step {n}")
    quiet = dataclasses.replace(spec, switch_noise=False)
    plain = ltpnet.simulate(quiet, params, duration, seed=seed, observe=obs,
                            conn=conn, state=random_state(spec, params, conn, seed))
    assert np.abs(plain.records["rho"][-1] - res.records["rho"][-1]).max() > 1e-3


@pytest.mark.parametrize("rng", ["threefry", "hash"])
def test_switch_variates_have_unit_variance(rng):
    """The variates are zero-mean with unit variance, and fresh at every step."""
    spec = ltpnet.ModelSpec(rng=rng, switch_noise=True)
    key = jax.random.key(0)
    # in a run, hash draws from the run's key and threefry from the step's own key
    key8 = key if rng == "hash" else jax.random.fold_in(key, 8)
    a = np.asarray(switch_variates(spec, key, 7, (400, 250), jnp.float32)).ravel()
    b = np.asarray(switch_variates(spec, key8, 8, (400, 250), jnp.float32)).ravel()
    for v in (a, b):  # 1e5 draws: SE of the mean 0.003, of the variance 0.0045
        assert abs(v.mean()) < 0.015 and abs(v.var() - 1.0) < 0.025
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.015


# --------------------------------------------------------------------------------------
# equivalences and compilation, on a float32 network driven by Poisson input

RATES = np.array([5.0, 20.0, 50.0])  # Hz, one per pathway
OBSERVE = ltpnet.Observe(
    every=10,
    variables=("fepsp", "a", "p", "rho", "z", "v"),
    spike_neurons=20,
    input_neurons=50,
)
DURATION = 200.0  # ms: 2000 steps, 200 records
CHUNK = 50  # records per chunk


def noisy_network(rates=RATES, **params_groups):
    spec = small_spec("float32", phases=True, slow_every=2)
    params = fast_params(
        spec.k, input=dict(rate=np.asarray(rates, np.float64)), **params_groups
    )
    return spec, params


def protocol():
    return (
        ltpnet.Protocol()
        .tetanus("S1", at=20.0, freq=100.0, n=20)
        .pairing("S2", at=120.0, freq=20.0, n=5, dt_ms=5.0)
    )


def assert_results_equal(a, b, tol):
    for name in a.records:
        np.testing.assert_allclose(
            a.records[name], b.records[name], **tol, err_msg=name
        )
    np.testing.assert_array_equal(a.post_spikes, b.post_spikes)
    np.testing.assert_array_equal(a.input_spikes, b.input_spikes)
    np.testing.assert_array_equal(a.spike_count, b.spike_count)
    np.testing.assert_array_equal(a.t, b.t)
    fa, fb = (
        state_to_dict(jax.device_get(a.state)),
        state_to_dict(jax.device_get(b.state)),
    )
    for name in fa:
        np.testing.assert_allclose(fa[name], fb[name], **tol, err_msg=name)


def test_chunked_simulate_equals_one_chunk():
    spec, params = noisy_network()
    n_records = int(DURATION / spec.dt) // OBSERVE.every
    kw = dict(seed=3, protocol=protocol(), observe=OBSERVE)
    chunked = ltpnet.simulate(spec, params, DURATION, records_per_chunk=CHUNK, **kw)
    single = ltpnet.simulate(spec, params, DURATION, records_per_chunk=n_records, **kw)
    assert chunked.records["rho"].shape == (n_records, spec.n_post, spec.k)
    assert chunked.spike_count.sum() > 0
    assert_results_equal(chunked, single, SAME_PROGRAM)


def test_resumed_simulate_equals_unbroken():
    """Continuing from the final state and step of a run equals not stopping."""
    spec, params = noisy_network()
    kw = dict(seed=5, observe=OBSERVE, records_per_chunk=CHUNK, protocol=protocol())
    whole = ltpnet.simulate(spec, params, DURATION, **kw)
    first = ltpnet.simulate(spec, params, DURATION / 2, **kw)
    n_first = len(first.spike_count)
    second = ltpnet.simulate(
        spec,
        params,
        DURATION / 2,
        conn=first.conn,
        state=first.state,
        step0=n_first,
        **kw,
    )
    for name in whole.records:
        joined = np.concatenate([first.records[name], second.records[name]])
        np.testing.assert_allclose(
            joined, whole.records[name], **SAME_PROGRAM, err_msg=name
        )
    np.testing.assert_array_equal(
        np.concatenate([first.input_spikes, second.input_spikes]), whole.input_spikes
    )
    np.testing.assert_array_equal(np.concatenate([first.t, second.t]), whole.t)


def test_run_batch_equals_loop_over_trials():
    spec, params = noisy_network()
    conn, _ = ltpnet.build(spec, params, 0)
    connj = jax.tree_util.tree_map(jnp.asarray, conn)
    states = [random_state(spec, params, conn, s) for s in range(3)]
    keys = [jax.random.key(10 + s) for s in range(3)]
    n = CHUNK * OBSERVE.every
    drive = protocol().drive(spec, 0, n)

    looped = [
        jax.device_get(
            ltpnet.run_chunk(
                spec,
                OBSERVE,
                CHUNK,
                params,
                connj,
                copy_tree(st),
                drive,
                k,
                jnp.int32(0),
            )
        )
        for st, k in zip(states, keys, strict=True)
    ]
    stacked_state = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states)
    batched = jax.device_get(
        ltpnet.run_batch(
            spec,
            OBSERVE,
            CHUNK,
            params,
            connj,
            stacked_state,
            drive,
            jnp.stack(keys),
            jnp.int32(0),
        )
    )
    for i, single in enumerate(looped):
        one = jax.tree_util.tree_map(lambda a, i=i: a[i], batched)
        assert tree_allclose(one, single, **SAME_PROGRAM), f"trial {i}"
    # the trials differ, so the comparison is not vacuous
    assert not np.array_equal(looped[0][2]["input"], looped[1][2]["input"])


def _count_run_compiles(records):
    return sum(
        "jit(_run_impl)" in r.getMessage() and "Compiling" in r.getMessage()
        for r in records
    )


def test_second_chunk_does_not_compile(caplog):
    # a network no other test uses, so its first chunk compiles here
    spec = small_spec("float32", n_post=7, phases=True)
    params = fast_params(spec.k)
    obs = ltpnet.Observe(every=10, variables=("rho_mean",))
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        first = ltpnet.simulate(spec, params, 10.0, observe=obs, records_per_chunk=1)
        n_first = _count_run_compiles(caplog.records)
        caplog.clear()
        ltpnet.simulate(
            spec,
            params,
            30.0,
            observe=obs,
            records_per_chunk=1,
            conn=first.conn,
            state=first.state,
            step0=100,
        )
        n_more = _count_run_compiles(caplog.records)
    assert n_first == 1, "the counter must see the first compilation"
    assert n_more == 0, f"{n_more} recompilations for chunks of an unchanged shape"


# --------------------------------------------------------------------------------------
# statistics and invariants under Poisson drive


def test_poisson_input_fires_at_rate_times_dt():
    spec, params = noisy_network()
    seeds = range(4)
    runs = [
        ltpnet.simulate(
            spec, params, DURATION, seed=s, observe=OBSERVE, records_per_chunk=CHUNK
        )
        for s in seeds
    ]
    x = np.stack([r.input_spikes for r in runs])  # (seed, step, input)
    assert x.shape == (4, 2000, spec.n_pre)
    assert not np.array_equal(x[0], x[1]), "seeds must give different spike trains"
    pathway = np.asarray(runs[0].conn.pre_pathway)
    for i, rate in enumerate(RATES):
        sample = x[:, :, pathway == i]
        p = rate * spec.dt / 1000.0
        per_seed = sample.mean(axis=(1, 2))
        se = np.sqrt(p * (1 - p) / sample.size)
        assert abs(per_seed.mean() - p) < DISTRIBUTIONAL * se, (i, per_seed, p)


def test_bounds_hold_under_noisy_drive():
    """rho and z stay in [0, 1] and a > 0 under Poisson drive, with switches so fast
    that an unclipped Euler step would leave [0, 1] (dt gamma / tau > 1)."""
    spec, params = noisy_network(
        rates=[40.0, 40.0, 40.0],
        plasticity=dict(tau_rho=10.0),
        consolidation=dict(tau_z=1.0, gamma_z=10.0),
    )
    for seed in (0, 1):
        res = ltpnet.simulate(
            spec, params, DURATION, seed=seed, observe=OBSERVE, records_per_chunk=CHUNK
        )
        rho, z, a = res.records["rho"], res.records["z"], res.records["a"]
        assert np.all((rho >= 0) & (rho <= 1)) and np.all((z >= 0) & (z <= 1))
        assert np.all(a > 0) and np.all(np.isfinite(a))
        for name, x in (("rho", rho), ("z", z)):
            assert x.min() == 0.0 and x.max() == 1.0, f"{name} never reached a bound"
        assert res.mean_rate() > 2.0  # the neurons fire, so homeostasis acts on a


# --------------------------------------------------------------------------------------
# validation before tracing


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(n_post=0), "n_post"),
        (dict(k=1000), "k"),
        (dict(dt=-0.1), "dt"),
        (dict(dtype="float16"), "dtype"),
        (dict(calcium="quadratic"), "calcium"),
        (dict(slow_every=0), "slow_every"),
        (dict(ca_delay_steps=-1), "ca_delay_steps"),
        (dict(pathways=(("S1", 10), ("S1", 10))), "distinct"),
        (dict(t286a=True, phases=False), "t286a"),
        (dict(beta_down=1.5), "beta_down"),
        (dict(n_inh=5, k_inh=0), "k_inh"),
        (dict(switch_noise="yes"), "switch_noise must be true or false"),
        (dict(fused=True, switch_noise=True),
         "rng must be .hash. when fused and switch_noise"),
    ],
)
def test_spec_check_names_the_field(changes, match):
    spec = ltpnet.ModelSpec(
        **{**dict(n_post=4, k=5, pathways=(("S1", 10),)), **changes}
    )
    with pytest.raises(ValueError, match=match):
        spec.check()
    with pytest.raises(ValueError, match=match):  # simulate validates before tracing
        ltpnet.simulate(spec, ltpnet.Params(), 1.0)


@pytest.mark.parametrize(
    ("group", "values", "match"),
    [
        (
            "plasticity",
            dict(theta_d=1.0, theta_p=0.9),
            r"\[plasticity\] theta_p must exceed theta_d",
        ),
        ("neuron", dict(tau_m=-5.0), r"\[neuron\] tau_m is a time constant"),
        ("neuron", dict(V_reset=-40.0), "V_reset must be below V_th"),
        ("plasticity", dict(rho_star=1.0), r"rho_star must lie in \(0, 1\)"),
        ("plasticity", dict(w_min=0.5, w_max=0.1), "w_min < w_max"),
        ("input", dict(rate=-1.0), r"\[input\] rate must be >= 0"),
        ("consolidation", dict(kappa=0.0), "kappa"),
        ("homeostasis", dict(r_target=0.0), "r_target"),
        ("pharmacology", dict(apv=1.5), "apv"),
        ("plasticity", dict(sigma=-1.0), r"\[plasticity\] sigma must be >= 0"),
        ("plasticity", dict(sigma_p=-0.5),
         r"\[plasticity\] sigma_p must be >= 0, got sigma_p=-0.5"),
        ("calcium", dict(Mg=float("nan")), "Mg must be a finite number"),
    ],
)
def test_params_check_names_the_field(group, values, match):
    params = ltpnet.Params().with_values(group, **values)
    with pytest.raises(ValueError, match=match):
        params.check()
    with pytest.raises(ValueError, match=match):
        ltpnet.simulate(small_spec("float32"), params, 1.0)


def test_default_params_are_valid():
    assert ltpnet.Params().check() is not None
    assert ltpnet.Params.bench_v1(100).check() is not None
    assert ltpnet.ModelSpec().check() == ltpnet.ModelSpec()


def test_observe_check_rejects_misaligned_records():
    spec = small_spec("float32", slow_every=3)
    with pytest.raises(ValueError, match="multiple of slow_every"):
        ltpnet.Observe(every=10).check(spec)
    with pytest.raises(ValueError, match="unknown record variable"):
        ltpnet.Observe(every=9, variables=("rhoo",)).check(spec)
    assert ltpnet.Observe(every=9).check(spec).every == 9


def test_run_chunk_checks_the_recording_plan():
    spec = ltpnet.ModelSpec(n_post=2, k=5, pathways=(("S1", 10),), slow_every=4)
    conn, state = ltpnet.build(spec, ltpnet.Params(), 0)
    obs = ltpnet.Observe(every=6)
    drive = ltpnet.Protocol().drive(spec, 0, 6)
    with pytest.raises(ValueError, match="Observe.every=6 must be a multiple of "
                                         "slow_every=4"):
        ltpnet.run_chunk(spec, obs, 1, ltpnet.Params(), conn, state, drive,
                         jax.random.key(0), jnp.int32(0))
