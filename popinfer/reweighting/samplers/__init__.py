"""Stage-two samplers, chosen by name (``fit-population --sampler NAME``).

The interface is in :mod:`.base`; emcee's ensemble sampler (:mod:`.ensemble`) is the
default. To add a sampler, write a class with ``name``, ``settings``, ``check(names)``
and ``sample(posterior, n_samples, seed, progress)`` returning a
:class:`~.base.SamplerResult`, and register a factory for it::

    register_sampler("nested", lambda options: NestedSampler(**options_it_uses))

``options`` is the dict of the generic sampler options of ``fit_population``
(``n_walkers``, ``max_steps``); a factory takes what it uses and ignores the rest.
"""

from __future__ import annotations

from ...errors import UsageError
from .base import Sampler, SamplerResult
from .ensemble import EmceeSampler

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


register_sampler("emcee", lambda options: EmceeSampler(options["n_walkers"], options["max_steps"]))

__all__ = ["DEFAULT_SAMPLER", "SAMPLERS", "EmceeSampler", "Sampler", "SamplerResult", "get_sampler",
           "register_sampler"]
