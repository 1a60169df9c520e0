"""Runs over several devices and several hosts, with JAX's own distribution.

A single run is split along the post-neuron axis: every per-neuron `(n_post,)` and
per-synapse `(n_post, k)` array (state, connectivity, per-neuron parameters) is
sharded over a one-dimensional device mesh with axis `"post"`, and everything that
belongs to the inputs (`(n_pre,)` arrays, the drive, the random key) is replicated.
The jit-compiled chunk (`ltpnet.run.run_chunk`) is then partitioned by XLA's SPMD
partitioner (GSPMD): each device advances its own neurons and their synapses.

What crosses devices, and when:

- Input spikes: none. Every device draws the same Poisson numbers from the same
  replicated key, so every device holds the full input spike vector.
- Post spikes: the model has no recurrent excitation, so a neuron's spike only
  affects its own synapses. Post spikes leave a device only for outputs: the
  per-step spike count (an all-reduce of one integer), the kept spikes of the first
  `spike_neurons` neurons, and the fEPSP proxies at record points (an all-reduce of
  `n_pathways` sums).
- Interneurons (when `n_inh > 0`) are computed redundantly on every device from the
  replicated input spikes; `ie_idx` is sharded with the pyramidal cells.

A batch (`simulate(..., batch=B)`, `ltpnet sweep`) is instead split along its batch
axis (mesh axis `"batch"`): each device runs whole members, and only records and
spikes are gathered.

Several hosts: call `initialize_from_env()` in every process before anything else
touches JAX. Every process builds the same network from the seed, keeps only its
own shards on its devices, and runs the same program. Process 0 writes the results
(`is_main_process()`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

POST = "post"
BATCH = "batch"

ENV_COORDINATOR = "LTPNET_COORDINATOR"
ENV_NUM_PROCESSES = "LTPNET_NUM_PROCESSES"
ENV_PROCESS_ID = "LTPNET_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "LTPNET_LOCAL_DEVICE_IDS"


# --------------------------------------------------------------------------- devices

def mesh_devices(n: int | None = None) -> list:
    """The first `n` of `jax.devices()` (all when None), checked.

    Raises:
        ValueError: `n` is not a positive integer, exceeds the devices JAX sees, or
            (with several processes) does not span every process's devices.
    """
    devs = jax.devices()
    if n is None:
        n = len(devs)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"devices must be a positive integer, got devices={n!r}")
    n = int(n)
    if n > len(devs):
        hint = ""
        if devs[0].platform == "cpu":
            hint = ("; on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count="
                    f"{n} in the environment before JAX starts to split the host "
                    f"into {n} devices")
        raise ValueError(f"devices={n} but JAX sees {len(devs)} {devs[0].platform} "
                         f"device(s){hint}")
    if jax.process_count() > 1 and n != len(devs):
        raise ValueError(f"with {jax.process_count()} processes the mesh must span "
                         f"every device of every process: devices={len(devs)}, "
                         f"got devices={n}")
    return devs[:n]


def make_mesh(n: int | None = None, axis: str = POST) -> Mesh:
    """One-dimensional mesh over the first `n` devices, axis name `axis`."""
    devs = np.array(mesh_devices(n))
    try:
        from jax.sharding import AxisType

        return Mesh(devs, (axis,), axis_types=(AxisType.Auto,))
    except ImportError:  # older JAX: every mesh axis is automatic
        return Mesh(devs, (axis,))


def divisors(n: int, up_to: int) -> list[int]:
    """Device counts in 1..up_to that divide `n`."""
    return [d for d in range(1, up_to + 1) if n % d == 0]


def check_divisible(what: str, size: int, n_devices: int, hint: str = ""):
    """ValueError unless `size` splits evenly over `n_devices`.

    Shards must be equal: ltpnet does not pad the population with inactive neurons
    (they would enter the spike counts and pathway sums).
    """
    if size % n_devices:
        ok = divisors(size, max(n_devices, len(jax.devices())))
        raise ValueError(f"{what}={size} does not split evenly over {n_devices} "
                         f"devices; choose {what} a multiple of {n_devices}"
                         f"{hint}, or a device count that divides {size} "
                         f"(here: {ok})")


# --------------------------------------------------------------------------- shardings

def _named(mesh: Mesh, *spec) -> NamedSharding:
    return NamedSharding(mesh, P(*spec))


def _rows(mesh: Mesh, x, axis: str) -> NamedSharding:
    """Leading axis split over `axis`, the other axes whole."""
    return _named(mesh, axis, *([None] * (np.ndim(x) - 1)))


def replicated(mesh: Mesh) -> NamedSharding:
    return _named(mesh)


def state_shardings(state, mesh: Mesh, *, batch: bool = False):
    """State-shaped tree of NamedShardings.

    Post axis: `post` and `syn` arrays split by rows, `pre` and `inh` replicated.
    Batch axis: every leaf split along its leading (batch) axis.
    """
    if batch:
        return jax.tree_util.tree_map(lambda x: _rows(mesh, x, BATCH), state)
    rows = lambda x: _rows(mesh, x, POST)  # noqa: E731
    rep = lambda x: replicated(mesh)  # noqa: E731
    tm = jax.tree_util.tree_map
    return state.replace(
        pre=tm(rep, state.pre), post=tm(rows, state.post), syn=tm(rows, state.syn),
        inh=None if state.inh is None else tm(rep, state.inh))


def conn_shardings(conn, mesh: Mesh, *, batch: bool = False):
    """Connectivity-shaped tree: `pre_idx` and `ie_idx` split by rows (post axis)."""
    rep = replicated(mesh)
    if batch:
        return jax.tree_util.tree_map(lambda x: rep, conn)
    return conn.replace(
        pre_idx=_rows(mesh, conn.pre_idx, POST), pre_pathway=rep,
        inh_idx=None if conn.inh_idx is None else rep,
        ie_idx=None if conn.ie_idx is None else _rows(mesh, conn.ie_idx, POST))


def params_shardings(params, mesh: Mesh, n_post: int, *, params_axes=None,
                     batch: bool = False):
    """Params-shaped tree of shardings (None for Python scalars, left as they are).

    Post axis: leaves of shape `(n_post,)` or `(n_post, ...)` (per-neuron or
    per-synapse values) are split by rows, except `input.*` (per pathway). Batch axis:
    leaves mapped in `params_axes` are split along their batch axis.
    """
    rep = replicated(mesh)
    if batch:
        axes = params_axes
        if axes is None:
            axes = jax.tree_util.tree_map(lambda _: None, params)

        def one_b(ax, x):
            if not hasattr(x, "shape"):
                return None
            return _rows(mesh, x, BATCH) if ax == 0 else rep

        return jax.tree_util.tree_map(one_b, axes, params,
                                      is_leaf=lambda x: x is None)

    def one(path, x):
        if not hasattr(x, "shape"):
            return None
        group = jax.tree_util.keystr(path[:1]).lstrip(".")
        if group != "input" and np.ndim(x) >= 1 and np.shape(x)[0] == n_post:
            return _rows(mesh, x, POST)
        return rep

    return jax.tree_util.tree_map_with_path(one, params)


def put(tree, shardings):
    """Place host or device arrays of `tree` with `shardings` (None: leave as is).

    Works with one process and with several: each process supplies the same global
    value and keeps the shards of its own devices.
    """

    def one(x, s):
        if s is None or x is None:
            return x
        if jax.process_count() == 1 or (isinstance(x, jax.Array)
                                         and not x.is_fully_addressable):
            return jax.device_put(x, s)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(x))
            impl = jax.random.key_impl(x)
            raw = jax.make_array_from_callback(
                data.shape, NamedSharding(s.mesh, P(*s.spec, None)),
                lambda idx: data[idx])
            return jax.random.wrap_key_data(raw, impl=impl)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])

    flat_s, _ = jax.tree_util.tree_flatten(shardings, is_leaf=lambda x: x is None)
    flat_x, treedef = jax.tree_util.tree_flatten(tree, is_leaf=lambda x: x is None)
    if len(flat_s) != len(flat_x):
        raise ValueError("tree and shardings differ in structure")
    return jax.tree_util.tree_unflatten(
        treedef, [one(x, s) for x, s in zip(flat_x, flat_s, strict=True)])


@dataclasses.dataclass(frozen=True)
class Placement:
    """What `shard_inputs` did: the mesh, its axis and the device count."""

    mesh: Mesh
    axis: str
    n_devices: int


def placement(spec, n_devices: int | None, *, batch: int | None = None) -> Placement:
    """Check that the run splits evenly and build its mesh (post or batch axis)."""
    devs = mesh_devices(n_devices)
    n = len(devs)
    if batch is None:
        check_divisible("n_post", spec.n_post, n, " ([spec] n_post)")
        return Placement(make_mesh(n, POST), POST, n)
    check_divisible("batch", batch, n, " (sweep members x trials)")
    return Placement(make_mesh(n, BATCH), BATCH, n)


def shard_inputs(spec, params, conn, state, key, n_devices: int | None, *,
                 batch: int | None = None, params_axes=None):
    """Place the inputs of a run on a device mesh.

    Args:
        spec: The model (its `n_post` must be a multiple of the device count).
        params, conn, state, key: What `ltpnet.run.run_chunk` (or the batch runner)
            takes; with `batch`, `state` and `key` carry the leading batch axis.
        n_devices: Devices of the mesh (None: all).
        batch: Batch size: split the batch axis instead of the post axis.
        params_axes: The `in_axes` tree of batched params.

    Returns:
        `(params, conn, state, key, placement)`; the jit-compiled chunk partitions
        itself to match.
    """
    pl = placement(spec, n_devices, batch=batch)
    b = batch is not None
    mesh = pl.mesh
    conn = put(conn, conn_shardings(conn, mesh, batch=b))
    state = put(state, state_shardings(state, mesh, batch=b))
    params = put(params, params_shardings(params, mesh, spec.n_post,
                                          params_axes=params_axes, batch=b))
    key = put(key, _rows(mesh, key, BATCH) if b else replicated(mesh))
    return params, conn, state, key, pl


def host_build_context(n_devices: int | None):
    """Context in which to build a network that will be sharded.

    The network is built in host memory (the CPU backend) rather than on the first
    accelerator, which would otherwise have to hold every array at once.
    """
    if n_devices is None:
        return contextlib.nullcontext()
    try:
        cpu = jax.local_devices(backend="cpu")[0]
    except RuntimeError:
        return contextlib.nullcontext()
    return jax.default_device(cpu)


def to_host(tree):
    """`jax.device_get` that also gathers arrays spread over several processes."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return x

    return jax.device_get(jax.tree_util.tree_map(one, tree))


def shard_counts(tree) -> dict[str, tuple[int, ...]]:
    """Leaf path -> shard shape (for checks and the docs)."""
    out = {}
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(x, jax.Array):
            name = jax.tree_util.keystr(path).lstrip(".")
            out[name] = x.sharding.shard_shape(x.shape)
    return out


# --------------------------------------------------------------------------- hosts

@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Start-up of one process of a multi-host run (`jax.distributed.initialize`).

    Attributes:
        coordinator: `host:port` of process 0's coordination service.
        num_processes: Processes in the run (one per host, usually).
        process_id: This process, in `0..num_processes - 1`.
        local_device_ids: Devices of this host this process uses (None: all).
    """

    coordinator: str
    num_processes: int
    process_id: int
    local_device_ids: tuple[int, ...] | None = None


def _int(name: str, text, flag: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError(f"{name} ({flag}) must be an integer, got {text!r}") from None


def distributed_config(coordinator: str | None = None,
                       num_processes: int | str | None = None,
                       process_id: int | str | None = None, *,
                       local_device_ids: Sequence[int] | str | None = None,
                       env: Mapping[str, str] | None = None
                       ) -> DistributedConfig | None:
    """Resolve the start-up of a multi-host run from arguments, else the environment.

    Arguments win over `LTPNET_COORDINATOR`, `LTPNET_NUM_PROCESSES`,
    `LTPNET_PROCESS_ID` and `LTPNET_LOCAL_DEVICE_IDS` (comma-separated).

    Returns:
        None when none of the three is set anywhere (a single-process run), else the
        checked `DistributedConfig`.

    Raises:
        ValueError: Some but not all are set (naming each missing variable and its
            flag), or a value is malformed or out of range.
    """
    env = os.environ if env is None else env
    given = {
        ENV_COORDINATOR: (coordinator, "--coordinator"),
        ENV_NUM_PROCESSES: (num_processes, "--num-processes"),
        ENV_PROCESS_ID: (process_id, "--process-id"),
    }
    vals = {}
    for var, (arg, _) in given.items():
        v = arg if arg is not None else env.get(var)
        vals[var] = None if v is None or str(v).strip() == "" else v
    if all(v is None for v in vals.values()):
        return None
    missing = [f"{var} (or {given[var][1]})" for var, v in vals.items() if v is None]
    if missing:
        raise ValueError("a multi-process run needs the coordinator address, the "
                         "number of processes and this process's id; missing: "
                         + ", ".join(missing))
    coord = str(vals[ENV_COORDINATOR]).strip()
    host, sep, port = coord.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{ENV_COORDINATOR} (--coordinator) must be host:port, "
                         f"e.g. 10.0.0.1:12345, got {coord!r}")
    n = _int(ENV_NUM_PROCESSES, vals[ENV_NUM_PROCESSES], "--num-processes")
    if n < 1:
        raise ValueError(f"{ENV_NUM_PROCESSES} (--num-processes) must be >= 1, "
                         f"got {n}")
    pid = _int(ENV_PROCESS_ID, vals[ENV_PROCESS_ID], "--process-id")
    if not 0 <= pid < n:
        raise ValueError(f"{ENV_PROCESS_ID} (--process-id) must be in 0..{n - 1} "
                         f"for {n} processes, got {pid}")
    ids = local_device_ids if local_device_ids is not None else env.get(
        ENV_LOCAL_DEVICE_IDS)
    if isinstance(ids, str):
        try:
            ids = tuple(int(s) for s in ids.split(",") if s.strip())
        except ValueError:
            raise ValueError(f"{ENV_LOCAL_DEVICE_IDS} must be comma-separated "
                             f"integers, got {ids!r}") from None
        ids = ids or None
    elif ids is not None:
        ids = tuple(int(i) for i in ids)
    return DistributedConfig(coord, n, pid, ids)


def initialize_from_env(coordinator: str | None = None,
                        num_processes: int | str | None = None,
                        process_id: int | str | None = None, *,
                        local_device_ids: Sequence[int] | str | None = None,
                        timeout_s: int = 300,
                        env: Mapping[str, str] | None = None,
                        _initialize=None) -> DistributedConfig | None:
    """Start `jax.distributed` from flags or `LTPNET_*` variables (see
    `distributed_config`); do nothing for a single-process run.

    Call it in every process before anything else uses JAX. Afterwards
    `jax.devices()` lists the devices of every process and `jax.process_index()`
    is this process's id.

    Returns:
        The config used, or None (nothing to start).
    """
    cfg = distributed_config(coordinator, num_processes, process_id,
                             local_device_ids=local_device_ids, env=env)
    if cfg is None:
        return None
    init = jax.distributed.initialize if _initialize is None else _initialize
    if _initialize is None and jax.distributed.is_initialized():
        return cfg
    init(coordinator_address=cfg.coordinator, num_processes=cfg.num_processes,
         process_id=cfg.process_id,
         local_device_ids=None if cfg.local_device_ids is None
         else list(cfg.local_device_ids),
         initialization_timeout=timeout_s)
    return cfg


def is_main_process() -> bool:
    """True in process 0 (the one that writes files)."""
    return jax.process_index() == 0


__all__ = [
    "BATCH", "ENV_COORDINATOR", "ENV_LOCAL_DEVICE_IDS", "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID", "POST", "DistributedConfig", "Placement", "check_divisible",
    "conn_shardings", "distributed_config", "host_build_context",
    "initialize_from_env", "is_main_process", "make_mesh", "mesh_devices",
    "params_shardings", "placement", "put", "shard_counts", "shard_inputs",
    "state_shardings", "to_host",
]
