import emcee
import numpy as np

from popinfer.autocorr import integrated_time


def ar1(n_steps, n_walkers, n_columns, phi, seed):
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n_steps, n_walkers, n_columns))
    chain = np.zeros_like(noise)
    for t in range(1, n_steps):
        chain[t] = phi * chain[t - 1] + noise[t]
    return chain


def test_equals_emcee_estimator():
    for phi, n_steps in ((0.0, 300), (0.5, 1000), (0.9, 2000), (0.97, 1500)):
        chain = ar1(n_steps, 16, 4, phi, seed=int(phi * 100))
        ours = integrated_time(chain)
        reference = emcee.autocorr.integrated_time(chain, tol=0, quiet=True)
        np.testing.assert_allclose(ours, reference, rtol=1e-10)


def test_recovers_ar1_time_and_flags_constant_chains():
    phi = 0.8
    chain = ar1(20000, 8, 2, phi, seed=5)
    expected = (1 + phi) / (1 - phi)  # exact τ of an AR(1) process
    np.testing.assert_allclose(integrated_time(chain), expected, rtol=0.1)
    chain[:, 3, 1] = 2.0
    assert integrated_time(chain)[1] == np.inf


def test_too_short_chain_never_looks_short_correlated():
    chain = np.cumsum(np.random.default_rng(0).normal(size=(40, 4, 1)), axis=0)  # a random walk
    assert 50 * integrated_time(chain)[0] > 40
