"""The spine read-out `ltpnet.record.spine` against a NumPy computation."""

from __future__ import annotations

import jax
import numpy as np

import ltpnet as lt


def test_spine_folds_match_numpy():
    rng = np.random.default_rng(0)
    w_ref = rng.uniform(0.01, 0.08, (3, 50))
    w = w_ref * rng.uniform(0.5, 3.0, (3, 50))
    volume = w / w_ref  # AMPA conductance proportional to head volume
    area = np.cbrt(volume) ** 2  # surface of a head of fixed shape: V^(2/3)
    out = lt.record.spine(w, w_ref)
    np.testing.assert_allclose(out.volume, volume, rtol=1e-12)
    np.testing.assert_allclose(out.area, area, rtol=1e-12)
    jit = jax.jit(lt.record.spine)(np.float32(w), np.float32(w_ref))  # traceable
    np.testing.assert_allclose(jit.area, area, rtol=1e-5)
    assert lt.record.spine(0.16, 0.08).volume == 2.0  # scalars broadcast
