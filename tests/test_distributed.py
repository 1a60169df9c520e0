"""Runs split over devices (and over processes) equal one-device runs.

The multi-device checks run in subprocesses: XLA_FLAGS (which splits the host CPU
into 4 devices) must be set before JAX starts, and the rest of the suite keeps its
single device. Tolerance: spikes must be identical, recorded floats equal within
float32 rounding (sums over the population are added in a different order when the
neurons are split, so fEPSP proxies may differ in the last bits).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

from ltpnet.distributed import (
    DistributedConfig,
    distributed_config,
    initialize_from_env,
)

RTOL = 1e-5  # float32 rounding of population sums

# Helpers shared by the subprocess scripts.
COMMON = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    import ltpnet as lt

    def close(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        scale = max(np.abs(a).max(initial=0.0), 1e-30)
        return float(np.max(np.abs(a - b), initial=0.0) / scale)

    def compare(r1, rn):
        return {"records": {k: close(r1.records[k], rn.records[k]) for k in r1.records},
                "post_equal": bool(np.array_equal(r1.post_spikes, rn.post_spikes)),
                "input_equal": bool(np.array_equal(r1.input_spikes, rn.input_spikes)),
                "count_equal": bool(np.array_equal(r1.spike_count, rn.spike_count)),
                "n_spikes": int(np.sum(r1.spike_count))}
""")


def _env(n_devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LTPNET_")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}",
               JAX_PLATFORMS="cpu", **extra)
    return env


def _python(*code: str, n_devices: int = 4, timeout: float = 120, **env) -> dict:
    """Run the pieces of `code` in a fresh interpreter with `n_devices` CPU devices;
    parse the last stdout line as JSON."""
    src = COMMON + "".join(textwrap.dedent(c) for c in code)
    p = subprocess.run([sys.executable, "-c", src],
                       env=_env(n_devices, **env), cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _assert_equivalent(cmp: dict, min_spikes: int = 10):
    assert cmp["n_spikes"] >= min_spikes, "too few spikes for a meaningful comparison"
    assert cmp["post_equal"] and cmp["input_equal"] and cmp["count_equal"], cmp
    for name, d in cmp["records"].items():
        assert d <= RTOL, f"record {name!r}: relative difference {d:.2e}"


@pytest.fixture(scope="module")
def four_devices() -> dict:
    """One subprocess with 4 CPU devices: single runs, a batch, shard shapes, errors."""
    return _python("""
        from ltpnet.distributed import shard_counts
        out = {}

        # phases on, switch noise, feed-forward inhibition, per-neuron params, slow
        # clock
        spec = lt.ModelSpec(n_post=32, k=40, pathways=(("S1", 40), ("S2", 40),
                            ("bg", 120)), slow_every=10, n_inh=8, k_inh=30, k_ie=4,
                            switch_noise=True)
        r_target = 2.0 + np.arange(spec.n_post) % 3  # one value per neuron
        params = (lt.Params().with_values("input", rate=8.0)
                  .with_values("homeostasis", r_target=r_target, tau_a=5_000.0)
                  .with_values("consolidation", tau_e=2_000.0, tau_z=2_000.0,
                               tau_p_syn=500.0, theta_pro=0.002))
        prot = lt.Protocol().tetanus("S1", at=60, n=30).test_pulses("S2", 10, 400, 100)
        obs = lt.Observe(every=100, variables=("fepsp", "r", "a", "p", "w_mean", "rho",
                         "z", "c_mean"), spike_neurons=32, input_neurons=50)
        kw = dict(seed=5, protocol=prot, observe=obs, records_per_chunk=2)
        r1 = lt.simulate(spec, params, 400, **kw)
        r4 = lt.simulate(spec, params, 400, devices=4, **kw)
        out["phases"] = compare(r1, r4)
        shards = shard_counts(r4.state)
        out["shards"] = {k: list(v) for k, v in shards.items()}

        # bench-v1 settings (uniform rho, no phases, scaling every step)
        spec = lt.ModelSpec(n_post=64, k=50, pathways=(("input", 200),), phases=False,
                            rho_init="uniform", slow_every=1)
        params = lt.Params.bench_v1(spec.k)
        obs = lt.Observe(every=100, variables=("r", "a", "rho_mean", "fepsp"),
                         spike_neurons=64)
        kw = dict(seed=0, observe=obs, records_per_chunk=3)
        out["bench"] = compare(lt.simulate(spec, params, 300, **kw),
                               lt.simulate(spec, params, 300, devices=4, **kw))

        # a batch of 4 parameter sets x noise seeds, split along the batch axis
        spec = lt.ModelSpec(n_post=12, k=30, pathways=(("S1", 30), ("S2", 30),
                            ("bg", 60)), phases=False, rho_init="uniform")
        base = lt.Params.bench_v1(spec.k).with_values("input", rate=10.0)
        params = base.with_values("plasticity",
                                  theta_p=np.array([1.2, 1.3, 1.4, 1.5]))
        axes = jax.tree_util.tree_map(lambda _: None, base)
        axes = axes.replace(plasticity=axes.plasticity.replace(theta_p=0))
        kw = dict(seed=1, observe=lt.Observe(every=100, variables=("fepsp", "a", "r"),
                  spike_neurons=12), records_per_chunk=2,
                  protocol=lt.Protocol().tetanus("S1", at=50, n=20),
                  batch=4, params_axes=axes, noise_seeds=[1, 2, 3, 4])
        rb4 = lt.simulate(spec, params, 400, devices=4, **kw)
        out["batch"] = compare(lt.simulate(spec, params, 400, **kw), rb4)
        out["batch_shard"] = list(rb4.state.syn.rho.sharding.shard_shape(
            rb4.state.syn.rho.shape))

        # what cannot be split says so
        errs = {}
        for name, call in [
            ("indivisible", lambda: lt.simulate(lt.ModelSpec(n_post=10), lt.Params(),
                                                1.0, devices=4)),
            ("too_many", lambda: lt.simulate(lt.ModelSpec(n_post=8), lt.Params(), 1.0,
                                             devices=5)),
            ("batch", lambda: lt.simulate(lt.ModelSpec(n_post=8), lt.Params(), 1.0,
                                          devices=4, batch=3)),
        ]:
            try:
                call()
                errs[name] = None
            except ValueError as e:
                errs[name] = str(e)
        out["errors"] = errs
        print(json.dumps(out))
    """)


def test_post_axis_phases_on_equals_one_device(four_devices):
    _assert_equivalent(four_devices["phases"])


def test_post_axis_bench_v1_equals_one_device(four_devices):
    _assert_equivalent(four_devices["bench"])


def test_batch_axis_equals_one_device(four_devices):
    _assert_equivalent(four_devices["batch"])
    assert four_devices["batch_shard"] == [1, 12, 30]  # one member per device


def test_state_is_split_along_the_post_axis(four_devices):
    sh = four_devices["shards"]
    assert sh["syn.rho"] == [8, 40] and sh["syn.z"] == [8, 40]
    assert sh["post.v"] == [8] and sh["post.p"] == [8]
    assert sh["pre.s"] == [200]  # inputs are replicated
    assert sh["inh.v"] == [8]  # interneurons too (n_inh = 8, all on every device)


def test_unsplittable_runs_are_refused_clearly(four_devices):
    e = four_devices["errors"]
    assert "n_post=10 does not split evenly over 4 devices" in e["indivisible"]
    assert "[1, 2]" in e["indivisible"]
    assert "devices=5 but JAX sees 4 cpu device(s)" in e["too_many"]
    assert "xla_force_host_platform_device_count=5" in e["too_many"]
    assert "batch=3 does not split evenly over 4 devices" in e["batch"]


TINY = """
[spec]
n_post = 8
k = 20
pathways = { S1 = 20, S2 = 20, bg = 40 }
phases = false
rho_init = "uniform"

[input]
rate = 5.0

[[protocol.tetanus]]
pathway = "S1"
at = 50
n = 20

[run]
duration_ms = 300
seed = 3
records_per_chunk = 10

[record]
every_ms = 10
variables = ["fepsp", "r", "w_mean"]
spike_neurons = 8

[output]
plots = false
"""

COMPARE_H5 = """
import h5py

def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()])
                     if isinstance(o, h5py.Dataset) else None)
    return out

def compare_h5(a, b):
    a, b = datasets(a), datasets(b)
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    worst = 0.0
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.dtype.kind == "f":
            worst = max(worst, close(x, y))
        else:
            assert np.array_equal(x, y), k
    return worst
"""


def test_cli_devices_flag(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = _python(COMPARE_H5, f"""
        from ltpnet.cli import main
        d = {str(tmp_path)!r}
        res = {{}}
        res["rc"] = [main(["run", {str(cfg)!r}, "-o", d + "/one"]),
                     main(["run", {str(cfg)!r}, "-o", d + "/four", "--devices", "4"]),
                     main(["sweep", {str(cfg)!r}, "-o", d + "/s1", "--trials", "4"]),
                     main(["sweep", {str(cfg)!r}, "-o", d + "/s4", "--trials", "4",
                           "--devices", "4"])]
        res["run"] = compare_h5(d + "/one/results.h5", d + "/four/results.h5")
        res["sweep"] = compare_h5(d + "/s1/results.h5", d + "/s4/results.h5")
        res["bad"] = main(["run", {str(cfg)!r}, "-o", d + "/bad", "--devices", "3"])
        print(json.dumps(res))
    """)
    assert out["rc"] == [0, 0, 0, 0]
    assert out["run"] <= RTOL and out["sweep"] <= RTOL
    assert out["bad"] == 2
    assert not (tmp_path / "bad" / "results.h5").exists()


# --------------------------------------------------------------------------- start-up

def test_no_variables_means_one_process():
    assert distributed_config(env={}) is None
    assert initialize_from_env(env={}, _initialize=pytest.fail) is None


def test_environment_is_read():
    env = {"LTPNET_COORDINATOR": "10.0.0.1:1234", "LTPNET_NUM_PROCESSES": "4",
           "LTPNET_PROCESS_ID": "2", "LTPNET_LOCAL_DEVICE_IDS": "0,1"}
    assert distributed_config(env=env) == DistributedConfig("10.0.0.1:1234", 4, 2,
                                                            (0, 1))


def test_flags_win_over_environment():
    env = {"LTPNET_COORDINATOR": "10.0.0.1:1234", "LTPNET_NUM_PROCESSES": "4",
           "LTPNET_PROCESS_ID": "2"}
    cfg = distributed_config("head:99", 2, "1", env=env)
    assert cfg == DistributedConfig("head:99", 2, 1, None)


@pytest.mark.parametrize("env, missing", [
    ({"LTPNET_COORDINATOR": "h:1"}, ["LTPNET_NUM_PROCESSES (or --num-processes)",
                                     "LTPNET_PROCESS_ID (or --process-id)"]),
    ({"LTPNET_NUM_PROCESSES": "2", "LTPNET_PROCESS_ID": "0"},
     ["LTPNET_COORDINATOR (or --coordinator)"]),
])
def test_missing_variables_are_named(env, missing):
    with pytest.raises(ValueError) as e:
        distributed_config(env=env)
    for m in missing:
        assert m in str(e.value)


@pytest.mark.parametrize("args, text", [
    (("nohost", 2, 0), "must be host:port"),
    (("h:99999", 2, 0), "must be host:port"),
    (("h:1", "two", 0), "LTPNET_NUM_PROCESSES (--num-processes) must be an integer"),
    (("h:1", 0, 0), "must be >= 1"),
    (("h:1", 2, 2), "LTPNET_PROCESS_ID (--process-id) must be in 0..1"),
])
def test_bad_values_are_refused(args, text):
    with pytest.raises(ValueError) as e:
        distributed_config(*args, env={})
    assert text in str(e.value)


def test_initialize_gets_the_resolved_arguments():
    calls = []
    cfg = initialize_from_env(env={"LTPNET_COORDINATOR": "127.0.0.1:5000",
                                   "LTPNET_NUM_PROCESSES": "3",
                                   "LTPNET_PROCESS_ID": "1"},
                              timeout_s=7, _initialize=lambda **kw: calls.append(kw))
    assert cfg.process_id == 1
    assert calls == [dict(coordinator_address="127.0.0.1:5000", num_processes=3,
                          process_id=1, local_device_ids=None,
                          initialization_timeout=7)]


def test_cli_reports_incomplete_startup(capsys, monkeypatch):
    from ltpnet.cli import main

    for var in ("LTPNET_NUM_PROCESSES", "LTPNET_PROCESS_ID", "LTPNET_COORDINATOR"):
        monkeypatch.delenv(var, raising=False)

    rc = main(["run", "nonexistent.toml", "--coordinator", "127.0.0.1:1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "LTPNET_NUM_PROCESSES (or --num-processes)" in err


WORKER = COMPARE_H5 + """
import os
from ltpnet.distributed import initialize_from_env, is_main_process
initialize_from_env(timeout_s=30)
print("started", flush=True)
out = {"process": jax.process_index(), "global": jax.device_count(),
       "local": jax.local_device_count(), "main": is_main_process()}
spec = lt.ModelSpec(n_post=16, k=20, pathways=(("S1", 20), ("S2", 20), ("bg", 40)),
                    slow_every=10)
# strong synapses, so that the cells fire (the comparison needs spikes)
params = (lt.Params().with_values("input", rate=20.0)
          .with_values("plasticity", w_max=0.2))
kw = dict(seed=3, protocol=lt.Protocol().tetanus("S1", at=50, n=20),
          observe=lt.Observe(every=100, variables=("fepsp", "r", "a", "rho"),
                             spike_neurons=16),
          records_per_chunk=2)
states = []
rn = lt.simulate(spec, params, 150, devices=jax.device_count(), checkpoint_every=1,
                 on_chunk=lambda s, r, sp, st: states.append(st), **kw)
r1 = lt.simulate(spec, params, 150, **kw)  # this process's first device alone
out["api"] = compare(r1, rn)
out["state_gathered"] = bool(np.array_equal(np.asarray(states[-1].syn.rho),
                                            np.asarray(r1.state.syn.rho)))
from ltpnet.cli import main
d = sys.argv[1]
short = ["--set", "run.duration_ms=100"]
out["rc"] = [main(["run", d + "/tiny.toml", "-o", d + "/multi", "--devices", "4",
                   *short]),
             # without --devices each process runs alone on its first device
             main(["run", d + "/tiny.toml", "-o", d + "/single", *short])]
if is_main_process():
    out["h5"] = compare_h5(d + "/single/results.h5", d + "/multi/results.h5")
print(json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost(tmp_path):
    """Two processes x 2 CPU devices, one coordinator on 127.0.0.1: the 4-device run
    equals a one-device run, and only process 0 writes the results file."""
    (tmp_path / "tiny.toml").write_text(TINY)
    port = _free_port()
    procs = []
    for pid in range(2):
        env = _env(2, LTPNET_COORDINATOR=f"127.0.0.1:{port}", LTPNET_NUM_PROCESSES="2",
                   LTPNET_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", COMMON + WORKER, str(tmp_path)], env=env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=90))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        outs = [p.communicate() for p in procs]
        if not all("started" in o for o, _ in outs):
            pytest.skip("jax.distributed could not start two local processes here")
        raise AssertionError("two-process run timed out:\n"
                             + outs[0][1][-3000:]) from None
    if not all("started" in o for o, _ in outs):
        pytest.skip("jax.distributed could not start two local processes here: "
                    + outs[0][1][-500:])
    for p, (_, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e[-4000:]
    res = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert [r["process"] for r in res] == [0, 1]
    assert [r["main"] for r in res] == [True, False]
    assert all(r["global"] == 4 and r["local"] == 2 for r in res)
    for r in res:
        _assert_equivalent(r["api"], min_spikes=1)
        assert r["state_gathered"]
        assert r["rc"] == [0, 0]
    # the file process 0 wrote equals a run on one device
    assert res[0]["h5"] <= RTOL
