"""``poisson``: count_r ~ Poisson(rate · exposure_r)."""

import numpy as np
from scipy.special import gammaln, xlogy

from .base import Model, segment_sum


class PoissonModel(Model):
    """Counts with an optional ``exposure`` (default 1) and a ``rate`` per object.

    ln L = Σ_r c_r ln(rate e_r) - rate e_r - ln c_r!.
    """

    name = "poisson"
    roles = {"count": True, "exposure": False}
    parameters = ("rate",)
    default_priors = {"rate": "uniform(0, 10000)"}
    supports = {"rate": (0.0, np.inf)}

    def validate(self, table, columns):
        count = columns["count"]
        self._require(table, columns, "count", self.column_names["count"],
                      (count < 0) | (count != np.round(count)), "a whole-number count >= 0")
        if "exposure" in columns:
            self._require(table, columns, "exposure", self.column_names["exposure"],
                          columns["exposure"] <= 0, "an exposure > 0")

    def prepare(self, columns, starts):
        count = columns["count"]
        exposure = columns.get("exposure", np.ones_like(count))
        constant = xlogy(count, exposure) - gammaln(count + 1)
        return {"count": segment_sum(count, starts), "exposure": segment_sum(exposure, starts),
                "constant": segment_sum(constant, starts)}

    def log_likelihood(self, params, data):
        rate = params["rate"]
        return data["constant"] + xlogy(data["count"], rate) - rate * data["exposure"]
