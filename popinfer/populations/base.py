"""What every population density provides.

A population is a pure, vectorised log-density ln f(θ; α) of the stage-one
parameters θ it describes, for many hyperparameter values α at once:

    log_density(theta, hyper) -> array (n, K, W)

with ``theta`` of shape (n, K, P) (n objects, K draws, P parameters) and
``hyper`` a dict of hyperparameter name -> array (W,) (one value per walker).
Outside the support the result is -inf, never NaN.

Exponential-family populations with a support that does not depend on sampled
hyperparameters also offer a *linear form*: ln f = T(θ)·η(α) + A(α) + b(θ),
where the features T and the base term b are computed once per draw and η, A
once per walker. The likelihood kernel then costs one small matrix product per
chunk instead of the full density.

Gradients of ln L̂ with respect to α (for gradient-based samplers) come from one of two
optional pieces: the linear form's ``coefficient_gradients`` (∂η/∂α and ∂A/∂α, so that
d ln L̂_n/dα = E_w̃n[T]·∂η/∂α + ∂A/∂α), or ``log_density_gradient`` (∂ ln f/∂α at
every draw, so that d ln L̂_n/dα = E_w̃n[∂ ln f/∂α]), w̃ the object's self-normalised
weights. A population with neither has no gradient (samplers that need one refuse it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


def plain(value):
    """A number as a person writes it (``-1``, ``0.5``), not numpy's repr."""
    return f"{float(value):.10g}"


def _interval(name, low, high):
    if np.isinf(high):
        return f"{name} > {plain(low)}"
    if np.isinf(low):
        return f"{name} < {plain(high)}"
    return f"{plain(low)} < {name} < {plain(high)}"


LOG_2PI = float(np.log(2.0 * np.pi))
# Linear-form terms larger than this (in magnitude) would lose more than ~1e-10 of
# absolute precision to cancellation; beyond it the direct density is used.
LINEAR_FORM_LIMIT = 1e5


@dataclass
class LinearForm:
    """ln f(θ; α) = features(θ) @ coefficients(α) + offset(α) + base(θ).

    Attributes
    ----------
    features : callable
        θ (n, K, P) -> T (n, J, K) (draws last: the kernel's layout).
    base : callable
        θ (n, K, P) -> b (n, K), -inf outside the (fixed) support.
    coefficients : callable
        hyper dict of (W,) arrays -> (η (J, W), A (W,)).
    coefficient_gradients : callable, optional
        hyper dict of (W,) arrays -> dict hyperparameter name -> (∂η/∂α (J, W), ∂A/∂α (W,)),
        for every hyperparameter the form does not hold fixed.
    """

    features: object
    base: object
    coefficients: object
    coefficient_gradients: object = None


class Population(ABC):
    """Base class of population densities.

    Parameters
    ----------
    parameters : list of str
        The stage-one parameters θ described, in order (P of them; one for the
        one-dimensional populations). Each subclass's docstring gives its density and
        maps every hyperparameter (a key of ``hyper``) to its symbol.
    """

    name = "population"
    hyperparameters = ()
    n_parameters = 1
    # The open interval (low, high) each bounded hyperparameter takes (the others take any finite
    # value), and the pairs (a, b) that need a < b: what ``valid`` checks, declared so that a held
    # (``--fix``) value outside it is refused before sampling (``reweighting.posterior.check_fixed``).
    domains = {}
    ordered = ()

    def __init__(self, parameters):
        self.parameters = list(parameters)

    @abstractmethod
    def log_density(self, theta, hyper):
        """ln f(θ; α), shape (n, K, W); see the module docstring."""

    def linear_form(self, fixed, center=0.0):
        """A :class:`LinearForm` valid when the hyperparameters in ``fixed`` are held, or None.

        ``center`` (per parameter) is subtracted from θ inside the features to
        limit cancellation.
        """
        return None

    def log_density_gradient(self, theta, hyper):
        """∂ ln f(θ; α)/∂α: dict hyperparameter name -> array (n, K, W) (finite; any value
        where f = 0), or None when the population does not provide it."""
        return None

    def domain(self, name):
        """The open interval (low, high) of hyperparameter ``name`` (``domains``; ±inf: unbounded)."""
        return self.domains.get(name, (-np.inf, np.inf))

    def domain_violation(self, values):
        """The first of the held ``values`` (name -> float) outside the domain (``domain``,
        ``ordered``), as ``(names, needs)``: the names involved and the condition they break, as
        text; None if there is none. Names the population lacks are left to the caller."""
        for name, value in values.items():
            if name in self.hyperparameters:
                low, high = self.domain(name)
                if not low < value < high:
                    return (name,), _interval(name, low, high)
        for first, second in self.ordered:
            if first in values and second in values and not values[first] < values[second]:
                return (first, second), f"{first} < {second}"
        return None

    def valid(self, hyper):
        """Which walkers' hyperparameters are admissible (beyond their hyperpriors), (W,) bool."""
        return np.ones(len(next(iter(hyper.values()))), dtype=bool)

    def default_hyperpriors(self, scale):
        """Weakly-informative hyperpriors (distribution specs) given the data's scale.

        Parameters
        ----------
        scale : dict
            Per stage-one parameter: ``location`` (median of the objects'
            posterior medians), ``spread`` (their standard deviation plus the
            mean posterior sd), ``log_location``/``log_spread`` (the same for
            ln θ when θ > 0), and the interim prior's ``low``/``high``.
        """
        return {}

    def marginal(self, hyper, index=0):
        """A frozen scipy-like distribution (with ``cdf``) of parameter ``index`` at
        scalar α, or None when the population does not provide one."""
        return None
