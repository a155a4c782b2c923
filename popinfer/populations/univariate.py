"""One-dimensional populations: normal, truncnormal, lognormal, beta, gamma,
powerlaw, uniform, studentt."""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import betaln, digamma, gammaln

from .base import LOG_2PI, LinearForm, Population


def _x(theta):
    """The single parameter of θ (n, K, 1) as (n, K, 1), ready to broadcast over walkers."""
    return theta[..., 0][..., None]


def _finite(values, mask):
    """Features must stay finite everywhere; the base term carries -inf."""
    return np.where(mask, values, 0.0)


def _in_support(x, low, high):
    return (x >= low) & (x <= high)


def number(value):
    """A number as the distribution grammar reads it: a plain Python float literal
    (numpy 2's repr, ``np.float64(1.9)``, is not one)."""
    return repr(float(value))


def _scale_priors(scale, location_key="location", spread_key="spread"):
    location, spread = scale[location_key], scale[spread_key]
    return {"mu": f"normal({number(location)}, {number(10 * spread)})", "sigma": f"halfcauchy({number(2.5 * spread)})"}


class NormalPopulation(Population):
    """θ ~ Normal(μ, σ):  f(θ; μ, σ) = exp(−(θ − μ)²/(2σ²)) / (σ √(2π)).

    Hyperparameters
    ---------------
    mu : μ, the location.
    sigma : σ > 0, the scale.
    """

    name = "normal"
    hyperparameters = ("mu", "sigma")
    domains = {"sigma": (0.0, np.inf)}

    def log_density(self, theta, hyper):
        mu, sigma = hyper["mu"], hyper["sigma"]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (_x(theta) - mu) / sigma
            return np.where(sigma > 0, -0.5 * z * z - np.log(sigma) - 0.5 * LOG_2PI, -np.inf)

    def valid(self, hyper):
        return hyper["sigma"] > 0

    def linear_form(self, fixed, center=0.0):
        c = float(np.atleast_1d(center)[0])

        def features(theta):
            x = theta[..., 0] - c
            return np.stack([x * x, x], axis=-2)

        def coefficients(hyper):
            mu, sigma = hyper["mu"] - c, hyper["sigma"]
            precision = 1.0 / sigma**2
            eta = np.stack([-0.5 * precision, mu * precision])
            return eta, -0.5 * mu * mu * precision - np.log(sigma) - 0.5 * LOG_2PI

        def coefficient_gradients(hyper):
            mu, sigma = hyper["mu"] - c, hyper["sigma"]
            precision, cube = 1.0 / sigma**2, 1.0 / sigma**3
            return {"mu": (np.stack([np.zeros_like(mu), precision]), -mu * precision),
                    "sigma": (np.stack([cube, -2.0 * mu * cube]), mu * mu * cube - 1.0 / sigma)}

        return LinearForm(features, lambda theta: np.zeros(theta.shape[:-1]), coefficients, coefficient_gradients)

    def default_hyperpriors(self, scale):
        return _scale_priors(scale[self.parameters[0]])

    def marginal(self, hyper, index=0):
        return stats.norm(hyper["mu"], hyper["sigma"])


class TruncNormalPopulation(Population):
    """θ ~ Normal(μ, σ) truncated to [a, b]:
    f(θ) = N(θ; μ, σ) / [Φ((b − μ)/σ) − Φ((a − μ)/σ)] for a ≤ θ ≤ b.

    Hyperparameters
    ---------------
    mu : μ, the location of the untruncated normal.
    sigma : σ > 0, its scale.
    low, high : a < b, the truncation bounds (usually held with ``--fix``).
    """

    name = "truncnormal"
    hyperparameters = ("mu", "sigma", "low", "high")
    domains = {"sigma": (0.0, np.inf)}
    ordered = (("low", "high"),)

    @staticmethod
    def log_mass(mu, sigma, low, high):
        """ln(Φ(b) - Φ(a)), a = (low - μ)/σ, b = (high - μ)/σ, through scipy's stable truncnorm."""
        x = np.clip(mu, low, high)
        a, b = (low - mu) / sigma, (high - mu) / sigma
        return stats.norm.logpdf(x, mu, sigma) - stats.truncnorm.logpdf(x, a, b, loc=mu, scale=sigma)

    @classmethod
    def log_mass_gradient(cls, mu, sigma, low, high):
        """(∂/∂μ, ∂/∂σ) of ln(Φ(β) − Φ(α)), α = (low − μ)/σ, β = (high − μ)/σ:
        (φ(α) − φ(β))/(σ m) and (α φ(α) − β φ(β))/(σ m), m the mass (ratios in log space)."""
        log_mass = cls.log_mass(mu, sigma, low, high)
        parts = []
        for bound, sign in ((low, 1.0), (high, -1.0)):
            z = (bound - mu) / sigma
            finite = np.isfinite(z)
            ratio = np.where(finite, np.exp(stats.norm.logpdf(np.where(finite, z, 0.0)) - log_mass), 0.0)
            parts.append((sign * ratio, sign * np.where(finite, z, 0.0) * ratio))
        (a_mu, a_sigma), (b_mu, b_sigma) = parts
        return (a_mu + b_mu) / sigma, (a_sigma + b_sigma) / sigma

    def log_density(self, theta, hyper):
        mu, sigma, low, high = (hyper[k] for k in self.hyperparameters)
        ok = self.valid(hyper)
        safe = {k: np.where(ok, v, d) for (k, v), d in zip(hyper.items(), (0.0, 1.0, -1.0, 1.0))}
        mass = self.log_mass(safe["mu"], safe["sigma"], safe["low"], safe["high"])
        x = _x(theta)
        z = (x - safe["mu"]) / safe["sigma"]
        density = -0.5 * z * z - np.log(safe["sigma"]) - 0.5 * LOG_2PI - mass
        return np.where(ok & _in_support(x, safe["low"], safe["high"]), density, -np.inf)

    def valid(self, hyper):
        return (hyper["sigma"] > 0) & (hyper["low"] < hyper["high"])

    def linear_form(self, fixed, center=0.0):
        if "low" not in fixed or "high" not in fixed:
            return None
        low, high = fixed["low"], fixed["high"]
        inner = NormalPopulation(self.parameters).linear_form(fixed, center)

        def base(theta):
            return np.where(_in_support(theta[..., 0], low, high), 0.0, -np.inf)

        def coefficients(hyper):
            eta, offset = inner.coefficients(hyper)
            return eta, offset - self.log_mass(hyper["mu"], hyper["sigma"], low, high)

        def coefficient_gradients(hyper):
            gradients = inner.coefficient_gradients(hyper)
            d_mu, d_sigma = self.log_mass_gradient(hyper["mu"], hyper["sigma"], low, high)
            return {"mu": (gradients["mu"][0], gradients["mu"][1] - d_mu),
                    "sigma": (gradients["sigma"][0], gradients["sigma"][1] - d_sigma)}

        return LinearForm(inner.features, base, coefficients, coefficient_gradients)

    def default_hyperpriors(self, scale):
        return _scale_priors(scale[self.parameters[0]])

    def marginal(self, hyper, index=0):
        mu, sigma = hyper["mu"], hyper["sigma"]
        return stats.truncnorm((hyper["low"] - mu) / sigma, (hyper["high"] - mu) / sigma, mu, sigma)


class LogNormalPopulation(Population):
    """ln θ ~ Normal(μ, σ):  f(θ; μ, σ) = N(ln θ; μ, σ) / θ for θ > 0.

    Hyperparameters
    ---------------
    mu : μ, the mean of ln θ.
    sigma : σ > 0, the standard deviation of ln θ.
    """

    name = "lognormal"
    hyperparameters = ("mu", "sigma")
    domains = {"sigma": (0.0, np.inf)}

    def log_density(self, theta, hyper):
        x = _x(theta)
        positive = x > 0
        log_x = np.log(np.where(positive, x, 1.0))
        mu, sigma = hyper["mu"], hyper["sigma"]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (log_x - mu) / sigma
            density = -0.5 * z * z - np.log(sigma) - 0.5 * LOG_2PI - log_x
        return np.where(positive & (sigma > 0), density, -np.inf)

    def valid(self, hyper):
        return hyper["sigma"] > 0

    def linear_form(self, fixed, center=0.0):
        inner = NormalPopulation(self.parameters).linear_form(fixed, center)

        def log_theta(theta):
            x = theta[..., 0]
            return np.log(np.where(x > 0, x, 1.0))[..., None]

        def base(theta):
            x = theta[..., 0]
            return np.where(x > 0, -log_theta(theta)[..., 0], -np.inf)

        return LinearForm(lambda theta: inner.features(log_theta(theta)), base, inner.coefficients,
                          inner.coefficient_gradients)

    def default_hyperpriors(self, scale):
        return _scale_priors(scale[self.parameters[0]], "log_location", "log_spread")

    def marginal(self, hyper, index=0):
        return stats.lognorm(s=hyper["sigma"], scale=np.exp(hyper["mu"]))


class BetaPopulation(Population):
    """θ ~ Beta(a, b):  f(θ; a, b) = θ^(a−1) (1 − θ)^(b−1) / B(a, b) on (0, 1).

    Hyperparameters
    ---------------
    a : a > 0, the first shape (pseudo-successes).
    b : b > 0, the second shape (pseudo-failures).
    """

    name = "beta"
    hyperparameters = ("a", "b")
    domains = {"a": (0.0, np.inf), "b": (0.0, np.inf)}

    def log_density(self, theta, hyper):
        x = _x(theta)
        inside = (x > 0) & (x < 1)
        xs = np.where(inside, x, 0.5)
        a, b = hyper["a"], hyper["b"]
        ok = self.valid(hyper)
        a, b = np.where(ok, a, 1.0), np.where(ok, b, 1.0)
        density = (a - 1) * np.log(xs) + (b - 1) * np.log1p(-xs) - betaln(a, b)
        return np.where(inside & ok, density, -np.inf)

    def valid(self, hyper):
        return (hyper["a"] > 0) & (hyper["b"] > 0)

    def linear_form(self, fixed, center=0.0):
        def features(theta):
            x = theta[..., 0]
            inside = (x > 0) & (x < 1)
            xs = np.where(inside, x, 0.5)
            return np.stack([np.log(xs), np.log1p(-xs)], axis=-2)

        def base(theta):
            x = theta[..., 0]
            return np.where((x > 0) & (x < 1), 0.0, -np.inf)

        def coefficients(hyper):
            a, b = hyper["a"], hyper["b"]
            return np.stack([a - 1, b - 1]), -betaln(a, b)

        def coefficient_gradients(hyper):
            a, b = hyper["a"], hyper["b"]
            one, zero, both = np.ones_like(a), np.zeros_like(a), digamma(a + b)
            return {"a": (np.stack([one, zero]), both - digamma(a)), "b": (np.stack([zero, one]), both - digamma(b))}

        return LinearForm(features, base, coefficients, coefficient_gradients)

    def default_hyperpriors(self, scale):
        return {"a": "lognormal(0.0, 2.0)", "b": "lognormal(0.0, 2.0)"}

    def marginal(self, hyper, index=0):
        return stats.beta(hyper["a"], hyper["b"])


class GammaPopulation(Population):
    """θ ~ Gamma(k, λ):  f(θ; k, λ) = λ^k θ^(k−1) e^(−λθ) / Γ(k) for θ > 0.

    Hyperparameters
    ---------------
    shape : k > 0.
    rate : λ > 0 (the inverse scale).
    """

    name = "gamma"
    hyperparameters = ("shape", "rate")
    domains = {"shape": (0.0, np.inf), "rate": (0.0, np.inf)}

    def log_density(self, theta, hyper):
        x = _x(theta)
        positive = x > 0
        xs = np.where(positive, x, 1.0)
        ok = self.valid(hyper)
        shape, rate = np.where(ok, hyper["shape"], 1.0), np.where(ok, hyper["rate"], 1.0)
        density = shape * np.log(rate) - gammaln(shape) + (shape - 1) * np.log(xs) - rate * xs
        return np.where(positive & ok, density, -np.inf)

    def valid(self, hyper):
        return (hyper["shape"] > 0) & (hyper["rate"] > 0)

    def linear_form(self, fixed, center=0.0):
        def features(theta):
            x = theta[..., 0]
            xs = np.where(x > 0, x, 1.0)
            return np.stack([np.log(xs), xs], axis=-2)

        def base(theta):
            return np.where(theta[..., 0] > 0, 0.0, -np.inf)

        def coefficients(hyper):
            shape, rate = hyper["shape"], hyper["rate"]
            return np.stack([shape - 1, -rate]), shape * np.log(rate) - gammaln(shape)

        def coefficient_gradients(hyper):
            shape, rate = hyper["shape"], hyper["rate"]
            one, zero = np.ones_like(shape), np.zeros_like(shape)
            return {"shape": (np.stack([one, zero]), np.log(rate) - digamma(shape)),
                    "rate": (np.stack([zero, -one]), shape / rate)}

        return LinearForm(features, base, coefficients, coefficient_gradients)

    def default_hyperpriors(self, scale):
        location = max(scale[self.parameters[0]]["location"], 1e-300)
        return {"shape": "lognormal(0.0, 2.0)", "rate": f"lognormal({number(-np.log(location))}, 2.0)"}

    def marginal(self, hyper, index=0):
        return stats.gamma(hyper["shape"], scale=1.0 / hyper["rate"])


def _log_powerlaw_norm(alpha, low, high, xp=np):
    """ln ∫_low^high θ^α dθ, stable for every α (including α = -1); ``xp`` the array
    namespace (numpy, or jax.numpy for the JAX backend)."""
    beta = alpha + 1.0
    log_low, log_high = xp.log(low), xp.log(high)
    span = log_high - log_low
    small = xp.abs(beta * span) < 1e-8
    b = xp.where(small, 1.0, beta)
    positive = b > 0
    top = xp.where(positive, log_high, log_low)
    other = xp.where(positive, log_low, log_high)
    general = b * top + xp.log(-xp.expm1(b * (other - top))) - xp.log(xp.abs(b))
    return xp.where(small, xp.log(span) + beta * log_low + 0.5 * beta * span, general)


def _log_powerlaw_norm_gradient(alpha, low, high):
    """d/dα ln ∫_low^high θ^α dθ = E[ln θ] under the power law: with s = ln θ on [L, H] and
    β = α + 1, the mean of s under a density ∝ e^(βs), (H − r L)/(1 − r) − 1/β with
    r = e^(−β(H − L)) for β > 0 (mirrored for β < 0), and (L + H)/2 + β(H − L)²/12 near β = 0."""
    beta = alpha + 1.0
    log_low, log_high = np.log(low), np.log(high)
    span = log_high - log_low
    small = np.abs(beta * span) < 1e-3
    b = np.where(small, 1.0, beta)
    top = np.where(b > 0, log_high, log_low)
    other = np.where(b > 0, log_low, log_high)
    ratio = np.exp(-np.abs(b) * span)
    general = (top - ratio * other) / (1.0 - ratio) - 1.0 / b
    return np.where(small, 0.5 * (log_low + log_high) + beta * span * span / 12.0, general)


class _PowerLaw:
    """The frozen power law on [low, high] (cdf only), for support checks."""

    def __init__(self, alpha, low, high):
        self.alpha, self.low, self.high = alpha, low, high

    def cdf(self, x):
        x = np.asarray(x, dtype=float)
        inner = np.clip(x, self.low, self.high)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.exp(_log_powerlaw_norm(self.alpha, self.low, inner)
                           - _log_powerlaw_norm(self.alpha, self.low, self.high))
        return np.where(x <= self.low, 0.0, np.where(x >= self.high, 1.0, value))


class PowerLawPopulation(Population):
    """θ ~ θ^α on [a, b]:  f(θ; α) = θ^α / ∫_a^b t^α dt for a ≤ θ ≤ b (0 < a < b).

    Hyperparameters
    ---------------
    alpha : α, the slope (any real number; α = −1 is the log-uniform).
    low, high : a < b, the bounds (held with ``--fix`` or given hyperpriors).
    """

    name = "powerlaw"
    hyperparameters = ("alpha", "low", "high")
    domains = {"low": (0.0, np.inf), "high": (0.0, np.inf)}
    ordered = (("low", "high"),)

    def log_density(self, theta, hyper):
        x = _x(theta)
        ok = self.valid(hyper)
        alpha = hyper["alpha"]
        low, high = np.where(ok, hyper["low"], 1.0), np.where(ok, hyper["high"], 2.0)
        inside = _in_support(x, low, high) & ok
        xs = np.where(inside, x, 1.0)
        return np.where(inside, alpha * np.log(xs) - _log_powerlaw_norm(alpha, low, high), -np.inf)

    def valid(self, hyper):
        return (hyper["low"] > 0) & (hyper["low"] < hyper["high"])

    def linear_form(self, fixed, center=0.0):
        if "low" not in fixed or "high" not in fixed:
            return None
        low, high = fixed["low"], fixed["high"]

        def features(theta):
            x = theta[..., 0]
            return np.log(np.where(_in_support(x, low, high), x, 1.0))[..., None, :]

        def base(theta):
            return np.where(_in_support(theta[..., 0], low, high), 0.0, -np.inf)

        def coefficients(hyper):
            alpha = hyper["alpha"]
            return alpha[None, :], -_log_powerlaw_norm(alpha, low, high)

        def coefficient_gradients(hyper):
            alpha = hyper["alpha"]
            return {"alpha": (np.ones_like(alpha)[None, :], -_log_powerlaw_norm_gradient(alpha, low, high))}

        return LinearForm(features, base, coefficients, coefficient_gradients)

    def default_hyperpriors(self, scale):
        return {"alpha": "normal(0.0, 5.0)"}

    def marginal(self, hyper, index=0):
        return _PowerLaw(hyper["alpha"], hyper["low"], hyper["high"])


class UniformPopulation(Population):
    """θ ~ Uniform(a, b):  f(θ; a, b) = 1/(b − a) for a ≤ θ ≤ b.

    Hyperparameters
    ---------------
    low : a, the lower bound.
    high : b > a, the upper bound.
    """

    name = "uniform"
    hyperparameters = ("low", "high")
    ordered = (("low", "high"),)

    def log_density(self, theta, hyper):
        x = _x(theta)
        low, high = hyper["low"], hyper["high"]
        ok = low < high
        with np.errstate(invalid="ignore", divide="ignore"):
            width = np.log(np.where(ok, high - low, 1.0))
        return np.where(ok & _in_support(x, low, high), -width, -np.inf)

    def valid(self, hyper):
        return hyper["low"] < hyper["high"]

    def default_hyperpriors(self, scale):
        s = scale[self.parameters[0]]
        return {"low": f"normal({number(s['location'])}, {number(10 * s['spread'])})",
                "high": f"normal({number(s['location'])}, {number(10 * s['spread'])})"}

    def marginal(self, hyper, index=0):
        return stats.uniform(hyper["low"], hyper["high"] - hyper["low"])


class StudentTPopulation(Population):
    """θ ~ Student-t(ν, μ, σ):  f(θ) = t_ν((θ − μ)/σ) / σ, t_ν the standard t density.

    Hyperparameters
    ---------------
    nu : ν > 0, the degrees of freedom (ν → ∞ is the normal).
    mu : μ, the location.
    sigma : σ > 0, the scale.
    """

    name = "studentt"
    hyperparameters = ("nu", "mu", "sigma")
    domains = {"nu": (0.0, np.inf), "sigma": (0.0, np.inf)}

    def log_density(self, theta, hyper):
        ok = self.valid(hyper)
        nu, mu, sigma = np.where(ok, hyper["nu"], 1.0), hyper["mu"], np.where(ok, hyper["sigma"], 1.0)
        z = (_x(theta) - mu) / sigma
        density = (gammaln(0.5 * (nu + 1)) - gammaln(0.5 * nu) - 0.5 * np.log(nu * np.pi) - np.log(sigma)
                   - 0.5 * (nu + 1) * np.log1p(z * z / nu))
        return np.where(ok, density, -np.inf)

    def valid(self, hyper):
        return (hyper["nu"] > 0) & (hyper["sigma"] > 0)

    def log_density_gradient(self, theta, hyper):
        ok = self.valid(hyper)
        nu, mu, sigma = np.where(ok, hyper["nu"], 1.0), hyper["mu"], np.where(ok, hyper["sigma"], 1.0)
        z = (_x(theta) - mu) / sigma
        share = (nu + 1) / (nu + z * z)  # (ν + 1)/(ν + z²)
        d_nu = (0.5 * (digamma(0.5 * (nu + 1)) - digamma(0.5 * nu)) - 0.5 / nu - 0.5 * np.log1p(z * z / nu)
                + 0.5 * share * z * z / nu)
        return {"nu": d_nu, "mu": share * z / sigma, "sigma": (share * z * z - 1.0) / sigma}

    def default_hyperpriors(self, scale):
        return {"nu": "gamma(2.0, 0.1)", **_scale_priors(scale[self.parameters[0]])}

    def marginal(self, hyper, index=0):
        return stats.t(hyper["nu"], hyper["mu"], hyper["sigma"])
