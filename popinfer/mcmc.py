"""What both stages' emcee runs share: the starting walkers, the run-length schedule
and the convergence warning.

Run-length schedule (both stages). A chain is long enough once it is
``required_times`` integrated autocorrelation times τ long (at least
``MIN_AUTOCORR_TIMES``; stage one also asks for K effectively independent draws in
the kept half, see ``individuals.sampler``). τ is estimated on the kept second half
at check points only, because each estimate costs an FFT over that half:

- the first check comes after ``first_check`` steps: never before the kept half can
  hold the draws asked for (``minimum_steps``), nor before ``FIRST_CHECK_TIMES``
  steps per required τ (a τ below 5 steps is rare for emcee's stretch and
  differential-evolution moves, so no chain is done earlier);
- each later check comes when the chain would be long enough by the current τ
  estimate (``target``), but at least ``CHECK_GROWTH`` × and at most
  ``MAX_CHECK_GROWTH`` × the current length: geometric growth keeps the number of
  checks logarithmic in the run length, and the cap stops an early, too-large
  τ estimate from overshooting.

Both stages discard the first half of the chain as burn-in and take their draws
evenly spaced from the second half.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import PopinferError

MIN_AUTOCORR_TIMES = 50
FIRST_CHECK_TIMES = 5
CHECK_GROWTH = 1.2
MAX_CHECK_GROWTH = 4
INIT_CANDIDATES_PER_WALKER = 8
INIT_MAX_ROUNDS = 16


class ConvergenceWarning(UserWarning):
    """A chain did not reach the required length in autocorrelation times."""


class InterimEdgeWarning(UserWarning):
    """Stage one's draws of some objects pile against a bound of the interim prior that the
    likelihood does not have: the prior cuts off their posterior."""


class InitialisationError(PopinferError):
    """No walkers with a finite posterior could be drawn from the prior."""


def ensemble_sampler(n_walkers, n_dim, log_prob, moves):
    """``emcee.EnsembleSampler`` of ``log_prob`` (vectorised over walkers), calling it directly:
    emcee's own wrapper prints the walkers' positions and a traceback to stdout before passing
    on any exception — popinfer's errors and interruptions, which explain themselves, included
    (and stdout may carry an HDF5 file, ``-o -``)."""
    import emcee

    sampler = emcee.EnsembleSampler(n_walkers, n_dim, log_prob, moves=moves, vectorize=True)
    sampler.log_prob_fn = log_prob  # emcee calls it as log_prob_fn(coords) (no args or kwargs given)
    return sampler


def minimum_steps(n_keep, n_walkers):
    """Fewest steps after which the kept (second) half holds ``n_keep`` draws."""
    return max(100, 2 * math.ceil(n_keep / n_walkers))


def first_check(n_keep, n_walkers, required_times):
    """Steps before the first look at τ (see the module docstring)."""
    return max(minimum_steps(n_keep, n_walkers), math.ceil(FIRST_CHECK_TIMES * required_times))


def next_check(step, target):
    """The next check point after ``step``: ``target`` (the length the current τ estimate asks
    for; inf when τ is not yet finite), within [CHECK_GROWTH·step, MAX_CHECK_GROWTH·step]."""
    low, high = math.ceil(step * CHECK_GROWTH), MAX_CHECK_GROWTH * step
    return int(min(max(target, low), high)) if np.isfinite(target) else high


def initial_positions(target, n_walkers, rng):
    """Walkers drawn from the prior, resampled by likelihood, for B independent blocks.

    Draws ``INIT_CANDIDATES_PER_WALKER × n_walkers`` candidates per block from the
    prior and keeps ``n_walkers`` of them without replacement with probability ∝
    likelihood (Gumbel top-k). The walkers are thus distinct, start where the
    posterior has mass, and spread over every mode in proportion to its mass,
    whatever the prior's breadth. More rounds of candidates are drawn while some
    block has fewer than ``n_walkers`` candidates of finite posterior.

    Parameters
    ----------
    target : object
        ``priors`` (D distributions with ``sample``) or ``draw_prior(rng, size)`` (joint draws
        (*size, D)), ``n_blocks`` (B: objects in
        stage one, 1 in stage two), ``evaluate(theta)`` for theta (n, B, D) returning
        (ln prior, ln L), each (n, B), and ``initialisation_error(blocks, n_tried,
        n_walkers)`` returning the :class:`InitialisationError` (worded for its stage)
        to raise when the blocks ``blocks`` cannot be started.
    n_walkers : int
    rng : numpy.random.Generator

    Returns
    -------
    coords : ndarray, shape (n_walkers, B, D)
    log_prob : ndarray, shape (n_walkers, B)
    """
    n_blocks = target.n_blocks
    n_candidates = INIT_CANDIDATES_PER_WALKER * n_walkers
    pool_theta, pool_keys, pool_lp = [], [], []
    for _ in range(INIT_MAX_ROUNDS):
        draw = getattr(target, "draw_prior", None)  # a joint prior draws itself
        theta = draw(rng, (n_candidates, n_blocks)) if draw is not None else np.stack(
            [np.asarray(p.sample(rng, size=(n_candidates, n_blocks)), dtype=float) for p in target.priors],
            axis=-1,
        )
        log_prior, log_like = target.evaluate(theta)
        keys = log_like + rng.gumbel(size=log_like.shape)
        pool_theta.append(theta)
        pool_keys.append(keys)
        pool_lp.append(log_prior + log_like)
        n_finite = np.isfinite(np.concatenate(pool_lp)).sum(axis=0)
        if n_finite.min() >= n_walkers:
            break
    else:
        raise target.initialisation_error(np.flatnonzero(n_finite < n_walkers), INIT_MAX_ROUNDS * n_candidates,
                                          n_walkers)
    theta = np.concatenate(pool_theta)
    keys = np.concatenate(pool_keys)
    log_prob = np.concatenate(pool_lp)
    keys = np.where(np.isfinite(log_prob), keys, -np.inf)
    chosen = np.argsort(-keys, axis=0, kind="stable")[:n_walkers]
    blocks = np.arange(n_blocks)[None, :]
    return theta[chosen, blocks], log_prob[chosen, blocks]
