"""The JAX backend of stage two's kernel (``fit-population --backend jax``, the ``jax`` extra).

:class:`JaxHyperLikelihood` is a :class:`HyperLikelihood` whose per-object terms

    ln Σ_k w_nk  and  ln Σ_k w_nk²,   ln w_nk = ln f(θ_nk; α) − ln p0(θ_nk)      (HMB 2010, eq. 9)

come from one jitted JAX function (a log-sum-exp over the draws, shifted by their
maximum, all walkers at once, objects by chunks through ``lax.map`` so that memory
stays at the draws), with the population's density from ``populations.jax_densities``.
The same pass gives d ln Σ_k w_nk/dα = Σ_k w̃_nk ∂ln f(θ_nk; α)/∂α by automatic
differentiation, for every population with a JAX density: the built-ins, and user
populations written in ``jax.numpy``. With up to FORWARD_MODE_MAX sampled
hyperparameters in forward mode (``jax.linearize``, one tangent per sampled hyperparameter: a
walker's α moves only its own column, so each tangent is every object's and walker's own
per-draw derivative, weighted in the same pass as the sums); with more, in reverse mode
(``jax.grad``, each object with its own copy of α, arrays (c, 1, W), so that one pass gives
every object's derivative). The class
overrides only that per-object step (``_per_object``): everything built from it —
ln L̂ with each object's own K_n, ESS, Var[ln L̂], further terms such as the
selection term (whose own kernel is a JaxHyperLikelihood too), the
``--max-variance`` cut, :meth:`HyperLikelihood.ln_likelihood_and_gradient` — is
the numpy class's own code, so the two backends can only differ in the kernel.

Precision: every call runs under ``jax.enable_x64(True)`` (float64, as numpy),
scoped to the backend: the process-wide JAX default is left alone. Device: JAX's
default, i.e. a GPU when the installed jax has one (``pip install "jax[cuda12]"``),
else the CPU. The draws are copied to the device once (and every N-th of them again for NUTS's
tuning, ``thinned``); pooling (resampling each
object's draws) stays on the numpy kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ModelError, UsageError
from ..guard import no_exit
from ..populations import BUILTIN_POPULATIONS
from ..populations.jax_densities import SUPPORT_BOUNDS, jax_log_density
from ..populations.user import UserPopulation
from .likelihood import OUTSIDE, HyperLikelihood

# Object·draw pairs per chunk of lax.map (times the walkers: the kernel's working set).
CHUNK_DRAWS = 2**16
# Gradients in forward mode (a tangent per sampled hyperparameter) up to this many sampled
# hyperparameters, reverse mode (one pass, whatever their number) above. One point's ln L̂ and
# gradient at N = K = 10³, reverse -> forward: normal (2) 5.1 -> 2.9-3.4 ms, studentt (3) 16.5 ->
# 9.4-12.1 ms; mvnormal of two parameters (5) 15.3 -> 48.0 ms (of four, 14, 23 -> 403-423 ms with
# a jvp per name); mixture (5) 28.1 -> 11.2 ms, so the limit is conservative for some populations.
FORWARD_MODE_MAX = 3


def batch_size(n):
    """The batch size that ``n`` points are evaluated at: the smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, …
    (2^k and 3·2^k) at least ``n``. Each size compiles once; padding costs at most a third of a batch
    (UltraNest's batches on the eight schools came in 52 sizes, each a compilation)."""
    power = 1 << max(0, n - 1).bit_length()
    return 3 * power // 4 if power >= 4 and 3 * power // 4 >= n else power


_TRACING_ERRORS = (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
                   jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)


def float64():
    """The context every JAX computation of this backend runs in: float64, as numpy."""
    return jax.enable_x64(True)


class JaxHyperLikelihood(HyperLikelihood):
    """:class:`HyperLikelihood` with the per-object sums and their gradients computed by JAX.

    Parameters are those of :class:`HyperLikelihood` (``exp_precision`` only ``double``:
    its sums are float64 throughout). The population needs a JAX
    density (``populations.jax_densities.jax_log_density``); a user population must
    be written with ``jax.numpy``.

    Raises
    ------
    ValueError
        ``exp_precision`` other than ``double``.
    UsageError
        The population has no JAX density, or a user population cannot be traced by
        JAX (it uses numpy, or Python control flow on array values).
    """

    def __init__(self, population, theta, log_interim_prior, fixed=None, threads=None, copy=True,
                 max_variance=None, terms=(), draw_counts=None, exp_precision="double"):
        if exp_precision != "double":  # its sums are XLA's, in float64
            raise ValueError(f"exp_precision {exp_precision!r} is the numpy kernel's; the jax backend's is double")
        self._log_density = jax_log_density(population)
        super().__init__(population, theta, log_interim_prior, fixed, threads, copy, max_variance, terms, draw_counts)
        self._data = self._device_draws()
        self._check_traceable()
        self._sums = jax.jit(self._traced_sums, static_argnames=("second", "names"))

    def _device_draws(self):
        """θ and −ln p0 on the device, in chunks of ``lax.map``: arrays (chunks, c, K, P) and (chunks, c, K)."""
        per_chunk = max(1, min(self.n_objects, CHUNK_DRAWS // max(self.n_draws, 1)))
        n_chunks = -(-self.n_objects // per_chunk)
        pad = n_chunks * per_chunk - self.n_objects
        # −ln p0 from the numpy kernel's own rows (its padding of ragged draw counts included).
        neg_log_interim = np.concatenate([self._neg_log_interim(lo, hi) for lo, hi in self._blocks()])
        neg_log_interim[neg_log_interim <= 0.5 * OUTSIDE] = -np.inf
        with float64():
            # Padding objects repeat object 0 (finite, so derivatives stay finite) and are dropped.
            theta_chunks = jnp.concatenate([jnp.asarray(self.theta), jnp.repeat(jnp.asarray(self.theta[:1]), pad, 0)])
            base_chunks = jnp.concatenate([jnp.asarray(neg_log_interim),
                                           jnp.repeat(jnp.asarray(neg_log_interim[:1]), pad, 0)])
            return (theta_chunks.reshape((n_chunks, per_chunk) + self.theta.shape[1:]),
                    base_chunks.reshape(n_chunks, per_chunk, self.n_draws))

    def gradient_unavailable(self):
        """None when d ln L̂/dα is available: from automatic differentiation, except over a
        built-in's support bounds (ln L̂ jumps where a draw crosses one) or with a further
        term that has no gradient; else a sentence saying why not."""
        bounds = [name for name in SUPPORT_BOUNDS.get(self.population.name, ()) if name in self.sampled_names]
        if bounds and self.population.name in BUILTIN_POPULATIONS:
            return (f"the population {self.population.name!r} has sampled support bounds ({', '.join(bounds)}): ln L̂ "
                    f"jumps where a draw crosses one, so it has no useful gradient there (hold them with --fix)")
        return self._term_without_gradient()

    # -- kernel ---------------------------------------------------------------
    def thinned(self, step):
        """As the numpy kernel's (every ``step``-th draw of each object, for a gradient-based sampler's
        tuning), with those draws copied to the device (a further 1/step of the draws' memory there,
        until it is dropped)."""
        other = super().thinned(step)
        if other is not self:
            other._data = other._device_draws()
            other._sums = jax.jit(other._traced_sums, static_argnames=("second", "names"))
        return other

    def ln_likelihood_and_gradients(self, values):
        """Point by point: XLA's arithmetic over several points need not round as over one, and
        each point's numbers must be its own (chains evaluated together, ``samplers.nuts``)."""
        values = np.asarray(values, dtype=float).reshape(-1, len(self.sampled_names))
        pairs = [super(JaxHyperLikelihood, self).ln_likelihood_and_gradients(row[None, :]) for row in values]
        return np.concatenate([value for value, _ in pairs]), np.concatenate([gradient for _, gradient in pairs])

    def _keep_features(self):
        """Nothing to keep: the JAX kernel's draws are on the device already (the numpy kernel's
        feature cache for single-point evaluations would only cost memory)."""

    def _per_object(self, hyper, second=False, gradient=None):
        """ln Σ_k w_nk, ln Σ_k w_nk² (if ``second``) and d ln Σ_k w_nk/dα over the names ``gradient``
        (if given), (W, N), (W, N), (W, N, H); -inf (derivative 0) for invalid α."""
        n_walkers = len(next(iter(hyper.values())))
        names = None if gradient is None else tuple(gradient)
        first = np.full((n_walkers, self.n_objects), -np.inf)
        squares = np.full((n_walkers, self.n_objects), -np.inf) if second else None
        derivative = np.zeros((n_walkers, self.n_objects, len(names))) if names is not None else None
        # Validity is the population's numpy ``valid`` (both backends agree on it); invalid walkers
        # are evaluated at a valid walker's α (keeping NaN out of the traced density and its
        # derivative) and their results discarded.
        valid = np.asarray(self.population.valid(hyper), dtype=bool)
        if not valid.any():
            return first, squares, derivative
        stand_in = int(np.argmax(valid))
        # The batch is padded (with the stand-in) to batch_size(n): a sampler whose batches
        # vary (UltraNest's) compiles a few shapes, not one per size.
        padding = batch_size(n_walkers) - n_walkers
        evaluated = {name: np.concatenate([np.where(valid, value, value[stand_in]), np.full(padding, value[stand_in])])
                     for name, value in ((name, np.asarray(value, dtype=float)) for name, value in hyper.items())}
        with float64(), no_exit(f"Population {self.population.name!r}"):
            sums = self._sums(self._data, evaluated, second=second, names=names or None)  # () needs no derivative pass
        sums = [None if part is None else np.asarray(part)[:n_walkers] for part in sums]
        if sums[3] is not None and sums[3][valid].any():
            raise ModelError(f"Population {self.population.name!r} returned NaN or +inf; a log-density must be "
                             f"finite or -inf.")
        first[valid] = sums[0][valid]
        if second:
            squares[valid] = sums[1][valid]
        if names:
            # (0 where ln Σ_k w_nk is −inf: no NaN reaches a weighted sum of derivatives)
            derivative[valid] = np.where(np.isfinite(first[valid])[..., None],
                                         np.moveaxis(sums[2], 1, -1)[valid], 0.0)
        return first, squares, derivative

    def _traced_sums(self, data, hyper, second=False, names=None):
        """The traced kernel: (ln Σ_k w_nk (W, N), ln Σ_k w_nk² (W, N) or None, d ln Σ_k w_nk/dα
        (W, H, N) or None, for a user population whether its density was NaN or +inf anywhere
        (W, N) or None) from the chunked draws ``data``.

        The log weights (c, K, W) of a chunk are reduced with the walkers moved first (the
        draws the last axis). For the derivatives (see FORWARD_MODE_MAX): in forward mode
        ``jax.linearize`` gives, along each sampled name, ∂ln f/∂α per draw and walker in the same pass
        as ln f, and the sums weight it by w̃ (nothing is stored for a backward pass); in reverse
        mode every object of the chunk gets its own copy of α (arrays (c, 1, W), broadcasting
        against θ (c, K, 1)), so that one pass (``jax.grad`` of the chunk's sum) yields each
        object's own derivative.
        """
        log_density = self._log_density

        def chunk(arrays):
            theta, base = arrays

            def summed(log_f, tangents=None):
                """The sums (and weighted tangents) of log densities (c, K, W), and for a user
                population where its density was NaN or +inf (an error, as on numpy; the built-ins
                give −inf there)."""
                first, squares, derivative = _log_sums(jnp.moveaxis(log_f + base[..., None], -1, 0), second, tangents)
                broken = jnp.any(jnp.isnan(log_f) | (log_f == jnp.inf), axis=1).T if check else None  # (W, c)
                return first, squares, derivative, broken

            if names is None:
                return summed(log_density(theta, hyper))

            if len(names) > FORWARD_MODE_MAX:
                per_object = {k: jnp.broadcast_to(v, (theta.shape[0], 1, v.shape[0])) for k, v in hyper.items()}

                def total(sampled):
                    first, squares, _, broken = summed(log_density(theta, {**per_object, **sampled}))
                    return first.sum(), (first, squares, broken)

                derivative, (first, squares, broken) = jax.grad(total, has_aux=True)({k: per_object[k] for k in names})
                return first, squares, jnp.stack([derivative[k][:, 0, :].T for k in names], axis=1), broken

            # Forward mode: ln f once, then its derivative along each sampled name, per draw and
            # walker (a walker's α moves only its own column), weighted in the same pass as the sums.
            sampled = {k: hyper[k] for k in names}
            log_f, along = jax.linearize(lambda sampled: log_density(theta, {**hyper, **sampled}), sampled)
            tangents = [jnp.moveaxis(along({k: jnp.ones_like(v) if k == name else jnp.zeros_like(v)
                                           for k, v in sampled.items()}), -1, 0) for name in names]
            return summed(log_f, tangents)  # derivative (W, H, c)

        check = isinstance(self.population, UserPopulation)
        # (chunks, W, c) each; the derivative (chunks, W, H, c)
        first, squares, derivative, broken = jax.lax.map(chunk, data)

        def objects(sums):
            sums = jnp.moveaxis(sums, 0, -2)  # (W, [H,] chunks, c)
            return sums.reshape(sums.shape[:-2] + (-1,))[..., :self.n_objects]

        return tuple(None if sums is None else objects(sums) for sums in (first, squares, derivative, broken))

    def _check_traceable(self):
        """A user population must trace with JAX arrays: checked once, on one chunk's shapes, with
        α as arrays (W,) and as reverse mode's per-object copies (c, 1, W)."""
        theta = jax.ShapeDtypeStruct(self._data[0].shape[1:], jnp.float64)
        label = f"Population {self.population.name!r}"
        try:
            with float64(), no_exit(label):
                for shape in ((2,), (theta.shape[0], 1, 2)):
                    hyper = {name: jax.ShapeDtypeStruct(shape, jnp.float64) for name in self.population.hyperparameters}
                    jax.eval_shape(self._log_density, theta, hyper)
        except _TRACING_ERRORS as exc:
            raise UsageError(
                f"{label} cannot run on the JAX backend: it must be written with jax.numpy (jnp.where, jnp.log, ...) "
                f"instead of numpy, elementwise (hyperparameters may arrive with leading axes that broadcast against "
                f"θ), without Python if/for on array values ({type(exc).__name__}). "
                f"Use --backend numpy for a numpy population.", "--backend") from None
        except (ModelError, UsageError):
            raise
        except Exception as exc:
            raise ModelError(f"{label} raised {type(exc).__name__}: {exc}") from exc


def _log_sums(log_weight, second, tangents=None):
    """(ln Σ exp, ln Σ exp(2·) or None, d ln Σ exp or None) over the last axis, from one exponential
    of the log weights shifted by their maximum (the shift held out of reverse-mode derivatives).
    As in the numpy kernel, a maximum that is not finite (all −inf, or NaN/+inf from α at
    infinity) gives −inf. Per tangent t (the derivatives of the log weights along one
    hyperparameter, each shaped as ``log_weight``) the derivative is the weighted mean
    Σ_k w_k t_k / Σ_k w_k, stacked (W, H, c); draws of zero weight add nothing (their tangent may be
    ±inf or NaN outside the support), and it is 0 where the maximum is not finite or every weight is 0."""
    peak = jax.lax.stop_gradient(jnp.max(log_weight, axis=-1, keepdims=True))
    finite = jnp.isfinite(peak[..., 0])
    weight = jnp.exp(log_weight - jnp.where(jnp.isfinite(peak), peak, 0.0))
    total = jnp.sum(weight, axis=-1)
    first = jnp.where(finite, jnp.log(total) + peak[..., 0], -jnp.inf)
    squares = (jnp.where(finite, jnp.log(jnp.sum(weight * weight, axis=-1)) + 2.0 * peak[..., 0], -jnp.inf)
               if second else None)
    if tangents is None:
        return first, squares, None
    usable = finite & (total > 0)
    scale = 1.0 / jnp.where(usable, total, 1.0)
    means = [jnp.where(usable, jnp.sum(jnp.where(weight > 0, weight * tangent, 0.0), axis=-1) * scale, 0.0)
             for tangent in tangents]
    return first, squares, jnp.stack(means, axis=1)
