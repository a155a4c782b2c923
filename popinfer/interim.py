"""Interim priors of stage one: the factorised p0 of the prior grammar, and the defensive
mixture p0' = λ p0 + (1 − λ) q that ``refine`` fits flagged objects under.

An interim prior offers ``log_density(theta)`` for θ (..., D), returning (..., D): the
log density *as stored* in ``/log_interim_prior``, one column per parameter for a
factorised prior; a joint density sits in the first of its columns (0 in the others,
``joint_columns`` says which), so that summing the described columns always gives the
density stage two divides out. ``sample(rng, size)`` draws (*size, D) from it (to start
the walkers).

Defensive mixture (Hesterberg 1995; Owen & Zhou 2000): with q the population's
posterior predictive, a mixture over hyperparameter draws α_s of a population file,

    p0'(θ) = [λ p0_P(θ_P) + (1 − λ) (1/S) Σ_s f(θ_P; α_s) 1{θ_P ∈ supp p0_P}] · Π_{d∉P} p0_d(θ_d)

over the P parameters the population describes. It is dense where the population is
(so few draws go where f(θ; α) is negligible), and never below λ p0, so the weights
f/p0' stay bounded by f/(λ p0): support is kept wherever p0 had it. q is restricted to
p0's support, so the draws never leave it; p0' then integrates to c ≤ 1 (c = 1 unless
the population reaches outside p0's support), a constant per object that shifts ln L̂
by a constant, as the interim evidence does, and so cancels in the posterior of α.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from .populations.base import LINEAR_FORM_LIMIT

# Hyperparameter draws per q evaluation chunk: rows × S stays under this many elements.
Q_CHUNK_ELEMENTS = 2**21


class FactorisedInterimPrior:
    """p0(θ) = Π_d p0_d(θ_d), one :class:`~popinfer.distributions.Distribution` per column."""

    joint_columns = None

    def __init__(self, priors):
        self.priors = list(priors)

    def sample(self, rng, size):
        return np.stack([np.asarray(p.sample(rng, size=size), dtype=float) for p in self.priors], axis=-1)

    def log_density(self, theta):
        return np.stack([prior.logpdf(theta[..., d]) for d, prior in enumerate(self.priors)], axis=-1)


class DefensiveMixturePrior:
    """p0' = λ p0 + (1 − λ) q over the described columns (see the module docstring).

    Parameters
    ----------
    priors : list of Distribution
        p0_d of every sampled column (D).
    columns : list of int
        Indices of the P described columns (the population's parameters, in its order).
    population : popinfer.populations.Population
        f(θ_P; α).
    hyper : dict of str -> ndarray (S,)
        The α_s of q (held hyperparameters included).
    weight : float
        λ, the share of p0, 0 < λ < 1.
    """

    def __init__(self, priors, columns, population, hyper, weight):
        if not 0.0 < weight < 1.0:
            raise ValueError(f"the defensive weight λ must lie in (0, 1), got {weight}")
        self.priors = list(priors)
        self.columns = list(columns)
        self.population = population
        self.hyper = {name: np.asarray(value, dtype=float) for name, value in hyper.items()}
        self.n_components = len(next(iter(self.hyper.values())))
        self.weight = float(weight)
        self.joint_columns = list(self.columns)
        self._form = self._linear_form()

    # -- q's components ---------------------------------------------------------
    def _linear_form(self):
        """The population's linear form over q's components, with their coefficients η (J, S)
        and offsets A (S,); None when the population has none or a component is not
        admissible (then ln f is the population's density)."""
        if not np.all(self.population.valid(self.hyper)):
            return None
        # Hyperparameters equal in every component are held, as a fit's --fix holds them
        # (e.g. truncnormal's bounds, which its linear form needs held).
        held = {name: float(value[0]) for name, value in self.hyper.items() if np.all(value == value[0])}
        # The features are centred (against cancellation) at the median of each parameter's
        # marginal at the components' median hyperparameters, where the population offers one.
        typical = {name: float(np.median(value)) for name, value in self.hyper.items()}
        center = []
        for index in range(len(self.columns)):
            marginal = self.population.marginal(typical, index)
            median = float(marginal.ppf(0.5)) if hasattr(marginal, "ppf") else 0.0
            center.append(median if math.isfinite(median) else 0.0)
        form = self.population.linear_form(held, np.array(center))
        if form is None:
            return None
        eta, offset = form.coefficients(self.hyper)
        eta = np.asarray(eta, dtype=float)
        offset = np.ascontiguousarray(np.broadcast_to(np.asarray(offset, dtype=float), (self.n_components,)))
        if not (np.all(np.isfinite(eta)) and np.all(np.isfinite(offset))):
            return None
        return form, eta, offset

    def _linear_components(self, rows):
        """ln f(θ_P; α_s) through the linear form for θ_P ``rows`` (n, 1, P), returning (n, S),
        with the magnitude of its terms, Σ_j |T_j| |η_js| + |A_s| (n, S): the rounding error
        that cancellation leaves in ln f is a few 2.2e-16 times it."""
        form, eta, offset = self._form
        features = form.features(rows)[:, :, 0]  # (n, J)
        base = np.asarray(form.base(rows), dtype=float)[:, 0]
        # einsum's own loops, not BLAS: the same sums whatever BLAS's threads (and no
        # threads of BLAS spinning beside the walkers').
        log_f = np.einsum("rj,js->rs", features, eta)
        log_f += offset
        log_f += base[:, None]  # finite terms plus b(θ): −inf outside the support
        magnitude = np.einsum("rj,js->rs", np.abs(features), np.abs(eta))
        magnitude += np.abs(offset)
        return log_f, magnitude

    @staticmethod
    def _own(log_density):
        """ln f (n, 1, S) as an (n, S) array of q's own, which :meth:`_log_mean_exp` may overwrite: a
        population may return a read-only broadcast view (a user's), or an array it keeps."""
        return np.array(log_density[:, 0, :], dtype=float)

    def _log_mean_exp(self, log_f):
        """ln (1/S) Σ_s exp(log_f[:, s]) (n,), shifted by each row's largest term: the same sum as
        scipy's logsumexp, without its copies (this runs at every walker's every step). ``log_f``
        is overwritten by the shifted exponentials: the components' weights within each row."""
        peak = log_f.max(axis=1)
        shift = np.where(np.isfinite(peak), peak, 0.0)
        log_f -= shift[:, None]
        np.exp(log_f, out=log_f)
        with np.errstate(divide="ignore"):
            return np.log(log_f.sum(axis=1)) + shift - math.log(self.n_components)

    # -- densities -------------------------------------------------------------
    def log_predictive(self, theta_described):
        """ln q(θ_P) = ln (1/S) Σ_s f(θ_P; α_s), for θ_P (..., P), returning (...).

        With the population's linear form the components' ln f is one product over the J
        features. ln q's rounding error from cancellation is then at most a few 2.2e-16 times
        the components' term magnitudes averaged with their weights in q: rows where that
        average passes LINEAR_FORM_LIMIT (~1e-11 of error) are computed again from the
        population's own density, as are all rows of a population without a linear form (the
        two agree to 1e-10, tested)."""
        shape = theta_described.shape[:-1]
        flat = theta_described.reshape(-1, 1, theta_described.shape[-1])
        out = np.empty(len(flat))
        rows = max(1, Q_CHUNK_ELEMENTS // self.n_components)
        for lo in range(0, len(flat), rows):
            chunk = flat[lo:lo + rows]  # (n, 1, P): one draw per row
            if self._form is None:
                out[lo:lo + rows] = self._log_mean_exp(self._own(self.population.log_density(chunk, self.hyper)))
                continue
            log_f, magnitude = self._linear_components(chunk)
            values = self._log_mean_exp(log_f)  # log_f now holds the weights
            with np.errstate(invalid="ignore", divide="ignore"):
                typical = np.einsum("rs,rs->r", log_f, magnitude) / log_f.sum(axis=1)
            direct = np.isfinite(values) & ~(typical <= LINEAR_FORM_LIMIT)
            if direct.any():
                values[direct] = self._log_mean_exp(self._own(self.population.log_density(chunk[direct], self.hyper)))
            out[lo:lo + rows] = values
        return out.reshape(shape)

    def log_density(self, theta):
        """ln p0' as stored: factorised columns as such, the joint value in the first described column."""
        theta = np.asarray(theta, dtype=float)
        out = np.stack([prior.logpdf(theta[..., d]) for d, prior in enumerate(self.priors)], axis=-1)
        log_base = out[..., self.columns].sum(axis=-1)  # ln p0_P(θ_P)
        inside = np.isfinite(log_base)
        log_mixture = np.full(log_base.shape, -np.inf)
        if inside.any():
            log_q = self.log_predictive(theta[inside][:, self.columns])
            log_mixture[inside] = np.logaddexp(math.log(self.weight) + log_base[inside],
                                               math.log1p(-self.weight) + log_q)
        out[..., self.columns] = 0.0
        out[..., self.columns[0]] = log_mixture
        return out

    # -- draws -----------------------------------------------------------------
    def sample(self, rng, size):
        """Draws of p0' (to start walkers): p0 with probability λ, else θ_P from f(·; α_s)
        for a random s (through the population's ``marginal``; one-parameter populations).
        Populations without a marginal give p0 draws (the walkers then start from p0's
        likelihood-weighted candidates, as a plain fit does)."""
        theta = np.stack([np.asarray(p.sample(rng, size=size), dtype=float) for p in self.priors], axis=-1)
        from_q = rng.random(size) >= self.weight
        component = rng.integers(self.n_components, size=size)
        if len(self.columns) == 1 and from_q.any():
            chosen = {name: value[component[from_q]] for name, value in self.hyper.items()}
            marginal = self.population.marginal(chosen, 0)
            if marginal is not None:
                theta[..., self.columns[0]][from_q] = marginal.rvs(random_state=rng)
        return theta


def factorised(priors):
    """``priors`` as an interim prior object (a list of distributions is factorised)."""
    return priors if hasattr(priors, "log_density") else FactorisedInterimPrior(priors)


class MixtureSpec:
    """What ``refine`` asks stage one for: p0' built from a population and hyperparameter
    draws, once the sampled columns and their p0 are known (``fit_individuals(...,
    interim_mixture=spec)``).

    Parameters
    ----------
    population : popinfer.populations.Population
    hyper : dict of str -> ndarray (S,)
        α_s (held hyperparameters included).
    weight : float
        λ.
    source : dict
        Provenance of the α_s (the population file's path and SHA-256).
    """

    def __init__(self, population, hyper, weight, source):
        self.population, self.hyper, self.weight, self.source = population, hyper, float(weight), dict(source)

    def build(self, names, priors):
        """The :class:`DefensiveMixturePrior` over the sampled columns ``names`` (p0 ``priors``)."""
        missing = [p for p in self.population.parameters if p not in names]
        if missing:
            raise ValueError(f"the population describes {', '.join(missing)}, which the fit does not sample")
        columns = [list(names).index(p) for p in self.population.parameters]
        return DefensiveMixturePrior(priors, columns, self.population, self.hyper, self.weight)

    def describe(self):
        """Settings entry ``interim_mixture``: λ, S, the population, its parameters, the source."""
        return {"weight": self.weight, "components": len(next(iter(self.hyper.values()))),
                "population": self.population.name, "parameters": list(self.population.parameters),
                "source": self.source}

    def fingerprint(self):
        """A digest of everything that decides p0' (for a resumed run's check)."""
        digest = hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode())
        for name in sorted(self.hyper):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(self.hyper[name], dtype=float).tobytes())
        return digest.hexdigest()

