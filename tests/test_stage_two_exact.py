"""Stage two's likelihood estimate against closed-form marginal likelihoods on grids.

Stage one is run on R independent replicates of a data set; each replicate gives
its own estimate ln L̂_r(α) at every grid point, and the spread over replicates is
the estimator's Monte Carlo error (MCMC draws included). At each grid point the
replicate mean is t-tested against the exact value, Bonferroni-corrected over the
grid at a family-wise level of 1e-4. A negative control (a subtly wrong exact
formula) must fail, and K is large enough that the Monte Carlo error of ln L̂ is
below 0.1 at every grid point (the grids cover where the posterior lives, not the
far tails where any finite K runs out of effective draws).
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import betaln

import popinfer
from conftest import SAMPLE_DATA
from popinfer.populations import get_population
from popinfer.reweighting.likelihood import HyperLikelihood
from stats_helpers import replicated

# K = 20000 draws against closed forms and grids: long (CI runs them; pytest -m 'not slow' skips them).
pytestmark = pytest.mark.slow

R = 8


def replicate_estimates(samples, object_ids, population, hyper, fixed=None, parameters=None):
    """ln L̂_r at every grid point (columns of ``hyper``) for every replicate r, shape (R, G)."""
    index = {o: i for i, o in enumerate(samples.ids)}
    parameters = parameters or samples.parameters
    columns = [samples.parameters.index(p) for p in parameters]
    out = []
    for r in range(R):
        rows = [index[f"{o}#{r}"] for o in object_ids]
        theta = samples.samples[rows][:, :, columns]
        log_interim = samples.log_interim_prior[rows][:, :, columns].sum(axis=-1)
        out.append(HyperLikelihood(get_population(population, parameters), theta, log_interim, fixed)(hyper))
    return np.array(out)


def assert_matches(estimates, exact, wrong):
    mean, sd = estimates.mean(axis=0), estimates.std(axis=0, ddof=1)
    assert sd.max() < 0.1, f"Monte Carlo error {sd.max():.3g} too large for a sharp test"
    n_points = estimates.shape[1]
    critical = stats.t.ppf(1 - 1e-4 / (2 * n_points), R - 1)
    t = (mean - exact) / (sd / np.sqrt(R))
    assert np.abs(t).max() < critical, f"max |t| = {np.abs(t).max():.2f} >= {critical:.2f}"
    t_wrong = (mean - wrong) / (sd / np.sqrt(R))
    assert np.abs(t_wrong).max() > critical, "negative control passed"


def test_eight_schools_normal_population_matches_closed_form():
    frame = pd.read_csv(SAMPLE_DATA / "eight_schools.csv")
    samples = popinfer.fit_individuals(replicated(frame, "school", R), "normal", priors=["theta=uniform(-100, 100)"],
                                       n_draws=20000, seed=21, progress=False)
    mu, tau = np.meshgrid([-5.0, 0.0, 5.0, 10.0, 15.0], [3.0, 6.0, 12.0, 25.0])
    hyper = {"mu": mu.ravel(), "sigma": tau.ravel()}
    estimates = replicate_estimates(samples, list(frame["school"]), "normal", hyper)
    y, sigma = frame["y"].to_numpy()[:, None], frame["sigma"].to_numpy()[:, None]
    # ln L̂ estimates Σ_j ln p(y_j | μ, τ) - ln Z_j, Z_j = ∫ N(y_j; θ, σ_j) p0(θ) dθ the interim evidence.
    log_evidence = np.log((stats.norm.cdf((100 - y) / sigma) - stats.norm.cdf((-100 - y) / sigma)) / 200.0)

    def closed_form(scale):
        return np.sum(stats.norm.logpdf(y, hyper["mu"], np.sqrt(sigma**2 + scale * hyper["sigma"] ** 2))
                      - log_evidence, axis=0)

    assert_matches(estimates, closed_form(1.0), closed_form(1.1))


def test_rat_tumours_beta_population_matches_beta_binomial():
    frame = pd.read_csv(SAMPLE_DATA / "rat_tumors.csv")
    samples = popinfer.fit_individuals(replicated(frame, "experiment", R), "binomial", n_draws=10000, seed=22,
                                       progress=False)
    a, b = np.meshgrid([2.0, 2.5, 3.0], [12.0, 14.0, 17.0])
    hyper = {"a": a.ravel(), "b": b.ravel()}
    estimates = replicate_estimates(samples, list(frame["experiment"].astype(str)), "beta", hyper)
    k, n = frame["k"].to_numpy()[:, None], frame["n"].to_numpy()[:, None]

    def closed_form(shift):
        # Uniform interim prior: Z_j = C(n, k) B(k + 1, n - k + 1); the C(n, k) cancel.
        return np.sum(betaln(hyper["a"] + k + shift, hyper["b"] + n - k) - betaln(hyper["a"] + shift, hyper["b"])
                      - betaln(k + 1, n - k + 1), axis=0)

    assert_matches(estimates, closed_form(0.0), closed_form(0.05))


def test_population_on_a_subset_divides_out_only_that_parameters_prior():
    """Linear model, population on the slope only: the intercept's (non-flat)
    interim prior must not be divided out."""
    rng = np.random.default_rng(23)
    n_objects, rows = 12, 6
    x = np.tile(np.linspace(-1, 2, rows), n_objects)
    yerr = np.full(n_objects * rows, 0.3)
    slopes, intercepts = rng.normal(1.0, 0.5, n_objects), rng.normal(0, 1, n_objects)
    y = np.repeat(slopes, rows) * x + np.repeat(intercepts, rows) + rng.normal(size=x.size) * yerr
    ids = [f"o{i}" for i in range(n_objects)]
    frame = pd.DataFrame({"id": np.repeat(ids, rows), "x": x, "y": y, "yerr": yerr})
    samples = popinfer.fit_individuals(replicated(frame, "id", R), "linear", fixed=["scatter=0"],
                                       priors=["slope=uniform(-50, 50)", "intercept=normal(0, 20)"],
                                       seed=24, progress=False)
    mu, tau = np.meshgrid([0.8, 1.0, 1.2], [0.4, 0.6, 0.9])
    hyper = {"mu": mu.ravel(), "sigma": tau.ravel()}
    estimates = replicate_estimates(samples, ids, "normal", hyper, parameters=["slope"])
    exact, wrong = [], []
    for object_id in ids:
        part = frame[frame["id"] == object_id]
        design = np.column_stack([part["x"], np.ones(len(part))]) / part["yerr"].to_numpy()[:, None]
        covariance = np.linalg.inv(design.T @ design)
        beta = covariance @ design.T @ (part["y"] / part["yerr"]).to_numpy()
        # The slope's marginal posterior is N(β̂_s, V_ss) (the intercept's broad prior barely matters).
        term = stats.norm.logpdf(beta[0], hyper["mu"], np.sqrt(covariance[0, 0] + hyper["sigma"] ** 2)) + np.log(100.0)
        exact.append(term)
        # Dividing out the intercept's prior too would add E[-ln p0(intercept)] per object.
        wrong.append(term - stats.norm.logpdf(beta[1], 0, 20))
    assert_matches(estimates, np.sum(exact, axis=0), np.sum(wrong, axis=0))
    # And fit_population uses exactly that subset.
    first = [f"{o}#0" for o in ids]
    subset = popinfer.Samples(
        ids=first, parameters=samples.parameters, samples=samples.samples[[samples.ids.index(i) for i in first]],
        log_interim_prior=samples.log_interim_prior[[samples.ids.index(i) for i in first]],
        log_likelihood=samples.log_likelihood[[samples.ids.index(i) for i in first]],
        diagnostics={k: v[[samples.ids.index(i) for i in first]] for k, v in samples.diagnostics.items()},
        model="linear", interim_prior=samples.interim_prior, settings=samples.settings, seed=0)
    result = popinfer.fit_population(subset, "normal", parameters=["slope"], seed=1, progress=False,
                                     n_samples=500, n_reweighted=50)
    hyper_draws = {"mu": result.hyper("mu")[:5], "sigma": result.hyper("sigma")[:5]}
    expected = HyperLikelihood(get_population("normal", ["slope"]), subset.samples[:, :, :1],
                               subset.log_interim_prior[:, :, 0])(hyper_draws)
    np.testing.assert_allclose(result.log_likelihood[:5], expected, rtol=1e-10)
    low, high = np.quantile(result.hyper("mu"), [0.001, 0.999])
    assert low < 1.0 < high
