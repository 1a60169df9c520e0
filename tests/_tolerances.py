"""Named tolerances for the test suite, each with the reason for its size.

Tolerances are `dict(rtol=..., atol=...)` so they can be splatted into
`np.testing.assert_allclose(actual, desired, **TOL)` or `tree_allclose`.
"""

from __future__ import annotations

import jax
import numpy as np

# Spikes, refractory counters, bitwise-reproducible runs: nothing may differ.
EXACT = dict(rtol=0.0, atol=0.0)

# float64 engine against the float64 reference over a whole run: the two only order
# their roundings differently, and the dynamics are contracting between spikes.
X64_RUN = dict(rtol=1e-12, atol=1e-12)

# One float32 step from the same state as the reference: a few ulp per operation on
# O(1)-O(100) quantities (atol covers values that cross zero, e.g. the early change).
F32_STEP = dict(rtol=1e-5, atol=1e-6)

# Chunked against unbroken runs and vmapped against looped trials: the same kernels
# on the same numbers; bitwise is typical, a rounding-level difference is allowed.
SAME_PROGRAM = dict(rtol=1e-6, atol=1e-7)

# Tabulated Mg2+ block values are printed with three decimals.
MG_TABLE = dict(rtol=0.0, atol=1e-3)

# Statistical tests: allowed deviation of a sample mean, in standard errors (CLT);
# 5 sigma keeps the false-alarm rate below 1e-6 per comparison.
DISTRIBUTIONAL = 5.0

# Preconditions of spike-by-spike parity: a membrane potential closer than this to
# V_th [mV] could flip a float32 spike, so the test checks none occurs.
V_MARGIN = 1e-3

# Same for the dimensionless thresholds (calcium theta_d/theta_p, tag theta_tag,
# protein trigger theta_pro) after a single float32 step (values are O(1)).
F32_THRESHOLD_MARGIN = 1e-5

# Same for a float64 run: far above any float64 rounding error of an O(1) value.
X64_THRESHOLD_MARGIN = 1e-9

# Fraction of steps a float32 one-step parity test may skip because a value lies
# within the margins above (the test still fails if more steps than this are close).
MAX_SKIPPED_FRACTION = 0.05


def step_tol(dtype) -> dict:
    """Tolerance for one engine step against the reference, by state dtype."""
    return X64_RUN if np.dtype(dtype) == np.float64 else F32_STEP


def tree_allclose(actual, desired, *, rtol=None, atol=None) -> bool:
    """True when two pytrees have the same structure, dtypes and close leaves.

    `rtol`/`atol` default to the per-dtype one-step tolerance of each leaf; integer
    and bool leaves must be equal.
    """
    a_leaves, a_tree = jax.tree_util.tree_flatten(actual)
    d_leaves, d_tree = jax.tree_util.tree_flatten(desired)
    if a_tree != d_tree:
        return False
    for a, d in zip(a_leaves, d_leaves, strict=True):
        a, d = np.asarray(a), np.asarray(d)
        if a.dtype != d.dtype or a.shape != d.shape:
            return False
        if not np.issubdtype(a.dtype, np.floating):
            if not np.array_equal(a, d):
                return False
            continue
        tol = step_tol(a.dtype)
        r = tol["rtol"] if rtol is None else rtol
        t = tol["atol"] if atol is None else atol
        if not np.allclose(a, d, rtol=r, atol=t, equal_nan=False):
            return False
    return True
