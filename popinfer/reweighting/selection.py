"""The selection term of stage two: a survey's detection efficiency ξ(α), from injections.

    ln L(α) = Σ_n ln[(1/K) Σ_k w_nk] − N ln ξ(α),  ξ(α) = ∫ P_det(θ) f(θ; α) dθ   (Loredo 2004; Mandel, Farr & Gair 2019)
    ξ̂(α) = (1/M_total) Σ_j v_j,  v_j = f(θ_j; α) / p_draw(θ_j) over the M detected injections   (Farr 2019, eq. 5)
    Var[ξ̂]/ξ̂² = Σ_j v_j² / (Σ_j v_j)² − 1/M_total,  N_eff,sel = ξ̂² / Var[ξ̂]                   (Farr 2019, eq. 9)
    Var[ln L̂] gains N² Var[ξ̂]/ξ̂²                                                              (Talbot & Golomb 2023)

The injections are one more "object" of the stage-two kernel, whose interim prior
is p_draw: they are cut into pseudo-objects of at most ``ROWS_PER_BLOCK`` rows
(so the kernel's chunks and threads apply), and the blocks' sums are combined in
log space. Given ξ̂, the rate R (objects per unit observing time T) has, under a
1/R prior, the conditional posterior Gamma(N, ξ T) (Mandel, Farr & Gair 2019, eq. 12).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from .likelihood import HyperLikelihood

ROWS_PER_BLOCK = 1024
# Farr (2019): the selection estimate is unreliable when N_eff,sel < 4 N.
EFFECTIVE_PER_OBJECT = 4.0


def selection_statistics(ln_sum_weights, ln_sum_squares, n_total):
    """ln ξ̂, Var[ξ̂]/ξ̂² and N_eff,sel from the injections' weight sums.

    Parameters
    ----------
    ln_sum_weights : array
        ln Σ_j v_j over the detected injections (−inf where every v_j = 0).
    ln_sum_squares : array
        ln Σ_j v_j².
    n_total : int
        M_total, injections drawn in all.

    Returns
    -------
    ln_efficiency, relative_variance, effective_draws : arrays
        ln ξ̂ (−inf where ξ̂ = 0), Var[ξ̂]/ξ̂² (inf there) and ξ̂²/Var[ξ̂] (0 there).
    """
    ln_sum_weights = np.asarray(ln_sum_weights, dtype=float)
    ln_efficiency = ln_sum_weights - math.log(n_total)
    finite = np.isfinite(ln_sum_weights)
    with np.errstate(over="ignore", invalid="ignore"):
        ratio = np.exp(np.asarray(ln_sum_squares, dtype=float) - 2.0 * ln_sum_weights)
    # Σ v² / (Σ v)² ≥ 1/M ≥ 1/M_total; the floor guards round-off when every v_j is equal.
    relative_variance = np.where(finite, np.maximum(ratio - 1.0 / n_total, 0.0), np.inf)
    with np.errstate(divide="ignore"):
        effective_draws = np.where(finite, 1.0 / relative_variance, 0.0)
    return ln_efficiency, relative_variance, effective_draws


def _blocked(injections):
    """θ (B, rows, P) and ln p_draw (B, rows) of the injections, padded with rows of zero weight."""
    n_detected, n_parameters = injections.theta.shape
    n_blocks = -(-n_detected // ROWS_PER_BLOCK)
    rows = -(-n_detected // n_blocks)
    pad = n_blocks * rows - n_detected
    theta = np.concatenate([injections.theta, np.repeat(injections.theta[:1], pad, axis=0)])
    # ln p_draw = +inf makes the padding's weight f/p_draw exactly zero.
    log_draw_prior = np.concatenate([injections.log_draw_prior, np.full(pad, np.inf)])
    return theta.reshape(n_blocks, rows, n_parameters), log_draw_prior.reshape(n_blocks, rows)


class SelectionTerm:
    """−N ln ξ̂(α) and its variance N² Var[ξ̂]/ξ̂², vectorised over walkers.

    Parameters
    ----------
    population : popinfer.populations.Population
    injections : popinfer.injections.Injections
        Detected injections of the population's parameters, with ln p_draw and M_total.
    n_objects : int
        N, the detected objects of the survey.
    fixed : dict of str -> float
        Held hyperparameters.
    threads : int, optional
        Threads of the kernel.
    kernel : type
        The kernel's class: :class:`HyperLikelihood`, or a backend's subclass of it.
    """

    def __init__(self, population, injections, n_objects, fixed=None, threads=None, kernel=HyperLikelihood):
        theta, log_draw_prior = _blocked(injections)
        self.kernel = kernel(population, theta, log_draw_prior, fixed, threads, copy=False)
        self.n_objects = int(n_objects)
        self.n_total = int(injections.n_total)
        self.n_detected = injections.n_detected

    def efficiency(self, hyper, variance=True):
        """(ln ξ̂, Var[ξ̂]/ξ̂², N_eff,sel), each (W,), for the hyperparameters ``hyper``
        (the last two None unless ``variance``)."""
        first, squares = self.kernel.per_object(hyper, second=variance)
        with np.errstate(divide="ignore"):
            ln_sum = logsumexp(first, axis=1)
            if not variance:
                return ln_sum - math.log(self.n_total), None, None
            return selection_statistics(ln_sum, logsumexp(squares, axis=1), self.n_total)

    def gradient(self, hyper, names, variance=True):
        """As :meth:`__call__`, plus d(−N ln ξ̂)/dα over ``names``, (W, H): with the injections'
        self-normalised weights ṽ_j, d ln ξ̂/dα = Σ_j ṽ_j ∂ ln f(θ_j; α)/∂α, assembled from the
        blocks' gradients weighted by their shares of Σ_j v_j (the ``gradient`` of a LikelihoodTerm)."""
        first, squares, derivative = self.kernel.per_object_gradient(hyper, names, second=variance)
        with np.errstate(divide="ignore", invalid="ignore"):
            ln_sum = logsumexp(first, axis=1)
            shares = np.where(np.isfinite(ln_sum)[:, None], np.exp(first - ln_sum[:, None]), 0.0)  # (W, B)
        d_ln_efficiency = np.einsum("wb,wbh->wh", shares, derivative)
        if variance:
            ln_efficiency, relative_variance, _ = selection_statistics(ln_sum, logsumexp(squares, axis=1), self.n_total)
        else:
            ln_efficiency, relative_variance = ln_sum - math.log(self.n_total), None
        finite = np.isfinite(ln_efficiency)
        term = np.where(finite, -self.n_objects * ln_efficiency, -np.inf)
        variance_term = None if relative_variance is None else self.n_objects**2 * relative_variance
        return term, variance_term, np.where(finite[:, None], -self.n_objects * d_ln_efficiency, 0.0)

    def __call__(self, hyper, variance=True):
        """(−N ln ξ̂ (W,), N² Var[ξ̂]/ξ̂² (W,) or None unless ``variance``): the term's share
        of ln L̂ and of Var[ln L̂] (a ``LikelihoodTerm`` of :class:`HyperLikelihood`).

        Where ξ̂ = 0 the population cannot produce a detection: the term is −inf.
        """
        ln_efficiency, relative_variance, _ = self.efficiency(hyper, variance)
        term = np.where(np.isfinite(ln_efficiency), -self.n_objects * ln_efficiency, -np.inf)
        return term, None if relative_variance is None else self.n_objects**2 * relative_variance

    def close(self):
        self.kernel.close()


def draw_rates(ln_efficiency, n_objects, observing_time, rng):
    """R ~ Gamma(N, ξ̂ T) per hyperparameter draw (1/R prior), shape like ``ln_efficiency``.

    Parameters
    ----------
    ln_efficiency : array
        ln ξ̂ at each posterior draw.
    n_objects : int
        N detected objects.
    observing_time : float
        T; with T = 1, R is the expected number of objects in all, detected or not.
    rng : numpy.random.Generator
    """
    scale = np.exp(-np.asarray(ln_efficiency, dtype=float)) / observing_time
    return rng.gamma(n_objects, scale)
