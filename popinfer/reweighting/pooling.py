"""Partial pooling: every object's draws resampled under the inferred population."""

from __future__ import annotations

import numpy as np

from ..blocks import BLOCK_ELEMENTS, object_blocks


def partial_pooling(likelihood, names, draws, n_walkers, sink, rng, elements=BLOCK_ELEMENTS, advance=None):
    """Each object's draws under the inferred population, into ``sink`` (N, R, P).

    For pooled draw r an α_r is picked from the posterior, then one θ per object
    with probability ∝ w_nk(α_r). Objects go by blocks (the uniforms too), so
    memory stays at one block whatever N. ``advance(n)`` (optional) is told of each
    n pooled draws made (N · R in all).
    """
    n_objects, n_reweighted, n_parameters = sink.shape
    chosen = rng.integers(len(draws), size=n_reweighted)
    for lo, hi in object_blocks(n_objects, n_reweighted * n_parameters, elements):
        uniforms = rng.random((n_reweighted, hi - lo))
        block = np.empty((hi - lo, n_reweighted, n_parameters))
        for r0 in range(0, n_reweighted, n_walkers):
            r1 = min(r0 + n_walkers, n_reweighted)
            index = likelihood.resample(likelihood.hyper(names, draws[chosen[r0:r1]]), uniforms[r0:r1], lo, hi)
            block[:, r0:r1, :] = likelihood.draws_at(lo, hi, index).transpose(1, 0, 2)
            if advance is not None:
                advance((hi - lo) * (r1 - r0))
        sink[lo:hi] = block
