"""Plasticity data: one row per condition (protocol, measured ratio, SEM).

A data file is a CSV with a header and these columns (extra columns are ignored,
lines starting with ``#`` are comments):

=================== ============================================================
``dt_ms``           post minus pre spike time [ms]; empty for presynaptic-only
                    protocols (no postsynaptic spikes)
``pair_freq_hz``    frequency of the pairs (or pulses) within a train [Hz]
``pairs_per_train`` pairs (or pulses) per train
``n_trains``        number of trains (empty: 1)
``train_interval_s`` onset-to-onset interval of the trains [s] (empty when 1 train)
``ratio``           synaptic strength after / before
``sem``             standard error of ``ratio``
``clamp_mv``        optional: the postsynaptic membrane held at this potential
                    [mV] during the protocol (voltage-clamp pairing; ``"nmda"``
                    model only, and no postsynaptic spikes: ``dt_ms`` empty)
=================== ============================================================

60 pairs at 1 Hz (an STDP window), 900 pulses at f (a frequency-response curve) and
trains of a few pairs at f repeated every few seconds (rate x timing) are all rows of
this one format.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path

import numpy as np

COLUMNS = ("dt_ms", "pair_freq_hz", "pairs_per_train", "n_trains", "train_interval_s",
           "ratio", "sem")
OPTIONAL_COLUMNS = ("clamp_mv",)
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


class DataError(ValueError):
    """A data file or condition that cannot be fitted (the message says where, why)."""


@dataclasses.dataclass(frozen=True)
class Condition:
    """One protocol and its measured outcome (times in the units of the columns)."""

    dt_ms: float | None
    pair_freq_hz: float
    pairs_per_train: int
    n_trains: int = 1
    train_interval_s: float = 0.0
    ratio: float = 1.0
    sem: float = 1.0
    source: str = ""
    clamp_mv: float | None = None

    @property
    def period_ms(self) -> float:
        return 1000.0 / self.pair_freq_hz

    @property
    def train_ms(self) -> float:
        """Duration of one train, first pulse to one period after the last [ms]."""
        return self.pairs_per_train * self.period_ms

    def protocol_key(self) -> tuple:
        """Everything that defines the protocol except dt_ms and the frequency."""
        return (self.pairs_per_train, self.n_trains, self.train_interval_s)

    def check(self) -> Condition:
        """Raise DataError naming the source, the column, the value and the rule."""
        where = self.source or "condition"

        def bad(col, val, rule):
            raise DataError(f"{where}: column {col!r} must be {rule}, "
                            f"got {col}={val!r}")

        if not (math.isfinite(self.pair_freq_hz) and self.pair_freq_hz > 0):
            bad("pair_freq_hz", self.pair_freq_hz, "a frequency > 0 Hz")
        if not (isinstance(self.pairs_per_train, int) and self.pairs_per_train >= 1):
            bad("pairs_per_train", self.pairs_per_train, "an integer >= 1")
        if not (isinstance(self.n_trains, int) and self.n_trains >= 1):
            bad("n_trains", self.n_trains, "an integer >= 1")
        if self.dt_ms is not None:
            if not math.isfinite(self.dt_ms):
                bad("dt_ms", self.dt_ms, "a finite time in ms, or empty")
            if abs(self.dt_ms) >= self.period_ms:
                bad("dt_ms", self.dt_ms,
                    f"shorter in magnitude than the pair period 1000/pair_freq_hz = "
                    f"{self.period_ms:g} ms (otherwise pairs interleave)")
        if self.n_trains > 1:
            if not (math.isfinite(self.train_interval_s)
                    and self.train_interval_s * 1000.0 > self.train_ms):
                bad("train_interval_s", self.train_interval_s,
                    f"longer than one train ({self.train_ms / 1000.0:g} s) when "
                    f"n_trains > 1")
        elif not (math.isfinite(self.train_interval_s) and self.train_interval_s >= 0):
            bad("train_interval_s", self.train_interval_s, "a time >= 0 s, or empty")
        if not (math.isfinite(self.ratio) and self.ratio > 0):
            bad("ratio", self.ratio, "a ratio after/before > 0")
        if not (math.isfinite(self.sem) and self.sem > 0):
            bad("sem", self.sem, "a standard error > 0")
        if self.clamp_mv is not None:
            if not math.isfinite(self.clamp_mv):
                bad("clamp_mv", self.clamp_mv, "a finite potential in mV, or empty")
            if self.dt_ms is not None:
                bad("dt_ms", self.dt_ms, "empty when clamp_mv is set (a clamped cell "
                    "does not spike)")
        return self


def resolve(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """Find a data file: as given, relative to `base`, then among the shipped files."""
    p = Path(path)
    candidates = [p] if p.is_absolute() else (
        ([Path(base) / p] if base is not None else []) + [p, DATA_DIR / p])
    for c in candidates:
        if c.is_file():
            return c
    shipped = sorted(f.name for f in DATA_DIR.glob("*.csv"))
    raise DataError(f"data file {str(path)!r} not found (looked in "
                    f"{[str(c) for c in candidates]}); shipped data files: {shipped}")


def load_csv(path: str | os.PathLike, base: str | os.PathLike | None = None
             ) -> list[Condition]:
    """Read and validate one data file (see the module docstring for the format)."""
    path = resolve(path, base)
    with open(path, newline="") as f:
        lines = [(i + 1, line) for i, line in enumerate(f)
                 if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise DataError(f"{path}: no header and no data rows")
    reader = csv.reader([line for _, line in lines])
    header = [h.strip() for h in next(reader)]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the columns are "
                        f"{list(COLUMNS)} (got {header})")
    out = []
    for (lineno, _), row in zip(lines[1:], reader, strict=True):
        where = f"{path.name}:{lineno}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
        rec = dict(zip(header, (v.strip() for v in row), strict=True))
        out.append(_condition(rec, where).check())
    if not out:
        raise DataError(f"{path}: a header but no data rows")
    return out


def _condition(rec: dict, where: str) -> Condition:
    def num(col, empty=None):
        v = rec[col]
        if v == "":
            if empty is None:
                raise DataError(f"{where}: column {col!r} must not be empty")
            return empty
        try:
            return float(v)
        except ValueError:
            raise DataError(f"{where}: column {col!r} must be a number, "
                            f"got {col}={v!r}") from None

    def integer(col, empty=None):
        x = num(col, empty)
        if x != int(x):
            raise DataError(f"{where}: column {col!r} must be an integer, "
                            f"got {col}={x!r}")
        return int(x)

    dt = num("dt_ms", empty=math.nan)
    clamp = num("clamp_mv", empty=math.nan) if "clamp_mv" in rec else math.nan
    return Condition(
        dt_ms=None if math.isnan(dt) and rec["dt_ms"] == "" else dt,
        pair_freq_hz=num("pair_freq_hz"),
        pairs_per_train=integer("pairs_per_train"),
        n_trains=integer("n_trains", empty=1),
        train_interval_s=num("train_interval_s", empty=0.0),
        ratio=num("ratio"),
        sem=num("sem"),
        source=where,
        clamp_mv=None if math.isnan(clamp) else clamp,
    )


def load_files(paths, base=None) -> list[Condition]:
    """Concatenate several data files."""
    out = []
    for p in paths:
        out.extend(load_csv(p, base))
    return out


def write_csv(path: str | os.PathLike, conditions, header_comment: str = "") -> None:
    """Write conditions in the data format (comment lines first, if any)."""
    with open(path, "w", newline="") as f:
        for line in header_comment.splitlines():
            f.write(f"# {line}".rstrip() + "\n")
        w = csv.writer(f, lineterminator="\n")
        clamped = any(c.clamp_mv is not None for c in conditions)
        w.writerow(COLUMNS + (("clamp_mv",) if clamped else ()))
        for c in conditions:
            row = ["" if c.dt_ms is None else f"{c.dt_ms:g}",
                   f"{c.pair_freq_hz:g}",
                   c.pairs_per_train, c.n_trains,
                   "" if c.n_trains == 1 else f"{c.train_interval_s:g}",
                   f"{c.ratio:.6g}", f"{c.sem:.6g}"]
            if clamped:
                row.append("" if c.clamp_mv is None else f"{c.clamp_mv:g}")
            w.writerow(row)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Conditions as arrays (one entry per condition), the input of the models.

    `dt_ms` is 0 where there is no postsynaptic spike (`has_post` False), and
    `clamp_mv` 0 where the membrane is free (`has_clamp` False).
    """

    dt_ms: np.ndarray
    has_post: np.ndarray
    period_ms: np.ndarray
    n_pairs: np.ndarray
    n_trains: np.ndarray
    ratio: np.ndarray
    sem: np.ndarray
    clamp_mv: np.ndarray
    has_clamp: np.ndarray

    @property
    def size(self) -> int:
        return int(self.dt_ms.shape[0])

    @property
    def max_pairs(self) -> int:
        return int(self.n_pairs.max())


def batch(conditions) -> Batch:
    """Stack validated conditions into a `Batch`."""
    conditions = [c.check() for c in conditions]
    if not conditions:
        raise DataError("no conditions to fit")
    return Batch(
        dt_ms=np.array([0.0 if c.dt_ms is None else c.dt_ms for c in conditions]),
        has_post=np.array([c.dt_ms is not None for c in conditions]),
        period_ms=np.array([c.period_ms for c in conditions]),
        n_pairs=np.array([c.pairs_per_train for c in conditions], np.int32),
        n_trains=np.array([c.n_trains for c in conditions], np.float64),
        ratio=np.array([c.ratio for c in conditions]),
        sem=np.array([c.sem for c in conditions]),
        clamp_mv=np.array([0.0 if c.clamp_mv is None else c.clamp_mv
                           for c in conditions]),
        has_clamp=np.array([c.clamp_mv is not None for c in conditions]),
    )
