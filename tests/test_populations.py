"""Population densities: normalisation, support, and linear form == direct density."""

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

import popinfer
from conftest import SAMPLE_DATA
from popinfer.populations import get_population
from popinfer.errors import UsageError

ONE_D = {
    "normal": {"mu": 1.0, "sigma": 2.0},
    "truncnormal": {"mu": 3.0, "sigma": 1.5, "low": 0.0, "high": 2.0},  # mostly truncated away
    "lognormal": {"mu": 0.5, "sigma": 0.7},
    "beta": {"a": 2.5, "b": 0.8},
    "gamma": {"shape": 3.0, "rate": 2.0},
    "powerlaw": {"alpha": -2.3, "low": 0.5, "high": 20.0},
    "uniform": {"low": -1.0, "high": 3.0},
    "studentt": {"nu": 3.0, "mu": -1.0, "sigma": 0.5},
    "mixture": {"weight": 0.3, "mu1": -2.0, "sigma1": 0.5, "mu2": 1.0, "sigma2": 1.5},
}


# Support of each ONE_D case, and a finite range holding all but < 1e-7 of its mass.
SUPPORT = {"normal": (-np.inf, np.inf), "truncnormal": (0.0, 2.0), "lognormal": (0.0, np.inf), "beta": (0.0, 1.0),
           "gamma": (0.0, np.inf), "powerlaw": (0.5, 20.0), "uniform": (-1.0, 3.0), "studentt": (-np.inf, np.inf),
           "mixture": (-np.inf, np.inf)}
RANGE = {"normal": (-30, 30), "lognormal": (0, 1000), "gamma": (0, 100), "studentt": (-500, 500), "mixture": (-30, 30)}


def density_1d(population, hyper):
    def f(x):
        theta = np.array([[[x]]])
        return float(np.exp(population.log_density(theta, {k: np.array([v]) for k, v in hyper.items()})[0, 0, 0]))
    return f


@pytest.mark.parametrize("name", ONE_D)
def test_one_dimensional_densities_integrate_to_one(name):
    population = get_population(name, ["x"])
    hyper = ONE_D[name]
    low, high = RANGE.get(name, SUPPORT[name])
    points = [hyper[k] for k in ("low", "high", "mu", "mu1", "mu2") if k in hyper and low < hyper[k] < high]
    total, error = integrate.quad(density_1d(population, hyper), low, high, points=points or None, limit=200)
    assert abs(total - 1.0) < 1e-6, total


@pytest.mark.parametrize("name", ONE_D)
def test_minus_inf_outside_the_support_and_never_nan(name):
    population = get_population(name, ["x"])
    hyper = {k: np.array([v, v]) for k, v in ONE_D[name].items()}
    theta = np.array([-1e6, -5.0, -1e-9, 0.0, 0.5, 1.0, 1.5, 25.0, 1e6])[None, :, None]
    values = population.log_density(theta, hyper)
    assert not np.isnan(values).any()
    assert values.shape == (1, 9, 2)
    low, high = SUPPORT[name]
    for x, value in zip(theta[0, :, 0], values[0, :, 0]):
        if low < x < high:
            assert np.isfinite(value), (name, x)
        elif x < low or x > high:
            assert value == -np.inf, (name, x, value)


@pytest.mark.parametrize("name", ["truncnormal", "mixture", "studentt", "normal", "beta"])
def test_invalid_hyperparameters_give_minus_inf(name):
    population = get_population(name, ["x"])
    hyper = {k: np.array([v, v]) for k, v in ONE_D[name].items()}
    key = {"truncnormal": "sigma", "mixture": "sigma2", "studentt": "nu", "normal": "sigma", "beta": "a"}[name]
    hyper[key] = np.array([hyper[key][0], -1.0])
    values = population.log_density(np.linspace(0.1, 0.9, 5)[None, :, None], hyper)
    assert np.all(values[..., 1] == -np.inf) and np.all(np.isfinite(values[..., 0]))
    assert list(population.valid(hyper)) == [True, False]


def test_mixture_is_the_weighted_sum_of_normals():
    population = get_population("mixture", ["x"])
    h = ONE_D["mixture"]
    x = np.linspace(-4, 4, 9)
    expected = np.log(h["weight"] * stats.norm.pdf(x, h["mu1"], h["sigma1"])
                      + (1 - h["weight"]) * stats.norm.pdf(x, h["mu2"], h["sigma2"]))
    got = population.log_density(x[None, :, None], {k: np.array([v]) for k, v in h.items()})[0, :, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    swapped = dict(h, mu1=h["mu2"], mu2=h["mu1"])  # label switching is ruled out
    assert not population.valid({k: np.array([v]) for k, v in swapped.items()})[0]


def test_truncnormal_far_in_the_tail_stays_finite_and_normalised():
    population = get_population("truncnormal", ["x"])
    hyper = {"mu": 0.0, "sigma": 1.0, "low": 30.0, "high": 31.0}
    total, _ = integrate.quad(density_1d(population, hyper), 30.0, 31.0, points=[30.0], limit=200)
    assert abs(total - 1.0) < 1e-6


def test_mvnormal_matches_scipy_and_rejects_non_positive_definite():
    population = get_population("mvnormal", ["a", "b", "c"])
    assert population.hyperparameters == ("mu_a", "mu_b", "mu_c", "sigma_a", "sigma_b", "sigma_c",
                                           "rho_a_b", "rho_a_c", "rho_b_c")
    hyper = {"mu_a": 1.0, "mu_b": -1.0, "mu_c": 0.5, "sigma_a": 1.0, "sigma_b": 2.0, "sigma_c": 0.5,
             "rho_a_b": 0.6, "rho_a_c": -0.3, "rho_b_c": 0.2}
    sd = np.array([1.0, 2.0, 0.5])
    corr = np.array([[1, 0.6, -0.3], [0.6, 1, 0.2], [-0.3, 0.2, 1]])
    theta = np.random.default_rng(1).normal(size=(4, 5, 3))
    got = population.log_density(theta, {k: np.array([v]) for k, v in hyper.items()})[..., 0]
    expected = stats.multivariate_normal([1.0, -1.0, 0.5], corr * np.outer(sd, sd)).logpdf(theta)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    bad = dict(hyper, rho_a_b=0.99, rho_a_c=0.99, rho_b_c=-0.99)
    assert np.all(population.log_density(theta, {k: np.array([v]) for k, v in bad.items()}) == -np.inf)


@pytest.mark.parametrize("name, fixed", [
    ("normal", {}), ("truncnormal", {"low": 0.0, "high": 2.0}), ("lognormal", {}), ("beta", {}), ("gamma", {}),
    ("powerlaw", {"low": 0.5, "high": 20.0}),
])
def test_linear_form_equals_the_direct_density(name, fixed):
    population = get_population(name, ["x"])
    form = population.linear_form(fixed, center=0.7)
    assert form is not None
    rng = np.random.default_rng(2)
    theta = rng.uniform(-0.5, 3.0, size=(3, 50, 1))
    hyper = {k: np.full(4, v) * rng.uniform(0.8, 1.2, 4) if k not in fixed else np.full(4, v)
             for k, v in ONE_D[name].items()}
    eta, offset = form.coefficients(hyper)
    linear = np.einsum("njk,jw->nkw", form.features(theta), np.atleast_2d(eta)) + offset + form.base(theta)[..., None]
    direct = population.log_density(theta, hyper)
    assert np.array_equal(np.isinf(linear), np.isinf(direct))
    finite = np.isfinite(direct)
    np.testing.assert_allclose(linear[finite], direct[finite], rtol=1e-10, atol=1e-10)


def test_mvnormal_linear_form_equals_the_direct_density():
    population = get_population("mvnormal", ["a", "b"])
    form = population.linear_form({}, center=np.array([0.3, -0.2]))
    hyper = {"mu_a": np.array([1.0, 0.0]), "mu_b": np.array([-1.0, 2.0]), "sigma_a": np.array([1.0, 0.3]),
             "sigma_b": np.array([2.0, 1.0]), "rho_a_b": np.array([0.5, -0.8])}
    theta = np.random.default_rng(3).normal(size=(2, 7, 2))
    eta, offset = form.coefficients(hyper)
    linear = np.einsum("njk,jw->nkw", form.features(theta), eta) + offset
    np.testing.assert_allclose(linear, population.log_density(theta, hyper), rtol=1e-10)


def test_population_dimension_errors():
    with pytest.raises(UsageError, match="mvnormal describes two or more"):
        get_population("mvnormal", ["a"])
    with pytest.raises(UsageError, match="describes one parameter"):
        get_population("normal", ["a", "b"])
    with pytest.raises(UsageError, match="Unknown population 'norm'"):
        get_population("norm", ["a"])


@pytest.mark.parametrize("name", sorted(popinfer.populations.BUILTIN_POPULATIONS))
def test_every_default_hyperprior_parses_on_real_data(name):
    """The rat tumours' exact stage-one posteriors, Beta(k + 1, n - k + 1): every population's
    defaults are specs the grammar reads back (numpy 2 writes np.float64(1.9) as its repr)."""
    from popinfer.distributions import parse_distribution
    from popinfer.reweighting.fit import data_scale, resolve_hyperpriors

    rats = pd.read_csv(SAMPLE_DATA / "rat_tumors.csv")
    rng = np.random.default_rng(3)
    rate = rng.beta(rats["k"].to_numpy()[:, None] + 1, (rats["n"] - rats["k"]).to_numpy()[:, None] + 1,
                    size=(len(rats), 500))
    theta = np.stack([rate, np.log(rate / (1 - rate))], axis=-1) if name == "mvnormal" else rate[:, :, None]
    parameters = ["p", "logit_p"] if name == "mvnormal" else ["p"]
    population = popinfer.populations.get_population(name, parameters)
    fixed = {"low": 0.001, "high": 1.0} if name in ("powerlaw", "truncnormal") else {}
    scale = data_scale(theta, parameters)
    scale = {p: {k: np.float64(v) for k, v in entry.items()} for p, entry in scale.items()}  # as numpy hands them
    defaults = population.default_hyperpriors(scale)
    for hyper, spec in defaults.items():
        assert "np." not in spec, spec
        prior = parse_distribution(spec, hyper)
        assert np.isfinite(prior.logpdf(prior.ppf(0.5)))
    resolved = resolve_hyperpriors(population, [], fixed, scale)
    assert set(resolved) == set(population.hyperparameters) - set(fixed)
