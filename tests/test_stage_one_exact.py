"""Stage one against exact posteriors (conjugate or flat interim priors).

Each test fits many objects and forms T = Σ (z_mean² + z_var²), the squared
errors of every object's posterior mean and variance in units of their Monte
Carlo standard error (from the chain's effective sample size). Under a correct
sampler T ~ χ²(2N·D); the bound is its 1 - 1e-4 quantile. Each test also runs a
negative control: the same draws scored against a slightly wrong posterior
must exceed the bound.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import popinfer
from stats_helpers import chi2_bound, effective_sizes, moment_statistic

RNG = np.random.default_rng(2026)


def check(samples, parameter, exact, wrong):
    d = samples.parameters.index(parameter)
    ess = effective_sizes(samples)[:, d]
    draws = samples.draws(parameter)
    bound = chi2_bound(2 * len(exact))
    assert samples.diagnostics["converged"].all()
    statistic = moment_statistic(draws, ess, exact)
    assert statistic < bound, f"T = {statistic:.1f} exceeds the χ² bound {bound:.1f}"
    control = moment_statistic(draws, ess, wrong)
    assert control > bound, f"negative control T = {control:.1f} did not exceed {bound:.1f}"


def ids(n):
    return [f"obj{i}" for i in range(n)]


def test_binomial_matches_beta_posterior():
    n_objects = 40
    n = RNG.integers(5, 200, n_objects)
    k = RNG.binomial(n, RNG.uniform(0.02, 0.98, n_objects))
    k[0], k[1] = 0, n[1]  # posteriors piled against p = 0 and p = 1
    frame = pd.DataFrame({"id": ids(n_objects), "k": k, "n": n})
    samples = popinfer.fit_individuals(frame, "binomial", seed=1, progress=False)
    check(samples, "p",
          [stats.beta(a + 1, b - a + 1) for a, b in zip(k, n)],
          [stats.beta(a + 1, b - a + 2) for a, b in zip(k, n)])  # one failure too many


def test_poisson_with_gamma_prior_matches_gamma_posterior():
    n_objects = 30
    rows = RNG.integers(1, 4, n_objects)
    object_ids = np.repeat(ids(n_objects), rows)
    exposure = RNG.uniform(0.5, 2.0, rows.sum())
    rates = np.repeat(RNG.uniform(0.2, 20, n_objects), rows)
    count = RNG.poisson(rates * exposure)
    frame = pd.DataFrame({"id": object_ids, "count": count, "exposure": exposure})
    samples = popinfer.fit_individuals(frame, "poisson", priors=["rate=gamma(2, 0.5)"], seed=2, progress=False)
    totals = frame.groupby("id", sort=False)[["count", "exposure"]].sum()
    check(samples, "rate",
          [stats.gamma(2 + c, scale=1 / (0.5 + e)) for c, e in zip(totals["count"], totals["exposure"])],
          [stats.gamma(2 + c, scale=1 / (0.5 + 1.05 * e)) for c, e in zip(totals["count"], totals["exposure"])])


def test_normal_known_sigma_matches_truncated_normal():
    n_objects = 30
    rows = RNG.integers(1, 5, n_objects)
    object_ids = np.repeat(ids(n_objects), rows)
    sigma = RNG.uniform(1, 4, rows.sum())
    y = np.repeat(RNG.uniform(-12, 12, n_objects), rows) + RNG.normal(size=rows.sum()) * sigma
    frame = pd.DataFrame({"id": object_ids, "y": y, "sigma": sigma})
    samples = popinfer.fit_individuals(frame, "normal", priors=["theta=uniform(-10, 10)"], seed=3, progress=False)
    grouped = frame.assign(w=1 / sigma**2, wy=y / sigma**2).groupby("id", sort=False)[["w", "wy"]].sum()
    mean, scale = grouped["wy"] / grouped["w"], 1 / np.sqrt(grouped["w"])
    exact = [stats.truncnorm((-10 - m) / s, (10 - m) / s, m, s) for m, s in zip(mean, scale)]
    untruncated = [stats.norm(m, s) for m, s in zip(mean, scale)]
    check(samples, "theta", exact, untruncated)


def test_normal_fitted_scatter_matches_student_t_marginal():
    n_objects = 25
    rows = RNG.integers(8, 15, n_objects)
    object_ids = np.repeat(ids(n_objects), rows)
    y = np.repeat(RNG.normal(0, 5, n_objects), rows) + RNG.normal(size=rows.sum()) * np.repeat(
        RNG.uniform(0.5, 2, n_objects), rows)
    frame = pd.DataFrame({"id": object_ids, "y": y})
    samples = popinfer.fit_individuals(frame, "normal", seed=4, progress=False)
    # Flat θ, p(s) ∝ 1/s: θ | y ~ t_{n-1}(ȳ, sqrt(SS / (n (n - 1)))).
    groups = frame.groupby("id", sort=False)["y"]
    n, mean, ss = groups.count(), groups.mean(), groups.var(ddof=1) * (groups.count() - 1)
    exact = [stats.t(c - 1, m, np.sqrt(v / (c * (c - 1)))) for c, m, v in zip(n, mean, ss)]
    too_narrow = [stats.norm(m, np.sqrt(v / (c * (c - 1)))) for c, m, v in zip(n, mean, ss)]
    check(samples, "theta", exact, too_narrow)


def test_linear_with_flat_priors_matches_least_squares():
    n_objects = 25
    rows = RNG.integers(3, 10, n_objects)
    object_ids = np.repeat(ids(n_objects), rows)
    x = RNG.uniform(-2, 3, rows.sum())
    yerr = RNG.uniform(0.2, 1.0, rows.sum())
    y = np.repeat(RNG.normal(1, 2, n_objects), rows) * x + np.repeat(RNG.normal(0, 3, n_objects), rows)
    y = y + RNG.normal(size=rows.sum()) * yerr
    frame = pd.DataFrame({"id": object_ids, "x": x, "y": y, "yerr": yerr})
    samples = popinfer.fit_individuals(frame, "linear", fixed=["scatter=0"], seed=5, progress=False)
    assert samples.parameters == ["slope", "intercept"]
    slope_exact, intercept_exact, slope_wrong, correlations = [], [], [], []
    for object_id in ids(n_objects):
        part = frame[frame["id"] == object_id]
        design = np.column_stack([part["x"], np.ones(len(part))]) / part["yerr"].to_numpy()[:, None]
        covariance = np.linalg.inv(design.T @ design)
        beta = covariance @ design.T @ (part["y"] / part["yerr"]).to_numpy()
        slope_exact.append(stats.norm(beta[0], np.sqrt(covariance[0, 0])))
        intercept_exact.append(stats.norm(beta[1], np.sqrt(covariance[1, 1])))
        slope_wrong.append(stats.norm(beta[0], 1.1 * np.sqrt(covariance[0, 0])))
        correlations.append(covariance[0, 1] / np.sqrt(covariance[0, 0] * covariance[1, 1]))
    check(samples, "slope", slope_exact, slope_wrong)
    check(samples, "intercept", intercept_exact, [stats.norm(d.mean() + d.std() / 5, d.std()) for d in intercept_exact])
    # Posterior correlation of slope and intercept: sd of a correlation estimate is
    # (1 - ρ²)/sqrt(ESS); allow 5 of them.
    ess = effective_sizes(samples).min(axis=1)
    for n, rho in enumerate(correlations):
        observed = np.corrcoef(samples.samples[n].T)[0, 1]
        assert abs(observed - rho) < 5 * (1 - rho**2) / np.sqrt(ess[n]) + 1e-9
