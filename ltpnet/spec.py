"""ModelSpec: the static, hashable description of a network.

Everything that sets array shapes, dtypes or which code paths exist lives here.
`jit` takes the spec as a static argument, so changing a field recompiles; the
numbers that may be fitted or swept live in `Params` instead.
"""

from __future__ import annotations

import dataclasses

CALCIUM_MODELS = ("nmda", "linear")
RHO_INITS = ("uniform", "bimodal")
DTYPES = ("float32", "float64")
RNGS = ("threefry", "hash")
AMPA_MODES = ("dense", "event")
DRIFT_MODES = ("step", "block")
SYN_DTYPES = ("float32", "bfloat16")
CALCIUM_STEPS = ("euler", "exponential")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Static description of one network.

    Attributes:
        n_post: CA1 pyramidal neurons.
        k: Excitatory synapses per pyramidal neuron (fixed in-degree).
        pathways: `((name, n_inputs), ...)`: the input (CA3) population split into
            named pathways, laid out contiguously in this order. `n_pre` is the sum.
        dt: Time step [ms].
        dtype: Floating dtype of the state, `"float32"` or `"float64"`.
        calcium: `"nmda"` (NMDA-receptor calcium gated by the Mg block of the
            dendritic voltage, plus a bAP/VDCC jump) or `"linear"` (Graupner-Brunel
            jumps C_pre after a presynaptic delay and C_post at post spikes).
        ca_delay_steps: Presynaptic calcium delay D of the linear variant [steps].
        calcium_step: How a step integrates the NMDA calcium influx
            `alpha_N B s`: `"euler"` (`dt alpha_N B s`, as bench-v1 specifies) or
            `"exponential"` (exact for the exponentially decaying gating s over the
            step at fixed B: `alpha_N B s (e^{-dt/tau_N} - e^{-dt/tau_Ca}) /
            (1/tau_Ca - 1/tau_N)`), whose single-pulse calcium does not depend on
            dt (the Euler peak grows with dt: +3.5 % at 1 ms, +19 % at 5 ms).
        phases: Early/late phases with tags, protein synthesis and consolidation.
        homeostasis: Multiplicative synaptic scaling on.
        nmda_current: NMDA conductance acts on the membrane (not only on calcium).
        depression: Short-term depression of release (Tsodyks & Markram 1997): each
            input carries a releasable pool R (1 at rest); a spike releases R
            (relative to a rested pool) into its NMDA trace and AMPA input, uses
            the share `input.u_rel` of it, and the pool recovers as
            (1 - R)/`input.tau_rec`. Needs `calcium = "nmda"`. Off: every spike
            releases 1 (u_rel must then be 0).
        n_inh: Feed-forward inhibitory interneurons (0 = none).
        k_inh: Input synapses per interneuron.
        k_ie: Interneuron synapses per pyramidal neuron.
        t286a: CaMKII T286A: the efficacy switch cannot latch.
        switch_noise: The efficacy switch is stochastic (Graupner & Brunel 2012): each
            step adds `sqrt(dt/tau_rho) sqrt(sigma^2 H(c - theta_d) + sigma_p^2
            H(c - theta_p)) xi` (`sigma`, `sigma_p` of `Params.plasticity`; G&B have
            sigma_p = sigma), so a protocol flips a fraction of a
            pathway's switches rather than all or none. Off: the deterministic switch
            of bench-v1. With `fused`, needs `rng = "hash"` (both engines then draw
            the same variates).
        slow_every: Slow variables (scaling factor, tags, protein, late phase,
            early-phase decay) advance once every this many steps.
        rho_init: Initial efficacy: `"uniform"` (rho ~ U(0,1), bench-v1) or
            `"bimodal"` (a fraction `beta_down` of switches DOWN, the rest UP).
        beta_down: Fraction of synapses initially DOWN for `"bimodal"`.
        sort_synapses: Sort each neuron's inputs by presynaptic index.
        rng: Random numbers of the Poisson inputs: `"threefry"` (`jax.random`, the
            default) or `"hash"` (a keyed counter-based integer hash of (step, input):
            the same Bernoulli law, a different stream, about ten times cheaper).
        fused: Run the fused engine (`ltpnet.fused`): neurons advance step by step,
            and every synapse's calcium and efficacy advance in one pass over packed
            (c, rho) state per block of `syn_block` steps. Same equations; needs
            `rng="hash"` with `switch_noise`. With `nmda_current` each step also
            sums w s over every synapse (the NMDA current reads the weights of the
            block start, as the AMPA input does).
        syn_block: Steps per synapse pass of the fused engine. 1 is the step order
            of docs/model.md exactly; with T > 1 the AMPA weights of a block read rho
            from the start of the block (a lag of at most T - 1 steps) and each
            synapse is read and written once per T steps.
        rho_drift: When the fused engine applies the cubic drift of the switch:
            `"step"` (every step, as in docs/model.md) or `"block"` (once per block,
            over T*dt, on the rho reached at the end of the block).
        ampa: AMPA input `sum_k w_ik x_pre(i,k)`: `"dense"` (over every synapse) or
            `"event"` (fused engine only: only the synapses of inputs that spiked,
            through a pre-major index; the same sum, added in another order).
        syn_dtype: How the fused engine stores each synapse's calcium and efficacy
            between blocks: `"float32"` (8 bytes, as computed) or `"bfloat16"` (4
            bytes, both rounded stochastically once per block: unbiased, and the
            error of a value is at most one bfloat16 unit, 2^-8 relative).
            Arithmetic is float32 either way; bfloat16 needs `dtype="float32"`.
        spike_batch: Input spikes handled per pass by the event-driven AMPA input of
            a block (more spikes take more passes); 0 chooses
            syn_block * (n_pre // 1500) + 8, sized for inputs firing at a few Hz.
    """

    n_post: int = 100
    k: int = 100
    pathways: tuple[tuple[str, int], ...] = (("S1", 100), ("S2", 100), ("bg", 800))
    dt: float = 0.1
    dtype: str = "float32"
    calcium: str = "nmda"
    ca_delay_steps: int = 0
    calcium_step: str = "euler"
    phases: bool = True
    homeostasis: bool = True
    nmda_current: bool = False
    depression: bool = False
    n_inh: int = 0
    k_inh: int = 0
    k_ie: int = 0
    t286a: bool = False
    switch_noise: bool = False
    slow_every: int = 1
    rho_init: str = "bimodal"
    beta_down: float = 0.7
    sort_synapses: bool = True
    rng: str = "threefry"
    fused: bool = False
    syn_block: int = 1
    rho_drift: str = "step"
    ampa: str = "dense"
    syn_dtype: str = "float32"
    spike_batch: int = 0

    @property
    def n_pre(self) -> int:
        return sum(n for _, n in self.pathways)

    @property
    def n_syn(self) -> int:
        return self.n_post * self.k

    @property
    def n_pathways(self) -> int:
        return len(self.pathways)

    @property
    def pathway_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.pathways)

    def pathway_index(self, name: str) -> int:
        """Index of the pathway called `name`; ValueError naming the choices."""
        names = self.pathway_names
        if name not in names:
            raise ValueError(f"unknown pathway {name!r}; the pathways are {list(names)}")
        return names.index(name)

    def pathway_slice(self, name: str) -> slice:
        """Input indices of pathway `name`."""
        i = self.pathway_index(name)
        start = sum(n for _, n in self.pathways[:i])
        return slice(start, start + self.pathways[i][1])

    def check(self) -> ModelSpec:
        """Raise ValueError with the field, value and what is allowed; return self."""

        def bad(field, value, allowed):
            raise ValueError(f"ModelSpec.{field} must be {allowed}, got {field}={value!r}")

        for name in ("n_post", "k", "slow_every", "syn_block"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, v, "a positive integer")
        if self.syn_block > 32:
            bad("syn_block", self.syn_block, "at most 32 (a bit per step in a uint32)")
        for name in ("n_inh", "k_inh", "k_ie", "ca_delay_steps", "spike_batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(name, v, "a non-negative integer")
        if not self.pathways:
            bad("pathways", self.pathways, "a non-empty list of (name, n_inputs)")
        names = [p[0] for p in self.pathways]
        if len(set(names)) != len(names):
            bad("pathways", names, "a list of distinct names")
        for name, n in self.pathways:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                bad("pathways", (name, n), "pairs (name, positive integer)")
        if self.k > self.n_pre:
            bad("k", self.k, f"at most n_pre={self.n_pre} (inputs are distinct)")
        if self.n_inh:
            if not 1 <= self.k_inh <= self.n_pre:
                bad("k_inh", self.k_inh, f"in 1..n_pre={self.n_pre} when n_inh > 0")
            if not 1 <= self.k_ie <= self.n_inh:
                bad("k_ie", self.k_ie, f"in 1..n_inh={self.n_inh} when n_inh > 0")
        if not (isinstance(self.dt, float | int) and self.dt > 0):
            bad("dt", self.dt, "a positive time step in ms")
        if self.dtype not in DTYPES:
            bad("dtype", self.dtype, f"one of {list(DTYPES)}")
        if self.calcium not in CALCIUM_MODELS:
            bad("calcium", self.calcium, f"one of {list(CALCIUM_MODELS)}")
        if self.calcium_step not in CALCIUM_STEPS:
            bad("calcium_step", self.calcium_step, f"one of {list(CALCIUM_STEPS)}")
        if self.rho_init not in RHO_INITS:
            bad("rho_init", self.rho_init, f"one of {list(RHO_INITS)}")
        if self.t286a and not self.phases:
            bad("t286a", self.t286a, "False unless phases is on (T286A relaxes the switch "
                "to the late state)")
        if self.depression and self.calcium != "nmda":
            bad("depression", self.depression, "False unless calcium is 'nmda' (the "
                "linear calcium's jumps C_pre do not read the release)")
        if not 0.0 <= self.beta_down <= 1.0:
            bad("beta_down", self.beta_down, "in [0, 1]")
        if self.rng not in RNGS:
            bad("rng", self.rng, f"one of {list(RNGS)}")
        if self.ampa not in AMPA_MODES:
            bad("ampa", self.ampa, f"one of {list(AMPA_MODES)}")
        if self.rho_drift not in DRIFT_MODES:
            bad("rho_drift", self.rho_drift, f"one of {list(DRIFT_MODES)}")
        if self.syn_dtype not in SYN_DTYPES:
            bad("syn_dtype", self.syn_dtype, f"one of {list(SYN_DTYPES)}")
        for name in ("fused", "switch_noise", "t286a", "phases", "homeostasis",
                     "nmda_current", "depression", "sort_synapses"):
            if not isinstance(getattr(self, name), bool):
                bad(name, getattr(self, name), "true or false")
        if not self.fused:
            for name, default in (("syn_block", 1), ("rho_drift", "step"),
                                  ("ampa", "dense"), ("syn_dtype", "float32")):
                if getattr(self, name) != default:
                    bad(name, getattr(self, name), f"{default!r} unless fused is on")
            return self
        if self.switch_noise and self.rng != "hash":
            bad("rng", self.rng, "'hash' when fused and switch_noise are on (the "
                "fused pass draws the noise of every synapse and step from the hash)")
        if self.syn_dtype == "bfloat16" and self.dtype != "float32":
            bad("syn_dtype", self.syn_dtype, "'float32' unless dtype is 'float32'")
        if self.phases and self.slow_every % self.syn_block:
            bad("slow_every", self.slow_every,
                f"a multiple of syn_block={self.syn_block} when fused and phases are "
                "on (the synaptic slow step ends a block)")
        return self

    @property
    def spikes_per_batch(self) -> int:
        """Spiking inputs per pass of the event-driven AMPA input."""
        return self.spike_batch or self.syn_block * (self.n_pre // 1500) + 8
