"""Unconstrained coordinates of the hyperparameters: for every family of the grammar, the
transformed density p(x(u)) |dx/du| integrates to 1 over u (numerical quadrature), the
transform round-trips, and the Jacobian's derivatives match finite differences; the
unconstrained posterior's gradient matches finite differences of its value."""

import math

import numpy as np
import pytest
from scipy import integrate

from popinfer.distributions import parse_distribution
from popinfer.populations import get_population
from popinfer.reweighting.likelihood import HyperLikelihood
from popinfer.reweighting.posterior import HyperPosterior
from popinfer.reweighting.transforms import Transform, UnconstrainedPosterior, transform_for
from test_gradients import SPECS, finite_difference

KINDS = {"uniform": "logit", "loguniform": "logit", "normal": "identity", "truncnormal": "logit",
         "halfnormal": "log", "halfcauchy": "log", "cauchy": "identity", "exponential": "log",
         "lognormal": "log", "beta": "logit", "gamma": "log", "studentt": "identity"}


def transformed_density(distribution, transform, u):
    x = transform.to_constrained(u)
    with np.errstate(over="ignore"):  # quad probes |u| ~ 700, where x overflows and the density is 0
        return math.exp(float(distribution.logpdf(x)) + float(transform.log_jacobian(u)))


@pytest.mark.parametrize("family", sorted(SPECS))
def test_transformed_density_integrates_to_one(family):
    distribution = parse_distribution(SPECS[family])
    transform = transform_for(distribution)
    assert transform.kind == KINDS[family]
    # Split at the transformed median so that quad sees both halves of the mass.
    middle = float(transform.to_unconstrained(distribution.ppf(0.5)))
    total = sum(integrate.quad(lambda u: transformed_density(distribution, transform, u), a, b, limit=200,
                               epsabs=1e-12, epsrel=1e-10)[0] for a, b in ((-np.inf, middle), (middle, np.inf)))
    assert total == pytest.approx(1.0, abs=1e-7)


def test_a_wrong_jacobian_does_not_integrate_to_one():
    """Negative control: dropping the logit's ln(b − a) breaks the normalisation."""
    distribution = parse_distribution("uniform(-1, 3)")

    class Unscaled(Transform):
        def log_jacobian(self, u):
            return super().log_jacobian(u) - math.log(self.high - self.low)

    transform = Unscaled(-1.0, 3.0)
    total = integrate.quad(lambda u: transformed_density(distribution, transform, u), -np.inf, np.inf)[0]
    assert abs(total - 1.0) > 0.5


@pytest.mark.parametrize("family", sorted(SPECS))
def test_round_trip_and_jacobian_derivatives(family):
    distribution = parse_distribution(SPECS[family])
    transform = transform_for(distribution)
    x = distribution.ppf(np.linspace(0.02, 0.98, 9))
    u = transform.to_unconstrained(x)
    np.testing.assert_allclose(transform.to_constrained(u), x, rtol=1e-12, atol=1e-12)
    step = 1e-6
    numeric = (transform.to_constrained(u + step) - transform.to_constrained(u - step)) / (2 * step)
    np.testing.assert_allclose(transform.derivative(u), numeric, rtol=1e-7)
    np.testing.assert_allclose(transform.log_jacobian(u), np.log(np.abs(transform.derivative(u))), rtol=1e-10,
                               atol=1e-12)
    numeric = (transform.log_jacobian(u + step) - transform.log_jacobian(u - step)) / (2 * step)
    np.testing.assert_allclose(transform.log_jacobian_gradient(u), numeric, rtol=1e-6, atol=1e-8)


def test_upper_bounded_support_uses_a_mirrored_log():
    transform = Transform(-math.inf, 2.0)
    assert transform.kind == "negative-log"
    x = np.array([-5.0, 0.0, 1.9])
    np.testing.assert_allclose(transform.to_constrained(transform.to_unconstrained(x)), x)
    assert np.all(transform.to_constrained(np.array([-30.0, 0.0, 30.0])) < 2.0)


def test_unconstrained_posterior_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    theta = rng.normal(1.0, 1.0, (5, 400, 1)) + rng.normal(0.0, 1.0, (5, 1, 1))
    likelihood = HyperLikelihood(get_population("normal", ["x"]), theta, np.full((5, 400), -np.log(200.0)))
    priors = {"mu": parse_distribution("normal(0, 5)"), "sigma": parse_distribution("halfcauchy(2)")}
    target = UnconstrainedPosterior(HyperPosterior(likelihood, ["mu", "sigma"], priors))
    u = np.array([0.7, math.log(1.2)])
    value, gradient = target.log_density_and_gradient(u)
    x = target.to_constrained(u)
    expected = float(HyperPosterior(likelihood, ["mu", "sigma"], priors)(x[None])[0]) + u[1]
    assert value == pytest.approx(expected, rel=1e-12)
    numeric = finite_difference(lambda v: target.log_density_and_gradient(v)[0], u, [1e-6, 1e-6])
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6)
    assert target.log_density_and_gradient(np.array([0.0, -800.0]))[0] == -math.inf  # σ underflows to 0


def test_points_evaluated_together_get_exactly_their_own_numbers():
    """log_density_and_gradients (the NUTS chains' points in one likelihood call) gives every
    point bit for bit what log_density_and_gradient gives it alone, including points outside
    the bounded prior's edge and where σ underflows."""
    rng = np.random.default_rng(4)
    theta = rng.normal(1.0, 1.0, (7, 300, 1)) + rng.normal(0.0, 1.0, (7, 1, 1))
    likelihood = HyperLikelihood(get_population("normal", ["x"]), theta, np.full((7, 300), -np.log(200.0)))
    priors = {"mu": parse_distribution("uniform(-3, 3)"), "sigma": parse_distribution("halfcauchy(2)")}
    target = UnconstrainedPosterior(HyperPosterior(likelihood, ["mu", "sigma"], priors))
    points = np.array([[0.7, 0.2], [2.0, -800.0], [-0.4, 1.1], [40.0, 0.0], [0.9, -0.3]])
    alone = [target.log_density_and_gradient(u) for u in points]
    assert alone[1][0] == -math.inf  # σ underflows to 0
    assert all(math.isfinite(alone[i][0]) for i in (0, 2, 3, 4))
    for order in ([0, 1, 2, 3, 4], [4, 2, 0], [3, 0]):
        values, gradients = target.log_density_and_gradients(points[order])
        for row, index in enumerate(order):
            assert values[row] == alone[index][0]
            assert np.array_equal(gradients[row], alone[index][1])
    assert target.evaluations == 5 + 5 + 3 + 2
