"""Stage one: per-object posterior draws under the interim prior."""

from ..mcmc import ConvergenceWarning, InterimEdgeWarning
from .fit import batch_count, check_shard, fit_individuals, shard_slice

__all__ = ["fit_individuals", "batch_count", "check_shard", "shard_slice", "ConvergenceWarning", "InterimEdgeWarning"]
