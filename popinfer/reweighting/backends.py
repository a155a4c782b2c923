"""``fit-population --backend NAME``: which implementation of stage two's kernel runs.

``numpy`` (the default, no extra needed) is :class:`~.likelihood.HyperLikelihood`;
``jax`` (the ``jax`` extra) is :class:`~.jax_backend.JaxHyperLikelihood`: the same
ln L̂, Var[ln L̂] and ESS, jitted, on a GPU when jax has one, with gradients by
automatic differentiation for every population written in ``jax.numpy``.
"""

from __future__ import annotations

import importlib.util

from ..errors import UsageError
from .likelihood import HyperLikelihood

BACKENDS = ("numpy", "jax")
DEFAULT_BACKEND = "numpy"


def likelihood_class(name):
    """The likelihood class of backend ``name`` (``numpy`` or ``jax``).

    Raises
    ------
    UsageError
        An unknown name, or ``jax`` without jax (0.8 or later) installed.
    """
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
