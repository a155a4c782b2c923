"""``fit-population --backend NAME``: which implementation of stage two's kernel runs.

``numpy`` (the default, no extra needed) is :class:`~.likelihood.HyperLikelihood`;
``jax`` (the ``jax`` extra) is :class:`~.jax_backend.JaxHyperLikelihood`: the same
ln L̂, Var[ln L̂] and ESS, jitted, on a GPU when jax has one, with gradients by
automatic differentiation for every population written in ``jax.numpy``; ``auto`` is
whichever of the two is faster on this machine's CPU (:func:`resolve_backend`).
"""

from __future__ import annotations

import importlib.util
import os

from ..errors import UsageError
from .likelihood import HyperLikelihood

BACKENDS = ("numpy", "jax", "auto")
DEFAULT_BACKEND = "numpy"
# The environment variable that sets the default of --backend (a machine's standing choice).
BACKEND_VARIABLE = "POPINFER_BACKEND"


def default_backend():
    """The backend a fit without one runs: $POPINFER_BACKEND when set (``numpy``, ``jax`` or ``auto``),
    else ``numpy``.

    Raises
    ------
    UsageError
        POPINFER_BACKEND set to another value.
    """
    value = os.environ.get(BACKEND_VARIABLE, "").strip()
    if not value:
        return DEFAULT_BACKEND
    if value not in BACKENDS:
        raise UsageError(f"{BACKEND_VARIABLE}={value!r} in the environment: use one of {', '.join(BACKENDS)} "
                         f"(or unset it for {DEFAULT_BACKEND}).", "--backend")
    return value


def numpy_exp_is_vectorised():
    """Whether numpy runs its float64 ``exp`` in SIMD code on this CPU: only with AVX-512 (x86-64,
    numpy's ``__cpu_features__``, what ``numpy.show_runtime()`` lists); elsewhere it is libm's scalar
    exp, several times slower per draw, and the kernel is bound by it."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2 kept it in numpy.core
        from numpy.core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get("AVX512F"))


# The samplers for which jax was faster where numpy's exp is scalar (README "Performance"):
# emcee and nested (batches of many points); nuts (one point per chain at a time) only on large files.
AUTO_JAX_SAMPLERS = ("emcee", "nested")
# The built-in populations whose JAX density was faster there, per call of 16 walkers over 85 objects
# × 4000 draws (1.28× studentt to 4.72× truncnormal with free bounds). Not mvnormal (0.31×: numpy's
# kernel writes it as a linear form, one matrix product) nor a user's function (it may be numpy code,
# which jax cannot trace).
AUTO_JAX_POPULATIONS = ("normal", "truncnormal", "lognormal", "beta", "gamma", "powerlaw", "uniform", "studentt",
                        "mixture")


def resolve_backend(name, sampler="emcee", population=None, exp_precision="double"):
    """The backend that ``name`` runs with ``sampler``, ``population`` (a Population; None: any of
    AUTO_JAX_POPULATIONS) and ``exp_precision``: itself, or for ``auto`` ``jax`` where jax (0.8 or
    later) is installed, numpy's float64 exp is not vectorised on this CPU, the sampler is one of
    AUTO_JAX_SAMPLERS (there whole emcee fits ran 1.75-1.96 times faster on jax, nested fits 1.31-1.34
    times), the population a built-in of AUTO_JAX_POPULATIONS and the exponentials double, else
    ``numpy`` (whose float32 exp is SIMD code on every CPU numpy supports: ``single`` is numpy's)."""
    if name != "auto":
        return name
    if exp_precision != "double":
        return "numpy"
    from ..populations import BUILTIN_POPULATIONS

    if population is not None and not (population.name in AUTO_JAX_POPULATIONS
                                       and type(population) is BUILTIN_POPULATIONS.get(population.name)):
        return "numpy"
    if sampler not in AUTO_JAX_SAMPLERS or numpy_exp_is_vectorised() or importlib.util.find_spec("jax") is None:
        return "numpy"
    import jax

    return "jax" if hasattr(jax, "enable_x64") else "numpy"


def likelihood_class(name, sampler="emcee"):
    """The likelihood class of backend ``name`` (``numpy``, ``jax``, or ``auto`` with ``sampler``, see
    :func:`resolve_backend`).

    Raises
    ------
    UsageError
        An unknown name, or ``jax`` without jax (0.8 or later) installed.
    """
    name = resolve_backend(name, sampler)
    if name == "numpy":
        return HyperLikelihood
    if name == "jax":
        if importlib.util.find_spec("jax") is None:
            raise UsageError('--backend jax needs jax, which is not installed: pip install "popinfer[jax]" (or '
                             '"jax[cuda12]" for a GPU), or use --backend numpy.', "--backend")
        import jax

        if not hasattr(jax, "enable_x64"):  # the scoped float64 context arrived in jax 0.8
            raise UsageError(f'--backend jax needs jax 0.8 or later (found {jax.__version__}): '
                             f'pip install "popinfer[jax]" upgrades it.', "--backend")
        from .jax_backend import JaxHyperLikelihood

        return JaxHyperLikelihood
    raise UsageError(f"Unknown backend {name!r}: use one of {', '.join(BACKENDS)}.", "--backend")
