"""Stage one: per-object posterior draws under the interim prior."""

from ..mcmc import ConvergenceWarning
from .fit import fit_individuals

__all__ = ["fit_individuals", "ConvergenceWarning"]
