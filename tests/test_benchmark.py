"""bench-v1 and the options that make it fast, checked against the float64 reference.

- The fused engine with `syn_block = 1` and `rho_drift = "step"` is the step order of
  docs/model.md: it matches `tests/reference.py` to 1e-12 in float64, spike for spike,
  with either AMPA input (dense or event-driven).
- The benchmark configuration (float32, synapse blocks, cubic drift once per block,
  event-driven AMPA) agrees with the float64 reference in BENCHMARK.md's sense (rate
  within 5 %, change of mean rho within 5 %, change of mean a within 10 %) on a small
  bench-v1 network driven by the same input spikes.
- The hash generator draws Bernoulli(p) inputs; the pieces of the event-driven input
  (bit packing, the pre-major index, the event sums) equal their dense versions.
- `scripts/benchmark.py` prints the fields it promises.

No test asserts a timing.
"""

from __future__ import annotations

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tolerances import X64_RUN
from conftest import (
    N_STEPS,
    ROOT,
    assert_trajectories_close,
    make_drive,
    run_reference,
    stack_states,
    state_to_dict,
)
from reference import reference_init, reference_run
from test_step import setup_variant

import ltpnet
from ltpnet import fused
from ltpnet.dynamics import synapse
from ltpnet.run import run_chunk

# (variant of test_step, fused options): T = 1 with the cubic drift every step
EXACT = {
    "nmda-event": ("nmda", dict(ampa="event")),
    "nmda-dense": ("nmda", dict(ampa="dense")),
    "ttx-clamp-event": ("ttx-clamp", dict(ampa="event")),
    "phases-slow5-apv-anisomycin": ("phases-slow5-apv-anisomycin", dict(ampa="event")),
    "depression-event": ("depression", dict(ampa="event")),
}


EXACT_STEPS = N_STEPS // 2  # the drives of test_step: pulses, TTX and clamp before 620


def fused_trajectory(spec, params, conn, state, drive, n_steps):
    """The state after every step of the fused engine (one `run_chunk` per step)."""
    conn = jax.tree_util.tree_map(jnp.asarray, fused.prepare(spec, conn))
    obs = ltpnet.Observe(
        every=spec.syn_block,
        variables=(),
        spike_neurons=spec.n_post,
        input_neurons=spec.n_pre,
    )
    key = jax.random.key(0)
    states, xs, ys = [], [], []
    st = jax.tree_util.tree_map(lambda a: jnp.array(np.asarray(a)), state)
    for n in range(0, n_steps, spec.syn_block):
        d = jax.tree_util.tree_map(
            lambda a, n=n: jnp.asarray(a[n : n + spec.syn_block]), drive
        )
        st, _, sp = run_chunk(spec, obs, 1, params, conn, st, d, key, jnp.int32(n))
        states.append(state_to_dict(jax.device_get(st)))
        xs.append(np.asarray(sp["input"]))
        ys.append(np.asarray(sp["post"]))
    return stack_states(states), np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("name", list(EXACT))
def test_fused_step_order_matches_reference_float64(name, x64):
    variant, options = EXACT[name]
    spec, params, conn, state, drive = setup_variant(variant, "float64")
    spec = ltpnet.ModelSpec(**{**vars(spec), "fused": True, **options}).check()
    ref = run_reference(spec, params, conn, state, drive, n_steps=EXACT_STEPS)
    traj, x, y = fused_trajectory(spec, params, conn, state, drive, EXACT_STEPS)
    np.testing.assert_array_equal(x, ref["x"])
    np.testing.assert_array_equal(y, ref["y"])
    assert_trajectories_close(traj, stack_states(ref["states"]), X64_RUN)


# the network both engines run in the comparisons below (hash inputs, float64)
ENGINES_NET = dict(n_post=30, k=20, pathways=(("a", 60), ("b", 40)), dtype="float64",
                   rng="hash")


def engines_agree(spec, params, t, seed, obs, proto, syn=("c", "rho")):
    """Run `spec` on the per-step engine and on the fused one (T = 1, event AMPA);
    assert equal spikes, records and synaptic state; return the per-step result."""
    def run(sp):
        return ltpnet.simulate(sp, params, t, seed=seed, observe=obs, protocol=proto)

    step = run(spec)
    fast = run(ltpnet.ModelSpec(**{**vars(spec), "fused": True, "ampa": "event"}))
    np.testing.assert_array_equal(fast.post_spikes, step.post_spikes)
    for k in obs.variables:
        np.testing.assert_allclose(fast.records[k], step.records[k], **X64_RUN,
                                   err_msg=k)
    for k in syn:
        np.testing.assert_allclose(getattr(fast.state.syn, k),
                                   getattr(step.state.syn, k), **X64_RUN, err_msg=k)
    return step


def test_fused_equals_step_engine_with_hash_inputs(x64):
    """Poisson inputs from the hash generator: both engines draw the same spikes."""
    spec = ltpnet.ModelSpec(**ENGINES_NET, phases=False, rho_init="uniform")
    params = ltpnet.Params.bench_v1(20).with_values("input", rate=40.0)
    obs = ltpnet.Observe(
        every=50, variables=("fepsp", "a", "v", "rho"), spike_neurons=30
    )
    proto = ltpnet.Protocol().train("a", at=20.0, freq=100.0, n=5)
    step = engines_agree(spec, params, 60.0, 2, obs, proto)
    assert step.post_spikes.sum() > 50


@pytest.mark.parametrize("phases", [False, True])
def test_fused_switch_noise_equals_step_engine(x64, phases):
    """With switch noise (rng = "hash") both engines draw the same variates for each
    synapse and step: with syn_block = 1 the fused engine is the per-step engine,
    noise, unclipped rho and clipped weights included. A train drives calcium over
    both thresholds, so the noise acts (rho leaves [0, 1] and differs from a
    noise-free run)."""
    spec = ltpnet.ModelSpec(**ENGINES_NET, phases=phases, slow_every=5,
                            switch_noise=True)
    params = ltpnet.Params().with_values("input", rate=5.0)
    obs = ltpnet.Observe(every=50, variables=("fepsp", "v", "rho"), spike_neurons=30)
    proto = ltpnet.Protocol().train("a", at=10.0, freq=100.0, n=30)
    step = engines_agree(spec, params, 400.0, 3, obs, proto,
                         ("c", "rho") + (("rho_lag", "rho_ref", "z") if phases else ()))
    quiet = ltpnet.simulate(ltpnet.ModelSpec(**{**vars(spec), "switch_noise": False}),
                            params, 400.0, seed=3, observe=obs, protocol=proto)
    rho = np.asarray(step.state.syn.rho)
    assert (rho < 0).any() and (rho > 1).any()
    assert np.abs(rho - np.asarray(quiet.state.syn.rho)).max() > 0.1



@pytest.mark.parametrize("noise", [False, True])
def test_fused_t286a_equals_step_engine(x64, noise):
    """CaMKII T286A on the fused engine: no cubic; the switch relaxes to z, as in
    the per-step engine (here over tau_T286A = 50 ms, so that it shows within the
    run: the relaxation pulls rho back from where the wild type's cubic holds it)."""
    spec = ltpnet.ModelSpec(**ENGINES_NET, phases=True, slow_every=5, t286a=True,
                            switch_noise=noise)
    params = (ltpnet.Params().with_values("input", rate=5.0)
              .with_values("consolidation", tau_t286a=50.0))
    obs = ltpnet.Observe(every=50, variables=("fepsp", "v", "rho"), spike_neurons=30)
    proto = ltpnet.Protocol().train("a", at=10.0, freq=100.0, n=30)
    step = engines_agree(spec, params, 400.0, 3, obs, proto,
                         ("c", "rho", "rho_lag", "rho_ref", "z"))
    wild = ltpnet.simulate(ltpnet.ModelSpec(**{**vars(spec), "t286a": False}),
                           params, 400.0, seed=3, observe=obs, protocol=proto)
    assert np.abs(np.asarray(step.state.syn.rho)
                  - np.asarray(wild.state.syn.rho)).max() > 0.1


@pytest.mark.parametrize("delay", [0, 3])
def test_fused_linear_calcium_equals_step_engine(x64, delay):
    """Graupner-Brunel linear calcium on the fused engine: C_pre per input spike,
    `delay` steps late (a ring buffer carried across blocks), C_post per post spike,
    as in the per-step engine. The hippocampal-cultures set puts pulses near the
    thresholds, and a strong rate makes the cells fire."""
    spec = ltpnet.ModelSpec(**ENGINES_NET, phases=False, calcium="linear",
                            ca_delay_steps=delay, rho_init="uniform")
    params = (ltpnet.Params().with_values("input", rate=40.0)
              .with_values("calcium", C_pre=0.58, C_post=1.76, tau_Ca=12.0)
              .with_values("plasticity", theta_p=1.3, gamma_d=61.1, gamma_p=113.7))
    obs = ltpnet.Observe(every=50, variables=("fepsp", "v", "rho"), spike_neurons=30)
    proto = ltpnet.Protocol().train("a", at=10.0, freq=100.0, n=20)
    step = engines_agree(spec, params, 300.0, 5, obs, proto)
    assert step.post_spikes.sum() > 10
    shifted = ltpnet.simulate(ltpnet.ModelSpec(**{**vars(spec),
                                                  "ca_delay_steps": delay + 1}),
                              params, 300.0, seed=5, observe=obs, protocol=proto)
    assert np.abs(np.asarray(shifted.state.syn.c)
                  - np.asarray(step.state.syn.c)).max() > 1e-3


def nmda_current_setup(rho_init="uniform"):
    """A network whose NMDA current matters: g_NMDA = 1 (NMDA/AMPA ratio 1) and a
    train that drives the cells to spike."""
    spec = ltpnet.ModelSpec(**ENGINES_NET, phases=False, nmda_current=True,
                            rho_init=rho_init)
    params = (ltpnet.Params().with_values("input", rate=20.0)
              .with_values("neuron", g_NMDA=1.0))
    proto = ltpnet.Protocol().train("a", at=10.0, freq=100.0, n=20)
    return spec, params, proto


def test_fused_nmda_current_equals_step_engine(x64):
    """The NMDA current on the membrane, g_NMDA sum_k w s B(v) (E_E - v), on the fused
    engine: with syn_block = 1 the same spikes, voltages and synapses as the per-step
    engine, and a run without it differs (the current acts)."""
    spec, params, proto = nmda_current_setup()
    obs = ltpnet.Observe(every=25, variables=("fepsp", "v", "rho"), spike_neurons=30)
    step = engines_agree(spec, params, 200.0, 4, obs, proto)
    assert step.post_spikes.sum() > 10
    off = ltpnet.simulate(ltpnet.ModelSpec(**{**vars(spec), "nmda_current": False}),
                          params, 200.0, seed=4, observe=obs, protocol=proto)
    assert off.post_spikes.sum() < step.post_spikes.sum()


def blocks_agree(spec, params, t, seed, obs, proto, ampa, chunk):
    """Run `spec` on the per-step engine and on the fused one in blocks of 5 steps,
    `chunk` records per chunk; assert equal spikes (and enough of them) and records;
    return both results."""
    step = ltpnet.simulate(spec, params, t, seed=seed, observe=obs, protocol=proto)
    blocks = ltpnet.simulate(
        ltpnet.ModelSpec(**{**vars(spec), "fused": True, "ampa": ampa, "syn_block": 5}),
        params, t, seed=seed, observe=obs, protocol=proto, records_per_chunk=chunk)
    assert step.post_spikes.sum() > 10
    np.testing.assert_array_equal(blocks.post_spikes, step.post_spikes)
    for k in obs.variables:
        np.testing.assert_allclose(blocks.records[k], step.records[k], **X64_RUN,
                                   err_msg=k)
    return step, blocks


def test_fused_nmda_current_in_blocks_equals_step_engine(x64):
    """Blocks of 5 steps: the NMDA current reads the weights of the block start, as
    the AMPA input does. With the switch held at 0 or 1 (gamma_d = gamma_p = 0; the
    cubic keeps both) the weights do not move, so the blocks change nothing: the
    spikes, voltages and calcium equal the per-step engine's."""
    spec, params, proto = nmda_current_setup("bimodal")
    params = params.with_values("plasticity", gamma_d=0.0, gamma_p=0.0)
    obs = ltpnet.Observe(every=50, variables=("v", "c"), spike_neurons=30)
    blocks_agree(spec, params, 200.0, 4, obs, proto, "dense", 2)


def test_fused_linear_calcium_in_blocks_equals_step_engine(x64):
    """Blocks of 5 steps, the delay buffer crossing block and chunk boundaries: with
    the switch held at 0 or 1 (gamma_d = gamma_p = 0; the cubic keeps both), the
    weights do not move and the calcium of every synapse equals the per-step
    engine's."""
    spec = ltpnet.ModelSpec(**ENGINES_NET, phases=False, calcium="linear",
                            ca_delay_steps=3, rho_init="bimodal")
    params = (ltpnet.Params().with_values("input", rate=40.0)
              .with_values("calcium", C_pre=0.58, C_post=1.76, tau_Ca=12.0)
              .with_values("plasticity", gamma_d=0.0, gamma_p=0.0))
    obs = ltpnet.Observe(every=50, variables=("c",), spike_neurons=30)
    proto = ltpnet.Protocol().train("a", at=10.0, freq=100.0, n=20)
    step, fused = blocks_agree(spec, params, 300.0, 5, obs, proto, "event", 3)
    np.testing.assert_allclose(fused.state.syn.c, step.state.syn.c, **X64_RUN)


@pytest.mark.parametrize("ampa", ["event", "dense"])
def test_fused_depression_in_blocks_equals_step_engine(x64, ampa):
    """Short-term depression in blocks of 5 steps, chunks cutting blocks apart: each
    input spikes at most once per block here (trains only), so with the switch held
    (gamma_d = gamma_p = 0) the release of every spike, and with it the spikes, the
    calcium and the pools, equal the per-step engine's. Without depression the same
    run gives other calcium (the test can tell the two apart)."""
    spec = ltpnet.ModelSpec(**ENGINES_NET, phases=False, rho_init="bimodal",
                            depression=True)
    params = (ltpnet.Params().with_values("input", rate=0.0, u_rel=0.3, tau_rec=80.0)
              .with_values("plasticity", gamma_d=0.0, gamma_p=0.0, w_min=0.1,
                           w_max=0.4))
    obs = ltpnet.Observe(every=50, variables=("c", "v"), spike_neurons=30)
    proto = (ltpnet.Protocol().train("a", at=10.0, freq=100.0, n=20)
             .train("b", at=33.3, freq=50.0, n=8))
    step, blocks = blocks_agree(spec, params, 300.0, 5, obs, proto, ampa, 3)
    np.testing.assert_allclose(blocks.state.pre.pool, step.state.pre.pool, **X64_RUN)
    assert float(np.min(step.state.pre.pool)) < 0.9  # the trains depressed the pools
    off = ltpnet.simulate(ltpnet.ModelSpec(**{**vars(spec), "depression": False}),
                          params.with_values("input", u_rel=0.0), 300.0, seed=5,
                          observe=obs, protocol=proto)
    assert np.max(np.abs(off.records["c"] - step.records["c"])) > 0.05


def test_fused_switch_noise_chunked_equals_unbroken():
    """The noise of a synapse is a function of (seed, step, synapse): a fused run
    with blocks of 5 steps cut into chunks of one record equals an unbroken one."""
    spec = ltpnet.ModelSpec(n_post=10, k=20, pathways=(("a", 50), ("b", 50)),
                            slow_every=5, rng="hash", switch_noise=True, fused=True,
                            syn_block=5, ampa="event")
    params = ltpnet.Params().with_values("input", rate=5.0)
    obs = ltpnet.Observe(every=100, variables=("fepsp", "rho"))
    proto = ltpnet.Protocol().train("a", at=5.0, freq=100.0, n=20)
    runs = [ltpnet.simulate(spec, params, 200.0, seed=4, observe=obs, protocol=proto,
                            records_per_chunk=n) for n in (1, 10)]
    for k in obs.variables:
        np.testing.assert_array_equal(runs[0].records[k], runs[1].records[k], err_msg=k)
    np.testing.assert_array_equal(runs[0].state.syn.rho, runs[1].state.syn.rho)


# ---------------------------------------------------------------- bench agreement

N_PRE, N_POST, K = 1000, 200, 100
BENCH_STEPS = 3000  # 0.3 s


def bench_spec(dtype, **options):
    return ltpnet.ModelSpec(
        n_post=N_POST,
        k=K,
        pathways=(("input", N_PRE),),
        dtype=dtype,
        calcium="nmda",
        phases=False,
        homeostasis=True,
        slow_every=1,
        rho_init="uniform",
        **options,
    ).check()


@pytest.fixture(scope="module")
def bench_reference():
    """bench-v1 in the float64 NumPy reference, driven by a fixed 5 Hz raster."""
    spec = bench_spec("float32")  # the reference computes in float64 regardless
    params = ltpnet.Params.bench_v1(K)
    conn, state = ltpnet.build(spec, params, 1234)
    raster = np.random.default_rng(7).random((BENCH_STEPS, N_PRE)) < 5.0 * 1e-4
    start = reference_init(spec, params, np.asarray(state.syn.rho))
    ref = reference_run(
        spec, params, conn.pre_idx, conn.pre_pathway, start, BENCH_STEPS, raster=raster
    )
    end = ref["states"][-1]
    return dict(
        conn=conn,
        state=state,
        raster=raster,
        params=params,
        rate=ref["y"].sum() / (N_POST * BENCH_STEPS * 1e-4),
        drho=end["rho"].mean() - start["rho"].mean(),
        da=end["a"].mean() - 1.0,
    )


def engine_bench(spec, bench):
    """The same run in the engine: float32, Poisson rate 0 plus the raster."""
    params = bench["params"].with_values("input", rate=0.0)
    conn = jax.tree_util.tree_map(
        jnp.asarray, fused.prepare(spec, bench["conn"]) if spec.fused else bench["conn"]
    )
    state = ltpnet.init_state(spec, params, np.asarray(bench["state"].syn.rho))
    drive = make_drive(spec, BENCH_STEPS, raster=bench["raster"])
    obs = ltpnet.Observe(every=10, variables=("fepsp",), spike_neurons=0)
    st, rec, sp = run_chunk(
        spec,
        obs,
        BENCH_STEPS // 10,
        params,
        conn,
        state,
        drive,
        jax.random.key(0),
        jnp.int32(0),
    )
    rho0 = np.asarray(bench["state"].syn.rho, np.float64).mean()
    pl = params.plasticity
    rho_end = np.asarray(st.syn.rho, np.float64)
    a_end = np.asarray(st.post.a, np.float64)[:, None]
    return dict(
        fepsp_end=np.sum(a_end * (pl.w_min + (pl.w_max - pl.w_min) * rho_end)),
        rate=int(np.sum(sp["count"])) / (N_POST * BENCH_STEPS * 1e-4),
        drho=np.asarray(st.syn.rho, np.float64).mean() - rho0,
        da=np.asarray(st.post.a, np.float64).mean() - 1.0,
        fepsp=np.asarray(rec["fepsp"]),
    )


BENCH_OPTIONS = {
    "benchmark": dict(
        fused=True, syn_block=10, rho_drift="block", ampa="event", rng="hash"
    ),
    "bfloat16-storage": dict(
        fused=True, syn_block=10, rho_drift="block", ampa="event", syn_dtype="bfloat16"
    ),
    "blocks-of-5": dict(fused=True, syn_block=5, rho_drift="step", ampa="dense"),
    "step-engine": dict(),
}


@pytest.mark.parametrize("name", list(BENCH_OPTIONS))
def test_bench_agrees_with_reference(name, bench_reference):
    ref = bench_reference
    assert ref["rate"] > 5.0 and ref["drho"] < -2e-3 and ref["da"] < -5e-3, ref
    got = engine_bench(bench_spec("float32", **BENCH_OPTIONS[name]), ref)
    # BENCHMARK.md: rate within 5 %, change of mean rho within 5 %, of mean a 10 %
    assert abs(got["rate"] / ref["rate"] - 1) < 0.05, (got, ref["rate"])
    assert abs(got["drho"] / ref["drho"] - 1) < 0.05, (got, ref["drho"])
    assert abs(got["da"] / ref["da"] - 1) < 0.10, (got, ref["da"])
    # the read-out: the last record is the summed weight of the final state
    assert got["fepsp"].shape == (BENCH_STEPS // 10, 1)
    np.testing.assert_allclose(got["fepsp"][-1, 0], got["fepsp_end"], rtol=2e-6)


# ------------------------------------------------------------------------ pieces


def test_hash_inputs_are_bernoulli():
    n, steps, p = 4000, 3000, 2e-3
    thresh = synapse.spike_threshold(jnp.full(n, p))
    x = np.asarray(
        jax.jit(jax.vmap(lambda i: synapse.hash_bits(jnp.uint32(5), i, n) < thresh))(
            jnp.arange(steps)
        )
    )
    mean = n * steps * p
    assert abs(x.sum() - mean) < 5 * np.sqrt(mean)
    per_step = x.sum(1)
    assert 0.85 < per_step.var() / per_step.mean() < 1.15  # no synchrony across inputs
    per_input = x.sum(0)
    assert 0.85 < per_input.var() / per_input.mean() < 1.15
    assert abs(np.corrcoef(per_step[:-1], per_step[1:])[0, 1]) < 0.06
    other = np.asarray(synapse.hash_bits(jnp.uint32(6), 0, n))
    assert not np.array_equal(other, np.asarray(synapse.hash_bits(jnp.uint32(5), 0, n)))


def test_spike_words_match_the_hash_draw():
    n, p = 1000, 0.05
    p_in = jnp.where(jnp.arange(n) < 400, p, 1.0)  # the last inputs always fire
    path = (jnp.arange(n) >= 700).astype(jnp.int32)
    pulses = jnp.array([False, True])
    thresh, sure = synapse.spike_threshold(p_in), p_in >= 1

    @jax.jit
    def both(step):
        x = synapse.input_spikes_hash(jnp.uint32(9), step, thresh, sure, pulses, path)
        w = synapse.hash_spike_words(
            jnp.uint32(9),
            step,
            synapse.word_layout(thresh),
            synapse.word_layout(sure, False),
            pulses,
            synapse.word_layout(path),
        )
        return x, w, synapse.unpack_bits(w, n), synapse.pack_bits(x)

    for step in (0, 17):
        x, w, x_back, w_back = both(step)
        np.testing.assert_array_equal(np.asarray(x_back), np.asarray(x))
        np.testing.assert_array_equal(np.asarray(w_back), np.asarray(w))


def test_event_sums_equal_dense_sums():
    spec = ltpnet.ModelSpec(
        n_post=50,
        k=30,
        pathways=(("a", 300),),
        phases=False,
        rho_init="uniform",
        fused=True,
        ampa="event",
        spike_batch=3,
    )
    conn, state = ltpnet.build(spec, ltpnet.Params.bench_v1(30), 4)
    fc = fused.prepare(spec, conn)
    pre_idx = np.asarray(conn.pre_idx)
    order = np.asarray(fc.syn_by_pre)
    ptr = np.asarray(fc.pre_ptr)
    assert (
        fc.pre_idx.dtype == np.uint16
        and fc.max_out == np.bincount(pre_idx.ravel()).max()
    )
    np.testing.assert_array_equal(
        pre_idx.ravel()[order], np.repeat(np.arange(300), np.diff(ptr[:-1]))
    )
    x = np.random.default_rng(1).random((4, 300)) < 0.05  # more spikes than one batch
    q = jnp.asarray(np.random.default_rng(2).random((50, 30)), jnp.float32)

    @jax.jit
    def sums(x, q):
        words = jax.vmap(synapse.pack_bits)(x)
        cr = jax.lax.complex(jnp.zeros_like(q), q)
        ev = synapse.event_sums(
            words,
            cr.reshape(-1),
            jnp.asarray(order),
            jnp.asarray(ptr),
            30,
            0.1,
            0.5,
            fc.max_out,
            3,
            50,
        )
        return ev, synapse.dense_sums(x, q, jnp.asarray(fc.pre_idx), 0.1, 0.5)

    ev, dense = sums(jnp.asarray(x), q)
    expect = np.stack([((0.1 + np.asarray(q) * 0.4) * r[pre_idx]).sum(1) for r in x])
    np.testing.assert_allclose(np.asarray(ev), expect, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dense), expect, rtol=1e-5)


def test_pack_unpack_and_traffic():
    spec = bench_spec(
        "float32", fused=True, syn_block=10, rho_drift="block", ampa="event"
    )
    conn, state = ltpnet.build(spec, ltpnet.Params.bench_v1(K), 0)
    packed = fused.pack(state)
    assert packed.syn.cr.dtype == jnp.complex64
    back = fused.unpack(jax.device_get(packed))
    np.testing.assert_array_equal(back.syn.rho, np.asarray(state.syn.rho))
    fc = fused.prepare(spec, conn)
    t = fused.traffic(
        spec, fc, ltpnet.Observe(every=10, variables=("fepsp",), spike_neurons=N_POST)
    )
    # (8 read + 8 written + 2 index) bytes per synapse per block of 10 steps, and more
    assert t["per_syn_step"] > 1.8
    assert abs(sum(t["items"].values()) - t["per_step"]) < 1e-6
    assert t["items"]["synapses: read pre_idx"] == spec.n_syn * 2 / 10
    # T286A reads z once per block; a calcium delay reads and writes one bool per input
    more = ltpnet.ModelSpec(**{**vars(spec), "t286a": True, "phases": True,
                               "calcium": "linear", "ca_delay_steps": 3})
    t2 = fused.traffic(more, fc)
    assert t2["items"]["synapses: read z (T286A)"] == spec.n_syn * 4 / 10
    assert t2["items"]["inputs: delay ring buffer (read+write)"] == 2 * spec.n_pre
    assert not {"synapses: read z (T286A)",
                "inputs: delay ring buffer (read+write)"} & set(t["items"])
    # the NMDA current sums w s over every synapse each step: weight, trace, index
    t3 = fused.traffic(ltpnet.ModelSpec(**{**vars(spec), "nmda_current": True}), fc)
    assert t3["items"]["NMDA current: weights, pre_idx, gathered traces"] == (
        spec.n_syn * (2 * 4 + 2))
    assert t3["per_step"] > t["per_step"] + spec.n_syn * 9


def test_fused_options_are_checked():
    with pytest.raises(ValueError, match="syn_block"):
        ltpnet.ModelSpec(syn_block=4).check()  # needs fused
    ltpnet.ModelSpec(fused=True, nmda_current=True).check()
    ltpnet.ModelSpec(fused=True, calcium="linear", t286a=True, phases=True).check()
    with pytest.raises(ValueError, match="slow_every"):
        ltpnet.ModelSpec(fused=True, syn_block=4, phases=True, slow_every=2).check()
    with pytest.raises(ValueError, match="every"):
        ltpnet.Observe(every=15).check(
            ltpnet.ModelSpec(fused=True, syn_block=10, phases=False)
        )
    with pytest.raises(ValueError, match="rng"):
        ltpnet.ModelSpec(rng="mt19937").check()
    with pytest.raises(ValueError, match=r"rng must be 'hash' when fused and "
                       r"switch_noise are on .*got rng='threefry'"):
        ltpnet.ModelSpec(fused=True, switch_noise=True).check()
    ltpnet.ModelSpec(fused=True, switch_noise=True, rng="hash").check()


def _load_benchmark_script():
    spec = importlib.util.spec_from_file_location(
        "benchmark", ROOT / "scripts" / "benchmark.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_script_prints_its_fields(capsys):
    bench = _load_benchmark_script()
    bench.main(["--size", "S", "--t", "0.02", "--json", "--no-bandwidth"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for field in (
        "simulator",
        "size",
        "n_syn",
        "steps",
        "compile_s",
        "simulate_s",
        "synapse_steps_per_s",
        "real_time_factor",
        "peak_rss_mb",
        "mean_post_rate_hz",
        "mean_rho_start",
        "mean_rho_end",
        "mean_a_end",
        "dtype",
        "device",
        "bytes_per_syn_step",
    ):
        assert field in out, field
    assert out["size"] == "S" and out["n_syn"] == 100_000 and out["steps"] == 200
    assert 0.0 < out["mean_rho_end"] < 1.0 and out["bytes_per_syn_step"] > 0
