"""Stage two's diagnostics: ln L̂, Var[ln L̂] and per-object ESS at the posterior draws,
the low-ESS and variance warnings, and the interim-support check."""

from __future__ import annotations

import warnings

import numpy as np

from ..blocks import BLOCK_ELEMENTS, object_blocks
from ..distributions import parse_distribution
from .selection import EFFECTIVE_PER_OBJECT

MAX_ESS_DRAWS = 1000
# An object is reported when its ESS is below --min-ess at this fraction of the
# posterior draws or more (a handful of extreme draws alone is not reported).
LOW_ESS_FRACTION = 0.01
SUPPORT_MASS_WARNING = 1e-3
SUPPORT_CHECK_DRAWS = 200
VARIANCE_WARNING = 1.0


class PopulationDiagnosticWarning(UserWarning):
    """The interim draws cannot fully support the population (ESS, Var[ln L̂], support)."""


def _warn(message):
    warnings.warn(PopulationDiagnosticWarning(message), stacklevel=3)


def low_ess_objects(low_fraction):
    """Indices of the objects the low-ESS warning reports: ESS < ``--min-ess`` at a share
    ``low_fraction`` (N,) of the posterior draws of at least ``LOW_ESS_FRACTION``."""
    return np.flatnonzero(np.asarray(low_fraction) >= LOW_ESS_FRACTION)


def column_medians(ess, objects, elements=BLOCK_ELEMENTS):
    """Median over the M draws of the ESS of ``objects`` (sorted indices), reading the
    (M, N) array or dataset ``ess`` by blocks of columns."""
    out = np.empty(len(objects))
    for lo, hi in object_blocks(ess.shape[1], ess.shape[0], elements):
        inside = (objects >= lo) & (objects < hi)
        if inside.any():
            out[inside] = np.median(ess[:, lo:hi][:, objects[inside] - lo], axis=0)
    return out


def diagnose(ids, low_fraction, ess, variance, n_draws, min_ess, selection_variance=None):
    """Warn, naming objects, when interim draws cannot support the population.

    ``low_fraction`` (N,) is each object's share of the M posterior draws with
    ESS < ``min_ess``; ``ess`` (M, N) (array or dataset) is read only for the
    objects the warning lists. ``selection_variance``, the selection term's share
    N² Var[ξ̂]/ξ̂² of ``variance`` at the same draws, changes the remedy where it dominates.
    """
    median_variance = float(np.median(variance))
    remedy = ("Remedy: popinfer refine SAMPLES.h5 POP.h5 -o REFINED.h5 refits just these objects under a "
              "population-informed interim prior (then fit the population to REFINED.h5); or rerun stage one "
              "with more draws (--samples) or a wider interim prior (--prior), or restrict the population "
              "(--hyperprior) away from the unsupported region.")
    if selection_variance is not None and np.median(selection_variance) > 0.5 * median_variance:
        remedy = (f"Most of it (median {float(np.median(selection_variance)):.3g}) is the selection term's "
                  f"N² Var[ξ̂]/ξ̂²: use more injections (a larger M_total), or a p_draw closer to the population.")
    flagged = low_ess_objects(low_fraction)
    if flagged.size:
        # The ten listed: largest fraction first, then smallest median ESS. Medians are
        # needed only for objects that can make the list.
        fractions = low_fraction[flagged]
        cutoff = np.sort(fractions)[-min(10, fractions.size)]
        candidates = flagged[fractions >= cutoff]
        medians = column_medians(ess, candidates)
        worst = [(candidates[i], medians[i]) for i in np.lexsort((medians, -low_fraction[candidates]))[:10]]
        counts = np.broadcast_to(n_draws, (len(ids),))  # K, or each object's own K_n
        ragged = bool(np.any(counts != counts[0]))
        listed = "; ".join(f"{ids[n]!r}: median ESS {median:.3g}" + (f" of K_n = {counts[n]}" if ragged else "") +
                           f", ESS < {min_ess:g} at {low_fraction[n]:.1%} of posterior draws" for n, median in worst)
        count = int(flagged.size)
        more = f" and {count - len(worst)} more" if count > len(worst) else ""
        of_k = f"K_n = {counts.min()} to {counts.max()}" if ragged else f"K = {counts[0]}"
        _warn(f"{count} of {len(ids)} object(s) have fewer than {min_ess:g} effective draws (of {of_k}) "
              f"over part of the hyperparameter posterior: {listed}{more}. Var[ln L̂] has median "
              f"{median_variance:.3g} (max {float(np.max(variance)):.3g}; keep it below ~1). {remedy}")
    elif median_variance > VARIANCE_WARNING:
        _warn(f"The Monte Carlo variance of ln L̂ has median {median_variance:.3g} over the posterior "
              f"(should be ≲ 1): the likelihood estimate is noisy. {remedy}")


def _outside_mass(marginal, low, high):
    mass = 0.0
    if np.isfinite(low):
        mass += float(marginal.cdf(low))
    if np.isfinite(high):
        mass += 1.0 - float(marginal.cdf(high))
    return mass


def check_interim_support(samples, population, parameters, names, draws, fixed):
    """Warn when the population puts mass where the interim prior has none.

    The mass outside the interim prior's support is evaluated at the posterior
    median and at up to ``SUPPORT_CHECK_DRAWS`` posterior draws; a warning fires
    when it exceeds 0.1 % at the median, or 1 % at a tenth of the draws or more
    (the tail of the posterior can be biased even when its centre is not).
    """
    median = {**{n: float(np.median(draws[:, i])) for i, n in enumerate(names)}, **fixed}
    index_draws = np.unique(np.round(np.linspace(0, len(draws) - 1, SUPPORT_CHECK_DRAWS)).astype(int))
    for index, name in enumerate(parameters):
        spec = samples.interim_prior.get(name)
        marginal = population.marginal(median, index)
        if spec is None or marginal is None:
            continue
        low, high = parse_distribution(spec).support
        at_median = _outside_mass(marginal, low, high)
        masses = np.array([_outside_mass(population.marginal({**dict(zip(names, draws[i])), **fixed}, index), low, high)
                           for i in index_draws])
        share = float(np.mean(masses > 0.01))
        if at_median > SUPPORT_MASS_WARNING or share >= 0.1:
            _warn(f"The population puts mass on {name} outside the interim prior's support [{low:g}, {high:g}] "
                  f"({spec}): {at_median:.2%} at the posterior median, and more than 1 % at {share:.0%} of the "
                  f"posterior draws. Stage-one draws cannot represent that region, so the reweighting is biased "
                  f"(toward populations that stay inside). Rerun stage one with a wider --prior {name}=...")


def diagnose_selection(effective_draws, n_objects, injections):
    """Warn when the injections cannot estimate ξ(α) well: N_eff,sel < 4N at ≥ 1 % of the draws (Farr 2019)."""
    required = EFFECTIVE_PER_OBJECT * n_objects
    share = float(np.mean(effective_draws < required))
    if share >= LOW_ESS_FRACTION:
        _warn(f"The injections in {injections.source} ({injections.n_detected} detected of M_total = "
              f"{injections.n_total}) give fewer than 4N = {required:g} effective draws N_eff,sel at {share:.1%} of "
              f"the posterior draws (median N_eff,sel {np.median(effective_draws):.3g}, smallest "
              f"{np.min(effective_draws):.3g}): the selection term −N ln ξ̂ is too noisy and biases the fit. "
              f"Remedy: more injections (a larger M_total), or injections drawn from a p_draw closer to the "
              f"population; --max-variance 1 keeps the sampler out of hyperparameters where ln L̂ is this noisy.")


def first_occurrences(draws):
    """For each draw (S, H), the position of the first draw equal to it. An ensemble walker that
    rejects a move keeps its draw, so the kept draws repeat (about half of them with
    ``--moves de`` on the eight schools): the numbers at a draw are computed once, at its first
    occurrence."""
    _, first, inverse = np.unique(draws, axis=0, return_index=True, return_inverse=True)
    return first[np.reshape(inverse, -1)]


def _groups(positions, n_walkers):
    """``positions`` in groups of ``n_walkers``, the last one filled up with its last position
    repeated: every call has the same shape (a jitted backend compiles once). Yields each group
    with its count of positions, the padding not counted."""
    for lo in range(0, len(positions), n_walkers):
        at = positions[lo:lo + n_walkers]
        yield np.concatenate([at, np.repeat(at[-1], n_walkers - len(at))]), len(at)


def draws_to_evaluate(original, n_ess):
    """The positions of the kept draws that :func:`likelihood_at_draws` evaluates: each distinct
    draw once (``original``: :func:`first_occurrences` of the draws) and each of the ``n_ess``
    evenly spaced draws whose per-object numbers are written."""
    n_samples = len(original)
    ess_index = np.round(np.linspace(0, n_samples - 1, n_ess)).astype(np.int64)
    needed = np.zeros(n_samples, dtype=bool)
    needed[original] = needed[ess_index] = True
    return np.flatnonzero(needed), ess_index


def selection_at_draws(selection, likelihood, names, draws, n_walkers, original, advance=None):
    """ln ξ̂ and N_eff,sel at every kept draw, each (S,), each distinct draw evaluated once
    (``original``: :func:`first_occurrences` of ``draws``); ``advance(n)`` (optional) is told
    of each group of n draws evaluated."""
    ln_efficiency, effective_draws = np.empty(len(draws)), np.empty(len(draws))
    for at, count in _groups(np.unique(original), n_walkers):
        ln_efficiency[at], _, effective_draws[at] = selection.efficiency(likelihood.hyper(names, draws[at]))
        if advance is not None:
            advance(count)
    return ln_efficiency[original], effective_draws[original]


def likelihood_at_draws(likelihood, names, draws, n_walkers, sink_ess, min_ess, sink_log_likelihood, original,
                        advance=None):
    """ln L̂ and Var[ln L̂] at every kept draw, with the per-object ESS at M evenly spaced
    draws written row by row into ``sink_ess`` (M, N) (array or dataset).

    Each distinct draw is evaluated once (``original``: :func:`first_occurrences` of ``draws``),
    and so is each of the M draws (their per-object numbers are written, not kept): the
    positions :func:`draws_to_evaluate` gives. ``advance(n)`` (optional) is told of each group
    of n of them evaluated.

    Returns
    -------
    log_likelihood (S,), variance (S,), ess_index (M,), low_fraction (N,): each
    object's share of the M draws with ESS < ``min_ess``.
    """
    n_samples = len(draws)
    n_ess = sink_ess.shape[0]
    log_likelihood, variance = np.empty(n_samples), np.empty(n_samples)
    evaluated, ess_index = draws_to_evaluate(original, n_ess)
    low = np.zeros(likelihood.n_objects, dtype=np.int64)
    for at, count in _groups(evaluated, n_walkers):
        estimate = likelihood.ln_likelihood_and_variance(likelihood.hyper(names, draws[at]), cut=False)
        log_likelihood[at], variance[at], ess = estimate.ln_likelihood, estimate.ln_likelihood_variance, estimate.ess
        # Every one of the M draws is evaluated, in order: the rows of this group are consecutive,
        # one write each (not one per row).
        rows = np.flatnonzero((ess_index >= at[0]) & (ess_index <= at[-1]))
        if rows.size:
            columns = np.searchsorted(at, ess_index[rows])
            values = ess[columns].astype(np.float32)  # as stored
            sink_ess[rows[0]:rows[-1] + 1] = values
            sink_log_likelihood[rows[0]:rows[-1] + 1] = (estimate.ln_sum_weights[columns]
                                                         - np.log(likelihood.draw_counts))
            low += np.sum(values < min_ess, axis=0)
        if advance is not None:
            advance(count)
    return log_likelihood[original], variance[original], ess_index, low / n_ess
