"""The batched sampler against plain per-object emcee.EnsembleSampler runs."""

import emcee
import numpy as np
import pandas as pd
from scipy import integrate, stats

import popinfer
from conftest import ROOT
from popinfer.autocorr import integrated_time
from popinfer.distributions import parse_distribution
from popinfer.individuals.sampler import BatchPosterior, initial_positions
from popinfer.models import get_model
from popinfer.table import table_from_frame
from stats_helpers import effective_sizes

BIMODAL = f"{ROOT / 'tests' / 'models_for_tests.py'}:bimodal"


def plain_emcee_draws(frame, model_name, object_index, n_steps, seed, log_prob=None):
    """One object through a stock EnsembleSampler (StretchMove), thinned by 2τ.

    Walkers start as popinfer's do (likelihood-resampled interim-prior draws);
    ``log_prob`` is a straightforward per-walker log posterior (default: the
    model's, all walkers of a step at once through emcee's ``vectorize``: the same
    values, so the same chain, in a fraction of the time).
    """
    table = table_from_frame(frame)
    model = get_model(model_name, None, table.columns)
    columns = model.load_columns(table)
    rows = slice(table.starts[object_index], table.starts[object_index + 1])
    starts = np.array([0, rows.stop - rows.start])
    priors = [parse_distribution(model.default_priors[p]) for p in model.parameters]
    posterior = BatchPosterior(model, model.prepare({r: v[rows] for r, v in columns.items()}, starts),
                               priors, model.parameters, {}, [table.ids[object_index]])
    rng = np.random.default_rng(seed)
    start, _ = initial_positions(posterior, 32, rng)

    vectorize = log_prob is None
    if vectorize:
        def log_prob(coords):
            return posterior(coords)[:, 0]

    sampler = emcee.EnsembleSampler(32, len(priors), log_prob, vectorize=vectorize)
    sampler.random_state = np.random.RandomState(seed).get_state()
    sampler.run_mcmc(start[:, 0, :], n_steps)
    chain = sampler.get_chain()[n_steps // 2:]
    tau = integrated_time(chain).max()
    return chain[:: int(np.ceil(2 * tau))].reshape(-1, len(priors))[:, 0]  # 2τ: see stats_helpers


def thinned_batched(samples, index):
    ess = effective_sizes(samples)[index].min()
    return samples.samples[index, :: int(np.ceil(samples.n_draws / ess)), 0]


def test_same_distribution_as_plain_emcee_unimodal():
    frame = pd.DataFrame({"id": ["a", "b", "c"], "y": [3.0, -40.0, 500.0], "sigma": [1.0, 7.0, 20.0]})
    samples = popinfer.fit_individuals(frame, "normal", seed=7, progress=False)
    for index, (y, sigma) in enumerate(zip(frame["y"], frame["sigma"])):
        ours = thinned_batched(samples, index)
        plain = plain_emcee_draws(frame, "normal", index, int(samples.diagnostics["n_steps"][index]), seed=index)
        assert stats.ks_2samp(ours, plain).pvalue > 1e-3
        assert stats.kstest(ours, stats.norm(y, sigma).cdf).pvalue > 1e-3
        assert stats.kstest(plain, stats.norm(y, sigma).cdf).pvalue > 1e-3


def bimodal_cdf(y, s):
    grid = np.linspace(-5, 5, 20001)
    density = np.exp(-0.5 * ((y - grid**2) / s) ** 2)
    cumulative = integrate.cumulative_trapezoid(density, grid, initial=0.0)
    return lambda x: np.interp(x, grid, cumulative / cumulative[-1])


def bimodal_log_prob(y, s):
    def log_prob(theta):
        if not -5 <= theta[0] <= 5:
            return -np.inf
        return -0.5 * ((y - theta[0] ** 2) / s) ** 2

    return log_prob


def test_same_distribution_as_plain_emcee_bimodal():
    # Modes at ±1 and ±1.22 with a saddle between them that walkers cross often
    # enough for τ to measure the mixing (far-apart modes mix more slowly than
    # τ shows, for a stock emcee run as much as for popinfer).
    frame = pd.DataFrame({"id": ["a", "b"], "y": [1.0, 1.5], "s": [0.8, 0.8]})
    samples = popinfer.fit_individuals(frame, BIMODAL, seed=8, progress=False)
    assert samples.diagnostics["converged"].all()
    for index, (y, s) in enumerate(zip(frame["y"], frame["s"])):
        ours = thinned_batched(samples, index)
        assert (ours < 0).mean() > 0.3 and (ours > 0).mean() > 0.3  # both modes populated
        plain = plain_emcee_draws(frame, BIMODAL, index, int(samples.diagnostics["n_steps"][index]),
                                  seed=10 + index, log_prob=bimodal_log_prob(y, s))
        assert stats.ks_2samp(ours, plain).pvalue > 1e-3
        cdf = bimodal_cdf(y, s)
        assert stats.kstest(ours, cdf).pvalue > 1e-3
        assert stats.kstest(plain, cdf).pvalue > 1e-3


def test_negative_control_detects_a_shifted_distribution():
    frame = pd.DataFrame({"id": ["a"], "y": [3.0], "sigma": [1.0]})
    samples = popinfer.fit_individuals(frame, "normal", seed=9, progress=False)
    ours = thinned_batched(samples, 0)
    assert stats.kstest(ours, stats.norm(3.3, 1.0).cdf).pvalue < 1e-3


def test_objects_are_independent_of_their_batch_mates():
    """An object's draws depend only on its own data: refitting it alongside
    different objects changes the random stream but not the distribution."""
    base = pd.DataFrame({"id": ["a", "b"], "y": [0.0, 100.0], "sigma": [1.0, 1.0]})
    other = pd.DataFrame({"id": ["a", "z"], "y": [0.0, -900.0], "sigma": [1.0, 50.0]})
    first = popinfer.fit_individuals(base, "normal", seed=1, progress=False)
    second = popinfer.fit_individuals(other, "normal", seed=2, progress=False)
    assert stats.ks_2samp(thinned_batched(first, 0), thinned_batched(second, 0)).pvalue > 1e-3
