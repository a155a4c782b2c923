"""The Hogg, Myers & Bovy (2010) hyper-likelihood and its importance-sampling diagnostics.

    ln L(α) = Σ_n ln (1/K) Σ_k f(θ_nk; α) / p0(θ_nk)                (HMB 2010, eq. 9)
    ESS_n(α) = (Σ_k w_nk)² / Σ_k w_nk²,  w_nk = f(θ_nk; α) / p0(θ_nk)   (Kish)
    Var[ln L̂](α) ≈ Σ_n (1/ESS_n - 1/K)                               (Talbot & Golomb 2023)

The kernel works on chunks of objects, with all walkers of a call at once while
the chunk is in cache, and in log space throughout: an object's log weights are
shifted by their maximum before exponentiation, so the sum is at least 1 and
ln L can neither overflow nor underflow to a wrong finite number. With a linear
form the shift is skipped (a pass for the maximum and one for the subtraction)
where a bound from the object's feature ranges puts every log weight at or below
DIRECT_LIMIT (300): the weights and their squares then stay within float64's range,
and an object whose unshifted sum falls below e^-300 is taken again with the shift. Populations
with a linear form (see ``populations.base``) cost small matrix products (one per
chunk for a call's walkers; per object, in blocks of POINT_BLOCK points, for a gradient
pass), with the per-draw features computed for the chunk at hand (so memory stays
at the draws themselves, whatever N). Chunks run on the calling thread and a small pool of
helper threads, one thread per core in all (numpy releases the GIL).

Objects may hold different numbers of draws K_n (a ragged samples file, padded to the
largest). The kernel keeps its objects sorted by K_n (stably, so objects with the same
K_n stay in file order) and every chunk spans objects of nearly the same K_n, evaluated
at its own width (its largest K_n): the work is Σ_n K_n, not N·max K_n. Every result is
returned in file order.

:meth:`HyperLikelihood.ln_likelihood_and_variance` is the one place where ln L̂,
the per-object terms, Var[ln L̂] and the ``--max-variance`` cut are assembled;
the posterior, the sampler and the diagnostics all go through it. Further
additive terms of ln L (e.g. a selection term −N ln ξ̂(α)) plug in as
:class:`LikelihoodTerm` objects: each returns its contribution to ln L̂ and to
Var[ln L̂], which are added to the population term's.

Gradients (for gradient-based samplers) come from the same kernel pass: with the
self-normalised weights w̃_nk = w_nk / Σ_k w_nk,

    d ln L̂_n/dα = Σ_k w̃_nk ∂ ln f(θ_nk; α)/∂α
                = E_w̃n[T]·∂η/∂α + ∂A/∂α          for a linear form T(θ)·η(α) + A(α) + b(θ)

(the population supplies ∂η/∂α and ∂A/∂α, or ∂ ln f/∂α per draw; see ``populations.base``).
:meth:`HyperLikelihood.ln_likelihood_and_gradient` is ln L̂ and its gradient at one point,
:meth:`HyperLikelihood.ln_likelihood_and_gradients` at several in one pass, each point's
numbers exactly those it gets alone (chunks that do not depend on the number of points, and
BLAS products of a fixed number of rows, POINT_BLOCK, see ``_linear_points``), so that a
sampler's chains can share passes without changing draws.

``exp_precision="single"`` (``fit-population --exp-precision single``) takes the weights'
exponentials in float32: each shifted log weight x ≤ 0 is rounded to float32 (relative error
≤ 2⁻²⁴, so the weight's ≤ |x|·2⁻²⁴) and numpy's float32 exp adds a few ulp (≤ 2⁻²³ each); the
weight is stored back in float64, and every product, sum and logarithm stays float64. Weights
below float32's normal range (x < −87.3, against the peak's 1) lose their digits. To first
order each object's ln Σ_k w_nk moves by at most Σ_k w_nk (|x_nk|·2⁻²⁴ + 4·2⁻²³) / Σ_k w_nk
+ K·2⁻¹²⁶ (tested): a bound of about 5·10⁻⁷, where the terms measured moved by a median of
5·10⁻⁹ (rounding's signs vary), far below the Monte Carlo error that Var[ln L̂] reports. In exchange the exponential,
the largest share of a pass, is SIMD code on CPUs without AVX-512 (where numpy's float64 exp is
libm's scalar one). The default, ``double``, is float64 throughout.
"""

from __future__ import annotations

import copy
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from ..blocks import object_blocks
from ..errors import GradientUnavailableError
from ..populations.base import LINEAR_FORM_LIMIT  # walkers beyond it use the direct density
CHUNK_ELEMENTS = 2**19
# Gradient passes (a gradient-based sampler's points, one or a few chains' at once): chunks of
# this many draws, whatever the number of points, so that a point's numbers do not depend on
# it (measured fastest for 1 and 4 points on N = 10³, K = 10³; again for 4 points with the BLAS
# blocks below, against 2^14 to 2^18).
POINT_CHUNK_ELEMENTS = 2**17
# ... and the linear form's points in blocks of exactly this many (padded): a BLAS product's
# rounding may depend on its number of rows, so every block has the same (see _linear_points).
POINT_BLOCK = 4
# Log weights Σ_j η_j T_j + b whose bound (from each object's feature ranges) is at most
# DIRECT_LIMIT are exponentiated without the shift by their peak (weights ≤ e^300, squares
# ≤ e^600, and their sums over K ≤ 10⁶ draws ≤ e^614: no overflow); where the weights' sum then
# falls below DIRECT_FLOOR the object is evaluated again with the shift (a sum ≥ e^-300 keeps the
# largest weight ≥ e^-300/K, whose square stays a normal float64 for K < e^54).
DIRECT_LIMIT = 300.0
DIRECT_FLOOR = float(np.exp(-DIRECT_LIMIT))
OUTSIDE = -1e300
# Work of at least this many object·draw·walker elements is shared among the threads (≈ 0.1 ms
# of the kernel with AVX-512, ≈ 1 ms without).
PARALLEL_MIN_ELEMENTS = 2**17
# Gradient-based samplers evaluate one or a few points per call, where recomputing the features
# per call is a large share of the work (≈ 40 % more time for beta's logarithms): they are then kept, up to this size.
# (Not for emcee's calls: there they cost 1.1–1.3× a call at N = K = 10³, but keeping them would
# break stage two's memory of the draws plus a constant, which tests/test_stage_two_scale.py holds.)
FEATURE_CACHE_BYTES = 256 * 2**20
# Pooling draws one index per object and walker by inverse CDF in two steps: over blocks of
# this many draws, then within the chosen block (a cumulative sum over all K cost 2-3× as much).
RESAMPLE_BLOCK = 64
# exp_precision: the float type of the weights' exponentials (module docstring).
EXP_PRECISIONS = {"double": None, "single": np.float32}


class LikelihoodTerm(Protocol):
    """An additive term of ln L(α) with its own Monte Carlo variance (the extension point).

    ``term(hyper, variance)`` receives the hyperparameter dict (each value an array
    (W,), fixed ones included) of walkers whose population term is finite, and
    returns ``(ln_term, variance_term)``, two arrays (W,): its contribution to
    ln L̂(α) (−inf where α is impossible for it) and to Var[ln L̂](α) (0 for an exact
    term; it may be None when ``variance`` is False, i.e. not asked for, which
    spares the work). Example: a selection term returns (−N ln ξ̂(α), N² Var[ξ̂]/ξ̂²).
    Terms are handed to :class:`HyperLikelihood` (``terms=[...]``).
    """

    def __call__(self, hyper: dict, variance: bool = True) -> tuple: ...

    # Optional: a term with gradients also offers
    #   gradient(hyper, names, variance=True) -> (ln_term (W,), variance_term (W,) or None, d ln_term/dα (W, H)),
    # the derivative over the hyperparameters ``names`` (in that column order). A term
    # without it makes gradient-based samplers refuse the run (GradientUnavailableError).


@dataclass
class LikelihoodEstimate:
    """ln L̂(α) and its diagnostics for W hyperparameter vectors.

    Attributes
    ----------
    ln_likelihood : ndarray, shape (W,)
        ln L̂ = Σ_n [ln Σ_k w_nk − ln K] + Σ of the additional terms; −inf where α
        is invalid or (with the cut) where Var[ln L̂] exceeds ``max_variance``.
    ln_sum_weights : ndarray, shape (W, N)
        ln Σ_k w_nk of every object (the per-object term, before − ln K).
    ln_sum_squared_weights : ndarray, shape (W, N), or None
        ln Σ_k w_nk², when the variance was asked for.
    ess : ndarray, shape (W, N), or None
        ESS_n = (Σ_k w_nk)² / Σ_k w_nk² (0 where α is invalid).
    ln_likelihood_variance : ndarray, shape (W,), or None
        Var[ln L̂] ≈ Σ_n (1/ESS_n − 1/K) + Σ of the additional terms' variances.
    gradient : ndarray, shape (W, H), or None
        d ln L̂/dα over the hyperparameters asked for (0 where ln L̂ is −inf).
    """

    ln_likelihood: np.ndarray
    ln_sum_weights: np.ndarray
    ln_sum_squared_weights: Optional[np.ndarray] = None
    ess: Optional[np.ndarray] = None
    ln_likelihood_variance: Optional[np.ndarray] = None
    gradient: Optional[np.ndarray] = None


class HyperLikelihood:
    """ln L(α) of a population over stage-one draws, vectorised over walkers.

    Parameters
    ----------
    population : popinfer.populations.Population
    theta : ndarray, shape (N, K, P)
        Stage-one draws θ_nk of the P parameters the population describes.
    log_interim_prior : ndarray, shape (N, K)
        ln p0(θ_nk) of those P parameters (the product of their 1-D priors).
    fixed : dict of str -> float
        Held hyperparameters.
    threads : int, optional
        Threads for the chunked kernel (default: the machine's cores).
    copy : bool
        False hands ``log_interim_prior`` over: it is overwritten in place, saving a copy.
    max_variance : float, optional
        V of ``--max-variance``: hyperparameters with Var[ln L̂] > V get ln L = −inf.
    terms : list of LikelihoodTerm, optional
        Further additive terms of ln L (and of its variance), e.g. selection effects.
    draw_counts : ndarray of int, shape (N,), optional
        K_n, each object's own number of draws (default: all K). The padded draws
        k ≥ K_n get weight 0 (their θ is replaced by the object's first draw, in place
        with ``copy=False``), and ln K_n, 1/K_n are the object's own in ln L̂ and Var[ln L̂].
        Objects are evaluated sorted by K_n, each chunk at its own width (the module
        docstring); ``theta`` then holds the draws in that order (:meth:`draws_at` reads
        them by file order).

    exp_precision : {"double", "single"}
        The float type of the weights' exponentials: ``single`` takes them in float32 (module
        docstring: faster where numpy's float64 exp is scalar, ln L̂ within a stated bound).

    Memory: the draws and one (N, K) row (-ln p0, or with a linear form -ln p0 + b(θ))
    are held once (a copy of both when the objects had to be sorted by K_n); everything
    else (features, weights) exists one chunk at a time.
    """

    def __init__(self, population, theta, log_interim_prior, fixed=None, threads=None, copy=True,
                 max_variance=None, terms=(), draw_counts=None, exp_precision="double"):
        if exp_precision not in EXP_PRECISIONS:
            raise ValueError(f"exp_precision must be one of {', '.join(EXP_PRECISIONS)}, got {exp_precision!r}")
        self.exp_precision = exp_precision
        self.population = population
        self.max_variance = max_variance
        self.terms = list(terms)
        self.theta = np.ascontiguousarray(theta, dtype=float)
        self.n_objects, self.n_draws, _ = self.theta.shape
        log_interim_prior = np.asarray(log_interim_prior, dtype=float)
        # With copy=False the caller hands its array over and it is reused in place.
        self.base = np.negative(log_interim_prior, out=None if copy else log_interim_prior)
        self.draw_counts = np.full(self.n_objects, self.n_draws) if draw_counts is None else np.asarray(draw_counts)
        self._log_draws = float(np.sum(np.log(self.draw_counts)))  # Σ_n ln K_n
        self._sort_by_draw_counts()
        self._mask_padding(copy and self._order is None)  # sorting copied the draws already
        self.fixed = dict(fixed or {})
        self.threads = threads or os.cpu_count() or 1
        self._pool = None
        self._feature_cache = None
        self.form = population.linear_form(self.fixed, self._center())
        if self.form is not None:
            # The base row -ln p0 + b(θ) (coefficient 1) is kept in place of -ln p0, floored at
            # OUTSIDE outside the support: a finite floor keeps inf out of the matrix product
            # (BLAS flags inf arithmetic), and peaks at the floor mean -inf. The features are
            # computed per chunk, never for all draws at once: memory stays at the draws.
            # Their largest magnitudes bound the cancellation error.
            # Each object's feature ranges and largest base term bound its log weights (see DIRECT_LIMIT).
            scale = None
            n_features = self.form.features(self.theta[:1, :1]).shape[1]
            self._feature_low, self._feature_high = np.full((2, self.n_objects, n_features), np.nan)  # nan: no bound
            self._base_peak = np.full(self.n_objects, np.nan)
            for lo, hi in self._blocks():
                theta = self.theta[lo:hi]
                block = self.base[lo:hi]
                block += self.form.base(theta)
                np.maximum(block, OUTSIDE, out=block)
                features = self.form.features(theta)
                if features.size:
                    self._feature_low[lo:hi], self._feature_high[lo:hi] = features.min(axis=2), features.max(axis=2)
                    self._base_peak[lo:hi] = block.max(axis=1)
                features = np.abs(features)
                block_scale = features.max(axis=(0, 2)) if features.size else np.zeros(features.shape[1])
                scale = block_scale if scale is None else np.maximum(scale, block_scale)
            self.feature_scale = scale

    # -- public ---------------------------------------------------------------
    def hyper(self, names, values):
        """Hyperparameter dict (arrays (W,)) from sampled ``values`` (W, H) and the fixed ones."""
        values = np.atleast_2d(values)
        hyper = {name: values[:, i] for i, name in enumerate(names)}
        for name, value in self.fixed.items():
            hyper[name] = np.full(values.shape[0], value)
        return hyper

    def __call__(self, hyper):
        """ln L̂ for every walker, shape (W,) (no variance cut)."""
        return self.ln_likelihood_and_variance(hyper, variance=False, cut=False).ln_likelihood

    @property
    def sampled_names(self):
        """The population's hyperparameters that are not held fixed, in its order (the column
        order of ``values`` in :meth:`ln_likelihood_and_gradient`)."""
        return [name for name in self.population.hyperparameters if name not in self.fixed]

    def gradient_unavailable(self):
        """None when d ln L̂/dα is available for the sampled hyperparameters; else a sentence saying why not."""
        from ..populations.base import Population

        population = self.population
        linear = self.form is not None and self.form.coefficient_gradients is not None
        direct = type(population).log_density_gradient is not Population.log_density_gradient
        if not (linear or direct):
            held = "" if self.form is not None or not self.fixed else " with these --fix values"
            return (f"the population {population.name!r}{held} has no gradient of ln f(θ; α) with respect to its "
                    f"hyperparameters ({', '.join(self.sampled_names)})")
        return self._term_without_gradient()

    def _term_without_gradient(self):
        """None when every further likelihood term has a gradient; else a sentence naming the one that has not."""
        for term in self.terms:
            if not hasattr(term, "gradient"):
                return f"the likelihood term {type(term).__name__} has no gradient"
        return None

    def ln_likelihood_and_gradient(self, values):
        """ln L̂(α) and d ln L̂/dα at one point, from the same kernel pass.

        Parameters
        ----------
        values : array (H,)
            The sampled hyperparameters α, in :attr:`sampled_names` order (fixed ones are added).

        Returns
        -------
        (float, ndarray (H,))
            ln L̂ (with the additional terms and the ``--max-variance`` cut; −inf where α is
            invalid) and its gradient (zeros where ln L̂ is −inf).

        Raises
        ------
        GradientUnavailableError
            The population or a likelihood term has no gradient (use ``--sampler emcee``).
        """
        values = np.asarray(values, dtype=float).reshape(1, len(self.sampled_names))
        ln_likelihood, gradient = self.ln_likelihood_and_gradients(values)
        return float(ln_likelihood[0]), gradient[0]

    def ln_likelihood_and_gradients(self, values):
        """:meth:`ln_likelihood_and_gradient` at W points in one pass over the draws: (W,), (W, H).

        Each point's numbers are exactly those it gets alone (whatever the other points), so
        chains evaluated together follow the trajectories they follow alone.
        """
        reason = self.gradient_unavailable()
        if reason is not None:
            raise GradientUnavailableError(
                f"--sampler nuts needs the gradient of ln L̂, but {reason}. Use --sampler emcee (or, for a "
                f"user population written in jax.numpy, --backend jax, which differentiates it).", "--sampler")
        names = self.sampled_names
        values = np.asarray(values, dtype=float).reshape(-1, len(names))
        estimate = self.ln_likelihood_and_variance(self.hyper(names, values), variance=False, gradient=names)
        return estimate.ln_likelihood, estimate.gradient

    def ln_likelihood_and_variance(self, hyper, variance=True, cut=True, gradient=None):
        """ln L̂(α), the per-object terms and Var[ln L̂](α) for every walker: the one place
        where they are assembled.

        Parameters
        ----------
        hyper : dict of str -> ndarray (W,)
            Hyperparameters α (fixed ones included), e.g. from :meth:`hyper`.
        variance : bool
            Compute ln Σ_k w_nk², ESS and Var[ln L̂] (needed anyway with a ``max_variance`` cut).
        cut : bool
            Apply ``max_variance`` (ln L̂ = −inf where Var[ln L̂] > V). The diagnostics at
            posterior draws report the estimate itself (``cut=False``).
        gradient : list of str, optional
            Also compute d ln L̂/dα over these hyperparameters (see :meth:`gradient_unavailable`).

        Returns
        -------
        LikelihoodEstimate
        """
        apply_cut = cut and self.max_variance is not None
        first, squares, derivative = self._per_object_in_file_order(hyper, variance or apply_cut, gradient)
        ln_likelihood = first.sum(axis=1) - self._log_draws  # HMB 2010, eq. 9, with each object's own K_n
        estimate = LikelihoodEstimate(ln_likelihood, first, squares)
        if derivative is not None:
            estimate.gradient = np.array([point.sum(axis=0) for point in derivative])  # point by point, (W, H)
        if squares is not None:
            estimate.ess, estimate.ln_likelihood_variance = self.variance(first, squares)
        if self.terms:
            self._add_terms(hyper, estimate, gradient)
        if apply_cut:
            estimate.ln_likelihood = np.where(estimate.ln_likelihood_variance <= self.max_variance,
                                              estimate.ln_likelihood, -np.inf)
        if estimate.gradient is not None:
            estimate.gradient[~np.isfinite(estimate.ln_likelihood)] = 0.0
        return estimate

    def per_object(self, hyper, second=False):
        """ln Σ_k w_nk (and ln Σ_k w_nk² if ``second``), each (W, N); -inf for invalid α."""
        return self._per_object_in_file_order(hyper, second)[:2]

    def per_object_gradient(self, hyper, names, second=False):
        """As :meth:`per_object`, plus d ln Σ_k w_nk/dα over the hyperparameters ``names``, (W, N, H)."""
        return self._per_object_in_file_order(hyper, second, list(names))

    def _per_object_in_file_order(self, hyper, second=False, gradient=None):
        """:meth:`_per_object`'s arrays with the objects (axis 1) put back in file order."""
        return tuple(self._in_file_order(values) for values in self._per_object(hyper, second, gradient))

    def _per_object(self, hyper, second=False, gradient=None):
        n_walkers = len(next(iter(hyper.values())))
        first = np.full((n_walkers, self.n_objects), -np.inf)
        squares = np.full((n_walkers, self.n_objects), -np.inf) if second else None
        derivative = np.zeros((n_walkers, self.n_objects, len(gradient))) if gradient is not None else None
        valid = np.asarray(self.population.valid(hyper), dtype=bool)
        for walkers, linear in self._plan(hyper, valid):
            sub = {k: v[walkers] for k, v in hyper.items()}
            f, s, d = self._evaluate(sub, linear, second, gradient)
            first[walkers] = f
            if second:
                squares[walkers] = s
            if gradient is not None:
                derivative[walkers] = d
        return first, squares, derivative

    def variance(self, first, squares):
        """(ESS (W, N), Var[ln L̂] (W,)) of the population term, from :meth:`per_object` output."""
        with np.errstate(over="ignore", invalid="ignore"):
            ess = np.exp(2.0 * first - squares)
        ess = np.where(np.isfinite(first), ess, 0.0)
        with np.errstate(divide="ignore"):
            var = np.sum(1.0 / ess - 1.0 / self.draw_counts, axis=1)
        return ess, var

    def resample(self, hyper, uniforms, lo=0, hi=None):
        """Indices k of one draw per object lo:hi and walker, drawn ∝ w_nk(α_w), shape (W, hi - lo).

        ``uniforms`` (W, hi - lo) are the uniform variates (inverse-CDF sampling), so
        the result does not depend on threading.
        """
        hi = self.n_objects if hi is None else hi
        # Grouped as in sampling (``_plan``): the walkers the linear form serves use it, only the
        # others the direct density (one walker beyond its range does not send the whole group there).
        out = np.zeros(uniforms.shape, dtype=np.int64)
        for walkers, linear in self._plan(hyper, np.ones(len(uniforms), dtype=bool)):
            sub = {name: np.asarray(value)[walkers] for name, value in hyper.items()}
            out[walkers] = self._resample_group(sub, uniforms[walkers], lo, hi, linear)
        return out

    def _resample_group(self, hyper, uniforms, lo, hi, linear):
        """:meth:`resample` for walkers that all use the linear form (``linear``) or none."""
        out = np.zeros(uniforms.shape, dtype=np.int64)
        eta, offset = self._coefficients(hyper) if linear else (None, None)

        def work(bounds):
            a, b = bounds  # in the kernel's order
            columns = self._file_columns(a, b, lo)
            weights = self._shifted(a, b, hyper, eta, offset)[0]  # (n, W, K_b), worked in place
            index = _inverse_cdf(np.exp(weights, out=weights), uniforms[:, columns].T)
            out[:, columns] = np.minimum(index, self._counts[a:b, None] - 1).T

        chunks = [chunk for a, b in self._kernel_ranges(lo, hi) for chunk in self._chunks(len(uniforms), a, b)]
        self._map(work, chunks, len(uniforms))
        return out

    def draws_at(self, lo, hi, index):
        """θ of objects lo:hi (file order) at draw indices ``index`` (W, hi − lo), e.g. from
        :meth:`resample`: shape (W, hi − lo, P)."""
        rows = np.arange(lo, hi) if self._order is None else self._position[lo:hi]
        return self.theta[rows[None, :], index]

    def moment_variance(self, hyper, centred):
        """Each object's share of the Monte Carlo variance of posterior means E[g(α)], to first order.

        ln L̂ replaces L_n(α) by (1/K_n) Σ_k w_nk(α), so a posterior mean moves by
        δE[g] ≈ Σ_n Σ_k c_nk with c_nk = E_post[(g − E g) w̃_nk(α)] − (its mean over k, 0), w̃ the
        self-normalised weights (the delta method through the weights; the influence of
        draw k of object n). Its variance from object n's draws, as if independent, is
        Σ_k c_nk². Over M posterior draws α_m, c_nk = Σ_m centred_m w̃_nk(α_m) with
        centred_m = (g(α_m) − ḡ)/M; the M terms' own noise, Σ_k Σ_m centred_m² w̃_nk(α_m)²
        for independent α_m, is subtracted (the U-statistic), and the result floored at 0.

        Parameters
        ----------
        hyper : dict of str -> ndarray (M,)
            Posterior draws α_m (fixed ones included); every one valid.
        centred : ndarray (M, G)
            (g(α_m) − ḡ)/M for G functions g.

        Returns
        -------
        ndarray (N, G)
        """
        centred = np.asarray(centred, dtype=float)
        n_walkers = centred.shape[0]
        step = max(1, CHUNK_ELEMENTS // max(self.n_draws, 1))
        plans = []
        for start in range(0, n_walkers, step):
            rows = slice(start, min(start + step, n_walkers))
            sub = {name: np.asarray(value)[rows] for name, value in hyper.items()}
            linear = self.form is not None and self._linear_ok(sub).all()
            plans.append((rows, sub) + (self._coefficients(sub) if linear else (None, None)))
        out = np.zeros((self.n_objects, centred.shape[1]))

        def work(bounds):
            lo, hi = bounds
            influence = np.zeros((hi - lo, centred.shape[1], self._width(lo, hi)))
            noise = np.zeros((hi - lo, centred.shape[1]))
            for rows, sub, eta, offset in plans:
                weights = self._shifted(lo, hi, sub, eta, offset)[0]  # (n, W, K), worked in place
                np.exp(weights, out=weights)
                total = weights.sum(axis=2, keepdims=True)
                np.divide(weights, total, out=weights, where=total > 0)
                influence += np.einsum("wg,nwk->ngk", centred[rows], weights)
                noise += np.einsum("wg,nw->ng", centred[rows] ** 2, np.einsum("nwk,nwk->nw", weights, weights))
            out[lo:hi] = np.einsum("ngk,ngk->ng", influence, influence) - noise

        self._map(work, self._chunks(min(step, n_walkers)), min(step, n_walkers))
        return np.maximum(self._in_file_order(out.T).T, 0.0)

    def thinned(self, step):
        """This likelihood over every ``step``-th draw of each object (draws 0, step, 2·step, …; K_n' =
        ⌈K_n/step⌉), for a gradient-based sampler's tuning. The draws are views, not copies (kept
        features, where the gradient pass keeps them, are its own); ``close`` it after use (its
        thread pool is its own). Var[ln L̂] grows as 1/K, so a
        ``max_variance`` cut is scaled by ``step`` (the thinned estimate's variance where the
        full one's is at the cut)."""
        if step == 1:
            return self
        other = copy.copy(self)
        other.theta, other.base = self.theta[:, ::step], self.base[:, ::step]  # padding stays at the tail
        other.n_draws = other.theta.shape[1]
        other.draw_counts = -(-self.draw_counts // step)
        other._counts = -(-self._counts // step)  # still ascending
        other._groups = self._width_groups(other._counts)
        other._log_draws = float(np.sum(np.log(other.draw_counts)))
        other.terms = list(self.terms)
        other.max_variance = None if self.max_variance is None else self.max_variance * step
        other._pool = other._feature_cache = None
        return other

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- kernel ---------------------------------------------------------------
    def _sort_by_draw_counts(self):
        """Sort the objects by K_n (stably) unless they are already, so that every chunk spans
        objects of nearly one width: ``_order`` (kernel position -> file index, None when the
        file order is kept), ``_position`` (its inverse), ``_counts`` (K_n in kernel order) and
        ``_groups``, the ranges of kernel positions whose K_n share a power-of-two bracket."""
        counts = self.draw_counts
        self._order = self._position = None
        if np.any(counts[1:] < counts[:-1]):
            self._order = np.argsort(counts, kind="stable")
            self._position = np.empty_like(self._order)
            self._position[self._order] = np.arange(self.n_objects)
            self.theta = self.theta[self._order]
            self.base = self.base[self._order]
            counts = counts[self._order]
        self._counts = counts
        self._groups = self._width_groups(counts)

    @staticmethod
    def _width_groups(counts):
        """Ranges of kernel positions whose K_n (ascending) share a power-of-two bracket."""
        bracket = np.ceil(np.log2(np.maximum(counts, 1)))
        edges = [0] + (np.flatnonzero(np.diff(bracket)) + 1).tolist() + [len(counts)]
        return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]

    def _in_file_order(self, values):
        """``values`` with axis 1 (objects, in the kernel's order) put back in file order."""
        if values is None or self._order is None:
            return values
        out = np.empty_like(values)
        out[:, self._order] = values
        return out

    def _kernel_ranges(self, lo, hi):
        """Objects lo:hi of the file as ranges of kernel positions: one per K_n among them (the
        stable sort keeps the objects of one K_n in file order)."""
        if self._order is None:
            return [(lo, hi)] if hi > lo else []
        positions = np.sort(self._position[lo:hi])
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        return [(int(run[0]), int(run[-1]) + 1) for run in np.split(positions, breaks) if run.size]

    def _file_columns(self, a, b, lo):
        """Where kernel positions a:b go among the columns of file objects lo:…"""
        return slice(a - lo, b - lo) if self._order is None else self._order[a:b] - lo

    def _width(self, lo, hi):
        """The draws a chunk of kernel positions lo:hi spans: its largest K_n (they ascend)."""
        return int(self._counts[hi - 1])

    def _mask_padding(self, copy):
        """Give the padded draws k ≥ K_n weight 0: −ln p0 = −inf there, θ a finite stand-in."""
        pad = np.arange(self.n_draws)[None, :] >= self._counts[:, None]
        if not pad.any():
            return
        if copy:
            self.theta = self.theta.copy()
        rows, draws = np.nonzero(pad)
        self.theta[rows, draws] = self.theta[rows, 0]
        self.base[rows, draws] = -np.inf

    def _add_terms(self, hyper, estimate, gradient=None):
        """Add every :class:`LikelihoodTerm` (and, with ``gradient``, its derivative) to ``estimate``
        at the walkers whose ln L̂ is finite."""
        rows = np.flatnonzero(np.isfinite(estimate.ln_likelihood))
        if not rows.size:
            return
        variance = estimate.ln_likelihood_variance is not None
        sub = {name: np.asarray(value)[rows] for name, value in hyper.items()}
        for term in self.terms:
            # With a gradient, the term's pass gives each point its own numbers, as the
            # population term's does (a gradient-based sampler's chains share a call).
            if gradient is not None:
                ln_term, variance_term, derivative = term.gradient(sub, gradient, variance)
                estimate.gradient[rows] += np.asarray(derivative, dtype=float)
            else:
                ln_term, variance_term = term(sub, variance)
            estimate.ln_likelihood[rows] += np.asarray(ln_term, dtype=float)
            if variance:
                estimate.ln_likelihood_variance[rows] += np.asarray(variance_term, dtype=float)

    def _linear_ok(self, hyper):
        eta, offset = self.form.coefficients(hyper)
        with np.errstate(invalid="ignore"):
            # (the base feature is excluded: it is exact, not a cancelling term)
            magnitude = np.abs(eta).T @ self.feature_scale + np.abs(offset)
        return np.isfinite(magnitude) & (magnitude <= LINEAR_FORM_LIMIT)

    def _plan(self, hyper, valid):
        """Groups of valid walkers and whether each uses the linear form."""
        if self.form is None:
            return [(np.flatnonzero(valid), False)] if valid.any() else []
        ok = valid.copy()
        ok[valid] = self._linear_ok({k: v[valid] for k, v in hyper.items()})
        groups = [(np.flatnonzero(ok), True), (np.flatnonzero(valid & ~ok), False)]
        return [g for g in groups if g[0].size]

    def _center(self):
        """Median over objects of each object's median draw (a robust centre, computed by blocks)."""
        medians = np.concatenate([np.median(self.theta[lo:hi], axis=1) for lo, hi in self._blocks()])
        return np.median(medians, axis=0)

    def _blocks(self):
        return object_blocks(self.n_objects, self.n_draws * self.theta.shape[-1])

    def _keep_features(self):
        """Keep every object's features (the :meth:`_features` rows) when they fit FEATURE_CACHE_BYTES."""
        if self.form is None or self._feature_cache is not None:
            return
        n_rows = self._feature_low.shape[1] + 1
        if n_rows * self.base.size * 8 <= FEATURE_CACHE_BYTES:
            # Rows first, (J + 1, N, K): an object's rows are then each one run of memory,
            # read as they are by the gradient pass's per-object products.
            cache = np.empty((n_rows,) + self.base.shape)
            for lo, hi in self._blocks():
                cache[:, lo:hi] = self._features(lo, hi, self.n_draws).transpose(1, 0, 2)
            self._feature_cache = cache

    def _features(self, lo, hi, width=None):
        """(n, J + 1, width): the features of objects lo:hi (kernel positions) over their first
        ``width`` draws (default: the chunk's width) and, as the last row, the base term."""
        width = self._width(lo, hi) if width is None else width
        if self._feature_cache is not None:
            return self._feature_cache[:, lo:hi, :width].transpose(1, 0, 2)
        features = self.form.features(self.theta[lo:hi, :width])
        return np.concatenate([features, self.base[lo:hi, None, :width]], axis=1)

    def _neg_log_interim(self, lo, hi, width=None):
        """-ln p0 of objects lo:hi (from the base row when it holds b(θ) too), over their first
        ``width`` draws (default: all, padding included)."""
        draws = slice(None, width)
        if self.form is None:
            return self.base[lo:hi, draws]
        b = self.form.base(self.theta[lo:hi, draws])
        return np.where(np.isfinite(b), self.base[lo:hi, draws] - b, 0.0)  # outside the support ln f is -inf anyway

    def _chunks(self, n_walkers, lo=0, hi=None):
        """Ranges of kernel positions covering lo:hi, each within one of ``_groups`` and about
        CHUNK_ELEMENTS at the group's width for ``n_walkers`` walkers, or POINT_CHUNK_ELEMENTS with
        ``n_walkers`` = 1 (the gradient pass's chunks, the same however many points share it).
        Work of PARALLEL_MIN_ELEMENTS or more is cut into at least one chunk per thread, so that
        every core has a share (an object's sums are its own: chunks do not change them)."""
        hi = self.n_objects if hi is None else hi
        elements = POINT_CHUNK_ELEMENTS if n_walkers == 1 else CHUNK_ELEMENTS
        groups = [(a, b) for a, b in self._groups if a < hi and b > lo]
        total = sum((min(b, hi) - max(a, lo)) * self._width(a, b) for a, b in groups) * n_walkers
        if self.threads > 1 and total >= PARALLEL_MIN_ELEMENTS:
            elements = min(elements, -(-total // self.threads))
        return [chunk for a, b in groups
                for chunk in object_blocks(min(b, hi), self._width(a, b) * n_walkers, elements, max(a, lo))]

    def _map(self, work, chunks, n_walkers):
        elements = sum((b - a) * self._width(a, b) for a, b in chunks) * n_walkers
        if self.threads > 1 and len(chunks) > 1 and elements >= PARALLEL_MIN_ELEMENTS:
            # The calling thread works too, beside threads - 1 helpers, every thread taking the
            # next chunk as it finishes one: one hand-off per helper and call, not one per chunk
            # (a hand-off per chunk cost up to a fifth of a 32-walker call at N = K = 10³). After
            # a failure (or Ctrl-C) no thread starts another chunk.
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads - 1)
            queue, lock, stop = iter(chunks), threading.Lock(), threading.Event()

            def drain():
                while True:
                    with lock:
                        chunk = None if stop.is_set() else next(queue, None)
                    if chunk is None:
                        return
                    try:
                        work(chunk)
                    except BaseException:
                        stop.set()
                        raise

            helpers = [self._pool.submit(drain) for _ in range(min(self.threads, len(chunks)) - 1)]
            try:
                drain()
            finally:
                # A helper not yet started (its thread busy, or slow to wake) has nothing left to
                # take: it is cancelled, not waited for.
                helpers = [helper for helper in helpers if not helper.cancel()]
                wait(helpers)
            for helper in helpers:
                helper.result()  # a helper's failure, raised here
        else:
            for chunk in chunks:
                work(chunk)

    def _direct(self, lo, hi, eta):
        """(n, W) bool: where objects lo:hi's log weights Σ_j η_j T_j + b at walkers ``eta`` are
        bounded by DIRECT_LIMIT over every draw (Σ_j max(η_j min T_j, η_j max T_j) + max b), so
        that their exponentials need no shift. Elementwise per (object, walker), in order over j;
        never with ``exp_precision="single"`` (its error bound assumes shifted weights ≤ 1)."""
        if EXP_PRECISIONS[self.exp_precision] is not None:
            return np.zeros((hi - lo, eta.shape[1]), dtype=bool)
        low, high = self._feature_low[lo:hi, :, None], self._feature_high[lo:hi, :, None]
        bound = np.broadcast_to(self._base_peak[lo:hi, None], (hi - lo, eta.shape[1])).copy()
        with np.errstate(invalid="ignore", over="ignore"):
            for j in range(len(eta) - 1):
                bound += np.maximum(eta[j] * low[:, j], eta[j] * high[:, j])
        return bound <= DIRECT_LIMIT  # nan (an infinite feature) is False

    def _log_weights(self, lo, hi, hyper, eta):
        """Log weights of objects lo:hi over the chunk's width, (n, W, K), without the offset A(α)."""
        width = self._width(lo, hi)
        if eta is not None and eta.shape[1] == 1 and self._feature_cache is None:
            # One point, features computed for the chunk: T·η + base without the (n, J + 1, K) copy.
            log_weight = eta[:-1, 0] @ self.form.features(self.theta[lo:hi, :width])  # (n, K); A(α) after the sum
            log_weight += self.base[lo:hi, :width]
            return log_weight[:, None, :]
        if eta is not None:
            return eta.T @ self._features(lo, hi, width)  # (n, W, K); the offset A(α) is added after the sum
        log_weight = self.population.log_density(self.theta[lo:hi, :width], hyper).transpose(0, 2, 1)
        return log_weight + self._neg_log_interim(lo, hi, width)[:, None, :]

    def _shifted(self, lo, hi, hyper, eta, offset):
        """Log weights of objects lo:hi minus their per-(object, walker) maximum, and that maximum."""
        log_weight = self._log_weights(lo, hi, hyper, eta)
        return log_weight, self._subtract_peak(log_weight)

    def _subtract_peak(self, log_weight):
        """Shift every row of ``log_weight`` (…, K) by its peak, in place (a row whose peak is −inf
        stays); return the peaks."""
        peak = self._peak(log_weight)
        log_weight -= np.where(np.isfinite(peak), peak, 0.0)[..., None]
        return peak

    def _weights(self, log_weight, direct, again):
        """Exponentiate ``log_weight`` (…, K) in place, each row shifted by its peak except where
        ``direct`` (…) allows it unshifted (see DIRECT_LIMIT); the rows whose unshifted sum falls
        below DIRECT_FLOOR are taken again, shifted, from ``again()`` (the same log weights, computed
        anew). Returns each row's shift (its peak, or 0) and sum Σ_k w (numpy's own loop along the
        row, not BLAS). Only the shifted rows are read for their peaks."""
        if not direct.any():
            peak = self._subtract_peak(log_weight)
        else:
            peak = np.zeros(direct.shape)
            if not direct.all():
                rows = ~direct
                shifted = log_weight[rows]  # (m, K), a copy
                peak[rows] = self._subtract_peak(shifted)
                log_weight[rows] = shifted
        self._exp(log_weight)
        total = np.einsum("...k->...", log_weight)  # about 1.6× faster than .sum here
        redo = direct & ~(total >= DIRECT_FLOOR)  # too small unshifted (or none in the support)
        if redo.any():
            exact = again()[redo]  # (m, K)
            peak[redo] = self._subtract_peak(exact)
            log_weight[redo] = self._exp(exact)
            total[redo] = np.einsum("mk->m", exact)
        return peak, total

    def _exp(self, shifted):
        """exp of the shifted log weights (all ≤ 0, or −inf), in place, in ``exp_precision``."""
        dtype = EXP_PRECISIONS[self.exp_precision]
        if dtype is None:
            return np.exp(shifted, out=shifted)
        with np.errstate(over="ignore", under="ignore"):  # the cast of the OUTSIDE floor, the smallest weights
            return np.exp(shifted, out=shifted, dtype=dtype)

    @staticmethod
    def _peak(log_weight):
        """The maximum over the last axis (the draws); −inf where it is −inf, nan or at the OUTSIDE floor."""
        peak = log_weight.max(axis=-1)
        return np.where(np.isfinite(peak) & (peak > 0.5 * OUTSIDE), peak, -np.inf)

    def _coefficients(self, hyper):
        """η extended by the base feature's coefficient 1, and A(α)."""
        eta, offset = self.form.coefficients(hyper)
        return np.concatenate([np.atleast_2d(eta).reshape(-1, len(offset)), np.ones((1, len(offset)))]), offset

    def _derivative_coefficients(self, hyper, names):
        """Per hyperparameter in ``names``: (∂η/∂α (J, W), ∂A/∂α (W,)) of the linear form, or None
        when the gradient comes from ``log_density_gradient``."""
        if self.form is None or self.form.coefficient_gradients is None:
            return None
        gradients = self.form.coefficient_gradients(hyper)
        return [gradients[name] for name in names]

    def _evaluate(self, hyper, linear, second, gradient=None):
        if gradient is not None:
            return self._evaluate_points(hyper, linear, second, gradient)
        n_walkers = len(next(iter(hyper.values())))
        first = np.empty((n_walkers, self.n_objects))
        squares = np.empty((n_walkers, self.n_objects)) if second else None
        eta, offset = self._coefficients(hyper) if linear else (None, np.zeros(n_walkers))
        # Which (object, walker) pairs need no shift, for all objects at once (as the gradient pass)
        direct = (self._direct(0, self.n_objects, eta) if eta is not None
                  else np.zeros((self.n_objects, n_walkers), dtype=bool))

        def work(bounds):
            lo, hi = bounds
            shifted = self._log_weights(lo, hi, hyper, eta)
            peak, total = self._weights(shifted, direct[lo:hi], lambda: self._log_weights(lo, hi, hyper, eta))
            with np.errstate(divide="ignore", invalid="ignore"):
                first[:, lo:hi] = np.where(np.isfinite(peak), np.log(total) + peak + offset, -np.inf).T
                if second:
                    squares[:, lo:hi] = np.where(np.isfinite(peak), np.log(_row_squares(shifted))
                                                 + 2.0 * (peak + offset), -np.inf).T

        self._map(work, self._chunks(n_walkers), n_walkers)
        return first, squares, None

    def _evaluate_points(self, hyper, linear, second, names):
        """As :meth:`_evaluate`, with d ln Σ_k w_nk/dα over ``names``, for gradient-based samplers.

        Every number of a point is its own: chunks do not depend on how many points are
        evaluated together, and so neither does any arithmetic along one object's draws. So
        several chains' points evaluated in one pass (see ``samplers.nuts``) give each chain
        exactly the numbers it gets alone, while the pass reads the draws once. With the linear
        form the points go through BLAS in blocks of exactly POINT_BLOCK (see
        :meth:`_linear_points`); otherwise the arithmetic is elementwise products and sums along
        one object's draws, arrays (W, n, K): points, the chunk's objects, draws.
        """
        n_walkers = len(next(iter(hyper.values())))
        first = np.empty((n_walkers, self.n_objects))
        squares = np.empty((n_walkers, self.n_objects)) if second else None
        derivative = np.zeros((n_walkers, self.n_objects, len(names)))
        # d/dα from the linear form's coefficients (also for walkers beyond its range, which take
        # their weights from the direct density), else from the population's per-draw gradient.
        coefficients = self._derivative_coefficients(hyper, names)
        if linear:
            self._keep_features()
            eta, offset = self._coefficients(hyper)
            outputs = first, squares, derivative
            # Which (object, point) pairs need no shift, for all objects at once (elementwise: each
            # pair's bound is the one a chunk would compute; one call, not one per chunk and block).
            direct = self._direct(0, self.n_objects, eta)
            if coefficients is not None:
                # (W, J, H): ∂η_j/∂α_h and (W, H): ∂A/∂α_h, per point
                d_eta = np.stack([np.asarray(d, dtype=float).reshape(len(eta) - 1, n_walkers) for d, _ in coefficients],
                                 axis=-1).transpose(1, 0, 2)
                d_offset = np.stack([np.broadcast_to(np.asarray(d, dtype=float), (n_walkers,)) for _, d in coefficients],
                                    axis=-1)
                coefficients = d_eta, d_offset

            def work(bounds):
                lo, hi = bounds
                width = self._width(lo, hi)
                rows = self._features(lo, hi, width)  # (n, J + 1, width)
                per_draw = (self.population.log_density_gradient(self.theta[lo:hi, :width], hyper)
                            if coefficients is None else None)
                for start in range(0, n_walkers, POINT_BLOCK):
                    points = slice(start, min(start + POINT_BLOCK, n_walkers))
                    self._linear_points(lo, hi, rows, eta, offset, points, direct[lo:hi, points], coefficients,
                                        per_draw, names, outputs)

            self._map(work, self._chunks(1), n_walkers)
            return first, squares, derivative
        offset = np.zeros(n_walkers)

        def work(bounds):
            lo, hi = bounds
            width = self._width(lo, hi)
            theta = self.theta[lo:hi, :width]
            log_weight = self.population.log_density(theta, hyper).transpose(2, 0, 1)
            log_weight = np.ascontiguousarray(log_weight + self._neg_log_interim(lo, hi, width))
            term = np.empty_like(log_weight)  # scratch for the squares and the per-draw gradients
            peak = self._subtract_peak(log_weight)
            weights = self._exp(log_weight)
            total = weights.sum(axis=2)
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(np.isfinite(peak) & (total > 0), 1.0 / total, 0.0)
                first[:, lo:hi] = np.where(np.isfinite(peak), np.log(total) + peak + offset[:, None], -np.inf)
                if second:
                    np.square(weights, out=term)
                    squares[:, lo:hi] = np.where(np.isfinite(peak), np.log(term.sum(axis=2))
                                                 + 2.0 * (peak + offset[:, None]), -np.inf)
            if coefficients is not None:
                # E_w̃[T_j] (W, n), then d/dα = Σ_j E_w̃[T_j] ∂η_j/∂α + ∂A/∂α
                features = self.form.features(theta).transpose(1, 0, 2)
                means = np.einsum("wnk,jnk->jwn", weights, features) * scale  # one pass over the weights
                for h, (d_eta, d_offset) in enumerate(coefficients):
                    d_eta = np.asarray(d_eta, dtype=float).reshape(len(means), n_walkers)
                    out = means[0] * d_eta[0][:, None]
                    for j in range(1, len(means)):
                        out += means[j] * d_eta[j][:, None]
                    out += np.asarray(d_offset, dtype=float)[:, None]
                    derivative[:, lo:hi, h] = out
            else:
                per_draw = self.population.log_density_gradient(theta, hyper)
                for h, name in enumerate(names):
                    values = np.broadcast_to(per_draw[name], theta.shape[:2] + (n_walkers,)).transpose(2, 0, 1)
                    np.multiply(weights, values, out=term, where=weights > 0)
                    np.copyto(term, 0.0, where=~(weights > 0))
                    derivative[:, lo:hi, h] = term.sum(axis=2) * scale

        self._map(work, self._chunks(1), n_walkers)
        return first, squares, derivative

    def _linear_points(self, lo, hi, rows, eta, offset, points, direct, coefficients, per_draw, names, outputs):
        """One block of points (``points``, at most POINT_BLOCK) over objects lo:hi by the linear form.

        The log weights Σ_j η_j T_j + b are one matrix product per object, (POINT_BLOCK, J + 1) @
        (J + 1, K), and the feature sums Σ_k w_k T_jk another, (POINT_BLOCK, K) @ (K, J): BLAS, about
        three times numpy's einsum here. A BLAS product's rounding can depend on how many rows it
        has (one row goes to another routine), never on the other rows' values, so every block
        has exactly POINT_BLOCK rows — a short one is padded with copies of its first point, whose
        weights are zeroed before the second product — and each point's numbers are those it gets
        alone (tests/test_gradients.py checks it, bit for bit, for every number of points). This
        rests on what BLAS libraries that pack their operands do (OpenBLAS, numpy's own): a row's
        result depends neither on the other rows nor on its place among them. A BLAS whose
        results change with memory alignment or threads (MKL without its reproducibility mode)
        could break it; the test would then fail on that machine.
        Arrays are (n, P, K): the chunk's objects, the block's points, draws.
        """
        first, squares, derivative = outputs
        count = points.stop - points.start
        block = np.full(POINT_BLOCK, points.start)
        block[:count] = np.arange(points.start, points.stop)
        log_weight = np.matmul(eta[:, block].T, rows)  # (n, P, K)
        if count < POINT_BLOCK:
            log_weight[:, count:] = 0.0
        real = log_weight[:, :count]
        # (taken again: the same product, the same log weights)
        peak, total = self._weights(real, direct, lambda: np.matmul(eta[:, block].T, rows)[:, :count])
        weights = real
        out_offset = offset[points][None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(np.isfinite(peak) & (total > 0), 1.0 / total, 0.0)
            first[points, lo:hi] = np.where(np.isfinite(peak), np.log(total) + peak + out_offset, -np.inf).T
            if squares is not None:
                # (not _row_squares: vecdot may call BLAS, whose rounding could depend on the row)
                squares[points, lo:hi] = np.where(np.isfinite(peak), np.log(np.square(weights).sum(axis=2))
                                                  + 2.0 * (peak + out_offset), -np.inf).T
        if coefficients is not None:
            d_eta, d_offset = coefficients
            # E_w̃[T_j] (n, count, J), then d/dα = Σ_j E_w̃[T_j] ∂η_j/∂α + ∂A/∂α
            means = (np.matmul(log_weight, rows[:, :-1].transpose(0, 2, 1))[:, :count]
                     * scale[:, :, None]).transpose(1, 0, 2)  # (count, n, J)
            out = means[:, :, 0, None] * d_eta[points, None, 0]  # summed over j in order, elementwise
            for j in range(1, means.shape[2]):
                out += means[:, :, j, None] * d_eta[points, None, j]
            out += d_offset[points][:, None, :]
            derivative[points, lo:hi] = out
        else:
            with np.errstate(invalid="ignore"):
                for h, name in enumerate(names):
                    values = np.broadcast_to(per_draw[name], weights.shape[:1] + weights.shape[2:] + (len(offset),))
                    values = values.transpose(0, 2, 1)[:, points]
                    term = np.where(weights > 0, weights * values, 0.0)
                    derivative[points, lo:hi, h] = (term.sum(axis=2) * scale).T


def _inverse_cdf(weights, uniforms, block=RESAMPLE_BLOCK):
    """Per row of ``weights`` (…, K), ≥ 0, the index k of the first draw whose cumulative weight
    exceeds u·Σ w (u: ``uniforms`` (…), in [0, 1)): a draw ∝ its weight, never one of weight 0
    (a row without positive weight gives 0). In two steps, each a cumulative sum over far fewer
    than K values: over the blocks of ``block`` draws (their sums; the last block may be shorter),
    then over the draws of the block that holds u·Σ w. Where rounding puts u·Σ w at or past the
    end of the sums, the last positive block, or draw, is taken."""
    shape, n_draws = weights.shape[:-1], weights.shape[-1]
    full, n_blocks = n_draws // block, -(-n_draws // block)
    sums = np.empty(shape + (n_blocks,))
    if full:
        sums[..., :full] = np.einsum("...bk->...b", weights[..., :full * block].reshape(shape + (full, block)))
    if n_blocks > full:
        sums[..., full] = np.einsum("...k->...", weights[..., full * block:])
    cumulative = np.cumsum(sums, axis=-1)
    target = uniforms * cumulative[..., -1]
    chosen = np.minimum(np.sum(cumulative <= target[..., None], axis=-1), _last_positive(sums))
    before = np.take_along_axis(cumulative, np.maximum(chosen - 1, 0)[..., None], -1)[..., 0]
    before[chosen == 0] = 0.0
    draws = chosen[..., None] * block + np.arange(block)  # (…, block): the chosen block's draws
    local = np.take_along_axis(weights, np.minimum(draws, n_draws - 1), -1)
    local[draws >= n_draws] = 0.0  # beyond a short last block
    within = np.sum(np.cumsum(local, axis=-1) <= (target - before)[..., None], axis=-1)
    index = chosen * block + np.minimum(within, _last_positive(local))
    index[~(cumulative[..., -1] > 0)] = 0
    return index


def _last_positive(values):
    """The position of the last positive value along the last axis (0 where there is none)."""
    found = values[..., ::-1] > 0
    return np.where(found.any(axis=-1), values.shape[-1] - 1 - np.argmax(found, axis=-1), 0)


def _row_squares(x):
    """Σ_k x_k² along the last axis: one fused pass with numpy ≥ 2's vecdot (3.5× a square and a
    sum here), else numpy's einsum."""
    vecdot = getattr(np, "vecdot", None)
    return vecdot(x, x) if vecdot is not None else np.einsum("...k,...k->...", x, x)


def reference_log_likelihood(population, theta, log_interim_prior, hyper):
    """Straightforward ln L, walker by walker, with scipy's logsumexp (for tests)."""
    from scipy.special import logsumexp

    n_walkers = len(next(iter(hyper.values())))
    out = np.empty(n_walkers)
    for w in range(n_walkers):
        single = {k: v[w:w + 1] for k, v in hyper.items()}
        log_f = population.log_density(theta, single)[..., 0]
        out[w] = np.sum(logsumexp(log_f - log_interim_prior, axis=1)) - theta.shape[0] * np.log(theta.shape[1])
    return out
