"""refine against exact posteriors: a population narrower than every object's posterior
(the case where stage one's draws cannot support it), fitted from few draws, refined,
and compared with the exact grid posterior of (μ, τ) (KS, bound from the chain's
effective draw count plus stage one's error of the posterior, which refine reports);
the unrefined fit is the negative control."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import popinfer
from popinfer.reweighting import PopulationDiagnosticWarning
from popinfer.refinement import refine

HYPERPRIORS = ["mu=normal(0, 10)", "sigma=halfnormal(2)"]

KS_CRITICAL = 1.95  # asymptotic two-sided KS critical value at α = 0.001
Z_CRITICAL = 3.29  # two-sided normal critical value at α = 0.001


def fit(samples, output, seed):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = popinfer.fit_population(samples, "normal", output, hyperpriors=HYPERPRIORS, seed=seed,
                                         progress=False)
    return result, [w for w in caught if issubclass(w.category, PopulationDiagnosticWarning)]


def grid_marginals(y, sigma):
    """Exact marginal posterior CDFs of μ and τ on a grid: y_n ~ N(μ, √(σ² + τ²))."""
    mu = np.linspace(-8.0, 12.0, 1601)
    tau = np.linspace(0.0, 6.0, 1201)[1:]
    m, t = np.meshgrid(mu, tau, indexing="ij")
    log_post = stats.norm.logpdf(m, 0, 10) + stats.halfnorm.logpdf(t, scale=2)
    for value in y:
        log_post += stats.norm.logpdf(value, m, np.sqrt(sigma**2 + t**2))
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    return (mu, np.cumsum(post.sum(axis=1))), (tau, np.cumsum(post.sum(axis=0)))


def ks_distance(draws, grid):
    points, cdf = grid
    return float(np.max(np.abs(np.searchsorted(np.sort(draws), points, side="right") / len(draws) - cdf)))


def ks_bound(result):
    """c(0.001)/√n_eff, n_eff the kept half's effective draws of the worse hyperparameter."""
    n_eff = result.settings["n_steps"] / 2 * result.settings["walkers"] / np.max(result.autocorr_time)
    return KS_CRITICAL / np.sqrt(n_eff)


def stage_one_bound(moment_error, grid):
    """The KS distance a shift of the posterior by z(0.001) × stage one's error of its mean can add:
    the shift (in posterior sd, as refine reports it) times the largest density × sd of the exact marginal."""
    points, cdf = grid
    mass = np.diff(cdf, prepend=0.0)
    mean = np.sum(mass * points)
    sd = np.sqrt(np.sum(mass * (points - mean) ** 2))
    return Z_CRITICAL * moment_error * float(np.max(np.gradient(cdf, points))) * sd


@pytest.mark.slow
def test_narrow_population_refined_matches_the_exact_posterior(tmp_path):
    rng = np.random.default_rng(7)
    n_objects, sigma = 40, 5.0
    theta = rng.normal(2.0, 0.05, n_objects)  # true τ = 0.05, far below σ_meas = 5
    y = theta + sigma * rng.normal(size=n_objects)
    pd.DataFrame({"id": [f"s{i}" for i in range(n_objects)], "y": y, "sigma": sigma}).to_csv(
        tmp_path / "narrow.csv", index=False)
    samples = str(tmp_path / "narrow.h5")
    popinfer.fit_individuals(str(tmp_path / "narrow.csv"), "normal", samples, n_draws=150, seed=1, progress=False)
    before, warned = fit(samples, str(tmp_path / "pop.h5"), seed=2)
    assert warned and "fewer than 20 effective draws" in str(warned[0].message)

    # --moment-error: stage one's error of the posterior means is part of the comparison's error,
    # so it is bounded (and reported) rather than left to one stage-one draw
    result = refine(samples, str(tmp_path / "pop.h5"), str(tmp_path / "refined.h5"), seed=3, progress=False,
                    moment_error=0.02)
    assert result.flagged_before > 0 and result.flagged_after == 0
    after, warned = fit(str(tmp_path / "refined.h5"), str(tmp_path / "pop-refined.h5"), seed=4)
    assert not warned, [str(w.message) for w in warned]

    grid_mu, grid_tau = grid_marginals(y, sigma)
    bound_mu = ks_bound(after) + stage_one_bound(result.moment_error_after, grid_mu)
    bound_tau = ks_bound(after) + stage_one_bound(result.moment_error_after, grid_tau)
    assert ks_distance(after.hyper("mu"), grid_mu) < bound_mu
    assert ks_distance(after.hyper("sigma"), grid_tau) < bound_tau
    # negative control: the unrefined fit's τ posterior is detectably wrong at its own bound and at the refined one's
    assert ks_distance(before.hyper("sigma"), grid_tau) > max(ks_bound(before), bound_tau)

