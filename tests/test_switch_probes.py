"""`experiments.switch_probes`: the probes quoted in docs/model.md, sections 6 and 7."""

from __future__ import annotations

import numpy as np

import ltpnet as lt
from experiments import load
from experiments.switch_probes import (
    calcium_times,
    clamp_times,
    gb_readout,
    mean_abs_early_change,
    pairing_outcome,
    pairing_times,
    quartiles,
    train_times,
)
from ltpnet.state import build


def test_calcium_times_of_a_weak_and_a_strong_tetanus():
    """Per S1 synapse: time above theta_p <= time above theta_d (theta_p > theta_d);
    the 1-s train starts like the weak tetanus (same seed and stream), so it keeps
    every synapse above each threshold at least as long; and, as docs/model.md says,
    each keeps every S1 synapse above theta_p for about its own length (210 ms and
    1000 ms of pulses, plus the decay)."""
    cfg, _ = load("maintenance", overrides=["spec.n_post=2"])
    spec, params = cfg.spec, cfg.params
    wtet = calcium_times(spec, params, 1, lt.Protocol().train("S1", 100.0, 100.0, 21),
                         710.0)
    train = calcium_times(spec, params, 1,
                          lt.Protocol().train("S1", 100.0, 100.0, 100), 1500.0)
    n_s1 = wtet[0].size
    assert n_s1 > 0 and all(x.shape == (n_s1,) for x in (*wtet, *train))
    for t_d, t_p, c_max in (wtet, train):
        assert np.all(t_p <= t_d)
        assert np.all(c_max > float(params.plasticity.theta_p))
    assert np.all(train[0] >= wtet[0]) and np.all(train[1] >= wtet[1])
    assert 200.0 < wtet[1].min() and wtet[1].max() < 300.0
    assert 1000.0 < train[1].min() and train[1].max() < 1100.0


def test_train_times_per_pulse_grow_as_pulses_sum():
    """Per S1 synapse and pulse: t_p <= t_d, and a 10 Hz train keeps each synapse
    above theta_d at least as long per pulse as a 1 Hz one (NMDA calcium of one pulse
    adds to what the last left), and longer on average."""
    cfg, _ = load("frequency_response", overrides=["spec.n_post=2"])
    slow = train_times(cfg.spec, cfg.params, 1, 1.0, n_pulses=5)
    fast = train_times(cfg.spec, cfg.params, 1, 10.0, n_pulses=5)
    assert slow[0].shape == fast[0].shape and slow[0].size > 0
    for t_d, t_p, _ in (slow, fast):
        assert np.all(t_p <= t_d) and np.all(t_d >= 0.0)
    assert np.all(fast[0] >= slow[0])
    assert fast[0].mean() > slow[0].mean()
    assert np.median(fast[2]) > np.median(slow[2])  # the peak calcium too


def test_clamped_pulses_carry_the_mg_block_ratio():
    """1 Hz pulses clamped at -40 mV against -55 mV: calcium does not sum across
    1-s gaps and a clamped membrane has no EPSP, so the peak calcium of each synapse
    grows by the Jahr-Stevens ratio B(-40)/B(-55), computed here independently."""
    cfg, _ = load("frequency_response", overrides=["spec.n_post=2"])
    lo = clamp_times(cfg.spec, cfg.params, 1, -55.0, n_pulses=2)
    hi = clamp_times(cfg.spec, cfg.params, 1, -40.0, n_pulses=2)
    mg = float(cfg.params.calcium.Mg)
    block = lambda v: 1.0 / (1.0 + mg / 3.57 * np.exp(-0.062 * v))  # noqa: E731
    np.testing.assert_allclose(hi[2] / lo[2], block(-40.0) / block(-55.0), rtol=1e-3)


def test_mean_abs_early_change_grows_with_the_train():
    """Mean |rho - rho_ref| per neuron after a train of S1: one value per neuron,
    >= 0, and larger on average after 100 pulses than after 21."""
    cfg, _ = load("early_late", overrides=["spec.n_post=4"])
    weak = mean_abs_early_change(cfg.spec, cfg.params, 1, 21, wait_ms=1000.0)
    strong = mean_abs_early_change(cfg.spec, cfg.params, 1, 100, wait_ms=1000.0)
    assert weak.shape == strong.shape == (4,)
    assert np.all(weak >= 0.0)
    assert strong.mean() > weak.mean()


def test_quartiles_prints_min_quartiles_max():
    assert quartiles(np.arange(5.0)) == "0 1 2 3 4"


def test_pairing_times_open_the_coincidence_detector():
    """Per S1 synapse of the stdp network: t_p <= t_d; post-before-pre (-15.9 ms)
    leaves the median synapse below theta_p (a spontaneous input that pairs with the
    bAP may cross it), pre-before-post (+5.9 ms) takes every synapse above it, and
    stays above theta_d longer than a pairing 70 ms post-before-pre."""
    cfg, _ = load("stdp", overrides=["spec.n_post=2"])
    far, ltd, ltp = (pairing_times(cfg.spec, cfg.params, 1, d, n_pairs=2)
                     for d in (-70.6, -15.9, 5.9))
    for t_d, t_p in (far, ltd, ltp):
        assert t_d.size > 0 and np.all(t_p <= t_d)
    assert np.median(ltd[1]) == 0.0 and np.all(ltp[1] > 0.0)
    assert np.all(ltp[0] > far[0])


def test_pairing_outcome_counts_each_start_state():
    """Shares lie in [0, 1], the two start states cover S1, and 5 pairings 70 ms
    post-before-pre (no calcium above theta_p, little above theta_d) move no switch
    across rho* in either direction."""
    cfg, _ = load("stdp", overrides=["spec.n_post=4"])
    u, d, n_down, n_up = pairing_outcome(cfg.spec, cfg.params, 1, -70.6, n_pairs=5)
    conn, _ = build(cfg.spec, cfg.params, 1)
    lab = np.asarray(conn.pre_pathway)[np.asarray(conn.pre_idx)]
    assert n_down + n_up == int((lab == cfg.spec.pathway_index("S1")).sum())
    assert n_down > 0 and n_up > 0
    assert u == 0.0 and d == 0.0


def test_gb_readout_against_the_formula():
    """Graupner & Brunel's read-out against an independent float64 evaluation of
    their formulas (SCIENCE.md 1a) with two noises; no transitions read 1."""
    from math import erf, exp, sqrt

    cfg, _ = load("stdp", overrides=["spec.n_post=2"])
    pl = cfg.params.plasticity
    gp, gd, s, sp = (float(pl.gamma_p), float(pl.gamma_d), float(pl.sigma),
                     float(pl.sigma_p))
    tau, star, b = float(pl.tau_rho), float(pl.rho_star), float(pl.w_max / pl.w_min)
    t_d, t_p, beta = 4000.0, 1300.0, 0.65
    rate = gp * t_p + gd * t_d
    rho_bar, g = gp * t_p / rate, rate / tau
    spread = sqrt((sp * sp * t_p + s * s * t_d) / rate * (1 - exp(-2 * g)))
    u = 0.5 * (1 + erf((rho_bar * (1 - exp(-g)) - star) / spread))
    d = 0.5 * (1 - erf((rho_bar + (1 - rho_bar) * exp(-g) - star) / spread))
    ratio = ((beta * (1 - u) + (1 - beta) * d) + (beta * u + (1 - beta) * (1 - d)) * b
             ) / (beta + (1 - beta) * b)
    got = gb_readout(cfg.params, t_d, t_p, beta)
    np.testing.assert_allclose(got, (u, d, ratio), rtol=1e-5)
    assert gb_readout(cfg.params, 0.0, 0.0, beta, U=0.0, D=0.0)[2] == 1.0
