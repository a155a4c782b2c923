"""Stage-two samplers, chosen by name (``fit-population --sampler NAME``).

The interface is in :mod:`.base`; emcee's ensemble sampler (:mod:`.ensemble`) is the
default. To add a sampler, write a class with ``name``, ``settings``, ``check(names)``
and ``sample(posterior, n_samples, seed, progress)`` returning a
:class:`~.base.SamplerResult`, and register a factory for it::

    register_sampler("nested", lambda options: NestedSampler(options["live_points"]), options=["live_points"])

``options`` is the dict of the sampler options of ``fit_population`` (the keys of
``OPTIONS``: ``n_walkers``, ``max_steps``, ``moves``, ``live_points``, ``chains``, ``tune``,
``tune_thin``), None where not given: the factory chooses its defaults. ``register_sampler``'s
``options`` names those the sampler uses; one given with a sampler that does not use it is a
usage error naming the samplers it belongs to (it would be ignored without a word), except
``n_walkers`` and ``max_steps``, which every sampler accepted before: those are named in a
warning. A sampler registered without ``options`` (as every sampler was before the registry knew
them) takes those two, given emcee's defaults (32 walkers, 20000 steps) where not given, and
refuses the others, as before.
"""

from __future__ import annotations

import warnings

from ...errors import UsageError
from .base import Sampler, SamplerResult
from .ensemble import DEFAULT_MOVES, EmceeSampler

SAMPLERS = {}
SAMPLER_OPTIONS = {}  # name -> the keys of OPTIONS its factory uses (None: every one, as before)
DEFAULT_SAMPLER = "emcee"
# fit_population's sampler options and their command-line names
OPTIONS = {"n_walkers": "--walkers", "max_steps": "--max-steps", "moves": "--moves", "live_points": "--live-points",
           "chains": "--chains", "tune": "--tune", "tune_thin": "--tune-thin"}
# accepted by every sampler before the registry knew which options each takes: with one that does
# not use them they are named in a warning, not refused (scripts passing them keep working)
ACCEPTED = ("n_walkers", "max_steps")


def register_sampler(name, factory, options=None):
    """Make ``factory(options) -> Sampler`` available as ``--sampler name``; ``options``: the keys
    of ``OPTIONS`` it uses (the others are refused with it), or None: it is given every one, with
    emcee's defaults where not given (the registry before it knew the options)."""
    SAMPLERS[name] = factory
    SAMPLER_OPTIONS[name] = None if options is None else tuple(options)


def get_sampler(sampler, options):
    """The sampler named ``sampler`` built from ``options`` (None: not given); an object with
    ``sample`` is used as it is. A given option the sampler does not use is a usage error, except
    ``n_walkers`` and ``max_steps``, which every sampler accepted before the registry knew its
    options (``n_walkers`` also sizes the diagnostics' groups): those are named in a warning."""
    built = hasattr(sampler, "sample")
    if not built and sampler not in SAMPLERS:
        raise UsageError(f"--sampler {sampler}: unknown sampler; choose one of {', '.join(sorted(SAMPLERS))}.",
                         "--sampler")
    uses = () if built else SAMPLER_OPTIONS.get(sampler)
    takes = ACCEPTED if uses is None else uses  # registered without its options: emcee's settings, as before
    label = f"the sampler object {getattr(sampler, 'name', type(sampler).__name__)!r}" if built else sampler
    for key, flag in OPTIONS.items():
        if options.get(key) is None or key in takes:
            continue
        owners = [name for name in SAMPLERS if key in (SAMPLER_OPTIONS.get(name) or ())]
        belongs = f"an option of --sampler {' or '.join(owners)}" if owners else "not an option"
        if key in ACCEPTED:
            still = " (it still sets how many draws the diagnostics evaluate at once)" if key == "n_walkers" else ""
            warnings.warn(f"{flag} is {belongs}, not of {label}, which ignores it{still}; leave it out.", UserWarning,
                          stacklevel=4)
            continue
        raise UsageError(f"{flag} is {belongs}, not of {label}; leave it out or choose that sampler.", flag)
    if built:
        return sampler
    given = {key: options.get(key) if key in takes else None for key in OPTIONS}  # the ignored ones left out
    if uses is None:  # emcee's defaults filled in, as this factory was always given them
        given["n_walkers"] = EmceeSampler.DEFAULT_WALKERS if given["n_walkers"] is None else given["n_walkers"]
        given["max_steps"] = EmceeSampler.DEFAULT_MAX_STEPS if given["max_steps"] is None else given["max_steps"]
    return SAMPLERS[sampler](given)


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


def _emcee(options):
    walkers, max_steps, moves = options.get("n_walkers"), options.get("max_steps"), options.get("moves")
    return EmceeSampler(EmceeSampler.DEFAULT_WALKERS if walkers is None else walkers,
                        EmceeSampler.DEFAULT_MAX_STEPS if max_steps is None else max_steps,
                        DEFAULT_MOVES if moves is None else moves)


register_sampler("emcee", _emcee, options=["n_walkers", "max_steps", "moves"])
register_sampler("nested", lambda options: _Nested(options.get("live_points")), options=["live_points"])
register_sampler("nuts", _nuts, options=["chains", "tune", "tune_thin"])

__all__ = ["DEFAULT_SAMPLER", "OPTIONS", "SAMPLERS", "SAMPLER_OPTIONS", "EmceeSampler", "Sampler", "SamplerResult",
           "get_sampler", "register_sampler"]
