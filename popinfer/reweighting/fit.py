"""Stage two: sample the population's hyperparameters, diagnose the interim support,
and draw every object's parameters under the inferred population (partial pooling)."""

from __future__ import annotations

import hashlib
import io
import math
import sys
import warnings
from pathlib import Path

import emcee
import numpy as np
from tqdm import tqdm

from ..autocorr import integrated_time
from ..distributions import parse_distribution, parse_options, parse_priors, parse_value
from ..errors import InputDataError, PopinferError, UsageError
from ..individuals.fit import ConvergenceWarning
from ..individuals.sampler import MIN_AUTOCORR_TIMES, initial_positions
from ..io.hdf5 import check_output
from ..io.population import PopulationResult, write_population
from ..io.samples import Samples, read_samples
from ..populations import get_population
from .likelihood import HyperLikelihood

MAX_ESS_DRAWS = 1000
# An object is reported when its ESS is below --min-ess at this fraction of the
# posterior draws or more (a handful of extreme draws alone is not reported).
LOW_ESS_FRACTION = 0.01
SUPPORT_MASS_WARNING = 1e-3
SUPPORT_CHECK_DRAWS = 200
VARIANCE_WARNING = 1.0


class PopulationDiagnosticWarning(UserWarning):
    """The interim draws cannot fully support the population (ESS, Var[ln L̂], support)."""


def _read_input(samples):
    """(Samples, source dict) from a Samples, a path or ``-``."""
    if isinstance(samples, Samples):
        return samples, {"path": "<memory>", "sha256": ""}
    if str(samples) == "-":
        raw = sys.stdin.buffer.read()
        return read_samples(io.BytesIO(raw)), {"path": "<stdin>", "sha256": hashlib.sha256(raw).hexdigest()}
    path = Path(samples)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return read_samples(samples), {"path": str(samples), "sha256": digest}


def _choose_parameters(samples, parameters):
    parameters = list(parameters or [])
    if not parameters:
        if len(samples.parameters) != 1:
            raise UsageError(
                f"The samples have parameters {', '.join(samples.parameters)}; say which the population "
                f"describes with --parameter NAME.",
                "--parameter",
            )
        parameters = list(samples.parameters)
    for name in parameters:
        if name not in samples.parameters:
            raise UsageError(
                f"--parameter {name}: the samples have no parameter {name!r}; they have "
                f"{', '.join(samples.parameters)}.",
                "--parameter",
            )
    if len(set(parameters)) != len(parameters):
        raise UsageError("--parameter names a parameter twice.", "--parameter")
    if samples.settings.get("joint_interim_prior") and set(parameters) != set(samples.parameters):
        raise UsageError(
            f"These samples carry one joint interim prior (a log_prior column), which cannot be divided out for "
            f"a subset: the population must describe all of {', '.join(samples.parameters)}.", "--parameter")
    return parameters


def data_scale(samples, parameters):
    """Location and spread of the objects' posteriors, for default hyperpriors."""
    scale = {}
    for name in parameters:
        draws = samples.draws(name)
        medians = np.median(draws, axis=1)
        spread = float(np.std(medians) + np.mean(np.std(draws, axis=1)))
        entry = {"location": float(np.median(medians)), "spread": spread if spread > 0 else 1.0}
        if np.all(draws > 0):
            log_draws = np.log(draws)
            log_medians = np.median(log_draws, axis=1)
            log_spread = float(np.std(log_medians) + np.mean(np.std(log_draws, axis=1)))
            entry.update(log_location=float(np.median(log_medians)), log_spread=log_spread if log_spread > 0 else 1.0)
        else:
            entry.update(log_location=0.0, log_spread=1.0)
        scale[name] = entry
    return scale


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
    """ln p(α | data) = Σ ln hyperprior + ln L(α), vectorised over walkers (for emcee)."""

    def __init__(self, likelihood, names, priors, max_variance=None):
        self.likelihood = likelihood
        self.names = list(names)
        self.priors = [priors[n] for n in self.names]
        self.max_variance = max_variance
        self.ids = ["hyperparameters"]  # for initial_positions' messages

    n_objects = 1

    def log_prior(self, values):
        return np.sum([prior.logpdf(values[..., i]) for i, prior in enumerate(self.priors)], axis=0)

    def log_likelihood(self, values, valid):
        """ln L where ``valid`` (and Var[ln L̂] ≤ max_variance if set); -inf elsewhere."""
        out = np.full(values.shape[0], -np.inf)
        if valid.any():
            hyper = self.likelihood.hyper(self.names, values[valid])
            first, squares = self.likelihood.per_object(hyper, second=self.max_variance is not None)
            log_like = first.sum(axis=1) - self.likelihood.n_objects * np.log(self.likelihood.n_draws)
            if self.max_variance is not None:
                _, variance = self.likelihood.variance(first, squares)
                log_like = np.where(variance <= self.max_variance, log_like, -np.inf)
            out[valid] = log_like
        return out

    def evaluate(self, theta):
        """Interface of ``initial_positions``: theta (n, 1, H) -> ((n, 1), (n, 1))."""
        values = theta[:, 0, :]
        log_prior = self.log_prior(values)
        return log_prior[:, None], self.log_likelihood(values, np.isfinite(log_prior))[:, None]

    def __call__(self, values):
        values = np.atleast_2d(values)
        log_prior = self.log_prior(values)
        return log_prior + self.log_likelihood(values, np.isfinite(log_prior))


def sample_hyperparameters(posterior, n_walkers, max_steps, n_keep, seed_sequence, progress):
    """emcee on the hyperparameters until ≥ 50 τ (or ``max_steps``); keep ``n_keep`` draws.

    Returns
    -------
    draws (S, H), autocorr_time (H,), n_steps, converged
    """
    n_dim = len(posterior.names)
    init_seed, sampler_seed = seed_sequence.spawn(2)
    start, _ = initial_positions(posterior, n_walkers, np.random.default_rng(init_seed))
    sampler = emcee.EnsembleSampler(n_walkers, n_dim, posterior, vectorize=True)
    sampler.random_state = np.random.RandomState(np.random.MT19937(sampler_seed)).get_state()
    state = start[:, 0, :]
    first_check = max(200, 2 * math.ceil(n_keep / n_walkers))
    next_check, step = min(first_check, max_steps), 0
    bar = tqdm(total=max_steps, unit="step", desc="fit-population", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        while True:
            state = sampler.run_mcmc(state, next_check - step, skip_initial_state_check=True)
            bar.update(next_check - step)
            step = next_check
            kept = sampler.get_chain(discard=step // 2)
            tau = integrated_time(kept)
            converged = bool(np.all(step >= MIN_AUTOCORR_TIMES * tau))
            if converged or step >= max_steps:
                break
            target = MIN_AUTOCORR_TIMES * np.max(tau) if np.all(np.isfinite(tau)) else 2 * step
            next_check = int(min(max(target, 1.2 * step), 2 * step, max_steps))
            bar.set_postfix_str(f"τ ≈ {np.max(tau):.3g}")
    finally:
        bar.close()
    flat = kept.reshape(-1, n_dim)
    pick = np.round(np.linspace(0, flat.shape[0] - 1, n_keep)).astype(np.int64)
    return flat[pick], tau, step, converged


def _warn(message):
    warnings.warn(PopulationDiagnosticWarning(message), stacklevel=3)


def diagnose(ids, ess, variance, n_draws, min_ess):
    """Warn, naming objects, when interim draws cannot support the population."""
    fraction = (ess < min_ess).mean(axis=0)  # per object, over the M draws
    median_ess = np.median(ess, axis=0)
    median_variance = float(np.median(variance))
    remedy = ("Remedy: rerun stage one with more draws (--samples) or a wider interim prior (--prior), "
              "or restrict the population (--hyperprior) away from the unsupported region.")
    flagged = fraction >= LOW_ESS_FRACTION
    if flagged.any():
        worst = [n for n in np.lexsort((median_ess, -fraction)) if flagged[n]][:10]
        listed = "; ".join(f"{ids[n]!r}: median ESS {median_ess[n]:.3g}, ESS < {min_ess:g} at "
                           f"{fraction[n]:.1%} of posterior draws" for n in worst)
        count = int(flagged.sum())
        more = f" and {count - len(worst)} more" if count > len(worst) else ""
        _warn(f"{count} of {len(ids)} object(s) have fewer than {min_ess:g} effective draws (of K = {n_draws}) "
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


def fit_population(samples, population, output=None, *, parameters=None, hyperpriors=None, fixed=None,
                   min_ess=20.0, max_variance=None, n_walkers=32, max_steps=20000, n_samples=4000,
                   n_reweighted=1000, seed=None, overwrite=False, progress=True, command=""):
    """Infer the population from stage-one draws (stage two).

    Parameters
    ----------
    samples : str, Path or Samples
        A samples file (``-`` reads stdin) or a :class:`Samples`.
    population : str
        Built-in name or ``file.py:function`` / ``module:function``: f(θ; α).
    output : str, optional
        Population file to write (``-``: stdout).
    parameters : list of str, optional
        Stage-one parameters the population describes (default: the only one).
    hyperpriors : dict or list of "NAME=DIST", optional
        p(α) per hyperparameter; documented defaults otherwise.
    fixed : dict or list of "NAME=VALUE", optional
        Held hyperparameters (e.g. truncation bounds).
    min_ess : float
        Per-object ESS below which a warning fires.
    max_variance : float, optional
        Hyperparameters with Var[ln L̂] above it get ln L = -inf.
    n_walkers, max_steps : int
        emcee settings; the run stops once it is ≥ 50 τ long.
    n_samples : int
        S, hyperparameter draws kept.
    n_reweighted : int
        R, draws per object under the inferred population.
    seed : int, optional
    overwrite, progress : bool
    command : str
        Provenance recorded in the file.

    Returns
    -------
    PopulationResult
    """
    for option, value in (("--walkers", n_walkers), ("--max-steps", max_steps), ("--samples", n_samples),
                          ("--reweighted", n_reweighted)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(f"{option} must be a positive whole number, got {value!r}.", option)
    if output is not None:
        check_output(output, overwrite)
    samples, source = _read_input(samples)
    parameters = _choose_parameters(samples, parameters)
    population = get_population(population, parameters)
    fixed = {k: float(v) for k, v in parse_options(fixed, parse_value, "--fix").items()}
    scale = data_scale(samples, parameters)
    priors = resolve_hyperpriors(population, hyperpriors, fixed, scale)
    names = list(priors)
    if n_walkers < 2 * len(names) + 2 or n_walkers % 2:
        raise UsageError(f"--walkers {n_walkers}: need an even number of at least {2 * len(names) + 2}.", "--walkers")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)
    sampler_seed, reweight_seed = np.random.SeedSequence(seed).spawn(2)

    columns = [samples.parameters.index(p) for p in parameters]
    theta = samples.samples[:, :, columns]
    log_interim = samples.log_interim_prior[:, :, columns].sum(axis=-1)
    if not np.all(np.isfinite(log_interim)):
        n = int(np.flatnonzero(~np.isfinite(log_interim).all(axis=1))[0])
        raise InputDataError(f"Object {samples.ids[n]!r} has draws outside its interim prior's support; the "
                             f"samples file is inconsistent. Regenerate it.")
    likelihood = HyperLikelihood(population, theta, log_interim, fixed)
    posterior = HyperPosterior(likelihood, names, priors, max_variance)
    try:
        draws, tau, n_steps, converged = sample_hyperparameters(
            posterior, n_walkers, max_steps, n_samples, sampler_seed, progress)
    except PopinferError as exc:
        raise PopinferError(
            f"{exc} For stage two: no hyperparameters drawn from the hyperpriors give every object a finite "
            f"likelihood; widen the hyperpriors or check --fix values."
        ) from None
    if not converged:
        warnings.warn(ConvergenceWarning(
            f"The hyperparameter chain did not reach {MIN_AUTOCORR_TIMES} autocorrelation times in "
            f"{n_steps} steps (τ ≈ {np.max(tau):.3g}); raise --max-steps."), stacklevel=2)

    # Likelihood, Var[ln L̂] and per-object ESS at the kept draws.
    log_likelihood = np.empty(n_samples)
    variance = np.empty(n_samples)
    n_ess = min(MAX_ESS_DRAWS, n_samples)
    ess_index = np.round(np.linspace(0, n_samples - 1, n_ess)).astype(np.int64)
    ess = np.empty((n_ess, samples.n_objects))
    for lo in range(0, n_samples, n_walkers):
        hi = min(lo + n_walkers, n_samples)
        first, squares = likelihood.per_object(likelihood.hyper(names, draws[lo:hi]), second=True)
        log_likelihood[lo:hi] = first.sum(axis=1) - samples.n_objects * np.log(samples.n_draws)
        chunk_ess, variance[lo:hi] = likelihood.variance(first, squares)
        wanted = (ess_index >= lo) & (ess_index < hi)
        ess[wanted] = chunk_ess[ess_index[wanted] - lo]
    log_posterior = posterior.log_prior(draws) + log_likelihood
    diagnose(samples.ids, ess, variance[ess_index], samples.n_draws, min_ess)
    check_interim_support(samples, population, parameters, names, draws, fixed)

    # Partial pooling: for draw r pick α_r from the posterior, then one θ per object ∝ w_nk(α_r).
    rng = np.random.default_rng(reweight_seed)
    chosen = rng.integers(n_samples, size=n_reweighted)
    uniforms = rng.random((n_reweighted, samples.n_objects))
    reweighted = np.empty((samples.n_objects, n_reweighted, len(parameters)))
    objects = np.arange(samples.n_objects)
    for lo in range(0, n_reweighted, n_walkers):
        hi = min(lo + n_walkers, n_reweighted)
        index = likelihood.resample(likelihood.hyper(names, draws[chosen[lo:hi]]), uniforms[lo:hi])
        reweighted[:, lo:hi, :] = theta[objects[None, :], index].transpose(1, 0, 2)
    likelihood.close()

    independent = np.stack([theta.mean(axis=1), theta.std(axis=1, ddof=1),
                            *np.quantile(theta, (0.05, 0.5, 0.95), axis=1)], axis=-1)
    settings = {"walkers": n_walkers, "max_steps": max_steps, "samples": n_samples, "reweighted": n_reweighted,
                "min_ess": min_ess, "max_variance": max_variance, "n_steps": int(n_steps), "converged": converged,
                "min_autocorr_times": MIN_AUTOCORR_TIMES, "burn_in": "first half of the chain",
                "stage_one_draws": int(samples.n_draws)}
    result = PopulationResult(
        population=population.name, parameters=parameters, hyperparameters=names, hyper_samples=draws,
        log_posterior=log_posterior, log_likelihood=log_likelihood, ln_likelihood_variance=variance,
        autocorr_time=np.asarray(tau, dtype=float), ids=list(samples.ids), ess=ess, ess_draw_index=ess_index,
        reweighted=reweighted, independent_summary=independent,
        hyperprior={n: priors[n].spec for n in names}, fixed=fixed, source=source, settings=settings,
        seed=seed, command=command)
    if output is not None:
        write_population(result, output, overwrite=overwrite)
    return result
