"""Nested sampling of the hyperparameters with UltraNest: the posterior and the evidence.

    Z = ∫ L(α) p(α) dα        (Skilling 2006; UltraNest: Buchner 2021, JOSS 6, 3001)

The hyperpriors' quantile functions map the unit cube to α (the prior transform), and
UltraNest's reactive nested sampler calls the vectorised ln L̂(α) in batches. Because
ln L̂ estimates Σ_n [ln p(data_n | α) − ln Z0_n] (Z0_n: object n's evidence under the
interim prior), ln Z is relative to the interim evidence Π_n Z0_n. That offset is the
same for every population fitted to one samples file and cancels in Bayes factors.

Populations that admit only part of the hyperprior's support (``mixture`` requires
mu1 < mu2) have the prior renormalised to that part, as emcee's posterior implicitly
is: ln Z is corrected by −ln P(admissible), with P estimated from prior draws (its
error is added to the evidence error).

Why UltraNest (benchmarks/nested_samplers.py, eight schools, K = 4000, three seeds):
ln Z within 0.03 of the grid value with a reported error of 0.05-0.12 in 6-8 thousand
likelihood calls (10-14 s on two shared cores); nautilus agreed as well (within 0.07)
but took ~21 thousand calls and 140-200 s and reports no error; dynesty calls the
likelihood one point at a time (no vectorisation) and took 33 s for 20 thousand calls
with 250 live points, landing 0.14 from the grid value (twice its error).

UltraNest draws from numpy's global random state; it is seeded from the sampler's
:class:`numpy.random.SeedSequence` for the run and restored afterwards, so runs are
reproducible and the caller's global state is untouched. It writes nothing to disk
(no log directory) and nothing to stdout (its messages go to stderr, only with
progress on).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import warnings

import numpy as np

from ..errors import PopinferError, UsageError
from ..mcmc import ConvergenceWarning

# Prior draws used to estimate the share of the hyperprior a population admits.
ADMISSIBLE_DRAWS = 20000
# ln L̂ below this stands for -inf (UltraNest needs finite values).
LOG_LIKELIHOOD_FLOOR = -1e100


def _ultranest():
    try:
        import ultranest
    except ImportError:
        raise UsageError("--sampler nested needs UltraNest, which is not installed. Install the nested extra: "
                         "pip install 'popinfer[nested]'.", "--sampler") from None
    return ultranest


@contextlib.contextmanager
def _quiet_global_state(seed, progress):
    """Seed numpy's global RNG for UltraNest (restored after), keep stdout clean, and
    route UltraNest's log to stderr (warnings only unless ``progress``)."""
    state = np.random.get_state()
    logger = logging.getLogger("ultranest")
    handlers, level = list(logger.handlers), logger.level
    for handler in handlers:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[ultranest] %(message)s"))
    logger.addHandler(handler)  # present before UltraNest looks: it adds no stdout handler then
    logger.setLevel(logging.INFO if progress else logging.WARNING)
    np.random.seed(int(seed.generate_state(1)[0]))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        np.random.set_state(state)
        logger.removeHandler(handler)
        for old in handlers:
            logger.addHandler(old)
        logger.setLevel(level)


def prior_transform(posterior, unit):
    """α from points ``unit`` (U, H) of the unit cube, each coordinate through its hyperprior's
    quantile function."""
    unit = np.atleast_2d(unit)
    return np.stack([prior.ppf(unit[:, i]) for i, prior in enumerate(posterior.priors)], axis=-1)


def admissible_fraction(posterior, rng, n_draws=ADMISSIBLE_DRAWS):
    """(P, its standard error): the hyperprior mass where the population is defined
    (``population.valid``), from ``n_draws`` prior draws."""
    likelihood = posterior.likelihood
    values = prior_transform(posterior, rng.random((n_draws, len(posterior.names))))
    valid = np.asarray(likelihood.population.valid(likelihood.hyper(posterior.names, values)), dtype=bool)
    fraction = float(valid.mean())
    return fraction, math.sqrt(max(fraction * (1.0 - fraction), 0.0) / n_draws)


class NestedSampler:
    """UltraNest's reactive nested sampler on the hyperparameters.

    Parameters
    ----------
    live_points : int
        Minimum number of live points (``--live-points``); more give a smaller error
        of ln Z and more distinct posterior draws.
    """

    name = "nested"
    DEFAULT_LIVE_POINTS = 400

    def __init__(self, live_points=DEFAULT_LIVE_POINTS):
        self.live_points = live_points

    @property
    def settings(self):
        return {"live_points": self.live_points}

    def check(self, names):
        _ultranest()
        if not isinstance(self.live_points, (int, np.integer)) or self.live_points < len(names) + 1:
            raise UsageError(f"--live-points {self.live_points}: need a whole number of at least {len(names) + 1}.",
                             "--live-points")

    def sample(self, posterior, n_samples, seed, progress=False):
        """``n_samples`` equal-weight draws (S, H) of ``posterior`` (a HyperPosterior) and a
        diagnostics dict (``log_evidence``, ``log_evidence_error``, calls, iterations, ESS);
        ``seed`` is a :class:`numpy.random.SeedSequence`."""
        ultranest = _ultranest()
        run_seed, admissible_seed, resample_seed = seed.spawn(3)
        fraction, fraction_error = admissible_fraction(posterior, np.random.default_rng(admissible_seed))
        if fraction == 0.0:
            raise PopinferError("No hyperparameters drawn from the hyperpriors are admissible for the population.")

        def log_likelihood(values):
            values = np.atleast_2d(values)
            finite = np.isfinite(posterior.log_prior(values))
            out = posterior.log_likelihood(values, finite)
            return np.where(np.isfinite(out), out, LOG_LIKELIHOOD_FLOOR)

        def transform(unit):
            return prior_transform(posterior, unit)

        with _quiet_global_state(run_seed, progress):
            sampler = ultranest.ReactiveNestedSampler(list(posterior.names), log_likelihood, transform,
                                                      vectorized=True)
            result = sampler.run(min_num_live_points=self.live_points, show_status=False, viz_callback=False)
        weighted = result["weighted_samples"]
        weights = np.asarray(weighted["weights"], dtype=float)
        weights = weights / weights.sum()
        effective = float(1.0 / np.sum(weights ** 2))
        # Equal-weight draws: multinomial resampling of the weighted points with our own stream.
        pick = np.random.default_rng(resample_seed).choice(len(weights), size=n_samples, p=weights)
        draws = np.asarray(weighted["points"], dtype=float)[pick]
        if not np.all(weighted["logl"][pick] > 0.5 * LOG_LIKELIHOOD_FLOOR):
            raise PopinferError("Nested sampling found no hyperparameters that give every object a finite likelihood.")
        log_evidence = float(result["logz"]) - math.log(fraction)
        log_evidence_error = math.hypot(float(result["logzerr"]), fraction_error / fraction)
        if effective < n_samples / 4:
            warnings.warn(ConvergenceWarning(
                f"Nested sampling's weighted posterior has an effective size of {effective:.0f} for --samples "
                f"{n_samples}: the equal-weight draws repeat points often. Raise --live-points."), stacklevel=2)
        diagnostics = {"log_evidence": log_evidence, "log_evidence_error": log_evidence_error,
                       "likelihood_calls": int(result["ncall"]), "iterations": int(result["niter"]),
                       "effective_sample_size": effective, "admissible_prior_fraction": fraction}
        return draws, diagnostics
