"""Stage one's recorded effective draws against the measured variance of posterior means.

N objects share one datum (y = 0, σ = 1, interim prior uniform(−20, 20)), so each object's K draws
are an independent run on the same normal posterior N(0, 1) (the truncation at ±20 is negligible).
If the recorded ``effective_draws`` ESS_n are honest, the mean m_n of an object's K draws has
variance 1/ESS_n, and Z = Σ_n m_n² ESS_n is χ²(N) to within the normality of m_n (thousands of
draws); the test takes its two-sided 1e-4 bounds. Negative control: the kept half's effectively
independent positions n_steps·W/(2τ) — what stage one recorded before, which ignores that a
walker's kept draws a few steps apart are correlated — must be rejected (measured: Z/N ≈ 1.3–1.4
against an upper bound of 1.17).
"""

import numpy as np
import pandas as pd
from scipy import stats

import popinfer
from popinfer.autocorr import effective_size, ensemble_autocorrelation, integrated_time

N_OBJECTS = 1000
K = 2000


def z_statistic(means, effective):
    return float(np.sum(means**2 * effective))


def test_recorded_effective_draws_predict_the_spread_of_posterior_means():
    frame = pd.DataFrame({"id": [f"o{i}" for i in range(N_OBJECTS)], "y": 0.0, "sigma": 1.0})
    samples = popinfer.fit_individuals(frame, "normal", n_draws=K, priors=["theta=uniform(-20, 20)"], seed=7,
                                       progress=False)
    means = samples.draws("theta").mean(axis=1)
    effective = samples.diagnostics["effective_draws"]
    low, high = stats.chi2.ppf([1e-4, 1 - 1e-4], N_OBJECTS)
    z = z_statistic(means, effective)
    assert low < z < high, (z / N_OBJECTS, low / N_OBJECTS, high / N_OBJECTS)
    assert np.all(effective < K)  # a walker's draws a few steps apart are correlated
    kept_half = samples.diagnostics["n_steps"] * samples.settings["walkers"] / (2 * samples.diagnostics[
        "autocorr_time"][:, 0])
    assert z_statistic(means, kept_half) > high


def stretch_chains(n_steps, n_walkers, n_runs, seed):
    """n_runs independent stretch-move ensembles on N(0, 1) in one dimension (stage one's move, one block per
    run), after a burn-in as long, shape (n_steps, n_walkers, n_runs)."""
    import emcee

    from popinfer.individuals.moves import BlockStretchMove

    rng = np.random.default_rng(seed)

    def log_prob(theta):
        return -0.5 * theta[..., 0]**2

    move = BlockStretchMove(1, rng, log_prob)
    move.accepted = np.zeros((n_walkers, n_runs), dtype=np.int64)
    sampler = emcee.EnsembleSampler(n_walkers, n_runs, lambda x: 0.0, moves=[move], vectorize=True)
    start = rng.normal(size=(n_walkers, n_runs))
    state = emcee.State(start, log_prob=np.zeros(n_walkers), blobs=log_prob(start[..., None]))
    sampler.run_mcmc(state, 2 * n_steps, skip_initial_state_check=True)
    return sampler.get_chain(discard=n_steps)


def test_ensemble_estimator_predicts_the_variance_of_the_ensemble_mean_where_emcee_s_does_not():
    """Short chains (25 τ per walker, as stage one's kept half): the variance of the ensemble's mean over
    independent runs against τ/(n_steps·W) from each estimator; emcee's (each walker centred on its
    own mean) predicts about half of it."""
    n_steps, n_walkers, n_runs = 400, 32, 1000
    chains = stretch_chains(n_steps, n_walkers, n_runs, seed=3)
    measured = chains.mean(axis=(0, 1)).var(ddof=1)
    tau, _ = ensemble_autocorrelation(chains)
    predicted = np.mean(tau) / (n_steps * n_walkers)
    # the sample variance of n_runs means: ratio ~ χ²(n_runs − 1)/(n_runs − 1) (τ's own error is smaller)
    low, high = stats.chi2.ppf([1e-4, 1 - 1e-4], n_runs - 1) / (n_runs - 1)
    assert low < measured / predicted < high, (measured / predicted, low, high)
    emcee_predicted = np.mean(integrated_time(chains)) / (n_steps * n_walkers)
    assert measured / emcee_predicted > high, measured / emcee_predicted  # negative control


def test_effective_size_sums_the_correlation_of_every_pair_of_picks_of_one_walker():
    rng = np.random.default_rng(4)
    n_steps, n_walkers = 60, 5
    picks = rng.random((n_steps, n_walkers)) < 0.3
    acf = np.zeros((n_steps, 2))
    acf[:, 0] = 0.8 ** np.arange(n_steps)
    acf[:7, 1] = 1.0 - np.arange(7) / 7.0
    acf[0] = 1.0
    rows, walkers = np.nonzero(picks)
    same_walker = walkers[:, None] == walkers[None, :]
    lags = np.abs(rows[:, None] - rows[None, :])
    expected = [rows.size**2 / np.sum(np.where(same_walker, acf[lags, c], 0.0)) for c in range(2)]
    np.testing.assert_allclose(effective_size(acf, picks), expected, rtol=1e-10)
    assert np.all(effective_size(np.eye(n_steps, 1).repeat(2, axis=1), picks) == rows.size)  # uncorrelated
