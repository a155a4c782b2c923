"""``mvnormal``: several stage-one parameters jointly normal, with correlations.

Hyperparameters ``mu_<p>``, ``sigma_<p>`` per parameter p and ``rho_<p>_<q>``
per pair p before q (in ``--parameter`` order).
"""

import itertools

import numpy as np
from scipy import stats

from .base import LOG_2PI, LinearForm, Population
from .univariate import _scale_priors


class MvNormalPopulation(Population):
    """θ ~ MultivariateNormal(μ, Σ), Σ = diag(σ) R diag(σ), R the correlation matrix.

    Parameters
    ----------
    parameters : list of str
        The P ≥ 2 stage-one parameters θ_p described (``--parameter``, repeated).

    Hyperparameters
    ---------------
    mu_<p> : μ_p, the mean of parameter p.
    sigma_<p> : σ_p > 0, its standard deviation.
    rho_<p>_<q> : R_pq in (−1, 1), the correlation of p and q (p before q); Σ must be
        positive definite.
    """

    name = "mvnormal"

    def __init__(self, parameters):
        super().__init__(parameters)
        self.n_parameters = len(self.parameters)
        self.pairs = list(itertools.combinations(range(self.n_parameters), 2))
        self.hyperparameters = tuple(
            [f"mu_{p}" for p in self.parameters] + [f"sigma_{p}" for p in self.parameters]
            + [f"rho_{self.parameters[i]}_{self.parameters[j]}" for i, j in self.pairs])

    def _moments(self, hyper):
        """(mu (W, P), precision (W, P, P), log|Σ| (W,), ok (W,))."""
        P = self.n_parameters
        mu = np.stack([hyper[f"mu_{p}"] for p in self.parameters], axis=-1)
        sigma = np.stack([hyper[f"sigma_{p}"] for p in self.parameters], axis=-1)
        corr = np.broadcast_to(np.eye(P), mu.shape[:1] + (P, P)).copy()
        for i, j in self.pairs:
            rho = hyper[f"rho_{self.parameters[i]}_{self.parameters[j]}"]
            corr[:, i, j] = corr[:, j, i] = rho
        ok = np.all(sigma > 0, axis=-1)
        eigen = np.linalg.eigvalsh(corr)
        ok &= eigen.min(axis=-1) > 1e-12
        corr[~ok] = np.eye(P)
        sigma = np.where(ok[:, None], sigma, 1.0)
        covariance = corr * sigma[:, :, None] * sigma[:, None, :]
        precision = np.linalg.inv(covariance)
        log_det = np.linalg.slogdet(covariance)[1]
        return mu, precision, log_det, ok

    def domain(self, name):
        if name.startswith("sigma_"):
            return 0.0, np.inf
        if name.startswith("rho_"):
            return -1.0, 1.0
        return -np.inf, np.inf

    def valid(self, hyper):
        return self._moments(hyper)[3]

    def log_density(self, theta, hyper):
        mu, precision, log_det, ok = self._moments(hyper)
        d = theta[:, :, None, :] - mu  # (n, K, W, P)
        quadratic = np.einsum("nkwi,wij,nkwj->nkw", d, precision, d)
        density = -0.5 * quadratic - 0.5 * log_det - 0.5 * self.n_parameters * LOG_2PI
        return np.where(ok, density, -np.inf)

    def linear_form(self, fixed, center=0.0):
        P = self.n_parameters
        center = np.broadcast_to(np.asarray(center, dtype=float), (P,))
        upper = [(i, j) for i in range(P) for j in range(i, P)]

        def features(theta):
            x = theta - center
            return np.stack([x[..., i] * x[..., j] for i, j in upper] + [x[..., i] for i in range(P)], axis=-2)

        def coefficients(hyper):
            mu, precision, log_det, ok = self._moments(hyper)
            m = mu - center
            quadratic = [np.where(i == j, -0.5, -1.0) * precision[:, i, j] for i, j in upper]
            linear = np.einsum("wij,wj->wi", precision, m)
            offset = -0.5 * np.einsum("wi,wi->w", m, linear) - 0.5 * log_det - 0.5 * P * LOG_2PI
            eta = np.concatenate([np.stack(quadratic), linear.T])
            return eta, np.where(ok, offset, -np.inf)

        def coefficient_gradients(hyper):
            # dΣ per hyperparameter, then dΣ⁻¹ = −Σ⁻¹ dΣ Σ⁻¹ and d ln|Σ| = tr(Σ⁻¹ dΣ).
            mu, precision, _, ok = self._moments(hyper)
            m = mu - center
            sigma = np.stack([np.where(ok, hyper[f"sigma_{p}"], 1.0) for p in self.parameters], axis=-1)
            covariance = np.linalg.inv(precision)
            correlation = covariance / (sigma[:, :, None] * sigma[:, None, :])
            n_walkers = len(mu)
            gradients = {}
            for index, p in enumerate(self.parameters):
                d_mu = np.zeros((n_walkers, P))
                d_mu[:, index] = 1.0
                gradients[f"mu_{p}"] = (d_mu, None)
                d_cov = np.zeros((n_walkers, P, P))
                d_cov[:, index, :] += correlation[:, index, :] * sigma
                d_cov[:, :, index] += sigma * correlation[:, :, index]
                gradients[f"sigma_{p}"] = (None, d_cov)
            for i, j in self.pairs:
                d_cov = np.zeros((n_walkers, P, P))
                d_cov[:, i, j] = d_cov[:, j, i] = sigma[:, i] * sigma[:, j]
                gradients[f"rho_{self.parameters[i]}_{self.parameters[j]}"] = (None, d_cov)
            out = {}
            linear = np.einsum("wij,wj->wi", precision, m)
            for name, (d_mu, d_cov) in gradients.items():
                if d_cov is None:
                    d_linear = np.einsum("wij,wj->wi", precision, d_mu)
                    d_quadratic = [np.zeros(n_walkers) for _ in upper]
                    d_offset = -np.einsum("wi,wi->w", d_mu, linear)
                else:
                    d_precision = -np.einsum("wij,wjk,wkl->wil", precision, d_cov, precision)
                    d_linear = np.einsum("wij,wj->wi", d_precision, m)
                    d_quadratic = [np.where(i == j, -0.5, -1.0) * d_precision[:, i, j] for i, j in upper]
                    d_offset = (-0.5 * np.einsum("wi,wij,wj->w", m, d_precision, m)
                                - 0.5 * np.einsum("wij,wji->w", precision, d_cov))
                out[name] = (np.concatenate([np.stack(d_quadratic), d_linear.T]), d_offset)
            return out

        return LinearForm(features, lambda theta: np.zeros(theta.shape[:-1]), coefficients, coefficient_gradients)

    def default_hyperpriors(self, scale):
        priors = {}
        for p in self.parameters:
            base = _scale_priors(scale[p])
            priors[f"mu_{p}"], priors[f"sigma_{p}"] = base["mu"], base["sigma"]
        for i, j in self.pairs:
            priors[f"rho_{self.parameters[i]}_{self.parameters[j]}"] = "uniform(-1.0, 1.0)"
        return priors

    def marginal(self, hyper, index=0):
        p = self.parameters[index]
        return stats.norm(hyper[f"mu_{p}"], hyper[f"sigma_{p}"])
