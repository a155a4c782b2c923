"""The sampler interface of stage two.

A sampler draws the hyperparameters α from the posterior
p(α | data) ∝ Π_h p(α_h) · L(α). It is handed a
:class:`~popinfer.reweighting.posterior.HyperPosterior`, which offers

- ``posterior(values)``: ln p(α | data) of ``values`` (W, H), vectorised, shape (W,);
- ``posterior.log_prior(values)`` and ``posterior.log_likelihood(values, valid)``
  separately (nested samplers need ln L alone);
- ``posterior.priors`` (one :class:`~popinfer.distributions.Distribution` per column,
  with ``logpdf``, ``sample`` and the quantile function ``ppf``) and
  ``posterior.prior_transform(unit)`` (the unit cube to α);
- ``posterior.names``, the H column names,

and returns a :class:`SamplerResult`: equal-weight draws and a diagnostics dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class SamplerResult:
    """What a sampler returns.

    Attributes
    ----------
    draws : ndarray, shape (S, H)
        Equal-weight posterior draws of the sampled hyperparameters (columns in
        ``posterior.names`` order).
    diagnostics : dict
        Sampler-specific scalars, JSON-serialisable; recorded in the population file's
        ``settings`` (emcee: ``n_steps``, ``converged``, ``min_autocorr_times``, ``burn_in``).
    autocorr_time : ndarray, shape (H,), optional
        Integrated autocorrelation time per hyperparameter, for samplers that have one
        (stored as ``/hyper/autocorr_time``).
    """

    draws: np.ndarray
    diagnostics: dict = field(default_factory=dict)
    autocorr_time: np.ndarray | None = None


class Sampler(Protocol):
    """A stage-two sampler (see the module docstring and ``samplers.register_sampler``).

    Attributes
    ----------
    name : str
        The name under which it is registered (``fit-population --sampler NAME``),
        recorded in the population file's ``settings``.
    settings : dict
        Its options, JSON-serialisable, recorded in ``settings`` too.
    """

    name: str
    settings: dict

    def check(self, names):
        """Raise :class:`~popinfer.errors.UsageError` if the options cannot work for the
        hyperparameters ``names`` (called before any expensive work)."""

    def sample(self, posterior, n_samples, seed, progress=False) -> SamplerResult:
        """Draw ``n_samples`` equal-weight draws from ``posterior``.

        ``seed`` is a :class:`numpy.random.SeedSequence` (all randomness derives from it);
        ``progress`` shows a progress bar on stderr.
        """
