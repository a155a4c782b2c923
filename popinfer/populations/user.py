"""User-supplied population densities: ``--population file.py:function`` or ``module:function``.

The protocol (README, "User populations"):

    def exponential(theta, hyper):
        '''theta: dict parameter -> array (n, K, 1); hyper: dict name -> array (W,).'''
        x, scale = theta["rate"], hyper["scale"]
        return np.where(x >= 0, -np.log(scale) - x / scale, -np.inf)   # shape (n, K, W)

    exponential.hyperparameters = {"scale": "loguniform(0.01, 100)"}

(with ``--parameter rate``: an exponential population of the stage-one parameter
``rate``, f(θ; scale) = exp(−θ/scale)/scale for θ ≥ 0.)

The function returns ln f(θ; α), normalised over θ, broadcast to (n, K, W), with
-inf (never NaN) outside the support.
"""

import sys
from contextlib import nullcontext

import numpy as np

from ..errors import ModelError
from ..guard import no_exit
from ..user_functions import ReloadedFunction, declared_priors, load_callable
from .base import Population


def _float64():
    """A function written with jax.numpy computes in float64 too (JAX's default is float32)."""
    jax = sys.modules.get("jax")
    return jax.enable_x64(True) if jax is not None and hasattr(jax, "enable_x64") else nullcontext()


class UserPopulation(ReloadedFunction, Population):
    """A population density from a user's function (see the module docstring)."""

    option = "--population"

    def __init__(self, spec, parameters):
        super().__init__(parameters)
        self.spec = spec
        self.name = spec
        self._function = load_callable(spec, self.option)
        declared = declared_priors(self._function, "hyperparameters", spec, self.option, "hyperparameter")
        self.hyperparameters = tuple(declared)
        self._defaults = dict(declared)
        self.n_parameters = len(self.parameters)

    @property
    def function(self):
        """The user's function itself (the JAX backend traces it)."""
        return self._function

    def default_hyperpriors(self, scale):
        return dict(self._defaults)

    def log_density(self, theta, hyper):
        named = {p: theta[..., i][..., None] for i, p in enumerate(self.parameters)}
        n_walkers = len(next(iter(hyper.values())))
        expected = theta.shape[:2] + (n_walkers,)
        with no_exit(f"Population {self.spec!r}"):
            try:
                with np.errstate(all="ignore"), _float64():
                    result = np.asarray(self._function(named, hyper), dtype=float)
            except Exception as exc:
                raise ModelError(f"Population {self.spec!r} raised {type(exc).__name__}: {exc}") from exc
        try:
            result = np.broadcast_to(result, expected)
        except ValueError:
            raise ModelError(
                f"Population {self.spec!r} returned shape {result.shape}; expected {expected} "
                f"(objects, draws, walkers)."
            ) from None
        if np.isnan(result).any() or (result == np.inf).any():
            raise ModelError(
                f"Population {self.spec!r} returned NaN or +inf; a log-density must be finite or -inf."
            )
        return result
