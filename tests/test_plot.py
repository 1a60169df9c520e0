"""Figures of results files."""

import os

import jax
import numpy as np
import pytest

from ltpnet import ModelSpec, Observe, Params, Protocol, simulate
from ltpnet.io import ResultsWriter
from ltpnet.plot import _time_unit, plot_file

SPEC = ModelSpec(n_post=20, k=10, pathways=(("S1", 20), ("S2", 20), ("bg", 40)),
                 calcium="linear", ca_delay_steps=5, n_inh=5, k_inh=10, k_ie=3)
PARAMS = Params.bench_v1(10)
OBS = Observe(every=100, variables=("fepsp", "r", "a", "w_mean", "c_mean", "w"),
              spike_neurons=20, input_neurons=80)
PROTO = Protocol().tetanus("S1", at=150.0, n=10)
ALL = ("raster", "rate", "fepsp", "calcium", "weights", "scaling")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plot") / "run.h5"
    chunks = []
    w = ResultsWriter(path, SPEC, PARAMS, OBS, None, config_toml="", seed=3,
                      protocol=PROTO)

    def on_chunk(*args):
        chunks.append(args)
        w.on_chunk(*args)

    simulate(SPEC, PARAMS, 600.0, seed=3, protocol=PROTO, observe=OBS,
             records_per_chunk=5, on_chunk=on_chunk, checkpoint_every=1)
    w.close(complete=True)
    return path, chunks


def check_pngs(paths, stem, names):
    assert [os.path.basename(p) for p in paths] == [f"{stem}_{n}.png" for n in names]
    for p in paths:
        with open(p, "rb") as fh:
            head = fh.read(8)
        assert head == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(p) > 5000, p


def test_plot_file_draws_every_figure(run_file, tmp_path):
    paths = plot_file(run_file[0], tmp_path / "figs")
    check_pngs(paths, "run", ALL)


def test_plot_batched_file(run_file, tmp_path):
    path = tmp_path / "batch.h5"
    w = ResultsWriter(path, SPEC, PARAMS, OBS, None, config_toml="", seed=3,
                      protocol=PROTO, n_batch=3)
    for step_end, rec, spikes, state in run_file[1]:
        w.on_chunk(step_end, *(jax.tree.map(lambda x: np.stack([x] * 3), t)
                               for t in (rec, spikes, state)))
    w.close(complete=True)
    check_pngs(plot_file(path, tmp_path), "batch", ALL)


def test_plot_skips_absent_data(tmp_path):
    obs = Observe(every=100, variables=("fepsp",))
    path = tmp_path / "lean.h5"
    w = ResultsWriter(path, SPEC, PARAMS, obs, None, config_toml="", seed=0)
    rng = np.random.default_rng(0)
    for i in range(1, 4):
        n = 500
        w.on_chunk(i * n, {"fepsp": 10 + rng.random((5, 3), np.float32)},
                   {"post": np.zeros((n, 0), bool), "input": np.zeros((n, 0), bool),
                    "count": rng.integers(0, 3, n).astype(np.int32)}, None)
    w.close(complete=False)
    check_pngs(plot_file(path, tmp_path), "lean", ("rate", "fepsp"))


def test_time_axis_units():
    assert _time_unit(1_500.0) == (1.0, "time (ms)")
    assert _time_unit(30_000.0)[1] == "time (s)"
    assert _time_unit(600_000.0)[1] == "time (min)"
    assert _time_unit(10 * 3_600_000.0) == (3_600_000.0, "time (h)")
