"""popinfer: hierarchical (population) Bayesian inference by two-stage importance sampling.

Stage one (:func:`fit_individuals`) fits every object under a broad interim prior
and keeps K posterior draws per object; stage two (:func:`fit_population`)
reweights those draws under a parametric population density; :func:`refine` refits
the objects a population fit flagged under a population-informed interim prior.
"""

from ._version import __version__
from .distributions import Distribution, parse_distribution
from .errors import FileFormatError, InputDataError, ModelError, OutputError, PopinferError, UsageError
from .io.samples import Samples, read_samples
from .io.population import PopulationResult, read_population
from .mcmc import ConvergenceWarning, InterimEdgeWarning
from .models import user_model
from .reweighting import PopulationDiagnosticWarning, fit_population

# Imported on first use, so that a process which only fits populations does not load stage
# one's table reading (pandas) and vice versa: name -> module defining it.
_LAZY = {"fit_individuals": ".individuals", "refine": ".refinement", "RefineResult": ".refinement"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "__version__",
    "fit_individuals",
    "fit_population",
    "refine",
    "RefineResult",
    "read_samples",
    "read_population",
    "PopulationResult",
    "PopulationDiagnosticWarning",
    "Samples",
    "user_model",
    "parse_distribution",
    "Distribution",
    "ConvergenceWarning",
    "InterimEdgeWarning",
    "PopinferError",
    "UsageError",
    "InputDataError",
    "FileFormatError",
    "ModelError",
    "OutputError",
]
