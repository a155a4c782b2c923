"""Stage-two samplers, chosen by name (``fit-population --sampler NAME``).

The interface is in :mod:`.base`; emcee's ensemble sampler (:mod:`.ensemble`) is the
default. To add a sampler, write a class with ``name``, ``settings``, ``check(names)``
and ``sample(posterior, n_samples, seed, progress)`` returning a
:class:`~.base.SamplerResult`, and register a factory for it::

    register_sampler("nested", lambda options: NestedSampler(**options_it_uses))

``options`` is the dict of the sampler options of ``fit_population`` (``n_walkers``,
``max_steps``, ``moves``, ``live_points``, ``chains``, ``tune``, ``tune_thin``); a factory
takes what it uses and ignores the rest.
"""

from __future__ import annotations

from ...errors import UsageError
from .base import Sampler, SamplerResult
from .ensemble import DEFAULT_MOVES, EmceeSampler

SAMPLERS = {}
DEFAULT_SAMPLER = "emcee"


def register_sampler(name, factory):
    """Make ``factory(options) -> Sampler`` available as ``--sampler name``."""
    SAMPLERS[name] = factory


def get_sampler(sampler, options):
    """The sampler named ``sampler`` built from ``options``; an object with ``sample`` is used as it is."""
    if hasattr(sampler, "sample"):
        return sampler
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler {sampler}: unknown sampler; choose one of {', '.join(sorted(SAMPLERS))}.",
                         "--sampler")
    return SAMPLERS[sampler](options)


class _Nested:
    """UltraNest (``reweighting.nested``) behind the sampler interface; the evidence goes to
    the diagnostics (``log_evidence``, ``log_evidence_error``)."""

    name = "nested"

    def __init__(self, live_points):
        from ..nested import NestedSampler

        self.sampler = NestedSampler(NestedSampler.DEFAULT_LIVE_POINTS if live_points is None else live_points)

    @property
    def settings(self):
        return self.sampler.settings

    def check(self, names):
        self.sampler.check(names)

    def sample(self, posterior, n_samples, seed, progress=False):
        draws, diagnostics = self.sampler.sample(posterior, n_samples, seed, progress)
        return SamplerResult(draws, dict(diagnostics))


def _nuts(options):
    from .nuts import NutsSampler

    chains, tune, thin = options.get("chains"), options.get("tune"), options.get("tune_thin")
    return NutsSampler(NutsSampler.DEFAULT_CHAINS if chains is None else chains,
                       NutsSampler.DEFAULT_TUNE if tune is None else tune,
                       NutsSampler.DEFAULT_TUNE_THIN if thin is None else thin)


register_sampler("emcee", lambda options: EmceeSampler(
    options["n_walkers"], options["max_steps"], DEFAULT_MOVES if options.get("moves") is None else options["moves"]))
register_sampler("nested", lambda options: _Nested(options.get("live_points")))
register_sampler("nuts", _nuts)

__all__ = ["DEFAULT_SAMPLER", "SAMPLERS", "EmceeSampler", "Sampler", "SamplerResult", "get_sampler",
           "register_sampler"]
