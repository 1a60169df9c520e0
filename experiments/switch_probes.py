"""What a protocol does to the switch's noise and to the protein trigger.

Two probes behind docs/model.md, section 6, on pathway S1 of the canonical networks
with the hippocampal defaults:

- Calcium (the maintenance network, configs/experiments/maintenance.toml): five test
  pulses 1 s apart, a weak tetanus (WTET, 21 pulses at 100 Hz) and one 1-s train at
  100 Hz. Printed: the time each S1 synapse spends above theta_d and above theta_p
  (quartiles over synapses) and the median peak calcium. The switch noise acts only
  there: sigma above theta_d, sigma_p above theta_p.
- Frequency trains (the frequency_response network): 20 pulses at 1, 3, 5, 10, 20
  and 50 Hz. Printed: the time per pulse that the median S1 synapse spends above
  theta_d and above theta_p. Dudek & Bear's curve needs LTD to weaken from 3 to
  10 Hz; this shows what the model's calcium does there.
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
    """`(t_d, t_p)` per pulse [ms] of each S1 synapse over a train of `n_pulses` at
    `freq_hz` (the time above each threshold from the first pulse to 300 ms after the
    last, divided by `n_pulses`)."""
    start = 100.0
    prot = lt.Protocol().train("S1", start, freq_hz, n_pulses)
    t_end = start + (n_pulses - 1) * 1000.0 / freq_hz + 300.0
    t_d, t_p, _ = calcium_times(spec, params, seed, prot, t_end)
    return t_d / n_pulses, t_p / n_pulses


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
          "above theta_d / theta_p, median over S1 synapses):")
    for f in (1.0, 3.0, 5.0, 10.0, 20.0, 50.0):
        t_d, t_p = train_times(cfg.spec, cfg.params, args.seed, f)
        print(f"  {f:4g} Hz  {np.median(t_d):6.1f} / {np.median(t_p):6.1f}")
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
