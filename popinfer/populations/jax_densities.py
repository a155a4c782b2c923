"""JAX log densities of the populations, for the JAX backend (the ``jax`` extra).

Each is ln f(θ; α) in the convention of :meth:`Population.log_density`: θ of shape
(n, K, P), ``hyper`` a dict of hyperparameter name -> array (W,), the result
(n, K, W), −inf outside the support. For gradients in reverse mode (more than
three sampled hyperparameters) the kernel passes each object its own copy of α,
arrays (n, 1, W): the densities are elementwise, so they broadcast either way.
They are traced by ``jax.jit`` and differentiated by ``jax.linearize`` or ``jax.grad``,
so they use ``jax.numpy`` only; the kernel
(``reweighting.jax_backend``) hands them valid hyperparameters only (it decides
validity with the population's own numpy ``valid``, so both backends agree on it),
and draws outside the support are replaced by a harmless value before any log is
taken, so that gradients stay finite (the "double where").

A user population (``--population file.py:function``) written with ``jax.numpy``
instead of ``numpy`` runs here unchanged: the same function is traced with JAX
arrays.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy import stats
from jax.scipy.special import betaln, gammaln

from ..errors import UsageError
from .base import LOG_2PI
from .univariate import _log_powerlaw_norm


def _x(theta):
    """The single parameter of θ (n, K, 1) as (n, K, 1), ready to broadcast over walkers."""
    return theta[..., 0][..., None]


def _in_support(x, low, high):
    return (x >= low) & (x <= high)


def normal(theta, hyper):
    """Normal(μ, σ)."""
    return stats.norm.logpdf(_x(theta), hyper["mu"], hyper["sigma"])


def truncnormal(theta, hyper):
    """Normal(μ, σ) truncated to [low, high]."""
    mu, sigma, low, high = hyper["mu"], hyper["sigma"], hyper["low"], hyper["high"]
    x = _x(theta)
    inside = _in_support(x, low, high)
    xs = jnp.where(inside, x, jnp.clip(mu, low, high))
    density = stats.truncnorm.logpdf(xs, (low - mu) / sigma, (high - mu) / sigma, mu, sigma)
    return jnp.where(inside, density, -jnp.inf)


def lognormal(theta, hyper):
    """ln θ ~ Normal(μ, σ): N(ln θ; μ, σ)/θ for θ > 0."""
    x = _x(theta)
    positive = x > 0
    log_x = jnp.log(jnp.where(positive, x, 1.0))
    return jnp.where(positive, stats.norm.logpdf(log_x, hyper["mu"], hyper["sigma"]) - log_x, -jnp.inf)


def beta(theta, hyper):
    """Beta(a, b) on the open interval (0, 1)."""
    x = _x(theta)
    inside = (x > 0) & (x < 1)
    xs = jnp.where(inside, x, 0.5)
    a, b = hyper["a"], hyper["b"]
    density = (a - 1) * jnp.log(xs) + (b - 1) * jnp.log1p(-xs) - betaln(a, b)
    return jnp.where(inside, density, -jnp.inf)


def gamma(theta, hyper):
    """Gamma(shape k, rate λ): λ^k θ^(k−1) e^(−λθ)/Γ(k) for θ > 0."""
    x = _x(theta)
    positive = x > 0
    xs = jnp.where(positive, x, 1.0)
    shape, rate = hyper["shape"], hyper["rate"]
    density = shape * jnp.log(rate) - gammaln(shape) + (shape - 1) * jnp.log(xs) - rate * xs
    return jnp.where(positive, density, -jnp.inf)


def powerlaw(theta, hyper):
    """θ^α / ∫_low^high t^α dt on [low, high]."""
    alpha, low, high = hyper["alpha"], hyper["low"], hyper["high"]
    x = _x(theta)
    inside = _in_support(x, low, high)
    xs = jnp.where(inside, x, 1.0)
    return jnp.where(inside, alpha * jnp.log(xs) - _log_powerlaw_norm(alpha, low, high, jnp), -jnp.inf)


def uniform(theta, hyper):
    """Uniform(low, high)."""
    low, high = hyper["low"], hyper["high"]
    return jnp.where(_in_support(_x(theta), low, high), -jnp.log(high - low), -jnp.inf)


def studentt(theta, hyper):
    """Student-t(ν, μ, σ) (the normalisation computed once per α, not per draw)."""
    nu, sigma = hyper["nu"], hyper["sigma"]
    z = (_x(theta) - hyper["mu"]) / sigma
    constant = gammaln(0.5 * (nu + 1)) - gammaln(0.5 * nu) - 0.5 * jnp.log(nu * jnp.pi) - jnp.log(sigma)
    return constant - 0.5 * (nu + 1) * jnp.log1p(z * z / nu)


def mixture(theta, hyper):
    """w N(μ₁, σ₁) + (1 − w) N(μ₂, σ₂)."""
    x, weight = _x(theta), hyper["weight"]
    first = jnp.log(weight) + stats.norm.logpdf(x, hyper["mu1"], hyper["sigma1"])
    second = jnp.log(1 - weight) + stats.norm.logpdf(x, hyper["mu2"], hyper["sigma2"])
    return jnp.logaddexp(first, second)


def mvnormal(population):
    """MultivariateNormal(μ, diag(σ) R diag(σ)) of ``population.parameters`` (a closure over their names)."""
    names = population.parameters
    n_parameters = len(names)
    pairs = population.pairs

    def log_density(theta, hyper):
        # α arrays of any shape that broadcasts against θ's (n, K) (the kernel's (W,) or (n, 1, W))
        mu = jnp.stack([hyper[f"mu_{p}"] for p in names], axis=-1)  # (..., P)
        sigma = jnp.stack([hyper[f"sigma_{p}"] for p in names], axis=-1)
        corr = jnp.broadcast_to(jnp.eye(n_parameters), mu.shape + (n_parameters,))
        for i, j in pairs:
            rho = hyper[f"rho_{names[i]}_{names[j]}"]
            corr = corr.at[..., i, j].set(rho).at[..., j, i].set(rho)
        covariance = corr * sigma[..., :, None] * sigma[..., None, :]
        precision = jnp.linalg.inv(covariance)
        log_det = jnp.linalg.slogdet(covariance)[1]
        d = theta[..., None, :] - mu  # (n, K, W, P)
        quadratic = jnp.einsum("...i,...ij,...j->...", d, precision, d)
        return -0.5 * quadratic - 0.5 * log_det - 0.5 * n_parameters * LOG_2PI

    return log_density


# Hyperparameters that move a built-in's support: ln L̂ jumps where a draw crosses the bound, so
# its derivative says nothing there (the kernel refuses gradients with them sampled, as numpy does).
SUPPORT_BOUNDS = {"truncnormal": ("low", "high"), "powerlaw": ("low", "high"), "uniform": ("low", "high")}

BUILTIN = {"normal": normal, "truncnormal": truncnormal, "lognormal": lognormal, "beta": beta, "gamma": gamma,
           "powerlaw": powerlaw, "uniform": uniform, "studentt": studentt, "mixture": mixture}


def _user(population):
    function = population.function
    parameters = population.parameters

    def log_density(theta, hyper):
        named = {p: theta[..., i][..., None] for i, p in enumerate(parameters)}
        shape = jnp.broadcast_shapes(theta.shape[:2] + (1,), *(jnp.shape(value) for value in hyper.values()))
        return jnp.broadcast_to(function(named, hyper), shape)

    return log_density


def jax_log_density(population):
    """The JAX log density of ``population`` (a :class:`Population`).

    Raises
    ------
    UsageError
        A population without a JAX version (a user population is assumed to be
        written in ``jax.numpy``; the kernel checks that it traces).
    """
    from . import BUILTIN_POPULATIONS
    from .mvnormal import MvNormalPopulation
    from .user import UserPopulation

    if isinstance(population, UserPopulation):
        return _user(population)
    if isinstance(population, MvNormalPopulation):
        return mvnormal(population)
    if population.name in BUILTIN and type(population) is BUILTIN_POPULATIONS[population.name]:
        return BUILTIN[population.name]
    raise UsageError(f"Population {population.name!r} has no JAX version: use --backend numpy.", "--backend")
