"""The `ltpnet` command: run, resume, sweep, inspect, plot, fit, and its failure modes.

Every run uses one tiny network (8 neurons, 400 ms) with the same spec, recording plan
and chunking, so the compiled chunk is shared by the tests of this module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

import ltpnet.run
from ltpnet.cli import estimate_memory, main
from ltpnet.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

TINY = textwrap.dedent("""
    [spec]
    n_post = 8
    k = 20
    pathways = { S1 = 20, S2 = 20, bg = 40 }
    phases = false
    rho_init = "uniform"

    [input]
    rate = 5.0

    [plasticity]
    tau_rho = "2 s"

    [[protocol.tetanus]]
    pathway = "S1"
    at = 50
    n = 20

    [[protocol.test_pulses]]
    pathway = "S2"
    start = 10
    stop = 400
    every = 50

    [run]
    duration_ms = 400
    seed = 3
    records_per_chunk = 10
    checkpoint_every = 1

    [record]
    every_ms = 10
    variables = ["fepsp", "r", "w_mean"]
    spike_neurons = 4

    [output]
    plots = false
""")
CHUNK_STEPS = 1000  # records_per_chunk * every


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory) -> Path:
    """Output directory of one complete run of the tiny config."""
    out = tmp_path_factory.mktemp("runs") / "full"
    assert main(["run", str(tiny), "-o", str(out)]) == 0
    return out


def readout(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        out = {}
        f["readout"].visititems(lambda name, obj: out.setdefault(name, obj[()])
                                if isinstance(obj, h5py.Dataset) else None)
        for pop in f.get("spikes", {}):
            out[f"spikes/{pop}"] = f[f"spikes/{pop}/timestamps"][()]
        return out


# --------------------------------------------------------------------- config errors

def test_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[neuron]\ntau_mm = 10\n")
    out = tmp_path / "out"
    assert main(["run", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ConfigError: unknown key 'tau_mm' in [neuron]; did you mean 'tau_m'?" in err
    assert not out.exists()


def test_bad_override_exits_2(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(tiny), "-o", str(out), "--set",
                 "plasticity.theta_p=0.5"]) == 2
    assert "[plasticity] theta_p must exceed theta_d" in capsys.readouterr().err
    assert not out.exists()


def test_bad_config_in_a_subprocess_has_no_traceback(tmp_path):
    out = tmp_path / "out"
    code = "import sys; from ltpnet.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", str(tmp_path / "missing.toml"), "-o",
         str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "ConfigError: config file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_run_that_does_not_fit_in_memory_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    # 8e10 synapses: terabytes, more than any machine has
    rc = main(["run", str(tiny), "-o", str(out), "--set", "spec.n_post=1000000000",
               "--set", "spec.k=80"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "this run needs about" in err and "available" in err
    assert not out.exists()


@pytest.mark.parametrize("changes", [
    [],  # phases, scaling, NMDA calcium
    ["spec.phases=false", "spec.n_inh=10", "spec.k_inh=20", "spec.k_ie=3",
     'spec.calcium="linear"', "spec.ca_delay_steps=5"],  # interneurons, delay line
])
def test_memory_estimate_counts_the_state_that_is_built(changes):
    """The state part of the estimate is the bytes of every array of a built state."""
    cfg = load_config(ROOT / "configs" / "default.toml", changes)
    _, state = ltpnet.build(cfg.spec, cfg.params, 0)
    built = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state))
    assert estimate_memory(cfg)["state"] == built


def test_existing_results_are_not_overwritten(finished, tiny, capsys):
    assert main(["run", str(tiny), "-o", str(finished)]) == 2
    assert "already exists" in capsys.readouterr().err


# --------------------------------------------------------------------- run

def test_run_writes_results_config_and_summary(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny), "-o", str(out), "--seed", "5"]) == 0
    cap = capsys.readouterr()
    assert (out / "results.h5").is_file()
    resolved = load_config(out / "config.toml")
    assert resolved == load_config(tiny, ["run.seed=5", f'output.dir="{out}"'])
    assert "mean rate" in cap.out and "fEPSP change S1" in cap.out
    assert f"wrote {out / 'results.h5'}" in cap.out
    assert "synapse-steps/s" in cap.err and "left" in cap.err  # progress
    with h5py.File(out / "results.h5", "r") as f:
        assert f.attrs["complete"]
        assert int(f.attrs["seed"]) == 5
        assert f["readout/fepsp/S1"].shape == (40,)


def test_inspect_prints(finished, capsys):
    assert main(["inspect", str(finished / "results.h5")]) == 0
    text = capsys.readouterr().out
    assert "complete: True" in text
    assert "fepsp" in text


def test_inspect_missing_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "none.h5")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_plot_writes_pngs(finished, tmp_path, capsys):
    figs = tmp_path / "figs"
    assert main(["plot", str(finished / "results.h5"), "-o", str(figs)]) == 0
    pngs = sorted(figs.glob("*.png"))
    assert pngs
    assert str(pngs[0]) in capsys.readouterr().out


def test_nan_stops_the_run_with_exit_3(tiny, tmp_path, monkeypatch, capsys):
    real = ltpnet.run.run_chunk

    def poisoned(spec, obs, n_records, params, conn, state, drive, key, step0):
        state, records, spikes = real(spec, obs, n_records, params, conn, state, drive,
                                      key, step0)
        if int(step0) == CHUNK_STEPS:  # the second chunk: record 3 of neuron 0
            records = dict(records, r=records["r"].at[3, 0].set(jnp.nan))
        return state, records, spikes

    monkeypatch.setattr(ltpnet.run, "run_chunk", poisoned)
    out = tmp_path / "nan"
    assert main(["run", str(tiny), "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert "NaN or Inf in record 'r' at step 1400 (t = 140 ms)" in err
    assert f"last good checkpoint is at step 1000 (t = 100 ms) in {out}" in err
    with h5py.File(out / "results.h5", "r") as f:
        assert not f.attrs["complete"]
        assert int(f["checkpoint"].attrs["step_end"]) == CHUNK_STEPS


def test_resume_equals_an_uninterrupted_run(finished, tiny, tmp_path, monkeypatch,
                                            capsys):
    import ltpnet.io

    real = ltpnet.io.ResultsWriter.on_chunk
    calls = []

    def interrupt(self, step_end, records, spikes, state):
        calls.append(step_end)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, step_end, records, spikes, state)

    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        m.setattr(ltpnet.io.ResultsWriter, "on_chunk", interrupt)
        assert main(["run", str(tiny), "-o", str(out)]) == 130
    assert f"ltpnet run --resume {out}" in capsys.readouterr().err
    with h5py.File(out / "results.h5", "r") as f:
        assert not f.attrs["complete"]
        assert int(f.attrs["step_end"]) == 2 * CHUNK_STEPS

    assert main(["run", "--resume", str(out)]) == 0
    assert "resuming from step 2000" in capsys.readouterr().err
    a, b = readout(finished / "results.h5"), readout(out / "results.h5")
    assert a.keys() == b.keys() and "fepsp/S1" in a and "spikes/CA1" in a
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, err_msg=k)
    with h5py.File(out / "results.h5", "r") as f:
        assert f.attrs["complete"]


def test_resume_refuses_other_arguments(finished, capsys):
    assert main(["run", "--resume", str(finished), "--seed", "1"]) == 2
    assert "drop --seed" in capsys.readouterr().err


def test_resume_of_a_finished_run_does_nothing(finished, capsys):
    before = (finished / "results.h5").stat().st_mtime_ns
    assert main(["run", "--resume", str(finished)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert (finished / "results.h5").stat().st_mtime_ns == before


def test_resume_refuses_an_edited_config(finished, tmp_path, capsys):
    import shutil

    out = tmp_path / "edited"
    shutil.copytree(finished, out)
    text = (out / "config.toml").read_text()
    edited = re.sub(r"(?m)^theta_p = .*$", "theta_p = 4.321", text)
    assert edited != text
    (out / "config.toml").write_text(edited)
    assert main(["run", "--resume", str(out)]) == 2
    assert "differs from the config stored in" in capsys.readouterr().err


# --------------------------------------------------------------------- sweep

def test_sweep_equals_separate_runs(tiny, tmp_path, capsys):
    values = ("1.2", "1.6")
    sweep = tmp_path / "sweep"
    assert main(["sweep", str(tiny), "--grid", "plasticity.theta_p=" + ",".join(values),
                 "-o", str(sweep)]) == 0
    cap = capsys.readouterr()
    assert "one vmapped batch" in cap.err
    assert "plasticity.theta_p=1.2: mean rate" in cap.out
    with h5py.File(sweep / "results.h5", "r") as f:
        batched = {p: f[f"readout/fepsp/{p}"][()] for p in ("S1", "S2", "bg")}
        np.testing.assert_array_equal(f["grid/plasticity.theta_p"][()], [1.2, 1.6])
    singles = []
    for b, v in enumerate(values):
        out = tmp_path / f"single{b}"
        assert main(["run", str(tiny), "-o", str(out), "--set",
                     f"plasticity.theta_p={v}"]) == 0
        with h5py.File(out / "results.h5", "r") as f:
            single = {p: f[f"readout/fepsp/{p}"][()] for p in batched}
        for p in batched:
            assert batched[p].shape == (2,) + single[p].shape
            np.testing.assert_allclose(batched[p][b], single[p], rtol=1e-5, err_msg=p)
        singles.append(single["S1"])
    # the grid value matters in this run, so the comparison above means something
    assert not np.allclose(singles[0], singles[1], rtol=1e-3)


def test_run_and_sweep_name_the_values_kept_over_a_params_file(tiny, tmp_path,
                                                                capsys):
    """A params file stands in for the defaults; what the config sets itself holds,
    and both commands say which keys, once, before the run."""
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"params": {"plasticity.tau_rho": 3000.0,
                                          "plasticity.theta_p": 1.5}}))
    note = ("note: the config's own values hold over the params file for "
            "plasticity.tau_rho (--set overrides both)")
    assert main(["run", str(tiny), "--params", str(fit), "-o",
                 str(tmp_path / "run")]) == 0
    assert capsys.readouterr().err.count(note) == 1
    assert main(["sweep", str(tiny), "--params", str(fit), "--grid",
                 "plasticity.gamma_d=100,200", "-o", str(tmp_path / "sweep")]) == 0
    assert capsys.readouterr().err.count(note) == 1
    assert main(["run", str(tiny), "-o", str(tmp_path / "plain")]) == 0
    assert "hold over the params file" not in capsys.readouterr().err


def test_sweep_of_a_spec_key_runs_members_one_by_one(tiny, tmp_path, capsys):
    out = tmp_path / "seq"
    rc = main(["sweep", str(tiny), "--grid", "spec.beta_down=0.2,0.8",
               "--set", "run.duration_ms=100", "--set", 'spec.rho_init="bimodal"',
               "-o", str(out)])
    assert rc == 0
    assert "run one after another" in capsys.readouterr().err
    with h5py.File(out / "results.h5", "r") as f:
        s1 = f["readout/fepsp/S1"][()]
        assert s1.shape == (2, 10)
        assert s1[0, 0] > s1[1, 0]  # fewer synapses DOWN: a larger fEPSP


def test_sweep_of_a_shape_changing_key_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["sweep", str(tiny), "--grid", "spec.n_post=4,8", "-o", str(out)]) == 2
    assert "changes the shapes or length" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("grid, msg", [
    ("plasticity.theta_p", "bad --grid"),
    ("plasticity.theta_p=1.2,,1.4", "empty value"),
    ("plasticity.theta_pp=1.2,1.4", "did you mean 'theta_p'"),
    ("plasticity.theta_p=1.2,0.5", "sweep member plasticity.theta_p=0.5"),
])
def test_bad_grid(tiny, tmp_path, capsys, grid, msg):
    assert main(["sweep", str(tiny), "--grid", grid, "-o", str(tmp_path / "g")]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


# --------------------------------------------------------------------- fit

def test_fit_calls_fit_command(tmp_path, monkeypatch):
    import ltpnet.fit

    seen = []
    monkeypatch.setattr(ltpnet.fit, "fit_command",
                        lambda *a: seen.append(a) or 7, raising=False)
    cfg = tmp_path / "fit.toml"
    cfg.write_text("")
    assert main(["fit", str(cfg), "-o", str(tmp_path / "o"), "--set", "a.b=1"]) == 7
    assert seen == [(str(cfg), str(tmp_path / "o"), ["a.b=1"])]


def test_usage_errors_return_2(capsys):
    assert main([]) == 2
    assert main(["run", "--bogus"]) == 2
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out
