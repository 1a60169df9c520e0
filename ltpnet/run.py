"""The one place that owns the loop.

`run_chunk` is the jit boundary: one chunk of `n_records * observe.every` steps as
nested `lax.scan`s (record points > slow-clock blocks > fast steps). `run_batch` is
the same, vmapped over trials and/or parameter sets. `simulate` is the Python loop
over chunks: it builds each chunk's drive from the protocol, dispatches chunk i+1
before pulling chunk i to the host, and hands every finished chunk to a callback
(the HDF5 writer, a progress bar).

Per-step random keys are `fold_in(key, step_idx)` with the global step index, so a
run cut into chunks equals an unbroken run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .connectivity import Connectivity
from .params import Params
from .protocols import Protocol
from .record import Observe
from .record import observe as _observe
from .spec import ModelSpec
from .state import State, build
from .step import Drive, discretise, slow_step, step


def _run_impl(spec: ModelSpec, obs: Observe, n_records: int, params: Params,
              conn: Connectivity, state: State, drive: Drive, key, step0):
    obs.check(spec)  # at trace time: a clear error instead of a failed reshape
    if spec.fused:
        from . import fused

        return fused.run_impl(spec, obs, n_records, params, conn, state, drive, key,
                              step0)
    co = discretise(spec, params, conn)
    slow = spec.slow_every
    per_rec = obs.every // slow
    n_sp, n_in = obs.spike_neurons, obs.input_neurons

    def fast(st, xs):
        d, idx = xs
        k = key if spec.rng == "hash" else jax.random.fold_in(key, idx)
        st, (x, y) = step(spec, co, conn, st, d, k, idx)
        return st, (y[:n_sp], x[:n_in], jnp.sum(y, dtype=jnp.int32))

    def slow_block(st, xs):
        st, ys = jax.lax.scan(fast, st, xs)
        return slow_step(spec, co, st, xs[1][-1]), ys

    def record_block(st, xs):
        st, ys = jax.lax.scan(slow_block, st, xs)
        return st, (_observe(spec, obs, co, conn, st), ys)

    n = n_records * obs.every
    idx = (step0 + jnp.arange(n, dtype=jnp.int32)).reshape(n_records, per_rec, slow)
    d = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a).reshape((n_records, per_rec, slow) + a.shape[1:]), drive)
    state, (records, (ys, xs, counts)) = jax.lax.scan(record_block, state, (d, idx))
    flat = lambda a: a.reshape((n,) + a.shape[3:])  # noqa: E731
    return state, records, {"post": flat(ys), "input": flat(xs), "count": flat(counts)}


run_chunk = jax.jit(_run_impl, static_argnums=(0, 1, 2), donate_argnums=(5,))
run_chunk.__doc__ = """Run `n_records * obs.every` steps from global step `step0`.

Args:
    spec, obs, n_records: Static: the model, the recording plan, records per chunk.
    params: Params (any leaf may carry per-neuron or per-synapse arrays).
    conn: Connectivity.
    state: State (donated: do not reuse the array you pass).
    drive: Stacked Drive with leading axis `n_records * obs.every`.
    key: Base PRNG key of the run.
    step0: Global index of the first step (int32).

Returns:
    `(state, records, spikes)`: the final state, each recorded variable stacked along
    a leading record axis, and spikes per step: `post` `(n, spike_neurons)` bool,
    `input` `(n, input_neurons)` bool and `count` `(n,)` (post spikes of all neurons).
"""


def make_batch_runner(params_axes=None, drive_axis=None):
    """`run_chunk` vmapped over a leading batch axis of state and key.

    `params_axes` is an `in_axes` tree for Params (None: shared); `drive_axis` is 0 when
    each batch member has its own drive. Returns a jitted function with the
    signature of `run_chunk`.
    """

    def impl(spec, obs, n_records, params, conn, state, drive, key, step0):
        f = lambda p, s, d, k: _run_impl(spec, obs, n_records, p, conn, s, d, k, step0)  # noqa: E731
        return jax.vmap(f, in_axes=(params_axes, 0, drive_axis, 0))(params, state, drive, key)

    return jax.jit(impl, static_argnums=(0, 1, 2), donate_argnums=(5,))


run_batch = make_batch_runner()
_BATCH_RUNNERS = {}


def _batch_runner(params_axes, drive_axis=None):
    flat = jax.tree_util.tree_flatten(params_axes, is_leaf=lambda x: x is None)
    key = (flat[1], tuple(flat[0]), drive_axis)
    if key not in _BATCH_RUNNERS:
        _BATCH_RUNNERS[key] = make_batch_runner(params_axes, drive_axis)
    return _BATCH_RUNNERS[key]


def _drives(protocols, spec: ModelSpec, s: int, n: int) -> Drive:
    """One chunk of drive per member, stacked along a leading batch axis."""
    ds = [p.drive(spec, s, n) for p in protocols]
    return Drive(pulses=np.stack([d.pulses for d in ds]),
                 post=np.stack([d.post for d in ds]))


def stack_params(members: Sequence[Params]) -> tuple[Params, Params | None]:
    """`(params, params_axes)` for `simulate(..., batch=len(members))`.

    Leaves that differ between the members get a leading batch axis (broadcast first,
    so a scalar in one member and a per-neuron array in another can differ); the
    others stay shared. `params_axes` is None when no leaf differs. For example::

        members = [lt.Params().with_values("input", rate=r) for r in (1.0, 2.0, 4.0)]
        params, axes = lt.stack_params(members)
        lt.simulate(spec, params, 1000.0, batch=3, params_axes=axes)
    """
    members = list(members)
    if not members or not all(isinstance(m, Params) for m in members):
        raise TypeError(f"stack_params needs a non-empty sequence of Params, got "
                        f"{[type(m).__name__ for m in members]}")
    flat = [jax.tree_util.tree_flatten(m) for m in members]
    treedef = flat[0][1]
    leaves, axes = [], []
    for vals in zip(*(f[0] for f in flat), strict=True):
        arrs = [np.asarray(v, float) for v in vals]
        if all(np.array_equal(arrs[0], a) for a in arrs[1:]):
            leaves.append(vals[0])
            axes.append(None)
        else:
            shape = np.broadcast_shapes(*(a.shape for a in arrs))
            leaves.append(np.stack([np.broadcast_to(a, shape) for a in arrs]))
            axes.append(0)
    varied = any(a == 0 for a in axes)
    return (jax.tree_util.tree_unflatten(treedef, leaves),
            jax.tree_util.tree_unflatten(treedef, axes) if varied else None)


def _member(params: Params, params_axes, b: int = 0) -> Params:
    """Member `b` of batched params (leaves mapped in `params_axes` are indexed)."""
    if params_axes is None:
        return params
    return jax.tree_util.tree_map(lambda ax, x: x if ax is None else np.asarray(x)[b],
                                  params_axes, params, is_leaf=lambda x: x is None)


@dataclasses.dataclass
class Result:
    """What `simulate` returns (records concatenated on the host).

    Attributes:
        spec, params, conn, observe: What was run.
        state: Final state.
        t: `(n_records,)` record times [ms].
        records: name -> array with a leading record axis.
        post_spikes: `(n_steps, spike_neurons)` bool.
        input_spikes: `(n_steps, input_neurons)` bool.
        spike_count: `(n_steps,)` post spikes of all neurons per step.
        wall_s: Wall-clock seconds (compile included).
    """

    spec: ModelSpec
    params: Params
    conn: Connectivity
    observe: Observe
    state: State
    t: np.ndarray
    records: dict
    post_spikes: np.ndarray
    input_spikes: np.ndarray
    spike_count: np.ndarray
    wall_s: float

    def fepsp(self, pathway: str) -> np.ndarray:
        """fEPSP-slope proxy of `pathway` over time (last axis), normalised to its first record."""
        f = self.records["fepsp"][..., self.spec.pathway_index(pathway)]
        return f / f[..., :1]

    def mean_rate(self):
        """Mean post firing rate over the run [Hz] (one per member in a batch)."""
        T = self.spike_count.shape[-1] * self.spec.dt / 1000.0
        rate = self.spike_count.sum(axis=-1) / (self.spec.n_post * T)
        return float(rate) if np.ndim(rate) == 0 else rate


def _build_context(devices):
    """Where to build a network: in host memory when it will be sharded."""
    if devices is None:
        return contextlib.nullcontext()
    from .distributed import host_build_context

    return host_build_context(devices)


def n_steps_for(spec: ModelSpec, duration_ms: float, every: int) -> int:
    """Steps covering `duration_ms`, rounded up to a whole number of records."""
    steps = int(math.ceil(round(duration_ms / spec.dt, 6)))
    return int(math.ceil(steps / every) * every)


def simulate(spec: ModelSpec, params: Params, duration_ms: float, *, seed: int = 0,
             protocol: Protocol | Sequence[Protocol] | None = None, observe: Observe | None = None,
             records_per_chunk: int = 100, conn: Connectivity | None = None,
             state: State | None = None, step0: int = 0,
             on_chunk: Callable | None = None, checkpoint_every: int = 0,
             keep: bool = True, noise_seed: int | None = None,
             batch: int | None = None, params_axes=None,
             noise_seeds=None, devices: int | None = None) -> Result:
    """Build (unless given) and run a network for `duration_ms`.

    Args:
        spec: Static model description.
        params: Parameters.
        duration_ms: Biological time to simulate [ms] (rounded up to whole records).
        seed: Seed of the network (numpy) and of the spike noise (JAX).
        protocol: Stimulation protocol (default: none, spontaneous activity only);
            with `batch`, a sequence of `batch` protocols gives each member its own.
        observe: Recording plan (default: `Observe()`).
        records_per_chunk: Records per compiled chunk (the host sees data per chunk).
        conn, state: Start from these instead of building from `seed` (with `batch`,
            a given state must carry the leading batch axis; a built one is shared,
            drawn with the first member's params).
        step0: Global index of the first step (to continue a run).
        on_chunk: Called as `on_chunk(step_end, records, spikes, state)` with host
            arrays after each chunk, in order; `state` is the host state at
            `step_end` on checkpoint chunks and None otherwise.
        checkpoint_every: Pass the state to `on_chunk` every this many chunks (and
            after the last); 0 = only after the last.
        keep: Keep the records in memory and return them (False for very long runs
            that stream everything through `on_chunk`).
        noise_seed: Seed of the spike noise (default: `seed`); the network is drawn
            from `seed`.
        batch: Run `batch` members as one vmapped computation. They share the network
            and initial state; records, spikes and the state get a leading batch axis.
        params_axes: Params-shaped tree of 0 (leaf has a leading batch axis) or None
            (shared); None = all shared.
        noise_seeds: One noise seed per member (default: all `noise_seed`). Member b
            equals a single run with the same params and `noise_seed=noise_seeds[b]`.
        devices: Split the run over the first `devices` of `jax.devices()`: the
            post-neuron axis (`spec.n_post` must be a multiple), or with `batch` the
            batch axis (`batch` must be a multiple). None: one device, as is. See
            `ltpnet.distributed`; results equal the one-device run within float32
            rounding.

    Returns:
        A `Result`.
    """
    spec.check()
    params.check()
    observe = (observe or Observe()).check(spec)
    per_member = isinstance(protocol, list | tuple)
    if per_member:
        if batch is None or len(protocol) != batch:
            raise ValueError(f"a sequence of {len(protocol)} protocols needs batch="
                             f"{len(protocol)} (one per member), got batch={batch}")
        if devices is not None:
            raise ValueError("per-member protocols run on one device: drop devices")
        protocol = [p.check(spec) for p in protocol]
    else:
        protocol = (protocol or Protocol()).check(spec)
    built = state is None
    if conn is None or state is None:
        with _build_context(devices):
            conn_b, state_b = build(spec, params if batch is None else _member(params, params_axes), seed)
        conn, state = conn or conn_b, state or state_b
    if spec.fused:
        from . import fused

        conn = fused.prepare(spec, conn)
    if devices is None:  # a sharded run places conn itself, shard by shard
        conn = jax.tree_util.tree_map(jnp.asarray, conn)
    noise_seed = seed if noise_seed is None else noise_seed
    runner = run_chunk
    if batch is None:
        key = jax.random.key(noise_seed)
    else:
        noise_seeds = [noise_seed] * batch if noise_seeds is None else list(noise_seeds)
        if len(noise_seeds) != batch:
            raise ValueError(f"noise_seeds has {len(noise_seeds)} entries, expected batch={batch}")
        key = jax.vmap(jax.random.key)(jnp.asarray(noise_seeds, jnp.uint32))
        if built:  # a given state must already carry the batch axis
            state = jax.tree_util.tree_map(
                lambda a: jnp.array(jnp.broadcast_to(a, (batch,) + a.shape)), state)
        runner = _batch_runner(params_axes, 0 if per_member else None)
    get = jax.device_get
    if devices is not None:
        from . import distributed

        params, conn, state, key, _ = distributed.shard_inputs(
            spec, params, conn, state, key, devices, batch=batch,
            params_axes=params_axes)
        get = distributed.to_host
    if spec.fused:  # the state stays packed between chunks; callers see it unpacked
        state = fused.pack(state, spec.syn_dtype)
        get = (lambda g: lambda tree: fused.unpack_all(g(tree)))(get)
    total = n_steps_for(spec, duration_ms, observe.every)
    chunk = records_per_chunk * observe.every
    t_wall = time.perf_counter()
    recs, sp_post, sp_in, counts = [], [], [], []
    pending = None
    s, end, i_chunk = step0, step0 + total, 0

    def deliver(p):
        s_end, r, sp, st = get(p)
        if on_chunk is not None:
            on_chunk(s_end, r, sp, st)
        if keep:
            recs.append(r)
            sp_post.append(sp["post"])
            sp_in.append(sp["input"])
            counts.append(sp["count"])

    while s < end:
        n = min(chunk, end - s)
        drive = (_drives(protocol, spec, s, n) if per_member
                 else protocol.drive(spec, s, n))
        state, r, sp = runner(spec, observe, n // observe.every, params, conn,
                              state, drive, key, jnp.int32(s))
        s += n
        i_chunk += 1
        ckpt = s >= end or (checkpoint_every and i_chunk % checkpoint_every == 0)
        # the state is donated to the next chunk: copy it out now if it is wanted
        st = get(state) if ckpt and on_chunk is not None else None
        if pending is not None:
            deliver(pending)  # chunk i-1 is pulled while chunk i runs
        pending = (s, r, sp, st)
    if pending is not None:
        deliver(pending)
    ax = 0 if batch is None else 1
    cat = lambda xs: np.concatenate(xs, axis=ax)  # noqa: E731
    rec = {k: cat([r[k] for r in recs]) for k in observe.variables} if recs else {}
    n_rec_total = total // observe.every
    t = (step0 + (np.arange(n_rec_total) + 1) * observe.every) * spec.dt
    if spec.fused:
        state = fused.unpack(state)
    return Result(
        spec=spec, params=params, conn=conn, observe=observe, state=state, t=t,
        records=rec,
        post_spikes=cat(sp_post) if sp_post else np.zeros((0, 0), bool),
        input_spikes=cat(sp_in) if sp_in else np.zeros((0, 0), bool),
        spike_count=cat(counts) if counts else np.zeros(0, np.int32),
        wall_s=time.perf_counter() - t_wall,
    )
