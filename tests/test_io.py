"""Results files: layout, attributes, round trips, crash and resume."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import types

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ltpnet
from ltpnet import ModelSpec, Observe, Params, Protocol, simulate
from ltpnet.io import ResultsWriter, inspect, load_checkpoint, open_results, recover
from ltpnet.record import VARIABLES

# linear calcium with a delay and interneurons: the state holds a bool ring buffer,
# bool interneuron spikes and int32 refractory counters besides the floats
SPEC = ModelSpec(n_post=20, k=10, pathways=(("S1", 20), ("S2", 20), ("bg", 40)),
                 calcium="linear", ca_delay_steps=5, n_inh=5, k_inh=10, k_ie=3)
PARAMS = Params.bench_v1(10)
OBS = Observe(every=100, variables=("fepsp", "r", "a", "w_mean", "c_mean", "w"),
              spike_neurons=20, input_neurons=80)
PROTO = Protocol().tetanus("S1", at=150.0, n=10)
RPC = 5  # records per chunk: 500 steps, 50 ms
CHUNK = RPC * OBS.every
DURATION = 600.0  # 12 chunks
SEED = 3
CONFIG = "[run]\nduration_ms = 600.0\nseed = 3\n"
UNITS = {"ms", "mV", "Hz", "mM", "1", "g_leak"}


def writer(path, seed=SEED, **kw):
    return ResultsWriter(path, SPEC, PARAMS, OBS, None, config_toml=CONFIG, seed=seed,
                         protocol=PROTO, **kw)


def run(path, duration=DURATION, seed=SEED, capture=None, checkpoint_every=1,
        keep_state=lambda step_end: True):
    """Simulate into a new file; returns the Result."""
    w = writer(path, seed)

    def on_chunk(step_end, records, spikes, state):
        if capture is not None:
            capture.append((step_end, records, spikes, state))
        w.on_chunk(step_end, records, spikes, state if keep_state(step_end) else None)

    res = simulate(SPEC, PARAMS, duration, seed=seed, protocol=PROTO, observe=OBS,
                   records_per_chunk=RPC, on_chunk=on_chunk,
                   checkpoint_every=checkpoint_every)
    w.close(complete=True)
    return res


def datasets(path, skip=("checkpoint/slot",)):
    out = {}
    with open_results(path) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.startswith(skip):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def assert_same_state(s1, s2):
    assert jax.tree.structure(s1) == jax.tree.structure(s2)
    for x, y in zip(jax.tree.leaves(s1), jax.tree.leaves(s2), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def raster(ts, ids, shape, dt):
    out = np.zeros(shape, bool)
    steps = np.rint(np.asarray(ts) / dt).astype(np.int64)
    np.testing.assert_allclose(steps * dt, ts, rtol=0, atol=1e-9)
    out[steps, np.asarray(ids, np.int64)] = True
    assert out.sum() == len(ts), "a spike is listed twice"
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    path = tmp_path_factory.mktemp("io") / "run.h5"
    chunks = []
    res = run(path, capture=chunks)
    return types.SimpleNamespace(path=path, res=res, chunks=chunks)


def test_layout_and_attrs(single):
    with h5py.File(single.path, "r") as f:
        a = f.attrs
        assert a["magic"] == 0x0A7A
        assert list(a["version"]) == [0, 1]
        assert a["config"] == CONFIG
        assert a["seed"] == SEED
        assert a["dt"] == SPEC.dt
        assert bool(a["complete"]) is True
        assert a["ltpnet_version"] == ltpnet.__version__
        assert a["jax_version"] == jax.__version__
        assert a["device"] == str(jax.devices()[0])
        assert a["step_start"] == 0 and a["step_end"] == 6000
        assert a["records_written"] == 60
        for pop, n in (("CA1", 20), ("CA3", 80)):
            g = f[f"spikes/{pop}"]
            enum = h5py.check_enum_dtype(g.attrs.get_id("sorting").dtype)
            assert enum == {"none": 0, "by_id": 1, "by_time": 2}
            assert g.attrs["sorting"] == enum["by_time"]
            assert g["timestamps"].dtype == np.float64
            assert g["node_ids"].dtype == np.uint64
            assert g["timestamps"].attrs["units"] == "ms"
            assert g.attrs["n_nodes"] == n
        for name in ("r", "a", "w_mean", "c_mean", "w"):
            d = f[f"report/CA1/{name}/data"]
            assert d.attrs["units"] == VARIABLES[name][1]
            assert d.maxshape[0] is None and d.chunks is not None
            assert d.compression == "gzip"
            assert set(f[f"report/CA1/{name}/mapping"]) == {
                "node_ids", "index_pointers", "element_ids", "time"}
        for p in SPEC.pathway_names:
            d = f[f"readout/fepsp/{p}"]
            assert d.attrs["units"] == VARIABLES["fepsp"][1]
            assert d.maxshape == (None,) and d.compression == "gzip"
            assert d.dims[0][0] == f["readout/time"]  # own time axis
        assert f["readout/rate"].attrs["units"] == "Hz"
        assert f["connectivity"].attrs["pathways"].tolist() == ["S1", "S2", "bg"]
        np.testing.assert_array_equal(f["connectivity/pre_idx"],
                                      np.asarray(single.res.conn.pre_idx))
        np.testing.assert_array_equal(f["connectivity/pre_pathway"],
                                      np.asarray(single.res.conn.pre_pathway))
        np.testing.assert_allclose(f["protocol/pulses/S1"], PROTO.pulses[0][1])

        missing = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.attrs.get("units") not in UNITS:
                missing.append(name)
        f.visititems(visit)
        assert not missing, f"datasets without units: {missing}"


def test_spikes_sorted_and_equal_to_result(single):
    res = single.res
    with h5py.File(single.path, "r") as f:
        for pop, want in (("CA1", res.post_spikes), ("CA3", res.input_spikes)):
            ts, ids = f[f"spikes/{pop}/timestamps"][()], f[f"spikes/{pop}/node_ids"][()]
            assert len(ts) == want.sum() > 0
            assert np.all(np.diff(ts) >= 0), "not sorted by time"
            np.testing.assert_array_equal(raster(ts, ids, want.shape, SPEC.dt), want)
        # a tetanus pulse at t is delivered in step round(t / dt) and stamped t
        ts = f["spikes/CA3/timestamps"][()]
        assert 150.0 in ts


def test_records_match_result(single):
    res = single.res
    dt_rec = OBS.every * SPEC.dt
    with h5py.File(single.path, "r") as f:
        np.testing.assert_array_equal(f["readout/time"], res.t)
        for name in ("r", "a", "w_mean", "c_mean", "w"):
            want = res.records[name].reshape(len(res.t), -1)
            np.testing.assert_array_equal(f[f"report/CA1/{name}/data"], want)
            m = f[f"report/CA1/{name}/mapping"]
            per = SPEC.k if name == "w" else 1
            nodes = np.repeat(m["node_ids"][()],
                              np.diff(m["index_pointers"][()].astype(np.int64)))
            np.testing.assert_array_equal(nodes, np.repeat(np.arange(20), per))
            np.testing.assert_array_equal(m["element_ids"], np.tile(np.arange(per), 20))
            np.testing.assert_allclose(m["time"], [res.t[0], res.t[-1] + dt_rec, dt_rec])
        for i, p in enumerate(SPEC.pathway_names):
            d = f[f"readout/fepsp/{p}"]
            np.testing.assert_array_equal(d, res.records["fepsp"][:, i])
            assert d.attrs["baseline"] == res.records["fepsp"][0, i]
        counts = res.spike_count.reshape(-1, OBS.every).sum(axis=1)
        np.testing.assert_array_equal(f["readout/spike_count"], counts)
        np.testing.assert_allclose(f["readout/rate"], counts / (20 * dt_rec / 1000.0))


def test_checkpoint_round_trip(single):
    ck = load_checkpoint(single.path)
    assert ck.step_end == 6000 and ck.records_written == 60
    assert ck.seed == SEED and ck.config_toml == CONFIG
    assert ck.state.pre.x_hist.dtype == np.bool_
    assert ck.state.post.refrac.dtype == np.int32
    assert_same_state(ck.state, single.res.state)
    assert_same_state(ck.conn, jax.tree.map(np.asarray, single.res.conn))


def test_inspect_summarises(single):
    text = inspect(single.path)
    for part in ("complete: True", "CA1/", "CA3/", "sorting=by_time", "[ms]",
                 "[g_leak]", "duration 600 ms", "checkpoint: step 6000", "seed 3"):
        assert part in text, part
    assert CONFIG.strip() in inspect(single.path, config=True)


def test_error_in_writer_thread_is_raised(tmp_path):
    w = writer(tmp_path / "e.h5")
    n = CHUNK
    w.on_chunk(n, {}, {"post": np.zeros((n, 20), bool), "input": np.zeros((n, 80), bool),
                       "count": np.zeros(n, np.int32)}, None)
    with pytest.raises(KeyError):
        w.close(complete=True)
    with h5py.File(tmp_path / "e.h5", "r") as f:
        assert not f.attrs["complete"]


def test_resume_truncates_to_last_checkpoint(single, tmp_path):
    path = tmp_path / "t.h5"
    # checkpoints after chunks 5 and 10 only: chunks 11-12 lie past the checkpoint
    run(path, checkpoint_every=5, keep_state=lambda step_end: step_end < 6000)
    assert load_checkpoint(path).step_end == 5000
    with h5py.File(path, "r") as f:
        assert f["readout/time"].shape == (60,)
    ResultsWriter(path, SPEC, PARAMS, OBS, None, config_toml=CONFIG, seed=SEED,
                  resume=True).close(complete=False)
    cut, full = datasets(path), datasets(single.path)
    assert cut["readout/time"].shape == (50,)
    assert cut["report/CA1/w/data"].shape == (50, 200)
    for pop in ("CA1", "CA3"):
        ts = full[f"spikes/{pop}/timestamps"]
        n = int(np.sum(ts < 500.0))
        assert 0 < n < len(ts)
        assert cut[f"spikes/{pop}/timestamps"].shape == (n,)
    for k, v in cut.items():
        if k.endswith("mapping/time"):
            np.testing.assert_allclose(v, [10.0, 510.0, 10.0])
        elif k.startswith(("readout/", "report/", "spikes/")) and v.ndim:
            np.testing.assert_array_equal(v, full[k][: len(v)], err_msg=k)
        else:
            np.testing.assert_array_equal(v, full[k], err_msg=k)
    with h5py.File(path, "r") as f:
        assert f.attrs["step_end"] == 5000 and f.attrs["records_written"] == 50
        assert not f.attrs["complete"]
    with pytest.raises(ValueError, match="seed"):
        ResultsWriter(path, SPEC, PARAMS, OBS, None, config_toml=CONFIG, seed=99,
                      resume=True)


def test_crash_inside_a_write_is_recoverable(single, tmp_path):
    path = tmp_path / "c.h5"
    shutil.copy(single.path, path)
    code = ("import os, signal, sys\n"
            "from ltpnet.io import _open_swmr_write\n"
            "f = _open_swmr_write(sys.argv[1])\n"
            "d = f['readout/time']\n"
            "d.resize(d.shape[0] + 5, axis=0)\n"
            "f.flush()\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with pytest.raises(OSError):
        h5py.File(path, "r")  # HDF5's "open for write" flags are still set
    with open_results(path) as f:  # SWMR read
        assert f["readout/time"].shape == (65,)
        np.testing.assert_array_equal(f["readout/time"][:60], single.res.t)
    assert recover(path) is True
    assert recover(path) is False
    with h5py.File(path, "r") as f:
        assert f["readout/time"].shape == (65,)
    shutil.copy(single.path, tmp_path / "c2.h5")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "c2.h5")], check=False)
    # resuming clears the flags itself and cuts the rows past the checkpoint
    ResultsWriter(tmp_path / "c2.h5", SPEC, PARAMS, OBS, None, config_toml=CONFIG,
                  seed=SEED, resume=True).close(complete=True)
    assert_same(datasets(tmp_path / "c2.h5"), datasets(single.path))


def _child(path, duration):
    """Run in a subprocess by the kill test: print the last step in the file per chunk."""
    w = writer(path)

    def on_chunk(*args):
        w.on_chunk(*args)
        print(w.step_end, flush=True)

    simulate(SPEC, PARAMS, duration, seed=SEED, protocol=PROTO, observe=OBS,
             records_per_chunk=RPC, on_chunk=on_chunk, checkpoint_every=1)
    w.close(complete=True)


def test_sigkill_then_resume_equals_unbroken_run(tmp_path):
    duration, total = 1500.0, 15000
    path, ref = tmp_path / "killed.h5", tmp_path / "ref.h5"
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import test_io; test_io._child({str(path)!r}, {duration})")
    delay = random.uniform(0.0, 0.05)
    with open(tmp_path / "child.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=err, text=True)
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if line.strip() not in ("", "None") and int(line) >= 2 * CHUNK:
                break  # two chunks and a checkpoint are in the file
            assert time.monotonic() < deadline, "child too slow"
        time.sleep(delay)  # then kill it wherever it is: computing or writing
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "child.err").read_text()

    with h5py.File(path, "r", swmr=True) as f:  # opens even if killed inside a write
        assert not f.attrs["complete"]
        assert f.attrs["records_written"] >= 2 * RPC
    ck = load_checkpoint(path)
    assert 2 * CHUNK <= ck.step_end < total, (ck.step_end, delay)
    assert ck.step_end % CHUNK == 0

    w = ResultsWriter(path, SPEC, PARAMS, OBS, None, config_toml=CONFIG, seed=ck.seed,
                      protocol=PROTO, resume=True)
    assert w.step_end == ck.step_end
    res = simulate(SPEC, PARAMS, (total - ck.step_end) * SPEC.dt, seed=ck.seed,
                   protocol=PROTO, observe=OBS, records_per_chunk=RPC, conn=ck.conn,
                   state=jax.tree.map(jnp.asarray, ck.state), step0=ck.step_end,
                   on_chunk=w.on_chunk, checkpoint_every=1)
    w.close(complete=True)
    unbroken = run(ref, duration)
    assert_same(datasets(path), datasets(ref))
    assert_same_state(load_checkpoint(path).state, load_checkpoint(ref).state)
    assert_same_state(res.state, unbroken.state)
    with h5py.File(path, "r") as f, h5py.File(ref, "r") as g:
        for k in ("complete", "step_start", "step_end", "records_written"):
            assert f.attrs[k] == g.attrs[k], k


def stack(chunks):
    """Chunks of several single runs -> one batched chunk (leading batch axis)."""
    return jax.tree.map(lambda *xs: np.stack(xs), *chunks)


def stack_chunk(chunks):
    step_end = chunks[0][0]
    assert all(c[0] == step_end for c in chunks)
    return (step_end,) + tuple(stack([c[i] for c in chunks]) for i in (1, 2, 3))


def test_batched_layout_and_resume(single, tmp_path):
    other = []
    simulate(SPEC, PARAMS, DURATION, seed=SEED + 1, protocol=PROTO, observe=OBS,
             records_per_chunk=RPC, on_chunk=lambda *a: other.append(a),
             checkpoint_every=1)
    members = [single.chunks, other]
    batched = [stack_chunk(cs) for cs in zip(*members, strict=True)]
    grid = {"plasticity.tau_rho": np.array([150_000.0, 150_000.0]),
            "input.rate": np.array([5.0, 5.0])}

    def feed(w, items, ckpt_at):
        for step_end, records, spikes, state in items:
            w.on_chunk(step_end, records, spikes, state if step_end in ckpt_at else None)

    one_go = tmp_path / "b_ref.h5"
    w = writer(one_go, n_batch=2, batch_grid=grid)
    feed(w, batched, {3000, 6000})
    w.close(complete=True)

    with h5py.File(one_go, "r") as f:
        assert f.attrs["n_batch"] == 2
        assert f["grid/plasticity.tau_rho"].attrs["units"] == "ms"
        assert f["grid/input.rate"].attrs["units"] == "Hz"
        np.testing.assert_array_equal(f["grid/input.rate"], [5.0, 5.0])
        assert f["readout/time"].shape == (2, 60)
        assert f["report/CA1/w/data"].shape == (2, 60, 200)
        assert f["readout/fepsp/S1"].attrs["baseline"].shape == (2,)
        for b, chunks in enumerate(members):
            rec = {k: np.concatenate([c[1][k] for c in chunks]) for k in OBS.variables}
            np.testing.assert_array_equal(f["report/CA1/a/data"][b], rec["a"])
            np.testing.assert_array_equal(f["readout/fepsp/S2"][b], rec["fepsp"][:, 1])
            for pop, key in (("CA1", "post"), ("CA3", "input")):
                g = f[f"spikes/{pop}"]
                n = int(g["n_spikes"][b])
                want = np.concatenate([c[2][key] for c in chunks])
                got = raster(g["timestamps"][b, :n], g["node_ids"][b, :n], want.shape,
                             SPEC.dt)
                np.testing.assert_array_equal(got, want)
                assert np.all(np.isnan(g["timestamps"][b, n:]))
        assert f["spikes/CA1/n_spikes"][0] != f["spikes/CA1/n_spikes"][1]
    ck = load_checkpoint(one_go)
    assert_same_state(ck.state, stack([single.chunks[-1][3], other[-1][3]]))

    # written up to chunk 9 with a checkpoint after chunk 6, resumed there
    path = tmp_path / "b.h5"
    w = writer(path, n_batch=2, batch_grid=grid)
    feed(w, batched[:9], {3000})
    w.close(complete=False)
    w = writer(path, n_batch=2, batch_grid=grid, resume=True)
    assert w.step_end == 3000
    with h5py.File(path, "r") as f:
        assert f["readout/time"].shape == (2, 30)
        assert f["spikes/CA3/timestamps"].shape[1] == f["spikes/CA3/n_spikes"][()].max()
    feed(w, batched[6:], {6000})
    w.close(complete=True)
    assert_same(datasets(path), datasets(one_go))


def test_resume_refuses_a_checkpoint_of_another_state(single, tmp_path):
    """A file whose checkpoints hold other state leaves than this version's state is
    refused before anything is cut, naming the leaves; one written with the one-stage
    early phase (rho_ref without rho_lag) is named as such, also by load_checkpoint."""
    path = tmp_path / "s.h5"
    shutil.copy(single.path, path)
    assert SPEC.phases
    with h5py.File(path, "r+") as f:  # as written by the one-stage early phase
        for s in ("slot0", "slot1"):
            del f[f"checkpoint/{s}/syn/rho_lag"]
    before = datasets(path)
    with pytest.raises(ValueError, match=r"cannot resume .*syn/rho_ref.*no syn/rho_lag"):
        writer(path, resume=True)
    assert_same(datasets(path), before)
    with pytest.raises(ValueError, match="cannot load the checkpoint .*two stages"):
        load_checkpoint(path)
    with h5py.File(path, "r+") as f:
        for s in ("slot0", "slot1"):
            f.create_dataset(f"checkpoint/{s}/syn/rho_lag",
                             data=f[f"checkpoint/{s}/syn/rho_ref"][()])
            del f[f"checkpoint/{s}/post/a"]
    with pytest.raises(ValueError, match=r"do not hold the state .*missing \['post/a'\], extra \[\]"):
        writer(path, resume=True)
