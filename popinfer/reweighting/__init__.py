"""Stage two: reweighting stage-one draws under a population density."""

from .fit import PopulationDiagnosticWarning, fit_population
from .likelihood import HyperLikelihood

__all__ = ["fit_population", "HyperLikelihood", "PopulationDiagnosticWarning"]
