"""Stimulation protocols: when each pathway is stimulated and when post spikes are forced.

A `Protocol` is plain data (times in ms). `Protocol.drive(spec, step0, n)` turns the
part of it that falls in steps `[step0, step0 + n)` into a stacked `Drive` for one
chunk, so a protocol hours long never exists as a dense array.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .spec import ModelSpec
from .step import Drive


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Pulse times per pathway and forced post-spike times, all in ms.

    Build one by chaining: `Protocol().tetanus("S1", at=60_000).test_pulses("S2", ...)`.
    """

    pulses: tuple[tuple[str, tuple[float, ...]], ...] = ()
    post: tuple[float, ...] = ()

    def add_pulses(self, pathway: str, times) -> Protocol:
        """Stimulate every input of `pathway` at `times` [ms]."""
        times = tuple(float(t) for t in np.atleast_1d(np.asarray(times, float)))
        if any(not np.isfinite(t) or t < 0 for t in times):
            raise ValueError(f"pulse times of pathway {pathway!r} must be finite and "
                             f">= 0 ms, got {[t for t in times if not t >= 0][:3]}")
        return dataclasses.replace(self, pulses=self.pulses + ((pathway, times),))

    def add_post(self, times) -> Protocol:
        """Force a spike in every post neuron at `times` [ms] (current injection)."""
        times = tuple(float(t) for t in np.atleast_1d(np.asarray(times, float)))
        return dataclasses.replace(self, post=self.post + times)

    def train(self, pathway: str, at: float, freq: float, n: int) -> Protocol:
        """`n` pulses at `freq` Hz starting at `at` ms."""
        if freq <= 0 or n < 1:
            raise ValueError(f"a train needs freq > 0 Hz and n >= 1, got freq={freq}, n={n}")
        return self.add_pulses(pathway, at + np.arange(n) * 1000.0 / freq)

    def tetanus(self, pathway: str, at: float, freq: float = 100.0, n: int = 100,
                trains: int = 1, interval: float = 600_000.0) -> Protocol:
        """`trains` trains of `n` pulses at `freq` Hz, `interval` ms apart (STET: trains=3)."""
        out = self
        for i in range(trains):
            out = out.train(pathway, at + i * interval, freq, n)
        return out

    def test_pulses(self, pathway: str, start: float, stop: float, every: float) -> Protocol:
        """Single test pulses every `every` ms in [start, stop)."""
        return self.add_pulses(pathway, np.arange(start, stop, every))

    def pairing(self, pathway: str, at: float, freq: float, n: int, dt_ms: float) -> Protocol:
        """`n` pre/post pairs at `freq` Hz, post `dt_ms` after pre (negative: before)."""
        pre = at + np.arange(n) * 1000.0 / freq
        return self.add_pulses(pathway, pre).add_post(pre + dt_ms)

    def end(self) -> float:
        """Time of the last event [ms] (0 if none)."""
        ts = [t for _, times in self.pulses for t in times] + list(self.post)
        return max(ts, default=0.0)

    def check(self, spec: ModelSpec) -> Protocol:
        """Raise ValueError if a pathway does not exist in `spec`."""
        for name, _ in self.pulses:
            spec.pathway_index(name)
        if any(t < 0 for t in self.post):
            raise ValueError("forced post-spike times must be >= 0 ms")
        return self

    def drive(self, spec: ModelSpec, step0: int, n: int, raster=None) -> Drive:
        """Stacked `Drive` (leading axis n) for steps `[step0, step0 + n)`."""
        pulses = np.zeros((n, spec.n_pathways), bool)
        for name, times in self.pulses:
            k = _steps_in(times, spec.dt, step0, n)
            pulses[k, spec.pathway_index(name)] = True
        post = np.zeros(n, bool)
        post[_steps_in(self.post, spec.dt, step0, n)] = True
        return Drive(pulses=pulses, post=post, raster=raster)


def _steps_in(times, dt, step0, n):
    s = np.rint(np.asarray(times, float) / dt).astype(np.int64) - step0
    return s[(s >= 0) & (s < n)]
