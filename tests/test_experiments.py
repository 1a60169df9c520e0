"""The canonical experiments: the framework, the time line, and every --quick version."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import experiments as ex
import ltpnet as lt
from experiments import _common as cm

# --------------------------------------------------------------------------- engine


def _pulse_calcium(dt, calcium_step):
    """Calcium of one synapse after one presynaptic pulse at rest, float64."""
    spec = lt.ModelSpec(n_post=1, k=1, pathways=(("S1", 1),), dt=dt, dtype="float64",
                        phases=False, homeostasis=False, calcium_step=calcium_step)
    p = (lt.Params().with_values("input", rate=0.0)  # no EPSP: B stays at rest
         .with_values("plasticity", w_min=0.0, w_max=1e-12))
    obs = lt.Observe(every=1, variables=("c",))
    res = lt.simulate(spec, p, 200.0, protocol=lt.Protocol().add_pulses("S1", [0.0]),
                      observe=obs)
    return res.t - dt, res.records["c"][:, 0, 0], p


def _reference_calcium(t, p, B):
    """c(t) = alpha B tau_C tau_N/(tau_N - tau_C) (e^{-t/tau_N} - e^{-t/tau_C})."""
    a = p.calcium.alpha_N / 1000.0
    tn, tc = p.input.tau_N, p.calcium.tau_Ca
    return a * B * tn * tc / (tn - tc) * (np.exp(-t / tn) - np.exp(-t / tc))


@pytest.mark.parametrize("dt", [0.2, 1.0, 5.0])
def test_exponential_calcium_step_is_exact_at_any_dt(dt, x64):
    t, c, p = _pulse_calcium(dt, "exponential")
    B = 1.0 / (1.0 + (p.calcium.Mg / 3.57) * np.exp(-0.062 * p.neuron.E_L))
    # the pulse arrives at the start of step 0; record i is the end of step i
    ref = _reference_calcium(t + dt, p, B)
    np.testing.assert_allclose(c, ref, rtol=1e-9, atol=1e-12)


def test_euler_calcium_peak_grows_with_dt(x64):
    peaks = [_pulse_calcium(dt, "euler")[1].max() for dt in (0.2, 5.0)]
    exact = _pulse_calcium(5.0, "exponential")[1].max()
    assert peaks[1] > 1.1 * peaks[0]
    assert abs(peaks[0] / exact - 1) < 0.02


def test_bad_calcium_step_is_named():
    with pytest.raises(ValueError, match=r"calcium_step must be one of \['euler', "
                                         r"'exponential'\], got calcium_step='rk4'"):
        lt.ModelSpec(calcium_step="rk4").check()


def _busy_spec():
    return lt.ModelSpec(n_post=6, k=40, pathways=(("S1", 30), ("bg", 100)), dt=0.2,
                        slow_every=5, rng="hash")


def test_protocol_per_member_equals_separate_runs():
    spec = _busy_spec()
    # strong S1 synapses, so that the 100 Hz train makes the cells fire
    p = (lt.Params().with_values("input", rate=2.0)
         .with_values("plasticity", w_max=0.2))
    prots = [lt.Protocol().train("S1", 50.0, f, 30) for f in (20.0, 100.0)]
    obs = lt.Observe(every=500, variables=("fepsp", "r"))
    rb = lt.simulate(spec, p, 1500.0, protocol=prots, batch=2, observe=obs, seed=3)
    assert rb.spike_count.sum() > 0
    for b, prot in enumerate(prots):
        r = lt.simulate(spec, p, 1500.0, protocol=prot, observe=obs, seed=3)
        np.testing.assert_array_equal(rb.spike_count[b], r.spike_count)
        np.testing.assert_allclose(rb.records["fepsp"][b], r.records["fepsp"], rtol=1e-6)
    assert not np.array_equal(rb.spike_count[0], rb.spike_count[1])


def test_protocol_list_needs_matching_batch():
    spec = _busy_spec()
    with pytest.raises(ValueError, match="a sequence of 2 protocols needs batch=2"):
        lt.simulate(spec, lt.Params(), 10.0, protocol=[lt.Protocol()] * 2, batch=3)


# --------------------------------------------------------------------------- time line

def test_plan_covers_the_time_line_fine_around_events():
    prot = lt.Protocol().tetanus("S1", at=600_000.0).test_pulses("S1", 0.0, 3.6e6, 1.2e6)
    st = cm.plan([prot], 3.6e6, record_ms=1000.0, lead_ms=1000.0, settle_ms=3000.0,
                 coarse_min_ms=120_000.0, cuts=(1_800_000.0,))
    assert st[0][0] == 0.0 and st[-1][1] == 3.6e6
    assert all(a[1] == b[0] for a, b in zip(st, st[1:], strict=False))
    fine = [(a, b) for a, b, k in st if k == "fine"]
    for t in (0.0, 600_000.0, 601_000.0, 1_200_000.0, 2_400_000.0):
        assert any(a <= t < b for a, b in fine), t
    assert any(b == 1_800_000.0 for _, b, _ in st)  # cut at the snapshot
    assert sum(b - a for a, b, k in st if k == "coarse") > 3.0e6


def test_timeline_without_coarse_steps_equals_simulate():
    spec = _busy_spec()
    p = lt.Params()
    prot = lt.Protocol().tetanus("S1", at=200.0, n=20)
    tr = cm.run_timeline(spec, p, 2000.0, prot, seed=2, coarse=False, record_ms=100.0)
    r = lt.simulate(spec, p, 2000.0, protocol=prot, seed=2,
                    observe=lt.Observe(every=500, variables=("fepsp",)))
    np.testing.assert_allclose(tr.records["fepsp"], r.records["fepsp"], rtol=1e-6)
    np.testing.assert_allclose(tr.t, r.t)


def test_timeline_coarse_quiet_stretches_match_fine_steps():
    """Tetanus, then 4 min quiet: 1-ms steps in the quiet stretch keep the change."""
    spec = lt.ModelSpec(n_post=4, k=100, pathways=(("S1", 100), ("S2", 100), ("bg", 800)),
                        dt=0.2, slow_every=5, rng="hash", calcium_step="exponential")
    p = lt.Params()
    prot = lt.Protocol().tetanus("S1", at=10_000.0)
    out = []
    for coarse in (False, True):
        tr = cm.run_timeline(spec, p, 250_000.0, prot, seed=1, coarse=coarse,
                             coarse_record_ms=30_000.0, snapshots=(250_000.0,))
        out.append((cm.pct(tr.at(tr.fepsp(spec, "S1", 9_000.0), 250_000.0)),
                    cm.pct(tr.at(tr.fepsp(spec, "S2", 9_000.0), 250_000.0))))
    (f1, f2), (c1, c2) = out
    assert f1 > 20.0  # the tetanus potentiated S1
    assert abs(c1 - f1) < 0.1 * f1 and abs(c2 - f2) < 2.0


def test_timeline_runs_on_the_fused_engine():
    """A fused spec with blocks of 5 steps and switch noise runs a time line whose
    quiet stretches have a slow step every coarse step (10-ms steps, 10-ms slow
    clock): their blocks shrink to divide it. The tetanus's change of S1 and the
    quiet S2 match the per-step engine's."""
    kw = dict(n_post=4, k=100, pathways=(("S1", 100), ("S2", 100), ("bg", 800)),
              dt=0.2, slow_every=5, rng="hash", calcium_step="exponential",
              switch_noise=True)
    p = lt.Params()
    prot = lt.Protocol().tetanus("S1", at=5_000.0)
    out = []
    for spec in (lt.ModelSpec(**kw),
                 lt.ModelSpec(**kw, fused=True, syn_block=5, ampa="event")):
        tr = cm.run_timeline(spec, p, 100_000.0, prot, seed=1, coarse_dt=10.0,
                             coarse_record_ms=20_000.0)
        out.append((cm.pct(tr.at(tr.fepsp(spec, "S1", 4_000.0), 100_000.0)),
                    cm.pct(tr.at(tr.fepsp(spec, "S2", 4_000.0), 100_000.0))))
    (s1, s2), (f1, f2) = out
    assert s1 > 20.0
    assert abs(f1 - s1) < 0.1 * s1 and abs(f2 - s2) < 2.0, out


def test_timeline_logs_progress_inside_long_stretches():
    """With `log_every_s=0` every chunk of a stretch reports how far the time line
    has got; logging leaves the run unchanged."""
    spec = lt.ModelSpec(n_post=2, k=100,
                        pathways=(("S1", 100), ("S2", 100), ("bg", 800)),
                        dt=0.2, slow_every=5, rng="hash", calcium_step="exponential")
    p = lt.Params()
    prot = lt.Protocol().tetanus("S1", at=2_000.0, n=10)
    kw = dict(seed=1, coarse_record_ms=20_000.0, coarse_dt=1.0)
    lines = []
    tr = cm.run_timeline(spec, p, 100_000.0, prot, log=lines.append, log_every_s=0.0,
                         **kw)
    quiet = cm.run_timeline(spec, p, 100_000.0, prot, **kw)
    np.testing.assert_array_equal(tr.records["fepsp"], quiet.records["fepsp"])
    t_min = [float(line.split(" min of ")[0]) for line in lines]
    assert all(line.split(" min of ")[1].startswith("1.7 (") for line in lines), lines
    assert t_min == sorted(t_min) and t_min[-1] == 1.7  # 100 s, to 0.1 min
    ends = {round(b / 60_000.0, 1) for _, b, _ in tr.stretches}
    inside = [t for t in t_min if round(t, 1) not in ends]
    assert len(inside) >= 3, lines  # the coarse stretch reports every 20-s record
    assert len(lines) > len(tr.stretches)


def test_timeline_shifts_pharmacology_windows():
    p = lt.Params().with_values("pharmacology", apv_on=5000.0, apv_off=9000.0,
                                ttx_on=1000.0, ttx_off=2000.0)
    q = cm._shift_windows(p, 6000.0).pharmacology
    assert (q.apv_on, q.apv_off) == (0.0, 3000.0)
    assert q.ttx_on == q.ttx_off == 0.0


def test_stack_params_batches_only_what_differs():
    a = lt.Params()
    b = a.with_values("pharmacology", apv_on=0.0, apv_off=1e6)
    params, axes = lt.stack_params([a, b])
    assert axes.pharmacology.apv_off == 0 and axes.plasticity.theta_p is None
    np.testing.assert_array_equal(params.pharmacology.apv_off, [0.0, 1e6])
    # a scalar in one member and a per-neuron array in another: broadcast, then stacked
    c = a.with_values("homeostasis", r_target=np.array([1.0, 2.0, 3.0]))
    params, axes = lt.stack_params([a, c])
    np.testing.assert_array_equal(params.homeostasis.r_target,
                                  [[a.homeostasis.r_target] * 3, [1.0, 2.0, 3.0]])
    assert axes.homeostasis.r_target == 0
    assert lt.stack_params([a, a])[1] is None  # nothing differs: all shared
    with pytest.raises(TypeError, match="non-empty sequence of Params"):
        lt.stack_params([])


def test_pooled_change_se_is_the_jackknife_of_the_pooled_ratio():
    rng = np.random.default_rng(3)
    before = rng.uniform(0.5, 1.5, 12)
    after = before * rng.uniform(0.8, 1.6, 12)
    # leave-one-out pooled changes, one cell at a time, and their spread
    loo = []
    for i in range(12):
        keep = np.arange(12) != i
        loo.append(100.0 * (after[keep].sum() / before[keep].sum() - 1.0))
    loo = np.array(loo)
    want = np.sqrt(11 / 12 * ((loo - loo.mean()) ** 2).sum())
    assert cm.pooled_change_se(before, after) == pytest.approx(want, rel=1e-12)
    # cells that all changed by the same factor leave no sampling error
    assert cm.pooled_change_se(before, 1.3 * before) == pytest.approx(0.0, abs=1e-9)
    # one outlying cell widens it
    odd = after.copy()
    odd[0] *= 3.0
    assert cm.pooled_change_se(before, odd) > cm.pooled_change_se(before, after)


def test_pooled_change_se_of_members_and_of_too_few_cells():
    # one row per member: each row's error is that of the row alone
    rng = np.random.default_rng(4)
    before = rng.uniform(0.5, 1.5, (3, 8))
    after = before * rng.uniform(0.8, 1.6, (3, 8))
    se = cm.jackknife_se(cm.pooled_change_loo(before, after))
    assert se.shape == (3,)
    for b in range(3):
        assert se[b] == pytest.approx(cm.pooled_change_se(before[b], after[b]), rel=1e-12)
    # a single cell has no spread to measure: NaN, and the value prints without it
    assert np.isnan(cm.pooled_change_se([1.0], [1.2]))
    assert cm.with_se(5.0, float("nan")) == "+5.0"
    assert cm.with_se(5.0, 1.26) == "+5.0 ± 1.3"
    assert cm.value_se({"x": -2.0, "se": {"x": 0.54}}, "x") == "-2.0 ± 0.5"
    assert cm.value_se({"x": -2.0}, "x") == "-2.0"
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\)"):
        cm.pooled_change_loo([1.0, 1.0, 1.0], [1.2, 1.1])


def test_mean_se_and_its_format():
    # the standard error of a mean over cells: sd (with n - 1) / sqrt(n), which is
    # also the jackknife of the mean; NaN for one cell
    x = np.array([4.17, 1.02, 4.12, 4.20, 1.01])
    loo = (x.sum() - x) / (x.size - 1)
    assert cm.mean_se(x) == pytest.approx(np.std(x, ddof=1) / np.sqrt(5), rel=1e-12)
    assert cm.mean_se(x) == pytest.approx(cm.jackknife_se(loo), rel=1e-12)
    assert np.isnan(cm.mean_se([2.0]))
    # the error takes the value's format, unsigned
    assert cm.with_se(3.3772, 0.78687, "{:.3f}") == "3.377 ± 0.787"
    assert cm.value_se({"f": 0.795, "se": {"f": 0.0655}}, "f", "{:.3f}") == (
        "0.795 ± 0.066")


def test_sweep_checks_print_the_standard_error_and_judge_the_value():
    """The full checks of a sweep show `value ± SE` where the summary has the errors
    (and the plain value where it does not), and pass or fail on the value alone."""
    from experiments import frequency_response as fr
    from experiments import stdp

    f = [0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0]
    c = [-8.0, -21.0, -16.0, -6.0, 3.0, 9.0, 15.0, 30.0]
    se = [1.0, 2.5, 2.0, 9.0, 1.5, None, 4.0, 6.0]
    s = {"frequency_hz": f, "change_pct": c, "change_se_pct": se,
         "crossover_hz": fr.crossover(f, c)}
    rows = {r.key: r for r in fr.checks(s, False)}
    assert rows["change_pct @ 1 Hz"].value == "-21.0 ± 2.5"
    assert rows["largest LTD [%]"].value == "-21.0 ± 2.5"
    assert rows["change_pct @ 10 Hz"].value == "+3.0 ± 1.5"
    assert all(r.passed for r in rows.values())
    s["change_pct"] = [-8.0, -21.0, -16.0, -6.0, -12.0, 9.0, 15.0, 30.0]
    assert not {r.key: r for r in fr.checks(s, False)}["change_pct @ 10 Hz"].passed
    del s["change_se_pct"]
    assert {r.key: r for r in fr.checks(s, False)}["change_pct @ 1 Hz"].value == "-21.0"

    d = [-15.0, -10.0, 5.0, 10.0, 80.0]
    ch = [-18.0, -25.0, 60.0, 40.0, 1.0]
    t = {"dt_ms": d, "change_pct": ch, "change_se_pct": [3.0, 4.0, 8.0, 7.0, 0.5],
         "bi_poo_1998": stdp.bi_poo_binned(), "bins": stdp._binned(d, ch),
         "bins_se": [None] * len(stdp.bi_poo_binned())}
    rows = {r.key: r for r in stdp.checks(t, False)}
    assert rows["largest LTP [%]"].value == "+60.0 ± 8.0" and rows["largest LTP [%]"].passed
    assert rows["largest LTD in −20…−5 ms [%]"].value == "-25.0 ± 4.0"
    assert rows["change_pct, Δt in −20…−5 ms (least negative)"].value == "-18.0 ± 3.0"


def test_stdp_bins_read_at_the_cells_average_like_the_data():
    """With the cells' Δt, a bin is the mean over its cells, each read at its own Δt
    (a Δt shared by two cells counts twice); without, the mean over the members in
    the bin. The check names which."""
    from experiments import stdp

    d = [-5.0, -3.4, 5.0, 80.0]
    ch = [-30.0, 20.0, 60.0, 1.0]
    cells = [-5.0, -3.4, -3.4, 80.0]
    i = [b["bin"] for b in stdp.bi_poo_binned()].index((-10.0, 0.0))
    j = [b["bin"] for b in stdp.bi_poo_binned()].index((0.0, 10.0))
    at_cells, at_members = stdp._binned(d, ch, cells), stdp._binned(d, ch)
    assert at_cells[i] == pytest.approx(10.0 / 3) and at_members[i] == -5.0
    assert at_cells[j] is None and at_members[j] == 60.0
    s = {"dt_ms": d, "change_pct": ch, "bi_poo_1998": stdp.bi_poo_binned(),
         "bins": at_cells, "bins_at": "cells"}
    keys = [r.key for r in stdp.checks(s, False)]
    assert "bin (-10, 0] ms mean (at the cells' Δt)" in keys
    del s["bins_at"]
    assert "bin (-10, 0] ms mean" in [r.key for r in stdp.checks(s, False)]


def test_stdp_sweeps_every_cells_dt():
    """bins_at = "cells" adds each of Bi & Poo's 45 cells' Δt to the sweep (40
    distinct, 2 of them on the grid: 56 members); a bad value, or a pair frequency
    whose half period the cells' Δt exceed, is refused before any work."""
    from experiments import stdp

    _, exp = ex.load("stdp")
    got = stdp.members(exp)
    assert len(stdp.cell_dts()) == 45 and set(stdp.cell_dts()) <= set(got)
    assert len(set(stdp.cell_dts())) == 40 and len(got) == 56
    assert set(exp["delta_t"]) <= set(got) and got == sorted(got)
    with pytest.raises(ex.ExperimentError,
                       match="bins_at must be one of \\['cells', 'delta_t'\\], got "
                             "bins_at='mean'"):
        ex.load("stdp", overrides=["experiment.bins_at=mean"])
    with pytest.raises(ex.ExperimentError, match="bins_at='cells' adds the Δt of Bi & "
                       "Poo's cells, and \\[-102.3\\] ms do not lie within"):
        ex.load("stdp", overrides=["experiment.pair_freq_hz=5.0",
                                   "experiment.delta_t=[-10.0, 10.0]"])
    _, quick = ex.load("stdp", quick=True)
    assert stdp.members(quick) == [-10.0, 10.0]


# --------------------------------------------------------------------------- framework

TOY = '''
[spec]
n_post = 2
k = 10
pathways = { S1 = 10, bg = 20 }
[run]
seed = 4
[experiment]
n_pulses = 5
every_ms = "2 s"
freqs_hz = [1.0, 2.0]
[quick.experiment]
n_pulses = 2
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A registered experiment `toy` with its own config."""
    cfgs = tmp_path / "configs"
    cfgs.mkdir()
    (cfgs / "toy.toml").write_text(TOY)
    mod = types.ModuleType("experiments.toy")
    mod.__doc__ = "Toy protocol: n pulses.\n\nMore."
    mod.DEFAULTS = {"n_pulses": 10, "every_ms": 1000.0, "freqs_hz": [1.0]}
    mod.SUMMARY_KEYS = ("n",)

    def run(ctx):
        return {"n": ctx.exp["n_pulses"], "every": ctx.exp["every_ms"],
                "n_post": ctx.spec.n_post, "seed": ctx.seed}

    def validate(spec, params, exp):
        if exp["n_pulses"] < 1:
            raise ex.ExperimentError(f"[experiment] n_pulses must be >= 1, got "
                                     f"n_pulses={exp['n_pulses']}")

    mod.run = run
    mod.validate = validate
    mod.checks = lambda s, quick: [cm.check("n", s["n"], "> 3", s["n"] > 3, "{:.0f}")]
    mod.plot = lambda s, path: Path(path).write_bytes(b"png")
    monkeypatch.setitem(sys.modules, "experiments.toy", mod)
    monkeypatch.setattr(ex, "NAMES", ex.NAMES + ("toy",))
    monkeypatch.setattr(ex, "CONFIGS", cfgs)
    return cfgs


def test_run_writes_summary_figure_and_report(toy, tmp_path):
    out = tmp_path / "out"
    doc = ex.run("toy", out, log=lambda m: None)
    assert doc["summary"] == {"n": 5, "every": 2000.0, "n_post": 2, "seed": 4}
    saved = json.loads((out / "toy" / "summary.json").read_text())
    assert saved["checks"] == [{"key": "n", "value": "5", "expected": "> 3",
                                "passed": True}]
    assert (out / "toy" / "toy.png").is_file()
    report = (out / "report.md").read_text()
    assert "## toy" in report and "Toy protocol: n pulses." in report
    assert "| `n` | 5 | > 3 | pass |" in report


def test_quick_neurons_seed_and_set_apply(toy, tmp_path):
    doc = ex.run("toy", tmp_path, quick=True, neurons=7, seed=9,
                 overrides=["experiment.every_ms=3 s"], log=lambda m: None)
    assert doc["summary"] == {"n": 2, "every": 3000.0, "n_post": 7, "seed": 9}
    assert doc["checks"][0]["passed"] is False
    assert "**fail**" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("text, msg", [
    ('[experiment]\nn_pulse = 3\n', "unknown key 'n_pulse' in \\[experiment\\]; did you "
                                    "mean 'n_pulses'\\?"),
    ('[experiment]\nn_pulses = 2.5\n', "n_pulses must be an integer, got n_pulses=2.5"),
    ('[experiment]\nfreqs_hz = []\n', "freqs_hz must be a non-empty array of numbers"),
    ('[experiment]\nevery_ms = "2 parsecs"\n', "unknown unit 'parsecs'"),
    ('[protocol]\nx = 1\n', "\\[protocol\\] is not used by experiments"),
    ('[spec]\nn_post = -1\n', "n_post"),
    ('[experiment]\nn_pulses = 0\n',
     "toy.toml: \\[experiment\\] n_pulses must be >= 1, got n_pulses=0"),
])
def test_bad_config_is_named_before_work(toy, tmp_path, text, msg):
    (toy / "toy.toml").write_text(text)
    with pytest.raises(ex.ExperimentError, match=msg):
        ex.run("toy", tmp_path, log=lambda m: None)
    assert not (tmp_path / "toy").exists()


def test_tagging_checks_judge_capture_under_anisomycin_and_cross_capture():
    """The fifth condition of tagging_capture (a STET of S2 under anisomycin after
    S1's STET) passes at >= +30 % at 8 h; the WLFS alone must stay >= -10 % and the
    WLFS after S1's STET (cross-capture) reach <= -10 %. Summaries written before
    these conditions were added give the earlier checks."""
    from experiments import tagging_capture as tc

    names = list(tc.CONDITIONS)
    s = {"conditions": names, "stet_h": [None, -0.5, 1.0, 4.0, -0.5, None, -0.5],
         "readout_h": 8.0, "se": {f"{n}_pct_8h": 1.0 for n in names}}
    s.update({f"{n}_pct_8h": v for n, v in
              zip(names, [2.0, 25.0, 22.0, 3.0, 35.0, -4.0, -15.0], strict=True)})
    rows = {r.key: r for r in tc.checks(s, False)}
    assert len(rows) == 7 and all(r.passed for r in rows.values())
    assert rows["s2_stet_anisomycin_pct_8h"].value == "+35.0 ± 1.0"
    for key, bad in (("s2_stet_anisomycin_pct_8h", 29.0),
                     ("s2_wlfs_alone_pct_8h", -11.0),
                     ("s2_wlfs_after_strong_pct_8h", -9.0)):
        t = dict(s, **{key: bad})
        assert [r.key for r in tc.checks(t, False) if not r.passed] == [key]
    quick = {r.key.split(" ")[0]: r.passed for r in tc.checks(s, True)}
    assert quick["s2_wlfs_after_strong_pct"]
    assert not {r.key.split(" ")[0]: r.passed for r in tc.checks(
        dict(s, s2_wlfs_after_strong_pct_8h=-3.0), True)}["s2_wlfs_after_strong_pct"]
    for n in (5, 4):
        s["conditions"], s["stet_h"] = names[:n], s["stet_h"][:n]
        assert len(tc.checks(s, False)) == n
        assert len(tc.checks(s, True)) == 3


@pytest.mark.parametrize("sets, msg", [
    (["experiment.anisomycin_s1_ms=40 min"],
     "anisomycin_s1_ms - anisomycin_before_ms = 2400000.0 - 1800000.0 must exceed "
     "the STET \\(1201000 ms\\): S1's STET must end before the drug comes on"),
    (["experiment.anisomycin_before_ms=-1 min"],
     "anisomycin_before_ms must be >= 0 ms, got anisomycin_before_ms=-60000.0"),
    (["experiment.after_ms=10 min"], "after_ms=600000.0 must exceed the STET"),
    (["experiment.wlfs_pulses=0"], "wlfs_pulses must be > 0, got wlfs_pulses=0"),
    (["experiment.wlfs_freq_hz=0.01"],
     "the WLFS \\(900 pulses at 0.01 Hz, 89900000 ms\\) must end before "
     "readout_ms=28800000.0"),
])
def test_tagging_protocol_is_checked(sets, msg):
    """tagging_capture's [experiment] is checked before any work, the time line of
    the capture under anisomycin included."""
    with pytest.raises(ex.ExperimentError, match=msg):
        ex.load("tagging_capture", overrides=sets)


def test_unknown_experiment_lists_the_choices(toy):
    with pytest.raises(ex.ExperimentError, match="unknown experiment 'tyo'; did you "
                                                 "mean 'toy'\\?"):
        ex.load("tyo")


def test_cli_reports_a_bad_name(capsys):
    from ltpnet.cli import main

    assert main(["experiment", "no_such_thing", "-o", "/tmp/unused"]) == 2
    assert "unknown experiment 'no_such_thing'" in capsys.readouterr().err


def test_cli_rejects_bad_neurons(capsys):
    from ltpnet.cli import main

    name = ex.available()[0] if ex.available() else None
    if name is None:
        pytest.skip("no experiment configs")
    assert main(["experiment", name, "--neurons", "0", "-o", "/tmp/unused"]) == 2
    assert "--neurons must be a positive integer, got 0" in capsys.readouterr().err


# --------------------------------------------------------------------------- quick runs

@pytest.mark.parametrize("name", ex.available())
def test_quick_version_shows_every_effect(name, tmp_path):
    doc = ex.run(name, tmp_path, quick=True, log=lambda m: None)
    mod = ex._module(name)
    missing = [k for k in mod.SUMMARY_KEYS if k not in doc["summary"]]
    assert not missing, f"summary.json lacks {missing}"
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert doc["checks"] and not failed, failed
    assert (tmp_path / name / f"{name}.png").stat().st_size > 1000


def test_every_experiment_of_the_issue_is_registered():
    assert len(ex.NAMES) == 12 and len(set(ex.NAMES)) == 12
    for f in dataclasses.fields(ex.Context):
        assert f.name in ex.Context.__doc__


@pytest.mark.parametrize(("name", "sets", "msg"), [
    ("camkii_t286a", ["spec.t286a=true"],
     "[spec] t286a must be false: the experiment runs both genotypes, got "
     "t286a=True"),
    ("spine_structure", ["experiment.n_pulses=0"],
     "[experiment] n_pulses must be >= 1, got n_pulses=0"),
    ("scaling", ["spec.homeostasis=false"],
     "[spec] homeostasis must be true for a scaling experiment"),
])
def test_an_experiment_s_own_checks_exit_2_with_one_line(capsys, tmp_path, name, sets,
                                                         msg):
    """Checks an experiment makes of its config (camkii_t286a sets the genotype
    itself, the uncaging train needs a pulse, scaling needs homeostasis) print one
    error line and exit 2, with no traceback, and write nothing."""
    from ltpnet.cli import main

    out = tmp_path / "out"
    args = ["experiment", name, "--quick", "-o", str(out)]
    for s_ in sets:
        args += ["--set", s_]
    assert main(args) == 2
    assert msg in capsys.readouterr().err
    assert not out.exists()


def test_all_checks_every_config_before_it_runs_any(capsys, tmp_path, monkeypatch):
    """`ltpnet experiment all --neurons 1`: only spine_structure (the eleventh)
    needs two cells; the run stops there before the first experiment starts."""
    from ltpnet.cli import main

    started = []
    for name in ex.available():
        monkeypatch.setattr(ex._module(name), "run",
                            lambda ctx: started.append(ctx.name) or {})
    out = tmp_path / "out"
    assert main(["experiment", "all", "--neurons", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "spine_structure.toml: [spec] n_post must be >= 2 (small and large " \
           "spines), got n_post=1" in err
    assert started == [] and not out.exists()


@pytest.mark.parametrize("name", ex.available())
def test_every_experiment_validates_its_config_at_load(name, monkeypatch):
    """`load` calls the module's own `validate`, which sees the spec, the
    parameters and the [experiment] table with times in ms."""
    seen = []
    monkeypatch.setattr(ex._module(name), "validate",
                        lambda spec, params, exp: seen.append((spec.n_post, exp)))
    cfg, exp = ex.load(name, quick=True, neurons=3)
    assert seen == [(3, exp)] and cfg.spec.n_post == 3
    assert all(isinstance(v, float) for k, v in exp.items() if k.endswith("_ms"))


@pytest.mark.parametrize(("slow", "block"), [(1, 1), (2, 2), (4, 4), (5, 5), (10, 5),
                                             (6, 3), (7, 1)])
def test_fused_block_divides_the_slow_clock(slow, block):
    assert ex.fused_block(slow) == block


def test_fused_flag_sets_the_engine():
    """`--fused`: the fused engine with event-driven AMPA input and a synapse block
    that divides each config's slow clock (2 ms in frequency_response, 5 elsewhere);
    a block given with --set stands."""
    freq, _ = ex.load("frequency_response", quick=True, fused=True)
    assert (freq.spec.fused, freq.spec.ampa, freq.spec.syn_block) == (True, "event", 2)
    assert freq.spec.slow_every == 2
    hfs, _ = ex.load("hfs_ltp", quick=True, fused=True)
    assert (hfs.spec.fused, hfs.spec.syn_block) == (True, 5)
    own, _ = ex.load("hfs_ltp", quick=True, fused=True, overrides=["spec.syn_block=1"])
    assert own.spec.syn_block == 1
    plain, _ = ex.load("hfs_ltp", quick=True)
    assert not plain.spec.fused and plain.spec.syn_block == 1


def test_cli_fused_runs_and_says_so(tmp_path):
    """`ltpnet experiment input_specificity --quick --fused --params FIT`: the checks
    pass, and summary.json and the report name the engine, the flag and the params
    file (here one that repeats a default)."""
    from ltpnet.cli import main

    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"params": {"plasticity.theta_p": 4.61}}))
    assert main(["experiment", "input_specificity", "--quick", "--fused",
                 "--params", str(fit), "-o", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "input_specificity" / "summary.json").read_text())
    assert doc["meta"]["engine"] == "fused"
    assert doc["meta"]["command"] == ("ltpnet experiment input_specificity --quick "
                                      f"--fused --params {fit}")
    assert doc["meta"]["kept_over_params"] == []
    assert all(c["passed"] for c in doc["checks"])
    report = (tmp_path / "report.md").read_text()
    assert "cpu cores, fused engine (quick version" in report


def test_voltage_clamp_one_voltage_equals_its_member_of_a_sweep(tmp_path):
    """A single clamp voltage (nothing differs between members, so every parameter is
    shared) runs, and gives what the same voltage gives as one member of a sweep."""
    def change(vs):
        doc = ex.run("voltage_clamp_pairing", tmp_path / str(len(vs)), quick=True,
                     overrides=[f"experiment.clamp_mv={vs}"], log=lambda m: None)
        return dict(zip(doc["summary"]["clamp_mv"], doc["summary"]["change_pct"],
                        strict=True))

    one = change([-40.0])
    assert one[-40.0] < 0  # LTD at -40 mV
    assert change([-70.0, -40.0])[-40.0] == one[-40.0]


def test_params_file_keeps_the_preparation(tmp_path):
    """A slice fit applied to spine_structure replaces the defaults, not the
    experiment's preparation: the Mg2+-free bath stays; the fitted values apply."""
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"params": {"calcium.Mg": 1.0, "plasticity.theta_p": 4.9,
                                          "plasticity.gamma_d": 6.0}}))
    cfg = ex.load("spine_structure", quick=True, params_file=fit)[0]
    assert float(cfg.params.calcium.Mg) == 0.0
    assert float(cfg.params.plasticity.theta_p) == 4.9
    assert cfg.kept_over_params == ("calcium.Mg",)
    cfg = ex.load("scaling", quick=True, params_file=fit)[0]  # its switch stays held
    assert float(cfg.params.plasticity.gamma_d) == 0.0
    assert cfg.kept_over_params == ("plasticity.gamma_d",)


def test_params_file_values_say_where_they_come_from(tmp_path):
    """A fit result applied to an experiment: a value it refuses names the file."""
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"params": {"input.u_rel": 0.01}}))
    with pytest.raises(ex.ExperimentError,
                       match=r"frequency_response.toml: \[input\] u_rel must be 0 "
                             r"unless spec.depression is true .*\(from params file"):
        ex.load("frequency_response", quick=True, params_file=fit)
    cfg = ex.load("frequency_response", quick=True, params_file=fit,
                  overrides=["spec.depression=true"])[0]
    assert cfg.spec.depression and float(cfg.params.input.u_rel) == 0.01
