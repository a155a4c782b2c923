"""Unconstrained coordinates of the hyperparameters, for gradient-based samplers.

Each sampled hyperparameter x gets a coordinate u on the whole real line, chosen from
its hyperprior's support (README, "Samplers"):

| support | x(u) | ln |dx/du| |
|---|---|---|
| (−∞, ∞) | u | 0 |
| (a, ∞) | a + eᵘ | u |
| (−∞, b) | b − eᵘ | u |
| (a, b) | a + (b − a) σ(u), σ the logistic function | ln(b − a) + ln σ(u) + ln σ(−u) |

The density of u is p(x(u)) |dx/du| (change of variables), so a sampler of u that
targets ln p(x(u) | data) + ln |dx/du| draws x from p(x | data)
(Stan Reference Manual, "Constraint transforms").

:class:`UnconstrainedPosterior` is ln p(u | data) and its gradient. It asks the
likelihood for ln L̂ and its gradient only through
``likelihood.ln_likelihood_and_gradient(values)`` (values in ``posterior.names``
order), or ``ln_likelihood_and_gradients`` for several points at once where the
likelihood offers it, so any object offering the first (the numpy kernel, an
autodiff backend) serves here. (The NUTS sampler also asks the likelihood for
``thinned(step)`` and ``close()``; a likelihood without thinning returns itself.)
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from scipy.special import expit


@dataclass(frozen=True)
class Transform:
    """x(u) of one hyperparameter, from its support (low, high), either end possibly infinite.

    Attributes
    ----------
    low, high : float
        The support of x.
    """

    low: float
    high: float

    @property
    def kind(self):
        """``identity``, ``log`` (a, ∞), ``negative-log`` (−∞, b) or ``logit`` (a, b)."""
        finite_low, finite_high = math.isfinite(self.low), math.isfinite(self.high)
        if finite_low and finite_high:
            return "logit"
        if finite_low:
            return "log"
        if finite_high:
            return "negative-log"
        return "identity"

    def to_constrained(self, u):
        """x(u) (±inf where eᵘ overflows: the density is 0 there)."""
        u = np.asarray(u, dtype=float)
        kind = self.kind
        with np.errstate(over="ignore"):
            if kind == "identity":
                return u.copy()
            if kind == "log":
                return self.low + np.exp(u)
            if kind == "negative-log":
                return self.high - np.exp(u)
            return self.low + (self.high - self.low) * expit(u)

    def to_unconstrained(self, x):
        """u(x), the inverse of :meth:`to_constrained` (±inf at a finite end of the support)."""
        x = np.asarray(x, dtype=float)
        kind = self.kind
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "identity":
                return x.copy()
            if kind == "log":
                return np.log(x - self.low)
            if kind == "negative-log":
                return np.log(self.high - x)
            return np.log(x - self.low) - np.log(self.high - x)

    def log_jacobian(self, u):
        """ln |dx/du|."""
        u = np.asarray(u, dtype=float)
        kind = self.kind
        if kind == "identity":
            return np.zeros_like(u)
        if kind in ("log", "negative-log"):
            return u.copy()
        # ln σ(u) + ln σ(−u) = −softplus(−u) − softplus(u)
        return math.log(self.high - self.low) - np.logaddexp(0.0, u) - np.logaddexp(0.0, -u)

    def derivative(self, u):
        """dx/du."""
        u = np.asarray(u, dtype=float)
        kind = self.kind
        if kind == "identity":
            return np.ones_like(u)
        with np.errstate(over="ignore"):
            if kind == "log":
                return np.exp(u)
            if kind == "negative-log":
                return -np.exp(u)
        return (self.high - self.low) * expit(u) * expit(-u)

    def log_jacobian_gradient(self, u):
        """d ln |dx/du| / du."""
        u = np.asarray(u, dtype=float)
        kind = self.kind
        if kind == "identity":
            return np.zeros_like(u)
        if kind in ("log", "negative-log"):
            return np.ones_like(u)
        return expit(-u) - expit(u)


def transform_for(distribution):
    """The :class:`Transform` of a hyperprior (a :class:`~popinfer.distributions.Distribution`)."""
    low, high = distribution.support
    return Transform(float(low), float(high))


class UnconstrainedPosterior:
    """ln p(u | data) = ln p(x(u) | data) + Σ_h ln |dx_h/du_h| and its gradient.

    Parameters
    ----------
    posterior : popinfer.reweighting.posterior.HyperPosterior
        Its ``priors`` give the transforms and the prior's gradient; its ``likelihood``
        gives ln L̂ and d ln L̂/dx through ``ln_likelihood_and_gradient`` only.
    """

    def __init__(self, posterior):
        self.posterior = posterior
        self.names = list(posterior.names)
        self.priors = list(posterior.priors)
        self.transforms = [transform_for(prior) for prior in self.priors]
        self.likelihood = posterior.likelihood
        self.evaluations = 0
        self._count = threading.Lock()  # concurrent chains evaluate from several threads
        # The transforms of all coordinates at once (one pass of numpy per evaluation).
        kinds = np.array([t.kind for t in self.transforms])
        self._log = kinds == "log"
        self._negative_log = kinds == "negative-log"
        self._logit = kinds == "logit"
        self._identity = kinds == "identity"
        self._low = np.array([t.low if np.isfinite(t.low) else 0.0 for t in self.transforms])
        self._high = np.array([t.high if np.isfinite(t.high) else 0.0 for t in self.transforms])
        self._width = np.where(self._logit, self._high - self._low, 1.0)

    @property
    def n_dim(self):
        return len(self.names)

    def to_constrained(self, u):
        """x of ``u`` (..., H)."""
        u = np.asarray(u, dtype=float)
        return np.stack([t.to_constrained(u[..., i]) for i, t in enumerate(self.transforms)], axis=-1)

    def to_unconstrained(self, x):
        """u of ``x`` (..., H)."""
        x = np.asarray(x, dtype=float)
        return np.stack([t.to_unconstrained(x[..., i]) for i, t in enumerate(self.transforms)], axis=-1)

    def _transform(self, u):
        """x(u), dx/du, Σ ln |dx/du| and d ln |dx/du|/du at points ``u`` (W, H) (the table of the
        module docstring), elementwise: a point's numbers do not depend on the others."""
        with np.errstate(over="ignore"):
            exp_u = np.exp(u)
        sigmoid, complement = expit(u), expit(-u)
        x = np.where(self._log, self._low + exp_u, np.where(self._negative_log, self._high - exp_u, np.where(
            self._logit, self._low + self._width * sigmoid, u)))
        derivative = np.where(self._log, exp_u, np.where(self._negative_log, -exp_u, np.where(
            self._logit, self._width * sigmoid * complement, 1.0)))
        log_jacobian = np.where(self._logit, np.log(self._width) - np.logaddexp(0.0, u) - np.logaddexp(0.0, -u),
                                np.where(self._identity, 0.0, u))
        log_jacobian_gradient = np.where(self._logit, complement - sigmoid, np.where(self._identity, 0.0, 1.0))
        return x, derivative, log_jacobian.sum(axis=-1), log_jacobian_gradient

    def log_density_and_gradient(self, u):
        """(ln p(u | data), d ln p/du (H,)) at one point ``u`` (H,); (−inf, zeros) where the
        prior or the likelihood vanishes."""
        values, gradients = self.log_density_and_gradients(np.asarray(u, dtype=float)[None, :])
        return float(values[0]), gradients[0]

    def log_density_and_gradients(self, points):
        """:meth:`log_density_and_gradient` at W points (W, H), with one likelihood call for all of
        them: (W,), (W, H). Each point's numbers are those it gets alone (elementwise arithmetic,
        and the likelihood's ``ln_likelihood_and_gradients`` keeps them so)."""
        points = np.asarray(points, dtype=float).reshape(-1, self.n_dim)
        with self._count:
            self.evaluations += len(points)
        x, derivative, log_jacobian, log_jacobian_gradient = self._transform(points)
        log_prior = np.zeros(len(points))
        with np.errstate(over="ignore", invalid="ignore"):
            for i, prior in enumerate(self.priors):
                log_prior = log_prior + prior.logpdf(x[:, i])
        values, gradients = np.full(len(points), -math.inf), np.zeros_like(points)
        live = np.flatnonzero(np.isfinite(log_prior))
        if not live.size:
            return values, gradients
        # At the far ends of u, x can round to a point (σ = 1e-320) where the population's
        # formulas overflow: ln L̂ is then not finite, and the point is rejected.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            ln_likelihood, gradient = self._likelihood(x[live])
        ln_likelihood = np.asarray(ln_likelihood, dtype=float)
        gradient = np.asarray(gradient, dtype=float).reshape(len(live), self.n_dim)
        finite = np.isfinite(ln_likelihood) & np.all(np.isfinite(gradient), axis=1)
        rows = live[finite]
        prior_gradient = np.stack([prior.logpdf_gradient(x[rows, i]) for i, prior in enumerate(self.priors)], axis=1)
        values[rows] = log_prior[rows] + ln_likelihood[finite] + log_jacobian[rows]
        gradients[rows] = (gradient[finite] + prior_gradient) * derivative[rows] + log_jacobian_gradient[rows]
        return values, gradients

    def _likelihood(self, x):
        """ln L̂ and d ln L̂/dx at the points ``x`` (W, H): in one call where the likelihood takes
        several points (``ln_likelihood_and_gradients``), else point by point."""
        if hasattr(self.likelihood, "ln_likelihood_and_gradients"):
            return self.likelihood.ln_likelihood_and_gradients(x)
        pairs = [self.likelihood.ln_likelihood_and_gradient(point) for point in x]
        return [value for value, _ in pairs], [gradient for _, gradient in pairs]
