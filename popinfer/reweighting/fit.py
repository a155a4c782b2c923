"""Stage two's driver: ``fit_population`` reads the draws, builds the posterior, hands it
to a sampler, then streams the diagnostics and pooled draws into the population file.

Each concern has its own module: ``inputs`` (reading the draws), ``posterior``
(hyperpriors, ln p(α | data)), ``likelihood`` (ln L̂ and Var[ln L̂]), ``samplers``
(emcee and the sampler interface), ``diagnostics`` (ESS, variance and support
warnings), ``pooling`` (draws under the inferred population).
"""

from __future__ import annotations

import math
import sys

import numpy as np
from tqdm import tqdm

from ..distributions import parse_options, parse_value
from ..errors import UsageError
from ..io.hdf5 import check_output, reserves_stdout
from ..io.population import PopulationResult, PopulationWriter
from ..populations import get_population
from ..populations.user import UserPopulation
from ..user_functions import code_record
from ..seeds import resolve_seed
from ..threads import single_threaded_blas
from .diagnostics import (LOW_ESS_FRACTION, MAX_ESS_DRAWS, PopulationDiagnosticWarning, check_interim_support,
                          column_medians, diagnose, diagnose_selection, draws_to_evaluate, first_occurrences,
                          likelihood_at_draws, selection_at_draws)
from .inputs import (check_draws_inside_interim, independent_summary, read_draws, read_selection,
                     reweight_to_interim)
from .backends import BACKEND_VARIABLE, default_backend, likelihood_class, resolve_backend
from .likelihood import EXP_PRECISIONS
from .pooling import partial_pooling
from .posterior import HyperPosterior, check_fixed, data_scale, resolve_hyperpriors
from .samplers import DEFAULT_SAMPLER, EmceeSampler, get_sampler
from .selection import SelectionTerm, draw_rates

# Former names, kept for code that imports them from here.
_partial_pooling = partial_pooling
__all__ = ["fit_population", "HyperPosterior", "PopulationDiagnosticWarning", "LOW_ESS_FRACTION", "column_medians",
           "diagnose", "check_interim_support", "data_scale", "resolve_hyperpriors", "independent_summary"]


def _real(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_min_ess(min_ess):
    """``--min-ess``: a finite number ≥ 0 (0 turns the low-ESS warning off); NaN or a negative
    value would turn it off without a word."""
    if not (_real(min_ess) and 0 <= min_ess < math.inf):
        raise UsageError(f"--min-ess must be a number of effective draws, 0 or more, got {min_ess!r}.", "--min-ess")


@reserves_stdout
def fit_population(samples, population, output=None, *, parameters=None, hyperpriors=None, fixed=None,
                   min_ess=20.0, max_variance=None, n_walkers=None, max_steps=None, n_samples=4000,
                   n_reweighted=1000, seed=None, overwrite=False, progress=True, command="", selection=None,
                   injections_total=None, draw_priors=None, injections_group=None, observing_time=None,
                   sampler=DEFAULT_SAMPLER, live_points=None, chains=None, tune=None,
                   backend=None, tune_thin=None, moves=None, exp_precision="double"):
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
    n_walkers, max_steps : int, optional
        ``sampler="emcee"``: walkers (default 32) and the cap on steps (default 20000); the run
        stops once it is ≥ 50 τ long. ``n_walkers`` also sets how many draws the diagnostics
        and pooling evaluate at once (default 32, whatever the sampler). Given with a sampler
        that does not use them, they are named in a warning (the other sampler options are a
        :class:`UsageError` there: ``samplers.get_sampler``).
    moves : str, optional
        ``sampler="emcee"``: its proposals, ``stretch`` (the default) or ``de`` (differential
        evolution; ``reweighting.samplers.ensemble``).
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
    sampler : str or Sampler
        A registered sampler's name (``reweighting.samplers``; default ``emcee``) or a
        sampler object.
    live_points : int, optional
        ``sampler="nested"``: minimum number of live points.
    chains, tune : int, optional
        ``sampler="nuts"``: independent chains (default 4) and adaptation steps per chain (default 400).
    tune_thin : int, optional
        ``sampler="nuts"``: the tuning steps use every ``tune_thin``-th stage-one draw of each
        object (default 4; 1: all); the kept draws always use all of them.
    backend : str
        The kernel's implementation (``reweighting.backends``): ``numpy`` (the default,
        unless the environment variable POPINFER_BACKEND names another), ``jax`` (the ``jax`` extra; a GPU when jax has one, gradients by autodiff), or
        ``auto`` (``jax`` with the emcee or nested sampler and a built-in population other than
        mvnormal, where jax is installed and numpy's float64 exp is not vectorised on this CPU, else ``numpy``; the settings record the one that ran as
        ``backend``, and ``backend_option: auto``).
    exp_precision : str
        ``double`` (the default) or ``single``: the numpy kernel takes the weights' exponentials in
        float32 (``reweighting.likelihood``: each object's ln L̂ term moves within a rounding
        bound of ~5·10⁻⁷, measured ~10⁻⁸, and the kernel is faster where numpy's float64 exp is scalar); ``auto`` then runs numpy, and
        ``jax`` refuses it. The selection term's kernel stays float64.

    Returns
    -------
    PopulationResult
    """
    for option, value in (("--walkers", n_walkers), ("--max-steps", max_steps), ("--samples", n_samples),
                          ("--reweighted", n_reweighted)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise UsageError(f"{option} must be a positive whole number, got {value!r}.", option)
    check_min_ess(min_ess)
    if max_variance is not None and not (_real(max_variance) and max_variance > 0):
        raise UsageError(f"--max-variance must be a positive number (Var[ln L̂] per object; inf: no cut), got "
                         f"{max_variance!r}.", "--max-variance")
    # each option given goes to a sampler that uses it (the registry says which), else it is refused
    # (--walkers and --max-steps: warned of)
    sampler = get_sampler(sampler, {"n_walkers": n_walkers, "max_steps": max_steps, "moves": moves,
                                    "live_points": live_points,
                                    "chains": chains, "tune": tune, "tune_thin": tune_thin})
    option = default_backend() if backend is None else backend
    if exp_precision not in EXP_PRECISIONS:
        raise UsageError(f"--exp-precision {exp_precision!r}: use one of {', '.join(EXP_PRECISIONS)}.",
                         "--exp-precision")
    if exp_precision != "double" and option == "jax":
        source = f"--backend {option}" if backend is not None else f"${BACKEND_VARIABLE}={option} in the environment"
        raise UsageError(f"--exp-precision {exp_precision} is the numpy kernel's: use --backend numpy (or auto), "
                         f"not {source}.", "--exp-precision")
    # jax's absence is an error before any reading
    kernel = likelihood_class(resolve_backend(option, sampler.name, exp_precision=exp_precision))
    if output is not None:
        check_output(output, overwrite, inputs=[samples])
    header, parameters, theta, log_interim, source = read_draws(samples, parameters)
    population = get_population(population, parameters)
    # what ``auto`` chose: machine, sampler, population, precision
    ran = resolve_backend(option, sampler.name, population, exp_precision)
    kernel = likelihood_class(ran)
    injections = read_selection(selection, parameters, draw_priors, injections_total, injections_group)
    if observing_time is not None and not (isinstance(observing_time, (int, float)) and 0 < observing_time < math.inf):
        raise UsageError(f"--observing-time must be a positive number, got {observing_time!r}.", "--observing-time")
    if injections is not None:
        source = {**source, "injections": injections.provenance()}
    code = code_record(population.spec) if isinstance(population, UserPopulation) else None
    if code is not None:  # found again from any directory (``population_of_file``)
        source = {**source, "population": code}
    fixed = check_fixed(population, parse_options(fixed, parse_value, "--fix"))
    priors = resolve_hyperpriors(population, hyperpriors, fixed, data_scale(theta, parameters))
    names = list(priors)
    sampler.check(names)
    seed = resolve_seed(seed)
    sampler_seed, reweight_seed, rate_seed = np.random.SeedSequence(seed).spawn(3)
    check_draws_inside_interim(header.ids, log_interim, header.draw_counts)
    independent = reweight_to_interim(independent_summary(theta), header, parameters, theta, log_interim)
    n_draws = log_interim.shape[1]
    # The likelihood takes ln p0 over (reused in place): the draws are held once.
    selection_term = (SelectionTerm(population, injections, len(header.ids), fixed, kernel=kernel)
                      if injections is not None else None)
    likelihood = kernel(population, theta, log_interim, fixed, copy=False, max_variance=max_variance,
                        terms=[selection_term] if selection_term else (), draw_counts=header.draw_counts,
                        exp_precision=exp_precision)
    del log_interim
    posterior = HyperPosterior(likelihood, names, priors)
    try:
        with single_threaded_blas():
            sampled = sampler.sample(posterior, n_samples, sampler_seed, progress)
    except BaseException:
        likelihood.close()
        if selection_term:
            selection_term.close()
        raise
    settings = {"sampler": sampler.name, **sampler.settings, "backend": ran, "exp_precision": exp_precision,
                "samples": n_samples,
                "reweighted": n_reweighted, "min_ess": min_ess, "max_variance": max_variance, **sampled.diagnostics,
                "stage_one_draws": int(n_draws)}
    if option != ran:
        settings["backend_option"] = option
    if injections is not None:
        settings["selection"] = {"injections_total": injections.n_total, "detected_injections": injections.n_detected,
                                 "draw_prior": injections.draw_prior, "group": injections_group}
    if observing_time is not None:
        settings["observing_time"] = float(observing_time)
    # The evidence has datasets of its own (README, "HDF5 layout").
    log_evidence, log_evidence_error = settings.pop("log_evidence", None), settings.pop("log_evidence_error", None)
    result = PopulationResult(
        population=population.name, parameters=parameters, hyperparameters=names, hyper_samples=sampled.draws,
        log_posterior=None, log_likelihood=None, ln_likelihood_variance=None, autocorr_time=sampled.autocorr_time,
        ids=list(header.ids), ess=None, ess_draw_index=None, reweighted=None, independent_summary=independent,
        hyperprior={n: priors[n].spec for n in names}, fixed=fixed, source=source, settings=settings,
        seed=seed, command=command, log_evidence=log_evidence, log_evidence_error=log_evidence_error)
    rng = np.random.default_rng(reweight_seed)
    with single_threaded_blas():
        group = EmceeSampler.DEFAULT_WALKERS if n_walkers is None else n_walkers
        return _diagnose_and_pool(result, posterior, header, group, output, overwrite, min_ess, rng,
                                  selection_term, injections, observing_time, rate_seed, progress)


def _progress_bar(progress, total, what, **options):
    """The bar (on stderr) of a stage after sampling, e.g. ``fit-population (diagnostics)``."""
    return tqdm(total=total, unit="draw", desc=f"fit-population ({what})", file=sys.stderr, disable=not progress,
                dynamic_ncols=True, **options)


def _diagnose_and_pool(result, posterior, samples, group, output, overwrite, min_ess, rng, selection_term=None,
                       injections=None, observing_time=None, rate_seed=None, progress=False):
    """ln L̂, Var[ln L̂] and ESS at the draws (and the selection term's ln ξ̂, N_eff,sel), the
    warnings, the pooled draws and rates, streamed into ``output`` (or arrays without one);
    ``group`` draws are evaluated at once. With ``progress``, a bar each for the evaluations at
    the draws (``diagnostics``: the distinct draws and the M whose per-object ESS is written,
    again for the selection term's) and for the pooled draws (``pooling``: N · R)."""
    likelihood, names, draws = posterior.likelihood, result.hyperparameters, result.hyper_samples
    n_ess = min(MAX_ESS_DRAWS, len(draws))
    n_reweighted = result.settings["reweighted"]
    shape = (likelihood.n_objects, n_ess, n_reweighted, len(result.parameters))
    writer = PopulationWriter(output, shape, overwrite) if output is not None else None
    try:
        result.ess = writer.ess if writer else np.empty(shape[1::-1], dtype=np.float32)
        result.reweighted = writer.reweighted if writer else np.empty(shape[:1] + shape[2:])
        result.object_log_likelihood = writer.object_log_likelihood if writer else np.empty(shape[1::-1])
        original = first_occurrences(draws)  # repeated draws are evaluated once
        evaluations = len(draws_to_evaluate(original, n_ess)[0])
        if selection_term:
            evaluations += len(np.unique(original))
        with _progress_bar(progress, evaluations, "diagnostics") as bar:
            result.log_likelihood, result.ln_likelihood_variance, result.ess_draw_index, low_fraction = \
                likelihood_at_draws(likelihood, names, draws, group, result.ess, min_ess,
                                    result.object_log_likelihood, original, bar.update)
            if selection_term:
                result.selection_ln_efficiency, result.selection_effective_draws = selection_at_draws(
                    selection_term, likelihood, names, draws, group, original, bar.update)
        result.log_posterior = posterior.log_prior(draws) + result.log_likelihood
        selection_variance = None
        if selection_term:
            diagnose_selection(result.selection_effective_draws, likelihood.n_objects, injections)
            with np.errstate(divide="ignore"):
                selection_variance = likelihood.n_objects**2 / result.selection_effective_draws[result.ess_draw_index]
        diagnose(samples.ids, low_fraction, result.ess, result.ln_likelihood_variance[result.ess_draw_index],
                 likelihood.draw_counts, min_ess, selection_variance)
        check_interim_support(samples, likelihood.population, result.parameters, names, draws, result.fixed)
        with _progress_bar(progress, likelihood.n_objects * n_reweighted, "pooling", unit_scale=True) as bar:
            partial_pooling(likelihood, names, draws, group, result.reweighted, rng, advance=bar.update)
    except BaseException:
        if writer:
            writer.abort()
        raise
    finally:
        likelihood.close()
        if selection_term:
            selection_term.close()
    if observing_time is not None:
        ln_efficiency = result.selection_ln_efficiency if selection_term else np.zeros(len(draws))
        result.rate = draw_rates(ln_efficiency, likelihood.n_objects, observing_time, np.random.default_rng(rate_seed))
    return writer.finish(result) if writer else result
