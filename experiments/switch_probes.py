"""What a protocol does to the switch's noise and to the protein trigger.

Probes behind docs/model.md, sections 6 and 7, on pathway S1 of the canonical
networks with their parameters (the hippocampal defaults; the culture set of the
stdp network):

- Calcium (the maintenance network, configs/experiments/maintenance.toml): five test
  pulses 1 s apart, a weak tetanus (WTET, 21 pulses at 100 Hz) and one 1-s train at
  100 Hz. Printed: the time each S1 synapse spends above theta_d and above theta_p
  (quartiles over synapses) and the median peak calcium. The switch noise acts only
  there: sigma above theta_d, sigma_p above theta_p.
- Frequency trains (the frequency_response network): 20 pulses at 1, 3, 5, 10, 20
  and 50 Hz. Printed: the time per pulse that the median S1 synapse spends above
  theta_d and above theta_p, and its peak calcium; the same for 5 pulses at 1 Hz with
  the membrane clamped at -55, -40 and -30 mV. Dudek & Bear's curve needs LTD to
  weaken from 3 to 10 Hz; this shows what the model's calcium does there, beside the
  clamped pulses that must depress (-55, -40 mV) and potentiate (-30 mV).
- Pairings (the stdp network, configs/experiments/stdp.toml, with its culture set
  and its own number of cells whatever `--neurons` says): 3 pairings at 1 Hz at Bi &
  Poo's mean Δt per bin. Printed: the time per pair that the median S1 synapse spends
  above theta_d and above theta_p, beside what the fit's read-out assumes (`t_d_ms`,
  `t_p_ms` in the fit.json of `ltpnet fit configs/fit/hippocampal_cultures.toml`,
  divided by 60 pairs). Then 60 pairings at
  +5.9 ms: the share of S1 synapses that start DOWN and end above rho*, and of those
  that start UP and end below it, the switch outcome the fit's Graupner-Brunel
  read-out predicts from those times.
- Protein trigger (the early_late network): a WTET or one 1-s train, then a minute
  of quiet. Printed: each neuron's mean |rho - rho_ref| (quartiles over neurons) and
  how many neurons exceed `consolidation.theta_pro`, the trigger of synthesis. A WTET
  should not start synthesis, a strong tetanus should.

    python -m experiments.switch_probes                 # 20 neurons, seed 1
    python -m experiments.switch_probes --neurons 50 --seed 2
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

import ltpnet as lt
from experiments import load
from ltpnet.state import build


def quartiles(x) -> str:
    return " ".join(f"{v:.4g}" for v in np.percentile(x, [0, 25, 50, 75, 100]))


def calcium_times(spec, params, seed: int, prot: lt.Protocol, t_end: float):
    """`(t_d, t_p, c_max)` per S1 synapse [ms, ms, 1]."""
    spec = dataclasses.replace(spec, slow_every=1)  # a record every step
    res = lt.simulate(spec, params, t_end, seed=seed, protocol=prot,
                      observe=lt.Observe(every=1, variables=("c",)),
                      records_per_chunk=500)
    c = np.asarray(res.records["c"])
    lab = np.asarray(res.conn.pre_pathway)[np.asarray(res.conn.pre_idx)]
    s1 = lab == spec.pathway_index("S1")
    pl = params.plasticity
    return ((c > pl.theta_d)[:, s1].sum(0) * spec.dt,
            (c > pl.theta_p)[:, s1].sum(0) * spec.dt, c.max(0)[s1])


def train_times(spec, params, seed: int, freq_hz: float, n_pulses: int = 20):
    """`(t_d, t_p, c_max)` of each S1 synapse over a train of `n_pulses` at `freq_hz`:
    the time above each threshold per pulse [ms] (from the first pulse to 300 ms after
    the last, divided by `n_pulses`) and the peak calcium."""
    start = 100.0
    prot = lt.Protocol().train("S1", start, freq_hz, n_pulses)
    t_end = start + (n_pulses - 1) * 1000.0 / freq_hz + 300.0
    t_d, t_p, c_max = calcium_times(spec, params, seed, prot, t_end)
    return t_d / n_pulses, t_p / n_pulses, c_max


def clamp_times(spec, params, seed: int, v_clamp: float, n_pulses: int = 5):
    """`train_times` of 1 Hz pulses with the membrane clamped at `v_clamp` [mV]."""
    clamped = params.with_values("pharmacology", clamp_on=0.0, clamp_off=1e9)
    return train_times(spec, clamped.with_values("neuron", V_clamp=v_clamp), seed, 1.0,
                       n_pulses)


def _pairings(delta_t: float, n_pairs: int):
    """`(protocol, t_end)`: `n_pairs` pairings at 1 Hz of an S1 pulse with a post
    spike `delta_t` ms later, from 200 ms, to 400 ms after the last."""
    start = 200.0
    return (lt.Protocol().pairing("S1", start, 1.0, n_pairs, delta_t),
            start + (n_pairs - 1) * 1000.0 + 400.0)


def pairing_times(spec, params, seed: int, delta_t: float, n_pairs: int = 3):
    """`(t_d, t_p)` per pair [ms] of each S1 synapse over `n_pairs` pairings at 1 Hz
    of an S1 pulse with a post spike `delta_t` ms later (to 400 ms after the last)."""
    t_d, t_p, _ = calcium_times(spec, params, seed, *_pairings(delta_t, n_pairs))
    return t_d / n_pairs, t_p / n_pairs


def pairing_outcome(spec, params, seed: int, delta_t: float, n_pairs: int = 60):
    """`(U, D, n_down, n_up)` of S1 right after `n_pairs` pairings at 1 Hz: the share
    of synapses that start DOWN (rho < rho*) and end above rho*, and of those that
    start UP and end below it, with how many start in each state."""
    conn, state = build(spec, params, seed)
    lab = np.asarray(conn.pre_pathway)[np.asarray(conn.pre_idx)]
    s1 = lab == spec.pathway_index("S1")
    star = float(params.plasticity.rho_star)
    r0 = np.asarray(state.syn.rho)
    down, up = s1 & (r0 < star), s1 & (r0 > star)
    prot, t_end = _pairings(delta_t, n_pairs)
    res = lt.simulate(spec, params, t_end, seed=seed, protocol=prot, conn=conn,
                      state=state)
    r = np.asarray(res.state.syn.rho)
    return (float(np.mean(r[down] > star)), float(np.mean(r[up] < star)),
            int(down.sum()), int(up.sum()))


def gb_readout(params, t_d, t_p, beta: float, U=None, D=None):
    """`(U, D, ratio)`: Graupner & Brunel's read-out (the one `ltpnet fit` uses) of a
    protocol that keeps a synapse above theta_d for `t_d` ms and above theta_p for
    `t_p` ms in all, for a population with a share `beta` DOWN and w_max/w_min as in
    `params`. Given `U` and `D` (measured), only the ratio is computed from them."""
    from ltpnet.fit.model import population_ratio, transition_probabilities

    pl = params.plasticity
    v = {f"plasticity.{k}": float(getattr(pl, k))
         for k in ("gamma_p", "gamma_d", "sigma", "sigma_p", "tau_rho", "rho_star")}
    v["extra.beta"] = beta
    v["extra.b"] = float(pl.w_max) / float(pl.w_min)
    if U is None:
        U, D = transition_probabilities(v, t_d, t_p)
    return float(U), float(D), float(population_ratio(v, U, D))


def mean_abs_early_change(spec, params, seed: int, n_pulses: int,
                          wait_ms: float = 60_000.0) -> np.ndarray:
    """`(n_post,)` mean |rho - rho_ref| `wait_ms` after a 100 Hz train of S1."""
    prot = lt.Protocol().train("S1", 1000.0, 100.0, n_pulses)
    t_end = 1000.0 + n_pulses * 10.0 + wait_ms
    res = lt.simulate(spec, params, t_end, seed=seed, protocol=prot,
                      observe=lt.Observe(every=round(t_end / spec.dt), variables=("p",)))
    syn = res.state.syn
    return np.abs(np.asarray(syn.rho) - np.asarray(syn.rho_ref)).mean(axis=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--neurons", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    n = [f"spec.n_post={args.neurons}"]
    print(f"{args.neurons} neurons, seed {args.seed}")
    cfg, _ = load("maintenance", overrides=n)
    print("calcium of S1 synapses, maintenance network (ms above threshold, "
          "min/25/50/75/max over synapses):")
    for label, prot, t_end in (
            ("5 test pulses", lt.Protocol().add_pulses(
                "S1", [100.0 + 1000.0 * i for i in range(5)]), 5200.0),
            ("WTET (21 pulses)", lt.Protocol().train("S1", 100.0, 100.0, 21), 710.0),
            ("1-s train (100 pulses)", lt.Protocol().train("S1", 100.0, 100.0, 100),
             1500.0)):
        t_d, t_p, c_max = calcium_times(cfg.spec, cfg.params, args.seed, prot, t_end)
        print(f"  {label:24s} theta_d: {quartiles(t_d)}; theta_p: {quartiles(t_p)}; "
              f"peak c median {np.median(c_max):.3g}")
    cfg, _ = load("frequency_response", overrides=n)
    print("frequency trains, frequency_response network (20 pulses; ms per pulse "
          "above theta_d / theta_p, and peak c, median over S1 synapses; theta_p = "
          f"{float(cfg.params.plasticity.theta_p):.3g}):")
    for f in (1.0, 3.0, 5.0, 10.0, 20.0, 50.0):
        t_d, t_p, c_max = train_times(cfg.spec, cfg.params, args.seed, f)
        print(f"  {f:4g} Hz  {np.median(t_d):6.1f} / {np.median(t_p):6.1f}; "
              f"peak c {np.median(c_max):.3g}")
    for v in (-55.0, -40.0, -30.0):
        t_d, t_p, c_max = clamp_times(cfg.spec, cfg.params, args.seed, v)
        print(f"  1 Hz clamped at {v:g} mV  {np.median(t_d):6.1f} / "
              f"{np.median(t_p):6.1f}; peak c {np.median(c_max):.3g}")
    cfg, _ = load("stdp")  # its own 100 cells: the outcome below is the experiment's
    print(f"pairings at 1 Hz, stdp network ({cfg.spec.n_post} neurons; 3 pairs; ms per "
          "pair above theta_d / theta_p, median over S1 synapses):")
    pairs = {}
    for d in (-70.6, -23.8, -15.9, -4.2, 5.9, 16.4, 29.2, 79.4):
        t_d, t_p = pairs[d] = pairing_times(cfg.spec, cfg.params, args.seed, d)
        print(f"  {d:+6.1f} ms  {np.median(t_d):6.1f} / {np.median(t_p):6.1f}")
    t_d, t_p = pairs[5.9]
    u, dn, n_down, n_up = pairing_outcome(cfg.spec, cfg.params, args.seed, 5.9)
    beta = n_down / (n_down + n_up)
    print(f"  60 pairs at +5.9 ms: {u:.3f} of {n_down} DOWN synapses end above rho*, "
          f"{dn:.3f} of {n_up} UP ones below")
    times = (60 * np.median(t_d), 60 * np.median(t_p))
    gb = gb_readout(cfg.params, *times, 0.7)
    print(f"  Graupner-Brunel read-out of the median times: U {gb[0]:.3f}, "
          f"D {gb[1]:.3f}; ratio {gb[2]:.3f} with 0.7 DOWN, "
          f"{gb_readout(cfg.params, *times, beta)[2]:.3f} with this network's "
          f"{beta:.3f}; the switches' own U and D read "
          f"{gb_readout(cfg.params, 0, 0, beta, U=u, D=dn)[2]:.3f}")
    cfg, _ = load("early_late", overrides=n)
    theta = float(cfg.params.consolidation.theta_pro)
    print(f"protein trigger, early_late network (mean |e| per neuron a minute after, "
          f"min/25/50/75/max; theta_pro = {theta:g}):")
    for label, pulses in (("WTET (21 pulses)", 21), ("1-s train (100 pulses)", 100)):
        e = mean_abs_early_change(cfg.spec, cfg.params, args.seed, pulses)
        print(f"  {label:24s} {quartiles(e)}; above theta_pro: "
              f"{int((e > theta).sum())} of {e.size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
