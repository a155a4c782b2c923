"""Stage two: sample the population's hyperparameters, diagnose the interim support,
and draw every object's parameters under the inferred population (partial pooling)."""

from __future__ import annotations

import math
import sys
import warnings

import emcee
import numpy as np
from tqdm import tqdm

from ..autocorr import integrated_time
from ..blocks import BLOCK_ELEMENTS, object_blocks
from ..distributions import parse_distribution, parse_options, parse_priors, parse_value
from ..errors import InputDataError, PopinferError, UsageError
from ..individuals.fit import ConvergenceWarning
from ..individuals.sampler import MIN_AUTOCORR_TIMES, initial_positions
from ..io.hdf5 import check_output, open_popinfer_file, reserves_stdout, spooled_input
from ..io.population import PopulationResult, PopulationWriter
from ..io.samples import Samples, check_finite_draws, read_columns, read_header
from ..populations import get_population
from ..seeds import resolve_seed
from ..injections import Injections, read_injections
from .likelihood import HyperLikelihood
from .selection import EFFECTIVE_PER_OBJECT, SelectionTerm, draw_rates
from .nested import NestedSampler

MAX_ESS_DRAWS = 1000
SAMPLERS = ("emcee", "nested")
# An object is reported when its ESS is below --min-ess at this fraction of the
# posterior draws or more (a handful of extreme draws alone is not reported).
LOW_ESS_FRACTION = 0.01
SUPPORT_MASS_WARNING = 1e-3
SUPPORT_CHECK_DRAWS = 200
VARIANCE_WARNING = 1.0


class PopulationDiagnosticWarning(UserWarning):
    """The interim draws cannot fully support the population (ESS, Var[ln L̂], support)."""


def _read_input(samples, parameters):
    """(header, parameters, θ (N, K, P), Σ ln p0 (N, K), source dict) of the draws stage two needs.

    From a file only the chosen parameters' columns are read, by blocks of objects;
    stdin is spooled to a temporary file, and the SHA-256 is computed by blocks too.
    """
    if isinstance(samples, Samples):
        parameters = _choose_parameters(samples, parameters)
        columns = [samples.parameters.index(p) for p in parameters]
        theta = np.ascontiguousarray(samples.samples[:, :, columns], dtype=float)
        check_finite_draws(theta, samples.ids, "The samples")
        log_interim = samples.log_interim_prior[:, :, columns].sum(axis=-1)
        return samples, parameters, theta, log_interim, {"path": "<memory>", "sha256": ""}
    label = "<stdin>" if str(samples) == "-" else str(samples)
    with spooled_input(samples) as (source, digest), open_popinfer_file(source, "samples") as handle:
        header = read_header(handle, label)
        parameters = _choose_parameters(header, parameters)
        theta, log_interim = read_columns(handle, [header.parameters.index(p) for p in parameters], label)
    return header, parameters, theta, log_interim, {"path": label, "sha256": digest}


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
        stats["median"].append(np.median(block, axis=1))
        stats["sd"].append(np.std(block, axis=1))
        positive &= np.all(block > 0, axis=(0, 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_block = np.log(block)
        stats["log_median"].append(np.median(log_block, axis=1))
        stats["log_sd"].append(np.std(log_block, axis=1))
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


def independent_summary(theta):
    """Stage-one mean, sd, 5/50/95 % quantiles per object and parameter, (N, P, 5), by blocks."""
    out = np.empty((theta.shape[0], theta.shape[-1], 5))
    for lo, hi in object_blocks(theta.shape[0], theta[0].size):
        block = theta[lo:hi]
        out[lo:hi] = np.stack([block.mean(axis=1), block.std(axis=1, ddof=1),
                               *np.quantile(block, (0.05, 0.5, 0.95), axis=1)], axis=-1)
    return out


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
    """ln p(α | data) = Σ ln hyperprior + ln L(α), vectorised over walkers (for emcee).

    ln L and its ``--max-variance`` cut come from
    :meth:`HyperLikelihood.ln_likelihood_and_variance`.
    """

    def __init__(self, likelihood, names, priors):
        self.likelihood = likelihood
        self.names = list(names)
        self.priors = [priors[n] for n in self.names]
        self.ids = ["hyperparameters"]  # for initial_positions' messages

    n_objects = 1
    GROUP = 64

    def log_prior(self, values):
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
    remedy = ("Remedy: rerun stage one with more draws (--samples) or a wider interim prior (--prior), "
              "or restrict the population (--hyperprior) away from the unsupported region.")
    if selection_variance is not None and np.median(selection_variance) > 0.5 * median_variance:
        remedy = (f"Most of it (median {float(np.median(selection_variance)):.3g}) is the selection term's "
                  f"N² Var[ξ̂]/ξ̂²: use more injections (a larger M_total), or a p_draw closer to the population.")
    flagged = np.flatnonzero(low_fraction >= LOW_ESS_FRACTION)
    if flagged.size:
        # The ten listed: largest fraction first, then smallest median ESS. Medians are
        # needed only for objects that can make the list.
        fractions = low_fraction[flagged]
        cutoff = np.sort(fractions)[-min(10, fractions.size)]
        candidates = flagged[fractions >= cutoff]
        medians = column_medians(ess, candidates)
        worst = [(candidates[i], medians[i]) for i in np.lexsort((medians, -low_fraction[candidates]))[:10]]
        listed = "; ".join(f"{ids[n]!r}: median ESS {median:.3g}, ESS < {min_ess:g} at "
                           f"{low_fraction[n]:.1%} of posterior draws" for n, median in worst)
        count = int(flagged.size)
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


def _selection_at_draws(selection, likelihood, names, draws, n_walkers):
    """ln ξ̂ and N_eff,sel at every kept draw, each (S,)."""
    ln_efficiency, effective_draws = np.empty(len(draws)), np.empty(len(draws))
    for lo in range(0, len(draws), n_walkers):
        hi = min(lo + n_walkers, len(draws))
        ln_efficiency[lo:hi], _, effective_draws[lo:hi] = selection.efficiency(likelihood.hyper(names, draws[lo:hi]))
    return ln_efficiency, effective_draws


def read_selection(selection, parameters, draw_priors, injections_total, injections_group):
    """The :class:`Injections` of ``--selection`` (None without it); its options need it."""
    if selection is None:
        given = [option for option, value in (("--injections-total", injections_total), ("--draw-prior", draw_priors),
                                              ("--injections-group", injections_group)) if value]
        if given:
            raise UsageError(f"{given[0]} describes injections: it needs --selection INJECTIONS.", given[0])
        return None
    if isinstance(selection, Injections):
        return selection
    return read_injections(selection, parameters, draw_priors, injections_total, injections_group)


def _likelihood_at_draws(likelihood, names, draws, n_walkers, sink_ess, min_ess, sink_log_likelihood):
    """ln L̂ and Var[ln L̂] at every kept draw, with the per-object ESS and ln L̂_n at M evenly
    spaced draws written row by row into ``sink_ess`` and ``sink_log_likelihood`` (M, N)
    (arrays or datasets).

    Returns
    -------
    log_likelihood (S,), variance (S,), ess_index (M,), low_fraction (N,): each
    object's share of the M draws with ESS < ``min_ess``.
    """
    n_samples = len(draws)
    n_ess = sink_ess.shape[0]
    log_likelihood, variance = np.empty(n_samples), np.empty(n_samples)
    ess_index = np.round(np.linspace(0, n_samples - 1, n_ess)).astype(np.int64)
    low = np.zeros(likelihood.n_objects, dtype=np.int64)
    for lo in range(0, n_samples, n_walkers):
        hi = min(lo + n_walkers, n_samples)
        estimate = likelihood.ln_likelihood_and_variance(likelihood.hyper(names, draws[lo:hi]), cut=False)
        log_likelihood[lo:hi], variance[lo:hi], ess = (estimate.ln_likelihood, estimate.ln_likelihood_variance,
                                                       estimate.ess)
        for row in np.flatnonzero((ess_index >= lo) & (ess_index < hi)):
            values = ess[ess_index[row] - lo].astype(np.float32)  # as stored
            sink_ess[row] = values
            sink_log_likelihood[row] = estimate.ln_sum_weights[ess_index[row] - lo] - np.log(likelihood.n_draws)
            low += values < min_ess
    return log_likelihood, variance, ess_index, low / n_ess


def _partial_pooling(likelihood, names, draws, n_walkers, sink, rng, elements=BLOCK_ELEMENTS):
    """Each object's draws under the inferred population, into ``sink`` (N, R, P).

    For pooled draw r an α_r is picked from the posterior, then one θ per object
    with probability ∝ w_nk(α_r). Objects go by blocks (the uniforms too), so
    memory stays at one block whatever N.
    """
    theta = likelihood.theta
    n_objects, n_reweighted, n_parameters = sink.shape
    chosen = rng.integers(len(draws), size=n_reweighted)
    for lo, hi in object_blocks(n_objects, n_reweighted * n_parameters, elements):
        uniforms = rng.random((n_reweighted, hi - lo))
        block = np.empty((hi - lo, n_reweighted, n_parameters))
        objects = np.arange(lo, hi)
        for r0 in range(0, n_reweighted, n_walkers):
            r1 = min(r0 + n_walkers, n_reweighted)
            index = likelihood.resample(likelihood.hyper(names, draws[chosen[r0:r1]]), uniforms[r0:r1], lo, hi)
            block[:, r0:r1, :] = theta[objects[None, :], index].transpose(1, 0, 2)
        sink[lo:hi] = block


@reserves_stdout
def fit_population(samples, population, output=None, *, parameters=None, hyperpriors=None, fixed=None,
                   min_ess=20.0, max_variance=None, n_walkers=32, max_steps=20000, n_samples=4000,
                   n_reweighted=1000, seed=None, overwrite=False, progress=True, command="", selection=None,
                   injections_total=None, draw_priors=None, injections_group=None, observing_time=None,
                   sampler="emcee", live_points=None):
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
    selection : str, Path or Injections, optional
        Detected injections of the survey (``--selection``): adds −N ln ξ̂(α) to ln L and
        N² Var[ξ̂]/ξ̂² to Var[ln L̂].
    injections_total : int, optional
        M_total, injections drawn in all (else the file's attribute or column).
    draw_priors : list of "NAME=DIST", optional
        p_draw per parameter, if the injections have no ``log_draw_prior`` column.
    injections_group : str, optional
        HDF5 group of the injections.
    observing_time : float, optional
        T: also draw the rate R ~ Gamma(N, ξ̂(α) T) at every hyperparameter draw.
    sampler : str
        ``emcee`` (the default) or ``nested`` (UltraNest, :mod:`.nested`; also computes the
        evidence ln Z, relative to the interim evidence).
    live_points : int, optional
        Nested sampling's minimum number of live points (default 400).

    Returns
    -------
    PopulationResult
    """
    for option, value in (("--walkers", n_walkers), ("--max-steps", max_steps), ("--samples", n_samples),
                          ("--reweighted", n_reweighted)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(f"{option} must be a positive whole number, got {value!r}.", option)
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler {sampler}: choose one of {', '.join(SAMPLERS)}.", "--sampler")
    if live_points is not None and sampler != "nested":
        raise UsageError(f"--live-points is an option of --sampler nested, not of {sampler}.", "--live-points")
    nested = NestedSampler(live_points or NestedSampler.DEFAULT_LIVE_POINTS) if sampler == "nested" else None
    if output is not None:
        check_output(output, overwrite, inputs=[samples])
    header, parameters, theta, log_interim, source = _read_input(samples, parameters)
    population = get_population(population, parameters)
    injections = read_selection(selection, parameters, draw_priors, injections_total, injections_group)
    if observing_time is not None and not (isinstance(observing_time, (int, float)) and 0 < observing_time < math.inf):
        raise UsageError(f"--observing-time must be a positive number, got {observing_time!r}.", "--observing-time")
    if injections is not None:
        source = {**source, "injections": injections.provenance()}
    fixed = {k: float(v) for k, v in parse_options(fixed, parse_value, "--fix").items()}
    scale = data_scale(theta, parameters)
    priors = resolve_hyperpriors(population, hyperpriors, fixed, scale)
    names = list(priors)
    if nested is not None:
        nested.check(names)
    elif n_walkers < 2 * len(names) + 2 or n_walkers % 2:
        raise UsageError(f"--walkers {n_walkers}: need an even number of at least {2 * len(names) + 2}.", "--walkers")
    seed = resolve_seed(seed)
    sampler_seed, reweight_seed, rate_seed = np.random.SeedSequence(seed).spawn(3)
    n_objects, n_draws = log_interim.shape
    for lo, hi in object_blocks(n_objects, n_draws):
        bad = ~np.isfinite(log_interim[lo:hi]).all(axis=1)
        if bad.any():
            raise InputDataError(f"Object {header.ids[lo + int(np.argmax(bad))]!r} has draws outside its interim "
                                 f"prior's support; the samples file is inconsistent. Regenerate it.")
    independent = independent_summary(theta)
    # The likelihood takes ln p0 over (reused in place): the draws are held once.
    selection_term = SelectionTerm(population, injections, n_objects, fixed) if injections is not None else None
    likelihood = HyperLikelihood(population, theta, log_interim, fixed, copy=False, max_variance=max_variance,
                                 terms=[selection_term] if selection_term else ())
    del log_interim
    posterior = HyperPosterior(likelihood, names, priors)
    try:
        if nested is not None:
            draws, sampler_diagnostics = nested.sample(posterior, n_samples, sampler_seed, progress)
            tau, n_steps, converged = np.full(len(names), np.nan), None, True
        else:
            draws, tau, n_steps, converged = sample_hyperparameters(
                posterior, n_walkers, max_steps, n_samples, sampler_seed, progress)
    except PopinferError as exc:
        likelihood.close()
        if selection_term:
            selection_term.close()
        raise PopinferError(
            f"{exc} For stage two: no hyperparameters drawn from the hyperpriors give every object a finite "
            f"likelihood; widen the hyperpriors or check --fix values."
        ) from None
    if not converged:
        warnings.warn(ConvergenceWarning(
            f"The hyperparameter chain did not reach {MIN_AUTOCORR_TIMES} autocorrelation times in "
            f"{n_steps} steps (τ ≈ {np.max(tau):.3g}); raise --max-steps."), stacklevel=2)

    # ESS rows and pooled draws go straight to the output file (or to arrays without
    # one): memory stays at the draws, whatever N.
    n_ess = min(MAX_ESS_DRAWS, n_samples)
    shape = (n_objects, n_ess, n_reweighted, len(parameters))
    writer = PopulationWriter(output, shape, overwrite) if output is not None else None
    try:
        sink_ess = writer.ess if writer else np.empty(shape[1::-1], dtype=np.float32)
        sink_reweighted = writer.reweighted if writer else np.empty(shape[:1] + shape[2:])
        sink_objects = writer.object_log_likelihood if writer else np.empty(shape[1::-1])
        log_likelihood, variance, ess_index, low_fraction = _likelihood_at_draws(
            likelihood, names, draws, n_walkers, sink_ess, min_ess, sink_objects)
        log_posterior = posterior.log_prior(draws) + log_likelihood
        selection_ln_efficiency = selection_effective_draws = selection_variance = None
        if selection_term:
            selection_ln_efficiency, selection_effective_draws = _selection_at_draws(
                selection_term, likelihood, names, draws, n_walkers)
            diagnose_selection(selection_effective_draws, n_objects, injections)
            with np.errstate(divide="ignore"):
                selection_variance = n_objects**2 / selection_effective_draws[ess_index]
        diagnose(header.ids, low_fraction, sink_ess, variance[ess_index], n_draws, min_ess, selection_variance)
        check_interim_support(header, population, parameters, names, draws, fixed)
        _partial_pooling(likelihood, names, draws, n_walkers, sink_reweighted, np.random.default_rng(reweight_seed))
    except BaseException:
        if writer:
            writer.abort()
        raise
    finally:
        likelihood.close()
        if selection_term:
            selection_term.close()
    rate = None
    if observing_time is not None:
        ln_efficiency = selection_ln_efficiency if selection_term else np.zeros(len(draws))
        rate = draw_rates(ln_efficiency, n_objects, observing_time, np.random.default_rng(rate_seed))

    settings = {"walkers": n_walkers, "max_steps": max_steps, "samples": n_samples, "reweighted": n_reweighted,
                "min_ess": min_ess, "max_variance": max_variance, "n_steps": int(n_steps), "converged": converged,
                "min_autocorr_times": MIN_AUTOCORR_TIMES, "burn_in": "first half of the chain",
                "stage_one_draws": int(n_draws)} if nested is None else {
                "sampler": "nested", **nested.settings, "samples": n_samples, "reweighted": n_reweighted,
                "min_ess": min_ess, "max_variance": max_variance, **sampler_diagnostics,
                "stage_one_draws": int(n_draws)}
    if injections is not None:
        settings["selection"] = {"injections_total": injections.n_total, "detected_injections": injections.n_detected,
                                 "draw_prior": injections.draw_prior, "group": injections_group}
    if observing_time is not None:
        settings["observing_time"] = float(observing_time)
    # The evidence has datasets of its own (CONTRACT §5).
    log_evidence, log_evidence_error = settings.pop("log_evidence", None), settings.pop("log_evidence_error", None)
    result = PopulationResult(
        population=population.name, parameters=parameters, hyperparameters=names, hyper_samples=draws,
        log_posterior=log_posterior, log_likelihood=log_likelihood, ln_likelihood_variance=variance,
        autocorr_time=np.asarray(tau, dtype=float), ids=list(header.ids), ess=sink_ess, ess_draw_index=ess_index,
        reweighted=sink_reweighted, independent_summary=independent,
        hyperprior={n: priors[n].spec for n in names}, fixed=fixed, source=source, settings=settings,
        seed=seed, command=command, selection_ln_efficiency=selection_ln_efficiency,
        selection_effective_draws=selection_effective_draws, rate=rate, object_log_likelihood=sink_objects,
        log_evidence=log_evidence, log_evidence_error=log_evidence_error)
    return writer.finish(result) if writer else result
