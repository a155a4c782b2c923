"""HyperLikelihood.moment_variance: each object's first-order share of the Monte Carlo variance of
posterior means, checked against the spread of E[μ], E[τ] over independent sets of stage-one
draws on a normal–normal grid (exact per-object likelihoods known in closed form)."""

import numpy as np
import pytest
from scipy import stats

from popinfer.populations import get_population
from popinfer.reweighting.likelihood import HyperLikelihood
from popinfer.threads import single_threaded_blas

Y = np.array([-1.5, -0.6, 0.0, 0.4, 1.1, 2.0])
SIGMA = 1.0
MU, TAU = np.meshgrid(np.linspace(-3.0, 3.5, 40), np.linspace(0.05, 4.0, 40), indexing="ij")
GRID = {"mu": MU.ravel(), "sigma": TAU.ravel()}
DRAWS = 400
REPLICATES = 400
ESTIMATED = 20  # replicates whose moment_variance is averaged (it is stable from set to set)


def posterior(ln_likelihood):
    """Posterior weights on the grid (flat prior on μ and τ) and (E[μ], E[τ])."""
    post = np.exp(ln_likelihood - ln_likelihood.max())
    post /= post.sum()
    return post, np.array([post @ GRID["mu"], post @ GRID["sigma"]])


def replicate(rng, repeat=1, predict=True):
    """One set of stage-one draws (posterior under a flat p0: N(y_n, σ)), each draw repeated ``repeat``
    times (autocorrelated draws: fewer independent ones than K); E[μ], E[τ] from its ln L̂ on the grid,
    and (if ``predict``) the predicted variance of those means from ``moment_variance`` at M posterior draws."""
    theta = rng.normal(Y[:, None], SIGMA, (Y.size, DRAWS // repeat)).repeat(repeat, axis=1)[:, :, None]
    likelihood = HyperLikelihood(get_population("normal", ["theta"]), theta, np.full(theta.shape[:2], -np.log(200.0)),
                                 threads=1)
    post, means = posterior(likelihood(GRID))
    if not predict:
        likelihood.close()
        return means, None
    index = rng.choice(post.size, size=1000, p=post)
    draws = np.stack([GRID["mu"][index], GRID["sigma"][index]], axis=1)
    predicted = likelihood.moment_variance({"mu": draws[:, 0], "sigma": draws[:, 1]},
                                           (draws - draws.mean(axis=0)) / len(draws)).sum(axis=0)
    likelihood.close()
    return means, predicted


def spread_matches(repeat, seed):
    """Whether the spread of E[μ], E[τ] over REPLICATES sets of draws agrees with the predicted variance:
    the ratio of sample to predicted variance lies within the 0.1 %–99.9 % chi-square range of a sample
    variance, widened by three standard errors of the averaged prediction."""
    rng = np.random.default_rng(seed)
    with single_threaded_blas():  # many small products: BLAS threads only contend
        results = [replicate(rng, repeat, predict=r < ESTIMATED) for r in range(REPLICATES)]
    means = np.array([r[0] for r in results])
    predictions = np.array([r[1] for r in results[:ESTIMATED]])
    predicted = predictions.mean(axis=0)
    error = 3 * predictions.std(axis=0, ddof=1) / np.sqrt(ESTIMATED) / predicted
    ratio = means.var(axis=0, ddof=1) / predicted
    dof = REPLICATES - 1
    low, high = stats.chi2.ppf([0.001, 0.999], dof) / dof
    return bool(np.all((ratio > low * (1 - error)) & (ratio < high * (1 + error)))), ratio


def test_moment_variance_predicts_the_spread_of_posterior_means():
    ok, ratio = spread_matches(repeat=1, seed=1)
    print("ratio of sample to predicted variance of E[mu], E[tau]:", ratio)
    assert ok, ratio
    # negative control: draws each repeated twice (half as many independent ones, as autocorrelated
    # draws would be) vary twice as much as the as-if-independent prediction says; the check sees it
    ok, ratio = spread_matches(repeat=2, seed=2)
    print("repeated draws:", ratio)
    assert not ok, ratio


@pytest.mark.parametrize("threads", [1, 2])
def test_moment_variance_is_zero_for_equal_weights_and_handles_ragged_draws(threads):
    """A population flat over the draws (huge τ) gives every draw the same weight at every α: the
    posterior means do not depend on the draws, so the variance is 0; padded draws carry no weight."""
    rng = np.random.default_rng(3)
    theta = rng.normal(0.0, 1.0, (3, 50, 1))
    counts = np.array([50, 20, 35])
    theta[1, 20:] = np.nan
    theta[2, 35:] = np.nan
    likelihood = HyperLikelihood(get_population("normal", ["theta"]), theta, np.zeros((3, 50)), threads=threads,
                                 draw_counts=counts)
    hyper = {"mu": rng.normal(0.0, 1.0, 30), "sigma": np.full(30, 1e6)}
    values = np.stack([hyper["mu"], hyper["sigma"]], axis=1)
    out = likelihood.moment_variance(hyper, (values - values.mean(axis=0)) / 30)
    assert out.shape == (3, 2) and np.all(np.isfinite(out))
    assert np.allclose(out, 0.0, atol=1e-12)
    # with a narrow population the padded draws still get no weight: same answer as unpadded arrays
    hyper = {"mu": rng.normal(0.0, 0.5, 30), "sigma": rng.uniform(0.3, 1.0, 30)}
    values = np.stack([hyper["mu"], hyper["sigma"]], axis=1)
    ragged = likelihood.moment_variance(hyper, (values - values.mean(axis=0)) / 30)
    single = HyperLikelihood(get_population("normal", ["theta"]), theta[1:2, :20], np.zeros((1, 20)), threads=1)
    assert np.allclose(ragged[1], single.moment_variance(hyper, (values - values.mean(axis=0)) / 30)[0])
    likelihood.close()


def test_refine_flags_and_sizes_by_the_moments_error():
    """refine's rule: while Σ_n share > E² for some hyperparameter, the largest contributors are
    refitted until the rest is ≤ E²/2, each sized to an even share of E²/2 (a power of two ≤ 16)."""
    from popinfer.refinement import _flagged, _growth

    ess = np.full((50, 4), 3000.0)  # no ESS or Var[ln L̂] reason to refit anything
    counts = np.full(4, 4000)
    moments = np.array([[4e-4, 1e-5], [1e-4, 2e-5], [2e-5, 1e-5], [1e-6, 1e-6]])
    assert _flagged(ess, counts, 20.0, 0.5).size == 0
    assert _flagged(ess, counts, 20.0, 0.5, moments, 0.03).size == 0  # 5.2e-4 ≤ 9e-4
    chosen = _flagged(ess, counts, 20.0, 0.5, moments, 0.02)  # 5.2e-4 > 4e-4: refit until the rest ≤ 2e-4
    assert chosen.tolist() == [0]
    chosen = _flagged(ess, counts, 20.0, 0.5, moments, 0.01)  # rest ≤ 5e-5
    assert chosen.tolist() == [0, 1]
    growth = _growth(ess[:, chosen], counts[chosen], 20.0, 0.5, 16, moments[chosen], 0.01)
    assert growth.tolist() == [16, 4]  # 4e-4 / (5e-5/2) = 16; 1e-4 / 2.5e-5 = 4
    with pytest.raises(Exception, match="--moment-error"):
        from popinfer.refinement import refine

        refine("a.h5", "b.h5", moment_error=1.5)
