r"""Presynaptic drive: Poisson and stimulated input spikes, NMDA gating, AMPA input.

Input j spikes in a step when $U(0,1) < r_j\,dt$ (Poisson), when its pathway is
stimulated, or when a prescribed raster says so. The NMDA gating trace is
$s_j \leftarrow s_j e^{-dt/\tau_N} + x_j$ and the AMPA input to neuron i is
$\sum_{j\to i} w_{ij} x_j$ with $w_{ij} = a_i (w_{min} + q_{ij}(w_{max} - w_{min}))$.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def input_spikes(key, p_in, pulses, pre_pathway, raster=None):
    """Bool `(n_pre,)` spikes: Poisson with probability `p_in`, or stimulated."""
    x = jax.random.uniform(key, p_in.shape, p_in.dtype) < p_in
    x = x | pulses[pre_pathway]
    if raster is not None:
        x = x | raster
    return x


_GOLDEN = 0x9E3779B9


def _mix32(x):
    """A bijective 32-bit integer mixer with full avalanche (Wellons' lowbias32)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def hash_seed(key) -> jnp.ndarray:
    """The uint32 seed of the hash generator, drawn from a JAX PRNG key."""
    return jax.random.bits(key, (), jnp.uint32)


def hash_bits(seed, step_idx, n: int, j=None) -> jnp.ndarray:
    """`(n,)` uint32 random words of step `step_idx` (counter-based: any step, any
    order).

    Word j is mix(mix(j ^ k1) ^ k2) with two keys drawn from (seed, step): a pure
    function of (seed, step, j), so chunked runs equal unbroken ones. `j` (uint32,
    any shape) replaces `arange(n)` to draw the words of other inputs.
    """
    k1 = _mix32(jnp.asarray(step_idx).astype(jnp.uint32) * jnp.uint32(_GOLDEN) ^ seed)
    k2 = _mix32(k1 + jnp.uint32(_GOLDEN))
    if j is None:
        j = jnp.arange(n, dtype=jnp.uint32)
    return _mix32(_mix32(j ^ k1) ^ k2)


def spike_threshold(p_in) -> jnp.ndarray:
    """uint32 thresholds t with P(word < t) = p_in (to float32 precision); p >= 1
    maps to the largest word, so use together with `p_in >= 1`."""
    scaled = jnp.clip(jnp.asarray(p_in, jnp.float32) * 4294967296.0, 0.0, 4294967040.0)
    return scaled.astype(jnp.uint32)


def input_spikes_hash(seed, step_idx, thresh, sure, pulses, pre_pathway, raster=None):
    """Like `input_spikes`, with the Poisson draw U < p made from `hash_bits`.

    `thresh` and `sure` are `spike_threshold(p_in)` and `p_in >= 1`.
    """
    x = (hash_bits(seed, step_idx, thresh.shape[0]) < thresh) | sure
    x = x | pulses[pre_pathway]
    if raster is not None:
        x = x | raster
    return x


def release(r, x, u, e_rec):
    r"""Short-term depression of one step (Tsodyks & Markram 1997).

    `r` `(n_pre,)` is each input's releasable pool (1 at rest) and `x` its spikes.
    Returns `(rel, r)`: the release of each spike relative to a rested pool (0 for
    an input that did not spike), and the pool after the step: a spike uses the
    share `u` of it, and it recovers toward 1 with `e_rec` = exp(-dt/tau_rec),
    $R \leftarrow 1 - (1 - R + u\,rel)\,e_{rec}$.
    """
    rel = jnp.where(x, r, jnp.zeros_like(r))
    return rel, 1 - (1 - r + u * rel) * e_rec


def weights(q, a, w_min, w_max):
    """Synaptic weight `(n_post, k)` from efficacy q and scaling factor a `(n_post,)`."""
    return a[:, None] * (w_min + q * (w_max - w_min))


def summed_input(w, x_syn):
    r"""Per-neuron input $\sum_k w_{ik} x_{ik}$ `(n_post,)`."""
    return jnp.sum(w * x_syn, axis=1)


def take(table, idx):
    """`table[idx]` for in-bounds indices of any integer type (uint16 included),
    without converting or clamping the indices (so XLA fuses the gather into its
    consumer)."""
    dnums = jax.lax.GatherDimensionNumbers(
        offset_dims=(), collapsed_slice_dims=(0,), start_index_map=(0,))
    return jax.lax.gather(table, idx[..., None], dnums, slice_sizes=(1,),
                          mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def pack_bits(x) -> jnp.ndarray:
    """`(nw,)` uint32 words of the bool vector x, nw = ceil(n / 32): bit b of word w is
    x[b * nw + w] (strided, so that packing adds whole rows)."""
    n = x.shape[0]
    nw = -(-n // 32)
    xp = jnp.pad(x, (0, nw * 32 - n)).reshape(32, nw).astype(jnp.uint32)
    words = xp[0]
    for b in range(1, 32):  # one elementwise loop (a reduce would not vectorise)
        words = words | (xp[b] << b)
    return words


def word_layout(v, fill=0) -> jnp.ndarray:
    """`(32, nw)` view of a per-input vector in the bit layout of `pack_bits`
    (row b, column w: input b * nw + w), padded with `fill`."""
    n = v.shape[0]
    nw = -(-n // 32)
    return jnp.pad(v, (0, nw * 32 - n), constant_values=fill).reshape(32, nw)


def hash_spike_words(seed, step_idx, thresh2, sure2, pulses, pathway2, raster=None):
    """Input spikes of `input_spikes_hash`, drawn straight into `pack_bits` words.

    `thresh2`, `sure2` and `pathway2` are `word_layout` views of the thresholds,
    of p >= 1 and of the input pathways (padding: threshold 0, not sure, pathway 0).
    The words hold exactly the spikes `input_spikes_hash` draws; this layout lets
    the draw run as one vectorised loop.
    """
    nw = thresh2.shape[1]
    j = (jnp.arange(32, dtype=jnp.uint32)[:, None] * jnp.uint32(nw)
         + jnp.arange(nw, dtype=jnp.uint32)[None, :])
    x2 = (hash_bits(seed, step_idx, 0, j) < thresh2) | sure2 | pulses[pathway2]
    if raster is not None:
        x2 = x2 | word_layout(raster, False)
    x2 = x2.astype(jnp.uint32)
    words = x2[0]
    for b in range(1, 32):
        words = words | (x2[b] << b)
    return words


def unpack_bits(words, n: int) -> jnp.ndarray:
    """Inverse of `pack_bits`: the `(n,)` bool vector."""
    b = jnp.arange(32, dtype=jnp.uint32)[:, None]
    return ((words[None, :] >> b) & 1).astype(bool).reshape(-1)[:n]


def event_sums(words, q_flat, syn_by_pre, pre_ptr, k: int, w_min, w_max, max_out: int,
               batch: int, n_post: int, rel=None) -> jnp.ndarray:
    r"""AMPA sums of several steps, touching only the synapses of inputs that spiked:
    $U_i(t) = \sum_k (w_{min} + q_{ik}(w_{max} - w_{min})) x_{pre(i,k)}(t)$.

    Args:
        words: `(T, nw)` input spikes of T steps, each row packed by `pack_bits`.
        q_flat: `(n_post * k,)` efficacies, post-major (synapse id = i * k + kk), or
            the packed state of the fused engine (`c + 1j * rho`, or uint32 holding
            bfloat16 rho in its low half).
        syn_by_pre: `(n_syn,)` int32 synapse ids grouped by input (pre-major).
        pre_ptr: `(n_pre + 2,)` int32: the synapses of input j are
            `syn_by_pre[pre_ptr[j]:pre_ptr[j + 1]]`; the last two entries are n_syn.
        k: In-degree; max_out: the largest out-degree (static).
        batch: Spikes handled per pass; more spikes take more passes.
        n_post: Post neurons.
        rel: `(T, n_pre)` release of each spike (short-term depression), which
            multiplies its weights; None: 1.

    Returns:
        `(T, n_post)`; the AMPA input of step t is `a * U[t]`. The spikes are found
        without scanning the inputs one by one: the non-zero words are listed and
        each pass takes (and clears) the lowest set bit of up to `batch` of them.
        The sums equal those of `summed_input` added in a different order.
    """
    T, nw = words.shape
    n_pre = pre_ptr.shape[0] - 2
    flat = words.reshape(-1)
    col = jnp.arange(max_out, dtype=jnp.int32)
    rel_flat = None if rel is None else rel.reshape(-1)

    def one_pass(carry):
        flat, u = carry
        wi = jnp.nonzero(flat != 0, size=batch, fill_value=T * nw)[0].astype(jnp.int32)
        w = flat.at[wi].get(mode="fill", fill_value=0)
        low = w & (~w + jnp.uint32(1))  # lowest set bit (0 for w = 0)
        bit = 31 - jax.lax.clz(low).astype(jnp.int32)
        t, word = jax.lax.div(wi, jnp.int32(nw)), jax.lax.rem(wi, jnp.int32(nw))
        spk = jnp.where(w != 0, bit * nw + word, n_pre)
        flat = flat.at[wi].set(w ^ low, mode="drop")
        lo, hi = take(pre_ptr, spk), take(pre_ptr, spk + 1)
        j = lo[:, None] + col[None, :]
        ok = j < hi[:, None]
        syn = take(syn_by_pre, jnp.where(ok, j, 0))
        q = take(q_flat, syn)
        if jnp.iscomplexobj(q):  # packed c + 1j * rho
            q = jnp.imag(q)
        elif q.dtype == jnp.uint32:  # packed bfloat16 (c, rho)
            q = jax.lax.bitcast_convert_type(q << jnp.uint32(16), jnp.float32)
        target = jnp.where(ok, t[:, None] * n_post + jax.lax.div(syn, jnp.int32(k)),
                           T * n_post)
        val = w_min + q * (w_max - w_min)
        if rel is not None:
            val = val * take(rel_flat, jnp.where(w != 0, t * n_pre + spk, 0))[:, None]
        return flat, u.at[target].add(val, mode="drop")

    u0 = jnp.zeros(T * n_post, jnp.float32 if q_flat.dtype == jnp.uint32
                   else jnp.real(q_flat[:1]).dtype)
    u = jax.lax.while_loop(lambda c: jnp.any(c[0] != 0), one_pass, (flat, u0))[1]
    return u.reshape(T, n_post)


def dense_sums(x, q, pre_idx, w_min, w_max) -> jnp.ndarray:
    r"""The sums of `event_sums`, over every synapse: `x` `(T, n_pre)` bool input
    spikes (or their release, floats), q `(n_post, k)`; returns `(T, n_post)`."""
    w = w_min + q * (w_max - w_min)
    return jnp.stack([summed_input(w, take(row, pre_idx).astype(w.dtype)) for row in x])
