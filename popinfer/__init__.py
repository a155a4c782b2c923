"""popinfer: hierarchical (population) Bayesian inference by two-stage importance sampling.

Stage one (:func:`fit_individuals`) fits every object under a broad interim prior
and keeps K posterior draws per object; stage two reweights those draws under a
parametric population density.
"""

from ._version import __version__
from .distributions import Distribution, parse_distribution
from .errors import FileFormatError, InputDataError, ModelError, OutputError, PopinferError, UsageError
from .individuals import ConvergenceWarning, fit_individuals
from .io.samples import Samples, read_samples
from .models import user_model

__all__ = [
    "__version__",
    "fit_individuals",
    "read_samples",
    "Samples",
    "user_model",
    "parse_distribution",
    "Distribution",
    "ConvergenceWarning",
    "PopinferError",
    "UsageError",
    "InputDataError",
    "FileFormatError",
    "ModelError",
    "OutputError",
]
