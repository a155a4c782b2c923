"""refine on the eight schools from the default K = 4000: over five stage-one seeds, no object
keeps low ESS over the posterior and E[μ], E[τ] scatter around the exact grid values."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import popinfer
from popinfer.refinement import refine

EIGHT_SCHOOLS = str(Path(__file__).resolve().parent.parent / "sample_data" / "eight_schools.csv")

# Eight schools, μ ~ N(0, 5), τ ~ HalfCauchy(5): the exact posterior moments on a grid.
EIGHT_SCHOOLS_HYPERPRIORS = ["mu=normal(0, 5)", "sigma=halfcauchy(5)"]
EIGHT_SCHOOLS_SEEDS = (1, 2, 3, 4, 5)


def eight_schools_grid(ln_likelihood):
    """E[μ], E[τ] and the posterior weights on a (μ, τ) grid, for ln L given on that grid."""
    mu, tau = np.meshgrid(np.linspace(-14.0, 26.0, 121), np.linspace(0.1, 30.0, 150), indexing="ij")
    log_post = stats.norm.logpdf(mu, 0, 5) + stats.halfcauchy.logpdf(tau, scale=5) + ln_likelihood(mu, tau)
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    return float((post * mu).sum()), float((post * tau).sum()), post, mu, tau


@pytest.mark.slow
def test_eight_schools_refined_from_default_draws(tmp_path):
    """From the default K = 4000 and over five stage-one seeds, refine leaves no object with low ESS
    over the posterior, and E[μ], E[τ] computed from the refined ln L̂ on a grid (so that only
    stage one's Monte Carlo error remains, not stage two's chain) scatter around the exact values."""
    from popinfer.populations import get_population
    from popinfer.reweighting.inputs import read_draws
    from popinfer.reweighting.likelihood import HyperLikelihood
    from popinfer.threads import single_threaded_blas

    data = pd.read_csv(EIGHT_SCHOOLS)
    y, sigma = data["y"].to_numpy(), data["sigma"].to_numpy()
    exact_mu, exact_tau, _, _, _ = eight_schools_grid(
        lambda m, t: sum(stats.norm.logpdf(v, m, np.sqrt(s**2 + t**2)) for v, s in zip(y, sigma)))
    assert abs(exact_mu - 4.40) < 0.02 and abs(exact_tau - 3.60) < 0.03  # the grid reproduces the exact values

    moments = []
    for seed in EIGHT_SCHOOLS_SEEDS:
        samples, pop = str(tmp_path / f"s{seed}.h5"), str(tmp_path / f"p{seed}.h5")
        popinfer.fit_individuals(EIGHT_SCHOOLS, "normal", samples, seed=seed, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popinfer.fit_population(samples, "normal", pop, hyperpriors=EIGHT_SCHOOLS_HYPERPRIORS, seed=seed + 10,
                                    progress=False)
        refined = refine(samples, pop, str(tmp_path / f"r{seed}.h5"), seed=seed + 20, progress=False).samples
        header, parameters, theta, log_interim, _ = read_draws(refined, None)
        likelihood = HyperLikelihood(get_population("normal", parameters), theta, log_interim,
                                     draw_counts=header.draw_counts)
        ess_rows = []

        def refined_ln_likelihood(m, t):
            out = np.empty(m.size)
            with single_threaded_blas():
                for lo in range(0, m.size, 2048):
                    estimate = likelihood.ln_likelihood_and_variance(
                        {"mu": m.ravel()[lo:lo + 2048], "sigma": t.ravel()[lo:lo + 2048]}, cut=False)
                    out[lo:lo + 2048] = estimate.ln_likelihood
                    ess_rows.append(estimate.ess)
            return out.reshape(m.shape)

        mean_mu, mean_tau, post, _, _ = eight_schools_grid(refined_ln_likelihood)
        likelihood.close()
        low_mass = (post.ravel()[:, None] * (np.concatenate(ess_rows) < 20)).sum(axis=0)
        assert (low_mass < 0.01).all(), (seed, low_mass)  # the warning's test, over the exact posterior
        moments.append((mean_mu, mean_tau))
    moments = np.array(moments)
    spread = moments.std(axis=0, ddof=1)
    error = spread / np.sqrt(len(moments))
    print(f"E[mu], E[tau] over seeds: {moments.tolist()}; sd {spread.tolist()}")
    assert abs(moments[:, 0].mean() - exact_mu) < 3 * error[0] + 0.01
    assert abs(moments[:, 1].mean() - exact_tau) < 3 * error[1] + 0.01
    # Not asserted: the seed-to-seed sd of E[μ] ≤ 0.05 of a joint NUTS fit. Measured: 0.08 with the
    # defaults, 0.09 with target_variance=1e-3 (E[τ]: 0.06 and 0.02); E[μ] moves with the tilt of ln L̂
    # along μ, which needs Var[ln L̂] ≈ 1e-4 (target_variance=2e-4: K = 64000 per school) to shrink.
