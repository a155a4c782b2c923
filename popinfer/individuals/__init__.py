"""Stage one: per-object posterior draws under the interim prior."""

from .fit import ConvergenceWarning, fit_individuals

__all__ = ["fit_individuals", "ConvergenceWarning"]
