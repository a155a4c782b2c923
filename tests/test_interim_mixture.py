"""The defensive-mixture interim prior p0' = λ p0 + (1 − λ) q that refine fits under: its
stored density is exact (the refined ln L̂ equals the closed-form marginal likelihood within
its reported Var[ln L̂]), and storing the old p0 instead is caught."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import logsumexp

import popinfer
from popinfer.interim import DefensiveMixturePrior, MixtureSpec
from popinfer.distributions import parse_distribution
from popinfer.populations import get_population
from popinfer.reweighting.inputs import read_draws
from popinfer.reweighting.likelihood import HyperLikelihood

LOW, HIGH = -1000.0, 1000.0  # the normal model's default interim prior of theta
WEIGHT = 0.2


def normal_normal(seed=11, n_objects=20):
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.5, 2.0, n_objects)
    y = rng.normal(1.0, 0.5, n_objects) + sigma * rng.normal(size=n_objects)
    frame = pd.DataFrame({"id": [f"o{i}" for i in range(n_objects)], "y": y, "sigma": sigma})
    components = {"mu": rng.normal(1.0, 0.3, 40), "sigma": np.exp(rng.normal(np.log(0.5), 0.5, 40))}
    return frame, components


def exact_shift(frame, components):
    """Σ_n ln Z0'_n, the interim evidence under p0' of each object's normalised likelihood N(y; θ, σ)."""
    y, sigma = frame["y"].to_numpy()[:, None], frame["sigma"].to_numpy()[:, None]
    z_base = (stats.norm.cdf((HIGH - y) / sigma) - stats.norm.cdf((LOW - y) / sigma))[:, 0] / (HIGH - LOW)
    z_q = np.exp(logsumexp(stats.norm.logpdf(y, components["mu"], np.sqrt(sigma**2 + components["sigma"]**2)),
                           axis=1) - np.log(len(components["mu"])))
    return np.sum(np.log(WEIGHT * z_base + (1 - WEIGHT) * z_q))


def exact_marginal(frame, mu, tau):
    return np.sum(stats.norm.logpdf(frame["y"], mu, np.sqrt(frame["sigma"]**2 + tau**2)))


@pytest.fixture(scope="module")
def refitted():
    frame, components = normal_normal()
    spec = MixtureSpec(get_population("normal", ["theta"]), components, WEIGHT, {"path": "<test>", "sha256": ""})
    samples = popinfer.fit_individuals(frame, "normal", n_draws=2000, seed=5, progress=False, interim_mixture=spec)
    return frame, components, samples


def test_mixture_density_matches_its_definition():
    _, components = normal_normal()
    prior = parse_distribution("uniform(-1000, 1000)")
    mixture = DefensiveMixturePrior([prior], [0], get_population("normal", ["theta"]), components, WEIGHT)
    theta = np.array([-3.0, 0.0, 1.0, 2.5, 999.0, 1001.0])[:, None]
    q = stats.norm.pdf(theta, components["mu"], components["sigma"]).mean(axis=1)
    expected = np.log(WEIGHT / 2000 + (1 - WEIGHT) * q)
    expected[-1] = -np.inf  # outside p0's support
    np.testing.assert_allclose(mixture.log_density(theta)[:, 0], expected, rtol=1e-12)
    draws = mixture.sample(np.random.default_rng(1), (20000,))[:, 0]
    inner = np.abs(draws) < 50  # q's share is 1 − λ (p0 puts 5 % of its λ there)
    assert abs(inner.mean() - (1 - WEIGHT + WEIGHT * 0.05)) < 4 * np.sqrt(0.2 * 0.8 / 20000)


def test_predictive_density_is_zero_where_every_component_is():
    """ln q is −inf where every component's density is 0 (outside a beta population's support,
    inside p0's): p0' is λ p0 there; inside, ln q is the components' mean density."""
    components = {"a": np.array([2.0, 3.0, 0.5]), "b": np.array([5.0, 1.5, 0.7])}
    mixture = DefensiveMixturePrior([parse_distribution("uniform(-1, 2)")], [0], get_population("beta", ["p"]),
                                    components, WEIGHT)
    theta = np.array([-0.5, 0.3, 1.5])[:, None]
    log_q = mixture.log_predictive(theta)
    assert log_q[0] == -np.inf and log_q[2] == -np.inf
    assert log_q[1] == pytest.approx(np.log(stats.beta.pdf(0.3, components["a"], components["b"]).mean()), rel=1e-13)
    np.testing.assert_allclose(mixture.log_density(theta)[[0, 2], 0], np.log(WEIGHT / 3), rtol=1e-13)


def test_refined_ln_likelihood_equals_the_exact_marginal_likelihood(refitted):
    frame, components, samples = refitted
    assert samples.joint_interim[:, 0].all() and samples.settings["interim_mixture"]["weight"] == WEIGHT
    header, parameters, theta, log_interim, _ = read_draws(samples, None)
    likelihood = HyperLikelihood(get_population("normal", parameters), theta, log_interim)
    mus, taus = np.array([1.0, 0.5, 1.5, 1.0]), np.array([0.5, 0.2, 0.8, 0.05])
    estimate = likelihood.ln_likelihood_and_variance({"mu": mus, "sigma": taus}, cut=False)
    shift = exact_shift(frame, components)
    for w, (mu, tau) in enumerate(zip(mus, taus)):
        exact = exact_marginal(frame, mu, tau) - shift
        variance = estimate.ln_likelihood_variance[w]
        assert variance < 0.5
        # ln L̂ is unbiased for L, so ln L̂ is low by ≈ Var/2; 4 standard deviations around that
        assert abs(estimate.ln_likelihood[w] + 0.5 * variance - exact) < 4 * np.sqrt(variance) + 1e-3, (mu, tau)


def test_negative_control_storing_the_old_interim_prior_is_caught(refitted):
    frame, components, samples = refitted
    header, parameters, theta, _, _ = read_draws(samples, None)
    old = np.full(theta.shape[:2], -np.log(HIGH - LOW))  # ln p0 instead of ln p0'
    likelihood = HyperLikelihood(get_population("normal", parameters), theta, old)
    estimate = likelihood.ln_likelihood_and_variance({"mu": np.array([1.0]), "sigma": np.array([0.5])}, cut=False)
    exact = exact_marginal(frame, 1.0, 0.5) - exact_shift(frame, components)
    assert abs(estimate.ln_likelihood[0] + 0.5 * estimate.ln_likelihood_variance[0] - exact) > \
        4 * np.sqrt(estimate.ln_likelihood_variance[0]) + 1e-3


def test_independent_estimates_of_refitted_objects_are_under_the_plain_interim_prior(refitted):
    """Stage two's "independent" (stage-one) summary of an object fitted under p0' reweights its
    draws by p0/p0': under the flat p0 the posterior is N(y, σ) (the negative control: the
    unweighted draws, pulled toward the population, are not)."""
    from popinfer.reweighting.inputs import independent_summary, reweight_to_interim

    frame, _, samples = refitted
    _, parameters, theta, log_interim, _ = read_draws(samples, None)
    plain = independent_summary(theta)
    summary = reweight_to_interim(independent_summary(theta), samples, parameters, theta, log_interim)
    y, sigma = frame["y"].to_numpy(), frame["sigma"].to_numpy()
    # The weights p0/p0' are heavy where p0' follows q (18 to 870 effective draws of 2000 here), so
    # the estimate is noisy but unbiased: within σ of y for every object, and on average much closer
    # than the unweighted draws, which are pulled toward the population.
    weighted, unweighted = np.abs(summary[:, 0, 0] - y) / sigma, np.abs(plain[:, 0, 0] - y) / sigma
    assert weighted.max() < 1.0 and weighted.mean() < 0.5 * unweighted.mean(), (weighted, unweighted)
    np.testing.assert_allclose(np.median(summary[:, 0, 1] / sigma), 1.0, atol=0.15)
    assert np.median(plain[:, 0, 1] / sigma) < 0.85


def test_a_written_mixture_fit_records_its_joint_interim_prior(refitted, tmp_path, reproducible):
    """Written to a file (refine checkpoints its refits), the fit holds the in-memory fit's draws and
    marks ln p0' as joint in /objects/joint_interim_prior, so the file reads back as it was fitted."""
    frame, components, in_memory = refitted
    spec = MixtureSpec(get_population("normal", ["theta"]), components, WEIGHT, {"path": "<test>", "sha256": ""})
    path = str(tmp_path / "mixture.h5")
    written = popinfer.fit_individuals(frame, "normal", path, n_draws=2000, seed=5, progress=False,
                                       interim_mixture=spec)
    for result in (written, popinfer.read_samples(path)):
        np.testing.assert_array_equal(result.samples, in_memory.samples)
        np.testing.assert_array_equal(result.log_interim_prior, in_memory.log_interim_prior)
        np.testing.assert_array_equal(result.joint_interim, in_memory.joint_interim)


def _predictive_by_definition(population, components, theta):
    """ln (1/S) Σ_s f(θ; α_s) from the population's own density and scipy's logsumexp."""
    log_f = population.log_density(theta[:, None, :], components)[:, 0, :]
    with np.errstate(divide="ignore"):
        return logsumexp(log_f, axis=1) - np.log(log_f.shape[1])


def _components(name, rng, n=60):
    if name == "normal":
        return {"mu": rng.normal(5.0, 1.0, n), "sigma": np.exp(rng.normal(0.0, 1.0, n))}
    if name == "narrow normal":  # terms beyond LINEAR_FORM_LIMIT: those rows go direct
        return {"mu": rng.normal(5.0, 1.0, n), "sigma": np.exp(rng.normal(-9.0, 0.5, n))}
    if name == "truncnormal":
        return {"mu": rng.normal(0.5, 0.1, n), "sigma": np.exp(rng.normal(-1.0, 0.5, n)), "low": np.zeros(n),
                "high": np.ones(n)}
    if name == "lognormal":
        return {"mu": rng.normal(1.0, 0.3, n), "sigma": np.exp(rng.normal(-1.0, 0.5, n))}
    if name == "beta":
        return {"a": np.exp(rng.normal(1.0, 0.3, n)), "b": np.exp(rng.normal(1.0, 0.3, n))}
    if name == "gamma":
        return {"shape": np.exp(rng.normal(1.0, 0.3, n)), "rate": np.exp(rng.normal(0.0, 0.3, n))}
    if name == "powerlaw":
        return {"alpha": rng.normal(-2.0, 0.3, n), "low": np.full(n, 1.0), "high": np.full(n, 50.0)}
    return {"mu_x": rng.normal(2.0, 0.5, n), "mu_y": rng.normal(-1.0, 0.5, n),  # mvnormal
            "sigma_x": np.exp(rng.normal(0.0, 0.3, n)), "sigma_y": np.exp(rng.normal(0.5, 0.3, n)),
            "rho_x_y": rng.uniform(-0.6, 0.6, n)}


@pytest.mark.parametrize("name, prior, spread", [
    ("normal", "uniform(-1000, 1000)", 30.0), ("narrow normal", "uniform(-1000, 1000)", 30.0),
    ("truncnormal", "uniform(-1, 2)", 1.0), ("lognormal", "uniform(-1, 100)", 30.0), ("beta", "uniform(-1, 2)", 1.0),
    ("gamma", "uniform(-1, 50)", 10.0), ("powerlaw", "uniform(0, 100)", 30.0), ("mvnormal", "uniform(-50, 50)", 5.0)])
def test_predictive_through_the_linear_form_equals_its_definition(name, prior, spread):
    """q's components through the population's linear form (one matrix product) give the
    population's own ln f, rows beyond the cancellation limit included, and −inf outside its support."""
    rng = np.random.default_rng(7)
    components = _components(name, rng)
    parameters = ["x", "y"] if name == "mvnormal" else ["x"]
    population = get_population(name.split()[-1], parameters)
    mixture = DefensiveMixturePrior([parse_distribution(prior)] * len(parameters), list(range(len(parameters))),
                                    population, components, WEIGHT)
    assert mixture._form is not None  # the fast path is the one tested
    center = np.array([np.median(components[k]) for k in ("mu_x", "mu_y")]) if name == "mvnormal" else 5.0
    theta = center + spread * rng.standard_normal((4000, len(parameters)))
    if name in ("truncnormal", "beta", "lognormal", "gamma", "powerlaw"):
        theta = rng.uniform(*parse_distribution(prior).support, size=(4000, 1))
    if name == "narrow normal":  # half within a few σ of a component, where ln q is moderate
        near = rng.integers(len(components["mu"]), size=2000)
        theta[:2000, 0] = components["mu"][near] + 3 * components["sigma"][near] * rng.standard_normal(2000)
    expected = _predictive_by_definition(population, components, theta)
    got = mixture.log_predictive(theta)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(got), finite)
    if name not in ("normal", "mvnormal", "narrow normal"):
        assert not finite.all()  # the test reaches outside the population's support
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-10)
