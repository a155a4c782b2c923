"""A threshold survey against its exact hyperposterior on a grid, with and without --selection.

Sources θ ~ Normal(μ, τ) are measured once, y = θ + Normal(0, s), and detected only
if y > c. For the detected ones

    p(y_i | μ, τ, detected) = N(y_i; μ, √(s² + τ²)) / P(y > c | μ, τ),
    P(y > c | μ, τ) = 1 − Φ((c − μ)/√(s² + τ²)),

so the hyperposterior is known on a grid. Stage one is replaced by exact posterior
draws (θ_nk ~ N(y_n, s) under a flat interim prior), so only stage two is tested.
The marginal posterior draws of μ and τ are KS-tested against the grid: the critical
value is that of n_eff = (kept half of the chain · walkers / τ) / 2 independent draws
at p = 1e-4 (the factor 2 is the safety margin of ``stats_helpers.effective_sizes``).
The same fit without --selection (the negative control) must fail it.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import logsumexp

import popinfer
from popinfer.reweighting.fit import PopulationDiagnosticWarning

MU, TAU, NOISE, THRESHOLD = 0.0, 1.0, 0.5, 0.0
N_DETECTED, N_DRAWS, INTERIM = 60, 1000, 100.0
HYPERPRIORS = ["mu=normal(0, 1)", "sigma=halfnormal(2)"]


def survey(seed):
    """y of N_DETECTED detected sources (sources are drawn until that many are detected)."""
    rng = np.random.default_rng(seed)
    detected = []
    while len(detected) < N_DETECTED:
        y = rng.normal(MU, TAU) + rng.normal(0.0, NOISE)
        if y > THRESHOLD:
            detected.append(y)
    return np.array(detected)


def exact_samples(y, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(y[:, None], NOISE, (y.size, N_DRAWS))[..., None]
    n = y.size
    return popinfer.Samples(
        ids=[f"s{i}" for i in range(n)], parameters=["theta"], samples=theta,
        log_interim_prior=np.full(theta.shape, -np.log(2 * INTERIM)), log_likelihood=np.zeros((n, N_DRAWS)),
        diagnostics={"acceptance_fraction": np.full(n, 0.5), "autocorr_time": np.ones((n, 1)),
                     "n_steps": np.full(n, N_DRAWS), "converged": np.ones(n, bool),
                     "effective_draws": np.full(n, float(N_DRAWS))},
        model="normal", interim_prior={"theta": f"uniform({-INTERIM}, {INTERIM})"}, settings={}, seed=seed)


def injection_file(path, n_total, seed, draw_sigma=2.0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, draw_sigma, n_total)
    kept = theta[theta + rng.normal(0.0, NOISE, n_total) > THRESHOLD]
    pd.DataFrame({"theta": kept, "log_draw_prior": stats.norm.logpdf(kept, 0.0, draw_sigma)}).to_csv(
        path, index=False, float_format="%.17g")
    return str(path)


def grid_marginals(y, selection=True):
    """Marginal CDFs of μ and τ on a fine grid of the exact posterior."""
    mu = np.linspace(-6.0, 4.0, 801)
    tau = np.linspace(1e-3, 5.0, 800)
    m, t = np.meshgrid(mu, tau, indexing="ij")
    scale = np.sqrt(NOISE**2 + t**2)
    log_post = stats.norm.logpdf(m, 0, 1) + stats.halfnorm.logpdf(t, scale=2)
    log_post += np.sum(stats.norm.logpdf(y[:, None, None], m, scale), axis=0)
    if selection:
        log_post -= y.size * stats.norm.logsf((THRESHOLD - m) / scale)
    post = np.exp(log_post - logsumexp(log_post))
    assert post[0].sum() + post[-1].sum() + post[:, -1].sum() < 1e-8  # the grid holds the posterior
    return (mu, np.cumsum(post.sum(axis=1))), (tau, np.cumsum(post.sum(axis=0)))


def ks_fails(result, marginals):
    settings = result.settings
    n_eff = settings["n_steps"] / 2 * settings["walkers"] / np.max(result.autocorr_time) / 2
    critical = stats.kstwo.ppf(1 - 1e-4, int(n_eff))
    out = {}
    for name, (grid, cdf) in zip(("mu", "sigma"), marginals):
        statistic = stats.kstest(result.hyper(name), lambda x: np.interp(x, grid, cdf)).statistic
        out[name] = (statistic, critical)
    return {name: v for name, v in out.items() if v[0] > v[1]}, out


def fit(samples, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PopulationDiagnosticWarning)
        return popinfer.fit_population(samples, "normal", hyperpriors=HYPERPRIORS, n_reweighted=10, seed=5,
                                       progress=False, **kwargs)


@pytest.mark.slow
def test_threshold_survey_matches_its_exact_posterior_and_the_uncorrected_fit_does_not(tmp_path):
    y = survey(11)
    samples = exact_samples(y, 12)
    injections = injection_file(tmp_path / "injections.csv", 100_000, 13)
    corrected = fit(samples, selection=injections, injections_total=100_000)
    failed, statistics = ks_fails(corrected, grid_marginals(y))
    assert not failed, statistics
    # Var[ln L̂] includes N² Var[ξ̂]/ξ̂² = N²/N_eff,sel, and stays below 1 (Talbot & Golomb 2023).
    selection_variance = N_DETECTED**2 / corrected.selection_effective_draws
    assert np.all(corrected.ln_likelihood_variance >= selection_variance * (1 - 1e-12))
    assert np.median(corrected.ln_likelihood_variance) < 1.0
    assert np.all(corrected.selection_effective_draws > 4 * N_DETECTED)
    # The negative control: without --selection, the same data give a measurably biased fit.
    biased = fit(samples)
    failed, statistics = ks_fails(biased, grid_marginals(y))
    assert failed, statistics
    assert np.median(biased.hyper("mu")) > np.quantile(corrected.hyper("mu"), 0.95)


def test_few_injections_warn_and_ample_ones_do_not(tmp_path):
    y = survey(21)
    samples = exact_samples(y, 22)
    short = dict(max_steps=400, n_samples=400)
    few = injection_file(tmp_path / "few.csv", 400, 23)
    with pytest.warns(PopulationDiagnosticWarning, match=r"N_eff,sel") as caught:
        popinfer.fit_population(samples, "normal", hyperpriors=HYPERPRIORS, selection=few, injections_total=400,
                                n_reweighted=10, seed=5, progress=False, **short)
    message = str([w.message for w in caught if "N_eff,sel" in str(w.message)][0])
    assert "4N = 240" in message and "more injections" in message
    ample = injection_file(tmp_path / "ample.csv", 100_000, 24)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        popinfer.fit_population(samples, "normal", hyperpriors=HYPERPRIORS, selection=ample,
                                injections_total=100_000, n_reweighted=10, seed=5, progress=False, **short)
    assert not [w for w in caught if "N_eff,sel" in str(w.message)]
