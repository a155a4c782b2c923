import numpy as np
import pytest
from scipy import stats

from popinfer.distributions import FAMILIES, parse_assignment, parse_distribution, parse_value
from popinfer.errors import UsageError

CASES = {
    "uniform(-1, 3)": stats.uniform(-1, 4),
    "loguniform(0.1, 10)": stats.loguniform(0.1, 10),
    "normal(1, 2)": stats.norm(1, 2),
    "truncnormal(0, 1, -0.5, 2)": stats.truncnorm(-0.5, 2),
    "halfnormal(3)": stats.halfnorm(scale=3),
    "halfcauchy(5)": stats.halfcauchy(scale=5),
    "cauchy(1, 0.5)": stats.cauchy(1, 0.5),
    "exponential(2)": stats.expon(scale=0.5),
    "lognormal(0.5, 0.3)": stats.lognorm(s=0.3, scale=np.exp(0.5)),
    "beta(2, 5)": stats.beta(2, 5),
    "gamma(3, 2)": stats.gamma(3, scale=0.5),
    "studentt(4, 1, 2)": stats.t(4, 1, 2),
}


def test_every_family_is_covered():
    assert {spec.split("(")[0] for spec in CASES} == set(FAMILIES)


@pytest.mark.parametrize("spec", CASES)
def test_logpdf_matches_scipy_inside_and_is_minus_inf_outside(spec):
    dist = parse_distribution(spec)
    reference = CASES[spec]
    x = reference.ppf(np.linspace(0.01, 0.99, 25))
    np.testing.assert_allclose(dist.logpdf(x), reference.logpdf(x), rtol=1e-12)
    low, high = dist.support
    outside = [v for v in (low - 1.0, high + 1.0) if np.isfinite(v)]
    assert np.all(dist.logpdf(np.array(outside)) == -np.inf)
    assert not np.any(np.isnan(dist.logpdf(np.array([low, high]))))


@pytest.mark.parametrize("spec", CASES)
def test_canonical_spec_round_trips(spec):
    dist = parse_distribution(spec)
    assert parse_distribution(dist.spec) == dist


@pytest.mark.parametrize("spec", CASES)
def test_sampling_is_seeded_and_follows_the_distribution(spec):
    dist = parse_distribution(spec)
    a = dist.sample(np.random.default_rng(3), size=2000)
    b = dist.sample(np.random.default_rng(3), size=2000)
    np.testing.assert_array_equal(a, b)
    assert stats.kstest(a, CASES[spec].cdf).pvalue > 1e-4


def test_python_float_syntax_and_spaces():
    assert parse_distribution(" normal( -1e1 , 2.5E0 ) ").args == (-10.0, 2.5)
    assert parse_distribution("uniform(0, 1_000)").args == (0.0, 1000.0)


@pytest.mark.parametrize("text", [
    "normal(0)", "normal(0, 1, 2)", "normal 0 1", "normal(0, -1)", "uniform(1, 1)", "uniform(2, 1)",
    "loguniform(0, 1)", "beta(0, 1)", "gamma(1, 0)", "foo(1, 2)", "normal(a, 1)", "normal(nan, 1)",
    "normal(0, inf)", "", "()", "halfcauchy(-2)", "truncnormal(0, 1, 3, 2)",
])
def test_bad_specs_are_usage_errors_quoting_the_text(text):
    with pytest.raises(UsageError) as info:
        parse_distribution(text, "--prior")
    assert repr(text) in str(info.value)
    assert info.value.option == "--prior"


def test_assignment_and_value_parsing():
    name, dist = parse_assignment("theta=normal(0, 5)")
    assert name == "theta" and dist.spec == "normal(0.0, 5.0)"
    assert parse_value("intercept=0") == ("intercept", 0.0)
    for bad in ("theta", "=normal(0,1)", "1x=normal(0,1)"):
        with pytest.raises(UsageError):
            parse_assignment(bad)
    for bad in ("intercept", "intercept=abc", "=3", "x=nan"):
        with pytest.raises(UsageError):
            parse_value(bad)
