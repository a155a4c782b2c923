"""Stage two: reweighting stage-one draws under a population density."""

from .diagnostics import PopulationDiagnosticWarning
from .fit import fit_population
from .likelihood import HyperLikelihood, LikelihoodEstimate, LikelihoodTerm
from .samplers import SamplerResult, register_sampler

__all__ = ["fit_population", "HyperLikelihood", "LikelihoodEstimate", "LikelihoodTerm", "PopulationDiagnosticWarning",
           "SamplerResult", "register_sampler"]
