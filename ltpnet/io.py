"""Results files: SONATA-style HDF5, written while the run goes.

`ResultsWriter.on_chunk` is the `on_chunk` callback of `ltpnet.simulate`: every chunk is
appended to the file (in a background thread) and flushed, so a run killed at any moment
leaves a readable file holding every chunk written before, with `complete = False`, and
the last checkpoint to continue from (`load_checkpoint`, `ResultsWriter(resume=True)`).

Layout (`n_batch` leading axis on every time series and checkpoint leaf in batched runs)::

    /                       attrs: magic (0x0A7A), version [0, 1], format, format_version,
                            ltpnet_version, jax_version, hdf5_version, git_sha, device,
                            config (resolved TOML), seed, dt [ms], record_every [steps],
                            pathways, n_batch, step_start, step_end, records_written,
                            complete, created
    /spikes/CA1/            post-synaptic (CA1) spikes, attr sorting = by_time (enum)
        timestamps          (n_spikes,) float64 [ms]
        node_ids            (n_spikes,) uint64
        n_spikes            (n_batch,) uint64, batched files only (rows are padded)
    /spikes/CA3/            input (CA3) spikes, same layout; node_ids index the inputs
    /report/CA1/<var>/data  (time, elements) per-neuron or per-synapse variable
    /report/CA1/<var>/mapping/{node_ids, index_pointers, element_ids, time}
    /readout/time           (time,) float64 [ms]: time of each record
    /readout/<var>/<pathway> per-pathway variables (fepsp), attr baseline = first value
    /readout/spike_count    (time,) int64: post spikes of all neurons per record interval
    /readout/rate           (time,) float64 [Hz]: the same as a population rate
    /connectivity/          pre_idx (n_post, k), pre_pathway (n_pre,), inh_idx, ie_idx
    /protocol/              pulses/<pathway> and post: stimulation times [ms]
    /grid/<table.key>       (n_batch, ...) parameter values of a batched sweep
    /checkpoint/            attrs: step_end, records_written, spikes_written_<pop>, seed,
                            slot, n_checkpoints
        slot0/, slot1/      State leaves (pre/s, post/refrac, syn/rho, ...): two slots,
                            written alternately; attr `slot` names the valid one

Times: the spike of step index n (global, 0-based) has the timestamp t = n * dt, the
time at which that step starts; this is the convention of `ltpnet.Protocol` (a pulse at
t is delivered in step round(t / dt)). Record i of a chunk starting at step s is taken
after step s + (i + 1) * every - 1, at t = (s + (i + 1) * every) * dt, as in
`Result.t`. Report mapping `time` is `[start, stop, dt]` [ms] with `stop` exclusive
(`(stop - start) / dt` records).

The elements of a per-synapse report are the synapses of `Observe.neurons` neurons
flattened row by row: element j belongs to node `j // k` and is its synapse `j % k`
(`element_ids`); `index_pointers` (n + 1,) gives each node's columns, as in SONATA.

Crash safety: every chunk is written with the file open in SWMR-write mode (HDF5's
single-writer/multiple-reader mode, which orders metadata writes so that the file on
disk is consistent at any moment) and closed after it, so between chunks the file is a
plain, closed HDF5 file. If the process dies while a chunk is being written, HDF5 leaves
its "file open for write" flags set: `h5py.File(path, "r", swmr=True)` (what
`open_results` falls back to) still reads it, and `recover(path)` clears the flags (like
`h5clear -s`) so that any HDF5 reader opens it. A checkpoint is written into the slot
not in use and made valid by one attribute update after it is flushed, so a kill never
leaves a half-written checkpoint. Data past the checkpoint may be incomplete; resuming
truncates it. Files are flushed, not fsynced: they survive the death of the process, not
of the machine.

Storage: in SWMR mode HDF5 never reuses file space, so a compressed chunk that is
rewritten leaves its old copy behind. Records are therefore stored gzip-compressed (with
shuffle and Fletcher-32 checksums, so a torn write reads as an error, never as wrong
numbers) in chunks whose length divides the records per chunk of the run (the series
are created at the first chunk), so that each append writes whole chunks once. Spike
lists (appended in pieces of any length) and the checkpoint slots (overwritten in
place) are chunked or contiguous but not compressed.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect as _pyinspect
import os
import queue
import re
import subprocess
import threading
import typing

import h5py
import jax
import numpy as np

from . import __version__, units
from . import params as _params
from .connectivity import Connectivity, fixed_indegree
from .params import Params
from .protocols import Protocol
from .record import VARIABLES, Observe
from .spec import ModelSpec
from .state import State, state_shapes

__all__ = ["Checkpoint", "ResultsWriter", "inspect", "load_checkpoint", "open_results",
           "recover"]

SONATA_MAGIC = 0x0A7A
SONATA_VERSION = (0, 1)
FORMAT = "ltpnet-results"
FORMAT_VERSION = 2  # 2: phases checkpoints hold syn/rho_lag (two-stage early phase)
POST, INPUT = "CA1", "CA3"  # spike and report populations
SORTING = h5py.enum_dtype({"none": 0, "by_id": 1, "by_time": 2}, basetype="u1")
_COMPRESS = {"compression": "gzip", "compression_opts": 4, "shuffle": True,
             "fletcher32": True}
_CHUNK_BYTES = 1 << 18
_SPIKE_CHUNK = 1 << 13
_NO_NODE = np.iinfo(np.uint64).max  # node_ids padding of batched spike rows
_LIBVER = ("v110", "latest")


# --------------------------------------------------------------------------- files


def _fapl(locking: bool = True):
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_LATEST)
    if not locking:
        fapl.set_file_locking(False, True)
    return fapl


def _open_swmr_write(path) -> h5py.File:
    """Open for appending in SWMR-write mode (flags set in one superblock write).

    File locking is off: the writer must not be blocked by a reader that holds the file
    open between two chunks (HDF5 readers take a shared lock).
    """
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE,
                        fapl=_fapl(locking=False))
    return h5py.File(fid)


def open_results(path) -> h5py.File:
    """Open a results file read-only, also while it is written or after a crash.

    A file whose writer is inside a chunk (or died there) carries HDF5's "open for
    write" flags; it is then opened in SWMR-read mode, which reads it consistently.
    """
    try:
        return h5py.File(path, "r")
    except OSError as e:
        if "already open" not in str(e) and "consistency flags" not in str(e):
            raise
        try:
            return h5py.File(path, "r", swmr=True, libver=_LIBVER)
        except OSError as e2:
            raise OSError(f"{path}: the file was left open for writing by a process that "
                          f"stopped; if no process writes it, run "
                          f"ltpnet.io.recover({str(path)!r}) to clear the flags "
                          f"({e2})") from e


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 `hashlittle`, the checksum of HDF5 metadata."""
    M = 0xFFFFFFFF

    def rot(x, k):
        return ((x << k) | (x >> (32 - k))) & M

    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & M
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & M
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & M
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & M
        a = ((a - c) & M) ^ rot(c, 4); c = (c + b) & M  # noqa: E702
        b = ((b - a) & M) ^ rot(a, 6); a = (a + c) & M  # noqa: E702
        c = ((c - b) & M) ^ rot(b, 8); b = (b + a) & M  # noqa: E702
        a = ((a - c) & M) ^ rot(c, 16); c = (c + b) & M  # noqa: E702
        b = ((b - a) & M) ^ rot(a, 19); a = (a + c) & M  # noqa: E702
        c = ((c - b) & M) ^ rot(b, 4); b = (b + a) & M  # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = data[i:] + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & M
    b = (b + int.from_bytes(tail[4:8], "little")) & M
    c = (c + int.from_bytes(tail[8:12], "little")) & M
    c ^= b; c = (c - rot(b, 14)) & M  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & M  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & M  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & M  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & M  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & M  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & M  # noqa: E702
    return c


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def recover(path) -> bool:
    """Clear the "open for write" flags a dead writer left in `path` (like `h5clear -s`).

    Only call it when no process writes the file. The end-of-allocation address is
    also raised to the file size, so that new allocations never overlap data written
    after the superblock was last updated. Returns True if the flags were set.
    """
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        base = 0
        while True:
            fh.seek(base)
            if fh.read(8) == _SIGNATURE:
                break
            base = 512 if base == 0 else base * 2
            if base >= size:
                raise OSError(f"{path}: not an HDF5 file")
        fh.seek(base)
        head = bytearray(fh.read(12))
        if head[8] < 2:  # superblock v0/v1 has no flags
            return False
        o = head[9]
        sb = bytearray(head + fh.read(4 * o + 4))
        end = 12 + 4 * o
        if _lookup3(bytes(sb[:end])) != int.from_bytes(sb[end:end + 4], "little"):
            raise OSError(f"{path}: superblock checksum mismatch")
        if sb[11] == 0:
            return False
        sb[11] = 0
        eoa_at = 12 + 2 * o
        eoa = int.from_bytes(sb[eoa_at:eoa_at + o], "little")
        sb[eoa_at:eoa_at + o] = max(eoa, size - base).to_bytes(o, "little")
        sb[end:end + 4] = _lookup3(bytes(sb[:end])).to_bytes(4, "little")
        fh.seek(base)
        fh.write(sb)
    return True


# --------------------------------------------------------------------------- helpers


def _state_leaves(obj, prefix=""):
    """`(path, leaf)` of every non-None leaf of a State-like dataclass tree."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is None:
            continue
        if dataclasses.is_dataclass(v):
            yield from _state_leaves(v, prefix + f.name + "/")
        else:
            yield prefix + f.name, v


_OLD_PHASES_HINT = (
    "; it has syn/rho_ref but no syn/rho_lag, so it was written before the early phase "
    "had two stages (results format 1); rerun it with this version")


def _slot_leaves(grp) -> set[str]:
    """Paths of the datasets of a checkpoint slot (`"syn/rho"`, ...)."""
    out = set()
    grp.visititems(lambda name, obj: out.add(name) if isinstance(obj, h5py.Dataset)
                   else None)
    return out


def _old_phases(leaves) -> bool:
    """A checkpoint with the one-stage early phase of results format 1."""
    return "syn/rho_ref" in leaves and "syn/rho_lag" not in leaves


def _node_class(cls, name):
    t = typing.get_type_hints(cls)[name]
    for c in (t, *typing.get_args(t)):
        if isinstance(c, type) and dataclasses.is_dataclass(c):
            return c
    return None


def _rebuild(cls, grp: h5py.Group):
    """Instance of dataclass `cls` from the datasets/groups of `grp` (absent = None)."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in grp:
            continue
        sub = _node_class(cls, f.name)
        item = grp[f.name]
        kw[f.name] = _rebuild(sub, item) if isinstance(item, h5py.Group) else item[()]
    return cls(**kw)


def _chunks(tail, itemsize, n_rec, lead=()):
    """Chunk shape `lead + (rows,) + tail_chunk` of at most about `_CHUNK_BYTES`.

    `rows` divides `n_rec`, the records appended per chunk of the run, so that every
    append writes whole chunks: a compressed chunk is never rewritten (in SWMR mode
    HDF5 does not reuse file space, and each rewrite would leave its old copy behind).
    """
    ct, budget = [], 1 << 16
    for d in reversed(tuple(tail)):
        c = max(1, min(int(d), budget))
        ct.insert(0, c)
        budget = max(1, budget // c)
    per_row = int(np.prod(ct)) * itemsize
    rows = max([d for d in range(1, n_rec + 1)
                if n_rec % d == 0 and d * per_row <= _CHUNK_BYTES] or [1])
    return tuple(1 for _ in lead) + (rows,) + tuple(ct)


def _param_units(key: str) -> str:
    """Units of `group.field` read from the `[unit]` comment in params.py ('' if none)."""
    group, _, field = key.partition(".")
    cls = _params.GROUPS.get(group)
    if cls is None:
        return ""
    try:
        src = _pyinspect.getsource(cls)
    except (OSError, TypeError):
        return ""
    m = re.search(rf"^\s*{re.escape(field)}\s*:.*#.*\[([^\]]+)\]\s*$", src, re.M)
    return m.group(1) if m else ""


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _fmt_ms(ms: float) -> str:
    ms = float(ms)
    if ms >= units.MS_PER_H:
        return f"{ms / units.MS_PER_H:.3g} h"
    if ms >= units.MS_PER_MIN:
        return f"{ms / units.MS_PER_MIN:.3g} min"
    if ms >= units.MS_PER_S:
        return f"{ms / units.MS_PER_S:.3g} s"
    return f"{ms:.4g} ms"


# --------------------------------------------------------------------------- writer


class ResultsWriter:
    """Stream a run into a results file (see the module docstring for the layout).

    Pass `writer.on_chunk` as `on_chunk` to `ltpnet.simulate` (or call it from a batched
    loop) and call `close(complete=True)` at the end (`close(False)` when the run
    failed). Writing happens in a background thread; an error there is raised by the
    next `on_chunk` or `close`. Also a context manager: leaving the block closes the
    file, complete if no exception was raised.

    Args:
        path: File to write. An existing file is replaced unless `resume`.
        spec, params, observe, conn: What is run (`conn` None: the network drawn from
            `seed`, as `simulate` does).
        config_toml: The resolved configuration, stored verbatim.
        seed: Seed of the run.
        protocol: Stimulation protocol, stored under /protocol.
        n_batch: Batch size of a batched run (every series gets a leading batch axis);
            None for a single run.
        batch_grid: `{"group.key": values}` with a leading `n_batch` axis, stored
            under /grid.
        resume: Continue the existing file at `path`: every series is cut back to its
            last checkpoint, so that continuing the run from `load_checkpoint(path)`
            reproduces the file of an uninterrupted run.
    """

    def __init__(self, path, spec: ModelSpec, params: Params, observe: Observe | None,
                 conn: Connectivity | None, *, config_toml: str, seed: int,
                 protocol: Protocol | None = None, n_batch: int | None = None,
                 batch_grid: dict | None = None, resume: bool = False):
        self.path = os.fspath(path)
        self.spec = spec.check()
        self.observe = (observe or Observe()).check(spec)
        self.n_batch = None if n_batch is None else int(n_batch)
        if self.n_batch is not None and self.n_batch < 1:
            raise ValueError(f"n_batch must be a positive integer or None, got {n_batch!r}")
        self.seed = int(seed)
        self._lead = () if self.n_batch is None else (self.n_batch,)
        self._tax = len(self._lead)  # time axis of every series
        self._pops = {}
        if self.observe.spike_neurons:
            self._pops[POST] = ("post", self.observe.spike_neurons)
        if self.observe.input_neurons:
            self._pops[INPUT] = ("input", self.observe.input_neurons)
        self._template = dict(_state_leaves(state_shapes(spec)))
        if resume:
            self._resume(config_toml)
        else:
            if conn is None:
                conn = fixed_indegree(spec, np.random.default_rng(self.seed))
            self._create(params, conn, config_toml, protocol, batch_grid)
        self._error = None
        self._closed = False
        self._queue = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._work, name="ltpnet-writer",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ layout

    def _series(self, grp, name, tail, dtype, unit, fill, n_rec):
        """Compressed time series, chunks aligned with appends of `n_rec` records."""
        dtype = np.dtype(dtype)
        ds = grp.create_dataset(
            name, shape=self._lead + (0,) + tuple(tail),
            maxshape=self._lead + (None,) + tuple(tail), dtype=dtype,
            chunks=_chunks(tail, dtype.itemsize, n_rec, self._lead), fillvalue=fill,
            **_COMPRESS)
        ds.attrs["units"] = unit
        return ds

    def _spike_series(self, grp, name, dtype, unit, fill):
        """Spike list: uncompressed, as appends of any length rewrite the last chunk."""
        ds = grp.create_dataset(
            name, shape=self._lead + (0,), maxshape=self._lead + (None,), dtype=dtype,
            chunks=tuple(1 for _ in self._lead) + (_SPIKE_CHUNK,), fillvalue=fill)
        ds.attrs["units"] = unit
        return ds

    def _create_series(self, f, n_rec):
        """Create /readout and /report once the records per chunk are known."""
        spec, obs, lead = self.spec, self.observe, self._lead
        fdt = np.dtype(spec.dtype)
        ro = f.create_group("readout")
        t = self._series(ro, "time", (), np.float64, units.TIME, np.nan, n_rec)
        t.make_scale("time")
        n_node = obs.n_neurons(spec)
        for name in obs.variables:
            kind, unit = VARIABLES[name]
            if kind == "pathway":
                g = ro.create_group(name)
                for p in spec.pathway_names:
                    d = self._series(g, p, (), fdt, unit, np.nan, n_rec)
                    d.attrs["baseline"] = np.full(lead, np.nan)
                    d.dims[self._tax].attach_scale(t)
            elif kind == "scalar":
                d = self._series(ro, name, (), fdt, unit, np.nan, n_rec)
                d.dims[self._tax].attach_scale(t)
            else:
                per = spec.k if kind == "synapse" else 1
                g = f.create_group(f"report/{POST}/{name}")
                g.attrs["kind"] = kind
                self._series(g, "data", (n_node * per,), fdt, unit, np.nan, n_rec)
                m = g.create_group("mapping")
                m["node_ids"] = np.arange(n_node, dtype=np.uint64)
                m["index_pointers"] = np.arange(n_node + 1, dtype=np.uint64) * per
                m["element_ids"] = np.tile(np.arange(per, dtype=np.uint32), n_node)
                m["time"] = np.array([np.nan, np.nan, obs.every * spec.dt])
                m["time"].attrs["units"] = units.TIME
                for k in ("node_ids", "index_pointers", "element_ids"):
                    m[k].attrs["units"] = units.DIMENSIONLESS
        d = self._series(ro, "spike_count", (), np.int64, units.DIMENSIONLESS, -1, n_rec)
        d.attrs["n_neurons"] = np.int64(spec.n_post)
        d.attrs["interval_ms"] = obs.every * spec.dt
        d.dims[self._tax].attach_scale(t)
        d = self._series(ro, "rate", (), np.float64, units.RATE, np.nan, n_rec)
        d.dims[self._tax].attach_scale(t)

    def _create(self, params, conn, config_toml, protocol, batch_grid):
        spec, obs, lead = self.spec, self.observe, self._lead
        with h5py.File(self.path, "w", libver=_LIBVER) as f:
            a = f.attrs
            a["magic"] = np.uint32(SONATA_MAGIC)
            a["version"] = np.array(SONATA_VERSION, np.uint32)
            a["format"] = FORMAT
            a["format_version"] = np.int64(FORMAT_VERSION)
            a["ltpnet_version"] = __version__
            a["jax_version"] = jax.__version__
            a["hdf5_version"] = h5py.version.hdf5_version
            a["git_sha"] = _git_sha()
            a["device"] = str(jax.devices()[0])
            a["config"] = config_toml
            a["seed"] = np.int64(self.seed)
            a["dt"] = float(spec.dt)
            a["record_every"] = np.int64(obs.every)
            a["pathways"] = list(spec.pathway_names)
            a["n_batch"] = np.int64(-1 if self.n_batch is None else self.n_batch)
            a["created"] = datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds")
            for k in ("step_start", "step_end"):
                a[k] = np.int64(-1)
            a["records_written"] = np.int64(0)
            a["complete"] = False

            for pop, (_, n) in self._pops.items():
                g = f.create_group(f"spikes/{pop}")
                g.attrs.create("sorting", 2, dtype=SORTING)
                g.attrs["n_nodes"] = np.int64(n)
                self._spike_series(g, "timestamps", np.float64, units.TIME, np.nan)
                self._spike_series(g, "node_ids", np.uint64, units.DIMENSIONLESS,
                                   _NO_NODE if lead else 0)
                if lead:
                    d = g.create_dataset("n_spikes", data=np.zeros(lead, np.uint64))
                    d.attrs["units"] = units.DIMENSIONLESS

            g = f.create_group("connectivity")
            g.attrs["pathways"] = list(spec.pathway_names)
            for name in ("pre_idx", "pre_pathway", "inh_idx", "ie_idx"):
                v = getattr(conn, name)
                if v is not None:
                    g.create_dataset(name, data=np.asarray(v), **_COMPRESS)
                    g[name].attrs["units"] = units.DIMENSIONLESS

            if protocol is not None:
                g = f.create_group("protocol")
                pulses = {}
                for name, times in protocol.pulses:
                    pulses.setdefault(name, []).extend(times)
                for name in spec.pathway_names:
                    if name in pulses:
                        d = g.create_dataset(f"pulses/{name}",
                                             data=np.sort(np.asarray(pulses[name], float)))
                        d.attrs["units"] = units.TIME
                d = g.create_dataset("post", data=np.sort(np.asarray(protocol.post, float)))
                d.attrs["units"] = units.TIME

            if batch_grid:
                if self.n_batch is None:
                    raise ValueError("batch_grid needs n_batch")
                g = f.create_group("grid")
                for key, values in batch_grid.items():
                    v = np.asarray(values)
                    if v.ndim == 0 or v.shape[0] != self.n_batch:
                        raise ValueError(f"batch_grid[{key!r}] must have a leading axis "
                                         f"of n_batch={self.n_batch}, got shape {v.shape}")
                    g.create_dataset(key, data=v)
                    g[key].attrs["units"] = _param_units(key)

            c = f.create_group("checkpoint")
            c.attrs["step_end"] = np.int64(-1)
            c.attrs["records_written"] = np.int64(0)
            for pop in self._pops:
                c.attrs[f"spikes_written_{pop}"] = np.zeros(lead, np.int64)
            c.attrs["seed"] = np.int64(self.seed)
            c.attrs["slot"] = np.int64(-1)
            c.attrs["n_checkpoints"] = np.int64(0)
            for s in ("slot0", "slot1"):
                for path, leaf in self._template.items():
                    shape = lead + tuple(leaf.shape)
                    # uncompressed: overwritten in place at every checkpoint
                    d = c.create_dataset(f"{s}/{path}", shape=shape, dtype=leaf.dtype)
                    d.attrs["units"] = _STATE_UNITS.get(path, units.DIMENSIONLESS)
        self._records = 0
        self._spikes = {pop: np.zeros(lead, np.int64) for pop in self._pops}
        self._step_start = None
        self._step_end = None
        self._n_ckpt = 0
        self._baseline_done = False
        self._have_series = False

    def _resume(self, config_toml):
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"cannot resume {self.path}: no such file")
        try:
            f = h5py.File(self.path, "r+", libver=_LIBVER)
        except OSError as e:
            if "already open" not in str(e) and "consistency flags" not in str(e):
                raise
            recover(self.path)  # left open by a writer that died inside a chunk
            f = h5py.File(self.path, "r+", libver=_LIBVER)
        with f:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"{self.path} is not an ltpnet results file")
            if int(f.attrs["seed"]) != self.seed:
                raise ValueError(f"cannot resume {self.path}: it was run with seed "
                                 f"{int(f.attrs['seed'])}, not {self.seed}")
            fb = int(f.attrs["n_batch"])
            if (None if fb < 0 else fb) != self.n_batch:
                raise ValueError(f"cannot resume {self.path}: n_batch differs "
                                 f"(file {fb if fb >= 0 else None}, now {self.n_batch})")
            for name in self.observe.variables:
                kind = VARIABLES[name][0]
                where = (f"readout/{name}" if kind in ("pathway", "scalar")
                         else f"report/{POST}/{name}")
                if where not in f:
                    raise ValueError(f"cannot resume {self.path}: it does not record "
                                     f"{name!r}")
            have = set(f["spikes"]) if "spikes" in f else set()
            if have != set(self._pops):
                raise ValueError(f"cannot resume {self.path}: it holds spikes of "
                                 f"{sorted(have)}, the recording plan gives "
                                 f"{sorted(self._pops)}")
            have = _slot_leaves(f["checkpoint/slot0"])
            if have != set(self._template):
                raise ValueError(
                    f"cannot resume {self.path}: its checkpoints do not hold the state "
                    f"of this spec (missing {sorted(set(self._template) - have)}, extra "
                    f"{sorted(have - set(self._template))})"
                    f"{_OLD_PHASES_HINT if _old_phases(have) else ''}")
            c = f["checkpoint"].attrs
            step_end = int(c["step_end"])
            self._records = int(c["records_written"])
            self._spikes = {pop: np.array(c[f"spikes_written_{pop}"], np.int64)
                            for pop in self._pops}
            self._n_ckpt = int(c["n_checkpoints"])
            tax, rec = self._tax, self._records

            def cut(ds, n):
                ds.resize(n, axis=tax)

            for pop in self._pops:
                g = f[f"spikes/{pop}"]
                n = self._spikes[pop]
                if self.n_batch is None:
                    cut(g["timestamps"], int(n))
                    cut(g["node_ids"], int(n))
                else:
                    width = int(n.max(initial=0))
                    for b in range(self.n_batch):
                        end = g["timestamps"].shape[1]
                        if n[b] < end:
                            g["timestamps"][b, n[b]:] = np.nan
                            g["node_ids"][b, n[b]:] = _NO_NODE
                    cut(g["timestamps"], width)
                    cut(g["node_ids"], width)
                    g["n_spikes"][...] = n.astype(np.uint64)

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and obj.maxshape[tax:tax + 1] == (None,):
                    cut(obj, rec)

            self._have_series = "readout" in f
            if self._have_series:
                f["readout"].visititems(visit)
            if "report" in f:
                f["report"].visititems(visit)
            self._baseline_done = rec > 0
            if step_end < 0:  # no checkpoint yet: start over
                self._step_start = self._step_end = None
                f.attrs["step_start"] = np.int64(-1)
            else:
                self._step_end = step_end
                self._step_start = int(f.attrs["step_start"])
            f.attrs["step_end"] = np.int64(-1 if self._step_end is None else self._step_end)
            f.attrs["records_written"] = np.int64(rec)
            f.attrs["complete"] = False
            f.attrs["config"] = config_toml
            if "report" in f:
                dt_rec = self.observe.every * self.spec.dt
                for name in f[f"report/{POST}"]:
                    t = f[f"report/{POST}/{name}/mapping/time"]
                    if self._step_start is None:
                        t[:2] = np.nan
                    else:
                        t[1] = t[0] + rec * dt_rec

    # ------------------------------------------------------------------ writing

    @property
    def step_end(self) -> int | None:
        """Last step (exclusive global index) whose data is in the file; None if none."""
        return self._step_end

    def on_chunk(self, step_end, records, spikes, state) -> None:
        """Queue one chunk for writing (the `on_chunk` callback of `ltpnet.simulate`).

        Args:
            step_end: Global index of the step after the chunk.
            records: `{name: (n_rec, ...)}` host arrays (`(n_batch, n_rec, ...)`).
            spikes: `{"post": (n_steps, n_sp), "input": (n_steps, n_in), "count":
                (n_steps,)}` (leading `n_batch` axis in batched runs).
            state: Host State at `step_end` to checkpoint, or None.
        """
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError(f"ResultsWriter({self.path!r}) is closed")
        item = (int(step_end), records, spikes, state)
        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self, complete: bool) -> None:
        """Write what is queued, then mark the file complete (or not) and stop."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
        with _open_swmr_write(self.path) as f:
            f.attrs.modify("complete", bool(complete))
            f.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(complete=exc_type is None)
        return False

    def _raise_if_failed(self):
        if self._error is not None:
            err, self._error = self._error, None
            self._closed = True
            raise err

    def _work(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drop the rest; the error is raised in the caller
            try:
                self._write(*item)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self._error = e

    def _write(self, step_end, records, spikes, state):
        spec, obs, tax, lead = self.spec, self.observe, self._tax, self._lead
        count = np.asarray(spikes["count"])
        if count.ndim != tax + 1 or count.shape[:tax] != lead:
            want = "(n_batch, n_steps)" if lead else "(n_steps,)"
            raise ValueError(f"spikes['count'] has shape {count.shape}; expected {want} "
                             f"(n_batch={self.n_batch})")
        n_steps = count.shape[tax]
        if n_steps % obs.every:
            raise ValueError(f"a chunk of {n_steps} steps is not a whole number of "
                             f"records of {obs.every} steps")
        n_rec = n_steps // obs.every
        step_start = step_end - n_steps
        if self._step_end is not None and step_start != self._step_end:
            raise ValueError(f"chunk starts at step {step_start} but the file ends at step "
                             f"{self._step_end}; chunks must be contiguous")
        r0, r1 = self._records, self._records + n_rec
        dt_rec = obs.every * spec.dt
        sl = (slice(None),) * tax + (slice(r0, r1),)

        def append(ds, data):
            ds.resize(r1, axis=tax)
            ds[sl] = data

        if not self._have_series:  # objects cannot be created in SWMR mode
            with h5py.File(self.path, "r+", libver=_LIBVER, locking=False) as f:
                self._create_series(f, n_rec)
            self._have_series = True
        with _open_swmr_write(self.path) as f:
            ro = f["readout"]
            t = (step_start + (np.arange(n_rec) + 1) * obs.every) * spec.dt
            append(ro["time"], t)
            for name in obs.variables:
                kind = VARIABLES[name][0]
                data = np.asarray(records[name])
                want = lead + (n_rec,) + obs.shape(spec, name)
                if data.shape != want:
                    raise ValueError(f"record {name!r} has shape {data.shape}, expected "
                                     f"{want}")
                if kind == "pathway":
                    for i, p in enumerate(spec.pathway_names):
                        d = ro[f"{name}/{p}"]
                        append(d, data[..., i])
                        if not self._baseline_done:
                            d.attrs.modify("baseline", np.asarray(
                                data[..., 0, i], np.float64).reshape(lead))
                elif kind == "scalar":
                    append(ro[name], data)
                else:
                    g = f[f"report/{POST}/{name}"]
                    append(g["data"], data.reshape(lead + (n_rec, -1)))
                    tm = g["mapping/time"]
                    start = (self._step_start if self._step_start is not None
                             else step_start)
                    t0 = (start + obs.every) * spec.dt
                    tm[:2] = [t0, t0 + r1 * dt_rec]
            c = count.reshape(lead + (n_rec, obs.every)).sum(axis=-1, dtype=np.int64)
            append(ro["spike_count"], c)
            append(ro["rate"], c / (spec.n_post * dt_rec / units.MS_PER_S))

            new_spikes = {}
            for pop, (key, n) in self._pops.items():
                raster = np.asarray(spikes[key])
                if raster.shape != lead + (n_steps, n):
                    raise ValueError(f"spikes[{key!r}] has shape {raster.shape}, expected "
                                     f"{lead + (n_steps, n)}")
                new_spikes[pop] = self._append_spikes(f[f"spikes/{pop}"], raster,
                                                      step_start, self._spikes[pop])

            if state is not None:
                slot = self._n_ckpt % 2
                leaves = dict(_state_leaves(state))
                if leaves.keys() != self._template.keys():
                    raise ValueError(f"state leaves {sorted(leaves)} differ from those of "
                                     f"the spec {sorted(self._template)}")
                for path, leaf in leaves.items():
                    d = f[f"checkpoint/slot{slot}/{path}"]
                    leaf = np.asarray(leaf)
                    if leaf.shape != d.shape:
                        raise ValueError(f"state leaf {path} has shape {leaf.shape}, "
                                         f"expected {d.shape}")
                    d[...] = leaf
            f.flush()  # data and checkpoint slot on disk before they are declared valid

            a = f.attrs
            if self._step_start is None:
                a.modify("step_start", np.int64(step_start))
            a.modify("step_end", np.int64(step_end))
            a.modify("records_written", np.int64(r1))
            if state is not None:
                ca = f["checkpoint"].attrs
                ca.modify("slot", np.int64(slot))
                ca.modify("step_end", np.int64(step_end))
                ca.modify("records_written", np.int64(r1))
                for pop, n in new_spikes.items():
                    ca.modify(f"spikes_written_{pop}", np.asarray(n, np.int64))
                ca.modify("n_checkpoints", np.int64(self._n_ckpt + 1))
            f.flush()
        if self._step_start is None:
            self._step_start = step_start
        self._records = r1
        self._spikes = new_spikes
        self._baseline_done = True
        if state is not None:
            self._n_ckpt += 1
        self._step_end = step_end

    def _append_spikes(self, g, raster, step_start, written):
        dt = self.spec.dt
        ts, ids = g["timestamps"], g["node_ids"]
        if self.n_batch is None:
            steps, nodes = np.nonzero(raster)  # row-major: sorted by time, then node
            n0, n1 = int(written), int(written) + len(steps)
            ts.resize(n1, axis=0)
            ids.resize(n1, axis=0)
            if n1 > n0:
                ts[n0:n1] = (step_start + steps) * dt
                ids[n0:n1] = nodes.astype(np.uint64)
            return np.int64(n1)
        per = [np.nonzero(raster[b]) for b in range(self.n_batch)]
        new = written + np.array([len(s) for s, _ in per], np.int64)
        width = max(int(new.max(initial=0)), ts.shape[1])
        ts.resize(width, axis=1)
        ids.resize(width, axis=1)
        for b, (steps, nodes) in enumerate(per):
            if len(steps):
                ts[b, written[b]:new[b]] = (step_start + steps) * dt
                ids[b, written[b]:new[b]] = nodes.astype(np.uint64)
        g["n_spikes"][...] = new.astype(np.uint64)
        return new


_STATE_UNITS = {
    "post/v": units.VOLTAGE, "post/g": units.DIMENSIONLESS, "post/g_I": units.DIMENSIONLESS,
    "post/bap": units.VOLTAGE, "post/r": units.RATE, "inh/v": units.VOLTAGE,
}


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass
class Checkpoint:
    """The last checkpoint of a results file.

    Attributes:
        step_end: Global index of the next step to run (continue with `step0=step_end`;
            the per-step random keys depend only on the seed and the step index).
        state: `ltpnet.State` of numpy arrays (leading batch axis in batched files).
        config_toml: The resolved configuration of the run.
        seed: Seed of the run.
        records_written: Records in the file up to the checkpoint.
        conn: The network (`ltpnet.Connectivity` of numpy arrays).
    """

    step_end: int
    state: State
    config_toml: str
    seed: int
    records_written: int
    conn: Connectivity | None = None


def load_checkpoint(path) -> Checkpoint:
    """The last checkpoint of the results file `path` (ValueError if it has none)."""
    with open_results(path) as f:
        c = f["checkpoint"]
        slot, step_end = int(c.attrs["slot"]), int(c.attrs["step_end"])
        if slot < 0 or step_end < 0:
            raise ValueError(f"{path} holds no checkpoint yet")
        if _old_phases(_slot_leaves(c[f"slot{slot}"])):
            raise ValueError(f"cannot load the checkpoint of {path}{_OLD_PHASES_HINT}")
        state = _rebuild(State, c[f"slot{slot}"])
        g = f["connectivity"]
        conn = Connectivity(**{k: g[k][()] for k in g})
        return Checkpoint(step_end=step_end, state=state,
                          config_toml=str(f.attrs["config"]), seed=int(f.attrs["seed"]),
                          records_written=int(c.attrs["records_written"]), conn=conn)


def _rebuild_shapes(grp):
    """State-like tree of the datasets (not their data) of a checkpoint slot."""

    class _Node:
        pass

    def build(cls, g):
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in g:
                item = g[f.name]
                kw[f.name] = (build(_node_class(cls, f.name), item)
                              if isinstance(item, h5py.Group) else item)
        return cls(**kw)

    return build(State, grp)


def _attr_str(v) -> str:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray):
        if v.size > 8:
            return f"array{v.shape} {v.dtype}"
        return np.array2string(v, separator=", ")
    if isinstance(v, str) and ("\n" in v or len(v) > 60):
        return f"<text, {len(v.splitlines())} lines>"
    return str(v)


def inspect(path, config: bool = False) -> str:
    """Human-readable summary of the results file `path`.

    Lists the run (versions, seed, steps, duration, completeness, checkpoint) and every
    group and dataset with its shape, dtype, units and compression. `config=True`
    appends the stored configuration.
    """
    lines = []
    with open_results(path) as f:
        a = f.attrs
        size = os.path.getsize(path)
        lines.append(f"{path}  ({size / 2**20:.2f} MiB, {a.get('format', '?')} "
                     f"v{a.get('format_version', '?')}, SONATA "
                     f"{'.'.join(str(int(x)) for x in a.get('version', []))})")
        dt = float(a.get("dt", np.nan))
        s0, s1 = int(a.get("step_start", -1)), int(a.get("step_end", -1))
        done = bool(a.get("complete", False))
        lines.append(f"  complete: {done}" + ("" if done else
                     "  (run interrupted, failed or still running)"))
        lines.append(f"  ltpnet {a.get('ltpnet_version', '?')}, jax "
                     f"{a.get('jax_version', '?')}, HDF5 {a.get('hdf5_version', '?')}, "
                     f"device {a.get('device', '?')}, git {a.get('git_sha', '') or '?'}")
        lines.append(f"  seed {a.get('seed', '?')}, dt {dt:g} ms, record every "
                     f"{a.get('record_every', '?')} steps, created {a.get('created', '?')}")
        if s1 >= 0:
            lines.append(f"  steps {s0} .. {s1}: {_fmt_ms(s0 * dt)} .. {_fmt_ms(s1 * dt)}"
                         f" (duration {_fmt_ms((s1 - s0) * dt)}), "
                         f"{int(a.get('records_written', 0))} records")
        else:
            lines.append("  no data written yet")
        nb = int(a.get("n_batch", -1))
        if nb >= 0:
            lines.append(f"  batch of {nb} runs")
        if "checkpoint" in f:
            c = f["checkpoint"].attrs
            ce = int(c.get("step_end", -1))
            lines.append(f"  checkpoint: step {ce} ({_fmt_ms(ce * dt)}), "
                         f"{int(c.get('records_written', 0))} records" if ce >= 0
                         else "  checkpoint: none")
        lines.append("")
        slot = int(f["checkpoint"].attrs.get("slot", -1)) if "checkpoint" in f else -1
        skip = []

        def visit(name, obj):
            if any(name.startswith(p) for p in skip):
                return
            depth = name.count("/")
            pad = "  " * depth
            base = name.rsplit("/", 1)[-1]
            if re.fullmatch(r"checkpoint/slot\d", name):
                skip.append(name + "/")
                if name == f"checkpoint/slot{slot}":
                    lines.append(f"{pad}{base}/  (the valid checkpoint: State)")
                    for path, leaf in _state_leaves(_rebuild_shapes(obj)):
                        lines.append(f"{pad}  {path}  {leaf.shape} {leaf.dtype} "
                                     f"[{leaf.attrs.get('units', '?')}]")
                return
            if base == "mapping" and isinstance(obj, h5py.Group):
                skip.append(name + "/")
                n_node = obj["node_ids"].shape[0] if "node_ids" in obj else 0
                n_el = obj["element_ids"].shape[0] if "element_ids" in obj else 0
                t = np.array2string(np.asarray(obj["time"][()] if "time" in obj else []),
                                    separator=", ")
                lines.append(f"{pad}mapping/  {n_node} nodes, {n_el} elements, "
                             f"time [start, stop, dt] = {t} ms")
                return
            if isinstance(obj, h5py.Group):
                attrs = {k: v for k, v in obj.attrs.items()}
                if "sorting" in attrs:
                    rev = {v: k for k, v in h5py.check_enum_dtype(
                        obj.attrs.get_id("sorting").dtype).items()}
                    attrs["sorting"] = rev.get(int(attrs["sorting"]), attrs["sorting"])
                extra = ", ".join(f"{k}={_attr_str(v)}" for k, v in attrs.items())
                lines.append(f"{pad}{base}/" + (f"  [{extra}]" if extra else ""))
            else:
                u = obj.attrs.get("units", None)
                comp = obj.compression or ""
                desc = f"{pad}{base}  {obj.shape} {obj.dtype}"
                if u is not None:
                    desc += f" [{u}]"
                if comp:
                    desc += f" {comp}"
                if obj.maxshape and None in obj.maxshape:
                    desc += " resizable"
                hidden = ("units", "DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME")
                extra = {k: v for k, v in obj.attrs.items() if k not in hidden}
                if extra:
                    desc += "  " + ", ".join(f"{k}={_attr_str(v)}"
                                             for k, v in extra.items())
                lines.append(desc)

        f.visititems(visit)
        if config:
            lines += ["", "config:", str(a.get("config", ""))]
    return "\n".join(lines)
