"""Stage two's posterior: hyperpriors (documented defaults from the data's scale) and
ln p(α | data) = Σ ln p(α_h) + ln L(α), vectorised over walkers."""

from __future__ import annotations

import numpy as np

from ..blocks import object_blocks
from ..distributions import parse_distribution, parse_priors
from ..errors import UsageError
from ..populations.base import plain as _plain


def data_scale(theta, parameters):
    """Location and spread of the objects' posteriors, for default hyperpriors.

    ``theta`` (N, K, P) holds the draws of ``parameters``; per-object statistics are
    computed by blocks of objects, so no copy of the draws is made.
    """
    n_objects, n_draws, _ = theta.shape
    stats = {key: [] for key in ("median", "sd", "log_median", "log_sd")}
    positive = np.ones(theta.shape[-1], dtype=bool)
    for lo, hi in object_blocks(n_objects, theta[0].size):
        block = theta[lo:hi]
        padded = np.isnan(block)  # the padding of a ragged file
        median, std = (np.nanmedian, np.nanstd) if padded.any() else (np.median, np.std)
        stats["median"].append(median(block, axis=1))
        stats["sd"].append(std(block, axis=1))
        positive &= np.all((block > 0) | padded, axis=(0, 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_block = np.log(block)
        stats["log_median"].append(median(log_block, axis=1))
        stats["log_sd"].append(std(log_block, axis=1))
    stats = {key: np.concatenate(value) for key, value in stats.items()}  # each (N, P)
    scale = {}
    for i, name in enumerate(parameters):
        medians = stats["median"][:, i]
        spread = float(np.std(medians) + np.mean(stats["sd"][:, i]))
        entry = {"location": float(np.median(medians)), "spread": spread if spread > 0 else 1.0}
        if positive[i]:
            log_medians = stats["log_median"][:, i]
            log_spread = float(np.std(log_medians) + np.mean(stats["log_sd"][:, i]))
            entry.update(log_location=float(np.median(log_medians)), log_spread=log_spread if log_spread > 0 else 1.0)
        else:
            entry.update(log_location=0.0, log_spread=1.0)
        scale[name] = entry
    return scale


def check_fixed(population, fixed):
    """The held hyperparameters (``--fix NAME=VALUE``) as floats, each a finite number inside the
    population's domain (``Population.domain_violation``). A value outside it makes f(θ; α)
    −∞ (or NaN) at every α: the sampler could not start, or drew nothing but −∞."""
    values = {}
    for name, value in fixed.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"--fix {name}={value!r}: expected a number.", "--fix") from None
        if not np.isfinite(number):
            raise UsageError(f"--fix {name}={_plain(number)}: population {population.name!r} needs a finite "
                             f"number for {name}.", "--fix")
        values[name] = number
    violation = population.domain_violation(values)
    if violation is None:
        return values
    names, needs = violation
    if len(names) == 1:
        raise UsageError(f"--fix {names[0]}={_plain(values[names[0]])} is outside the domain of population "
                         f"{population.name!r}: it needs {needs}. Hold {names[0]} at a value in that range, or "
                         f"leave it out to sample it.", "--fix")
    first, second = names
    raise UsageError(f"--fix {first}={_plain(values[first])} --fix {second}={_plain(values[second])}: population "
                     f"{population.name!r} needs {needs}; hold {first} below {second}.", "--fix")


def resolve_hyperpriors(population, hyperpriors, fixed, scale):
    """Hyperpriors of the sampled hyperparameters: documented defaults, overridden."""
    given = parse_priors(hyperpriors, population.hyperparameters, fixed, "--hyperprior",
                         f"population {population.name!r}", "hyperparameter")
    defaults = population.default_hyperpriors(scale)
    resolved = {}
    for name in population.hyperparameters:
        if name in fixed:
            continue
        if name in given:
            resolved[name] = given[name]
        elif name in defaults:
            resolved[name] = parse_distribution(defaults[name], f"default hyperprior of {name}")
        else:
            raise UsageError(
                f"Population {population.name!r} has no default hyperprior for {name!r}: hold it with "
                f"--fix {name}=VALUE or give --hyperprior {name}=DIST.",
                "--fix",
            )
    if not resolved:
        raise UsageError("Every hyperparameter is fixed (--fix); nothing is left to sample.", "--fix")
    return resolved


class HyperPosterior:
    """ln p(α | data) = Σ_h ln p(α_h) + ln L(α), vectorised over walkers: what a sampler
    (``reweighting.samplers``) is handed.

    ln L and its ``--max-variance`` cut come from
    :meth:`HyperLikelihood.ln_likelihood_and_variance`.

    Parameters
    ----------
    likelihood : HyperLikelihood
    names : list of str
        The H sampled hyperparameters, in column order of every ``values`` array.
    priors : dict of str -> Distribution
        Hyperprior p(α_h) of each (independent), with ``logpdf``, ``sample`` and ``ppf``.
    """

    def __init__(self, likelihood, names, priors):
        self.likelihood = likelihood
        self.names = list(names)
        self.priors = [priors[n] for n in self.names]

    GROUP = 64

    def log_prior(self, values):
        """Σ_h ln p(α_h) of ``values`` (..., H)."""
        return np.sum([prior.logpdf(values[..., i]) for i, prior in enumerate(self.priors)], axis=0)

    def log_likelihood(self, values, valid):
        """ln L where ``valid`` (after the variance cut, if any); -inf elsewhere."""
        out = np.full(values.shape[0], -np.inf)
        rows = np.flatnonzero(valid)
        # By groups of walkers: the per-object terms (W, N) stay small even for the
        # initialisation's hundreds of candidates.
        for start in range(0, rows.size, self.GROUP):
            group = rows[start:start + self.GROUP]
            hyper = self.likelihood.hyper(self.names, values[group])
            out[group] = self.likelihood.ln_likelihood_and_variance(hyper, variance=False).ln_likelihood
        return out

    def prior_transform(self, unit):
        """α from points ``unit`` (U, H) of the unit cube, each coordinate through its
        hyperprior's quantile function (the transform nested samplers need)."""
        unit = np.atleast_2d(unit)
        return np.stack([prior.ppf(unit[:, i]) for i, prior in enumerate(self.priors)], axis=-1)

    def __call__(self, values):
        """ln p(α | data) of ``values`` (W, H), shape (W,); -inf outside the hyperpriors."""
        values = np.atleast_2d(values)
        log_prior = self.log_prior(values)
        return log_prior + self.log_likelihood(values, np.isfinite(log_prior))
