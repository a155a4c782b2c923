"""Simulation-based calibration (Talts et al. 2018) of the two-stage pipeline.

One replicate: draw hyperparameters α from the hyperprior, draw every object's θ
from the population f(θ; α), simulate its data (for a survey case, keep only the
objects it detects, and fit with its injections), run stage one and stage two with
that same hyperprior, and record where the true α falls among the posterior
draws (its rank among L thinned draws, and whether the central 50 % and 90 %
intervals cover it). Over replicates the ranks of a calibrated pipeline are
uniform and the intervals cover at their nominal rates.

``validation/sbc.py`` runs the cases below at scale and writes the report;
``tests/test_calibration.py`` runs a CI-sized version with a negative control.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .distributions import parse_distribution
from .individuals import fit_individuals
from .injections import Injections
from .reweighting import fit_population

RANK_DRAWS = 99  # L: ranks take the values 0..L
RANK_BINS = 10


@dataclass(frozen=True)
class Case:
    """One calibration problem: population, per-object model, priors, simulator.

    Attributes
    ----------
    name, description : str
    population : str
        Population density of stage two.
    parameter : str
        The stage-one parameter the population describes.
    hyperpriors : dict of str -> str
        Hyperprior specs, used both to draw the truth and for inference.
    model : str
        Per-object model of stage one.
    priors : tuple of str
        Interim priors (``NAME=DIST``).
    simulate : callable
        (θ (N,), rng) -> DataFrame with an ``id`` column: the objects' data.
    n_objects, n_draws : int
        N objects per replicate, K stage-one draws per object.
    fixed : tuple of str
        ``--fix`` values of stage one.
    survey : ThresholdSurvey, optional
        Objects are kept only if detected (then ``n_objects`` counts the detected ones).
    correct_selection : bool
        Fit with the survey's injections (``--selection``); False ignores the selection
        (a deliberately wrong pipeline, for negative controls).
    """

    name: str
    description: str
    population: str
    parameter: str
    hyperpriors: dict
    model: str
    priors: tuple
    simulate: object
    n_objects: int = 20
    n_draws: int = 1000
    fixed: tuple = field(default=())
    survey: "ThresholdSurvey" = None
    correct_selection: bool = True

    def draw_population(self, alpha, rng):
        """θ_n ~ f(θ; α) for the case's population."""
        n = self.n_objects
        if self.population == "normal":
            return rng.normal(alpha["mu"], alpha["sigma"], n)
        if self.population == "beta":
            return rng.beta(alpha["a"], alpha["b"], n)
        if self.population == "gamma":
            return rng.gamma(alpha["shape"], 1.0 / alpha["rate"], n)
        raise ValueError(f"no simulator for population {self.population!r}")


@dataclass(frozen=True)
class ThresholdSurvey:
    """A survey that detects an object when its measurement y = θ + Normal(0, noise) exceeds
    ``threshold``, with ``n_injections`` injections drawn from ``draw_prior`` to measure it.

    The data are conditioned on the number detected (sources are drawn until ``n_objects``
    are), so the exact likelihood is Π_n p(y_n | α, detected): the −N ln ξ(α) form.
    """

    threshold: float
    noise: float
    draw_prior: str
    n_injections: int

    def observe(self, case, alpha, rng):
        """The data table of ``case.n_objects`` detected objects."""
        detected = []
        while len(detected) < case.n_objects:
            theta = case.draw_population(alpha, rng)
            y = theta + rng.normal(0.0, self.noise, theta.size)
            detected.extend(y[y > self.threshold])
        y = np.array(detected[:case.n_objects])
        return pd.DataFrame({"id": _ids(y.size), "y": y, "sigma": self.noise})

    def injections(self, parameter, rng):
        """The detected injections, drawn from ``draw_prior``."""
        prior = parse_distribution(self.draw_prior)
        theta = prior.sample(rng, self.n_injections)
        kept = theta[theta + rng.normal(0.0, self.noise, theta.size) > self.threshold]
        return Injections(source="<simulated injections>", sha256="", parameters=[parameter], theta=kept[:, None],
                          log_draw_prior=prior.logpdf(kept), n_total=self.n_injections,
                          draw_prior={parameter: self.draw_prior})


def _ids(n):
    return [f"obj{i:03d}" for i in range(n)]


def _simulate_normal(theta, rng):
    return pd.DataFrame({"id": _ids(len(theta)), "y": rng.normal(theta, 1.0), "sigma": 1.0})


def _simulate_binomial(theta, rng):
    return pd.DataFrame({"id": _ids(len(theta)), "k": rng.binomial(50, theta), "n": 50})


def _simulate_linear(theta, rng):
    rows = 8
    x = np.tile(np.linspace(-1.0, 1.0, rows), len(theta))
    intercept = np.repeat(rng.normal(0.0, 2.0, len(theta)), rows)
    y = np.repeat(theta, rows) * x + intercept + rng.normal(0.0, 0.3, x.size)
    return pd.DataFrame({"id": np.repeat(_ids(len(theta)), rows), "x": x, "y": y})


def _simulate_poisson(theta, rng):
    return pd.DataFrame({"id": _ids(len(theta)), "count": rng.poisson(theta)})


CASES = {
    "normal-normal": Case(
        "normal-normal", "normal model (known σ = 1) + normal population",
        "normal", "theta", {"mu": "normal(0, 3)", "sigma": "lognormal(0, 0.5)"},
        "normal", ("theta=uniform(-40, 40)",), _simulate_normal),
    "binomial-beta": Case(
        "binomial-beta", "binomial model (50 trials) + beta population",
        "beta", "p", {"a": "lognormal(1, 0.5)", "b": "lognormal(2, 0.5)"},
        "binomial", ("p=uniform(0, 1)",), _simulate_binomial),
    "linear-slope": Case(
        "linear-slope", "linear model (intercept and scatter free) + normal population on the slope",
        "normal", "slope", {"mu": "normal(1, 1)", "sigma": "lognormal(-1, 0.5)"},
        "linear", ("slope=uniform(-20, 20)", "intercept=uniform(-50, 50)", "scatter=loguniform(0.01, 10)"),
        _simulate_linear),
    "poisson-gamma": Case(
        "poisson-gamma", "poisson model at low counts (mean ≈ 1.6) + gamma population",
        "gamma", "rate", {"shape": "lognormal(0.5, 0.3)", "rate": "lognormal(0, 0.3)"},
        "poisson", ("rate=uniform(0, 100)",), _simulate_poisson),
}
SURVEY = ThresholdSurvey(threshold=0.0, noise=1.0, draw_prior="normal(0, 3)", n_injections=20000)
for _name, _correct, _description in (
        ("threshold-survey", True, "normal model (σ = 1) + normal population, detected only if y > 0, "
                                   "fitted with --selection"),
        ("threshold-survey-uncorrected", False, "the same survey fitted without --selection (negative control: "
                                                "ranks must be non-uniform)")):
    CASES[_name] = Case(_name, _description, "normal", "theta", {"mu": "normal(0, 1)", "sigma": "lognormal(0, 0.3)"},
                        "normal", ("theta=uniform(-40, 40)",), None, survey=SURVEY, correct_selection=_correct)


def run_replicate(case, seed, n_hyper_draws=1000, interim_correction=True, sampler="emcee"):
    """One SBC replicate; returns the truth, ranks and interval coverage per hyperparameter.

    Parameters
    ----------
    case : Case
    seed : int
        Seeds the truth, the data and both stages.
    n_hyper_draws : int
        Posterior draws of the hyperparameters (thinned to ``RANK_DRAWS`` for ranks).
    interim_correction : bool
        False replaces ln p0 by 0, i.e. forgets to divide out the interim prior (a
        deliberately wrong pipeline, for negative controls).
    sampler : str
        Stage two's sampler (``fit-population --sampler``).
    """
    truth_seed, data_seed, one_seed, two_seed = np.random.SeedSequence(seed).spawn(4)
    truth_rng = np.random.default_rng(truth_seed)
    alpha = {name: float(parse_distribution(spec).sample(truth_rng)) for name, spec in case.hyperpriors.items()}
    data_rng = np.random.default_rng(data_seed)
    selection = None
    if case.survey is not None:
        frame = case.survey.observe(case, alpha, data_rng)
        if case.correct_selection:
            selection = case.survey.injections(case.parameter, data_rng)
    else:
        frame = case.simulate(case.draw_population(alpha, data_rng), data_rng)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = fit_individuals(frame, case.model, priors=list(case.priors), fixed=list(case.fixed),
                                  n_draws=case.n_draws, seed=int(one_seed.generate_state(1)[0]), progress=False)
        if not interim_correction:
            samples.log_interim_prior = np.zeros_like(samples.log_interim_prior)
        result = fit_population(samples, case.population, parameters=[case.parameter],
                                hyperpriors=[f"{k}={v}" for k, v in case.hyperpriors.items()],
                                n_samples=n_hyper_draws, n_reweighted=1, seed=int(two_seed.generate_state(1)[0]),
                                progress=False, selection=selection, sampler=sampler)
    out = {"seed": seed, "warnings": len([w for w in caught if not issubclass(w.category, DeprecationWarning)]),
           "median_ln_likelihood_variance": float(np.median(result.ln_likelihood_variance)), "hyper": {}}
    step = max(1, n_hyper_draws // RANK_DRAWS)
    for name in result.hyperparameters:
        draws = result.hyper(name)
        thinned = draws[::step][:RANK_DRAWS]
        q25, q75, q05, q95 = np.quantile(draws, [0.25, 0.75, 0.05, 0.95])
        value = alpha[name]
        out["hyper"][name] = {"truth": value, "rank": int(np.sum(thinned < value)), "n_rank_draws": len(thinned),
                              "in50": bool(q25 <= value <= q75), "in90": bool(q05 <= value <= q95)}
    return out


def run_case(case, replicates, seed=0, workers=1, interim_correction=True, progress=None, sampler="emcee"):
    """Run ``replicates`` SBC replicates of ``case`` (seeds seed, seed+1, ...) with stage two's ``sampler``."""
    seeds = [seed + r for r in range(replicates)]
    if workers <= 1:
        results = []
        for s in seeds:
            results.append(run_replicate(case, s, interim_correction=interim_correction, sampler=sampler))
            if progress:
                progress(len(results))
        return results
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        jobs = [pool.submit(run_replicate, case, s, 1000, interim_correction, sampler) for s in seeds]
        results = []
        for job in jobs:
            results.append(job.result())
            if progress:
                progress(len(results))
        return results


def summarize(results):
    """Per hyperparameter: rank histogram, χ² uniformity p-value, interval coverage.

    The coverage bounds are the central 99.9 % binomial ranges for the number of
    covering replicates out of R at the nominal rate.
    """
    names = list(results[0]["hyper"])
    replicates = len(results)
    summary = {}
    for name in names:
        ranks = np.array([r["hyper"][name]["rank"] for r in results])
        n_values = results[0]["hyper"][name]["n_rank_draws"] + 1
        bins = np.floor(ranks * RANK_BINS / n_values).astype(int)
        counts = np.bincount(bins, minlength=RANK_BINS)
        chi2 = stats.chisquare(counts)
        entry = {"rank_histogram": counts.tolist(), "chi2_pvalue": float(chi2.pvalue)}
        for level, key in ((0.5, "in50"), (0.9, "in90")):
            covered = int(sum(r["hyper"][name][key] for r in results))
            low, high = stats.binom.ppf([0.0005, 0.9995], replicates, level)
            entry[f"coverage{int(level * 100)}"] = covered / replicates
            entry[f"coverage{int(level * 100)}_range"] = [float(low / replicates), float(high / replicates)]
            entry[f"coverage{int(level * 100)}_ok"] = bool(low <= covered <= high)
        summary[name] = entry
    return summary
