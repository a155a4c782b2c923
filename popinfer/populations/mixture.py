"""``mixture``: θ ~ weight · Normal(mu1, sigma1) + (1 - weight) · Normal(mu2, sigma2)."""

import numpy as np
from scipy import stats

from .base import LOG_2PI, Population
from .univariate import _scale_priors, _x


class _NormalMixture:
    """Frozen two-normal mixture (cdf), for support checks."""

    def __init__(self, weight, mu1, sigma1, mu2, sigma2):
        self.parts = (weight, stats.norm(mu1, sigma1)), (1.0 - weight, stats.norm(mu2, sigma2))

    def cdf(self, x):
        return sum(w * d.cdf(x) for w, d in self.parts)


class MixturePopulation(Population):
    """A two-component normal mixture:  f(θ) = w N(θ; μ₁, σ₁) + (1 − w) N(θ; μ₂, σ₂).

    ``mu1 < mu2`` is required, which removes label switching.

    Hyperparameters
    ---------------
    weight : w in [0, 1], the first component's share.
    mu1, sigma1 : μ₁ and σ₁ > 0, the first component's location and scale.
    mu2, sigma2 : μ₂ > μ₁ and σ₂ > 0, the second component's.
    """

    name = "mixture"
    hyperparameters = ("weight", "mu1", "sigma1", "mu2", "sigma2")
    domains = {"weight": (0.0, 1.0), "sigma1": (0.0, np.inf), "sigma2": (0.0, np.inf)}
    ordered = (("mu1", "mu2"),)

    def log_density(self, theta, hyper):
        ok = self.valid(hyper)
        x = _x(theta)
        weight = np.where(ok, hyper["weight"], 0.5)
        parts = []
        for w, mu, sigma in ((weight, hyper["mu1"], hyper["sigma1"]), (1 - weight, hyper["mu2"], hyper["sigma2"])):
            sigma = np.where(ok, sigma, 1.0)
            z = (x - mu) / sigma
            parts.append(np.log(w) - 0.5 * z * z - np.log(sigma) - 0.5 * LOG_2PI)
        return np.where(ok, np.logaddexp(*parts), -np.inf)

    def log_density_gradient(self, theta, hyper):
        ok = self.valid(hyper)
        x = _x(theta)
        weight = np.where(ok, hyper["weight"], 0.5)
        parts, scaled = [], []
        for w, mu, sigma in ((weight, hyper["mu1"], hyper["sigma1"]), (1 - weight, hyper["mu2"], hyper["sigma2"])):
            sigma = np.where(ok, sigma, 1.0)
            z = (x - mu) / sigma
            parts.append(np.log(w) - 0.5 * z * z - np.log(sigma) - 0.5 * LOG_2PI)
            scaled.append((z, sigma))
        first = np.exp(parts[0] - np.logaddexp(*parts))  # the first component's responsibility r₁
        gradient = {"weight": first / weight - (1.0 - first) / (1.0 - weight)}
        for index, share in ((1, first), (2, 1.0 - first)):
            z, sigma = scaled[index - 1]
            gradient[f"mu{index}"] = share * z / sigma
            gradient[f"sigma{index}"] = share * (z * z - 1.0) / sigma
        return gradient

    def valid(self, hyper):
        return ((hyper["weight"] > 0) & (hyper["weight"] < 1) & (hyper["sigma1"] > 0) & (hyper["sigma2"] > 0)
                & (hyper["mu1"] < hyper["mu2"]))

    def default_hyperpriors(self, scale):
        base = _scale_priors(scale[self.parameters[0]])
        return {"weight": "uniform(0.0, 1.0)", "mu1": base["mu"], "sigma1": base["sigma"], "mu2": base["mu"],
                "sigma2": base["sigma"]}

    def marginal(self, hyper, index=0):
        return _NormalMixture(*(hyper[k] for k in self.hyperparameters))
