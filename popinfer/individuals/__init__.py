"""Stage one: per-object posterior draws under the interim prior."""

from ..mcmc import ConvergenceWarning
from .fit import batch_count, fit_individuals

__all__ = ["fit_individuals", "batch_count", "ConvergenceWarning"]
