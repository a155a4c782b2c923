"""Stage one against exact posteriors (conjugate or flat interim priors).

Every object is fitted as R independent replicates; the replicate spread is the
Monte Carlo error (see stats_helpers). Each object's posterior mean and variance
are t-tested against the exact ones and the p-values combined with Fisher's
method; under a correct sampler the statistic is χ² and the bound is its
1 - 1e-4 quantile. Each test also runs a negative control: the same draws scored
against a slightly wrong posterior must exceed the bound.
"""

import numpy as np
import pytest
import pandas as pd
from scipy import stats

import popinfer
from stats_helpers import by_replicate, fisher_bound, fisher_statistic, moment_pvalues, replicated

RNG = np.random.default_rng(2026)


@pytest.fixture(autouse=True)
def _seeded_per_test():
    """Every test draws from the same fresh stream, whichever tests ran before it."""
    global RNG
    RNG = np.random.default_rng(2026)


def fit(frame, model, **options):
    return popinfer.fit_individuals(replicated(frame), model, progress=False, **options)


def check(samples, parameter, object_ids, exact, wrong):
    assert samples.diagnostics["converged"].all()
    draws = by_replicate(samples, parameter, object_ids)
    bound = fisher_bound(2 * len(exact))
    statistic = fisher_statistic(moment_pvalues(draws, exact))
    assert statistic < bound, f"X = {statistic:.1f} exceeds the χ² bound {bound:.1f}"
    control = fisher_statistic(moment_pvalues(draws, wrong))
    assert control > bound, f"negative control X = {control:.1f} did not exceed {bound:.1f}"


def ids(n):
    return [f"obj{i}" for i in range(n)]


def test_binomial_matches_beta_posterior():
    n_objects = 40
    n = RNG.integers(5, 200, n_objects)
    k = RNG.binomial(n, RNG.uniform(0.02, 0.98, n_objects))
    k[0], k[1] = 0, n[1]  # posteriors piled against p = 0 and p = 1
    frame = pd.DataFrame({"id": ids(n_objects), "k": k, "n": n})
    samples = fit(frame, "binomial", seed=1)
    check(samples, "p", ids(n_objects),
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
    samples = fit(frame, "poisson", priors=["rate=gamma(2, 0.5)"], seed=2)
    totals = frame.groupby("id", sort=False)[["count", "exposure"]].sum()
    check(samples, "rate", ids(n_objects),
          [stats.gamma(2 + c, scale=1 / (0.5 + e)) for c, e in zip(totals["count"], totals["exposure"])],
          [stats.gamma(2 + c, scale=1 / (0.5 + 1.05 * e)) for c, e in zip(totals["count"], totals["exposure"])])


def test_normal_known_sigma_matches_truncated_normal():
    n_objects = 30
    rows = RNG.integers(1, 5, n_objects)
    object_ids = np.repeat(ids(n_objects), rows)
    sigma = RNG.uniform(1, 4, rows.sum())
    y = np.repeat(RNG.uniform(-12, 12, n_objects), rows) + RNG.normal(size=rows.sum()) * sigma
    frame = pd.DataFrame({"id": object_ids, "y": y, "sigma": sigma})
    samples = fit(frame, "normal", priors=["theta=uniform(-10, 10)"], seed=3)
    grouped = frame.assign(w=1 / sigma**2, wy=y / sigma**2).groupby("id", sort=False)[["w", "wy"]].sum()
    mean, scale = grouped["wy"] / grouped["w"], 1 / np.sqrt(grouped["w"])
    exact = [stats.truncnorm((-10 - m) / s, (10 - m) / s, m, s) for m, s in zip(mean, scale)]
    untruncated = [stats.norm(m, s) for m, s in zip(mean, scale)]
    check(samples, "theta", ids(n_objects), exact, untruncated)


def test_normal_fitted_scatter_matches_student_t_marginal():
    n_objects = 25
    rows = RNG.integers(8, 15, n_objects)
    object_ids = np.repeat(ids(n_objects), rows)
    y = np.repeat(RNG.normal(0, 5, n_objects), rows) + RNG.normal(size=rows.sum()) * np.repeat(
        RNG.uniform(0.5, 2, n_objects), rows)
    frame = pd.DataFrame({"id": object_ids, "y": y})
    samples = fit(frame, "normal", seed=4)
    # Flat θ, p(s) ∝ 1/s: θ | y ~ t_{n-1}(ȳ, sqrt(SS / (n (n - 1)))).
    groups = frame.groupby("id", sort=False)["y"]
    n, mean, ss = groups.count(), groups.mean(), groups.var(ddof=1) * (groups.count() - 1)
    exact = [stats.t(c - 1, m, np.sqrt(v / (c * (c - 1)))) for c, m, v in zip(n, mean, ss)]
    too_narrow = [stats.norm(m, np.sqrt(v / (c * (c - 1)))) for c, m, v in zip(n, mean, ss)]
    check(samples, "theta", ids(n_objects), exact, too_narrow)


def test_linear_with_flat_priors_matches_least_squares():
    n_objects = 25
    rows = RNG.integers(3, 10, n_objects)
    object_ids = np.repeat(ids(n_objects), rows)
    x = RNG.uniform(-2, 3, rows.sum())
    yerr = RNG.uniform(0.2, 1.0, rows.sum())
    y = np.repeat(RNG.normal(1, 2, n_objects), rows) * x + np.repeat(RNG.normal(0, 3, n_objects), rows)
    y = y + RNG.normal(size=rows.sum()) * yerr
    frame = pd.DataFrame({"id": object_ids, "x": x, "y": y, "yerr": yerr})
    samples = fit(frame, "linear", fixed=["scatter=0"], seed=5)
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
    check(samples, "slope", ids(n_objects), slope_exact, slope_wrong)
    check(samples, "intercept", ids(n_objects), intercept_exact,
          [stats.norm(d.mean() + d.std() / 5, d.std()) for d in intercept_exact])
    # The posterior correlation of slope and intercept, t-tested over replicates.
    slopes, intercepts = by_replicate(samples, "slope", ids(n_objects)), by_replicate(samples, "intercept", ids(n_objects))
    pvalues = []
    for n, rho in enumerate(correlations):
        observed = [np.corrcoef(slopes[n, r], intercepts[n, r])[0, 1] for r in range(slopes.shape[1])]
        pvalues.append(stats.ttest_1samp(observed, rho).pvalue)
    assert fisher_statistic(np.array(pvalues)) < fisher_bound(len(pvalues))
    shifted = [stats.ttest_1samp([np.corrcoef(slopes[n, r], intercepts[n, r])[0, 1] for r in range(slopes.shape[1])],
                                 rho * 0.9).pvalue for n, rho in enumerate(correlations)]
    assert fisher_statistic(np.array(shifted)) > fisher_bound(len(shifted))
