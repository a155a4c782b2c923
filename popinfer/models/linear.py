"""``linear``: y_r ~ Normal(slope · x_r + intercept, sqrt(yerr_r² + scatter²))."""

import numpy as np

from ..errors import UsageError
from .base import Model, segment_sum

LOG_2PI = np.log(2.0 * np.pi)


class LinearModel(Model):
    """A straight line per object with intrinsic ``scatter`` and optional ``yerr``.

    ln L = -1/2 Σ_r [ r_r² / v_r + ln(2π v_r) ], r_r = y_r - slope x_r - intercept,
    v_r = yerr_r² + scatter².
    """

    name = "linear"
    roles = {"x": True, "y": True, "yerr": False}
    parameters = ("slope", "intercept", "scatter")
    default_priors = {
        "slope": "uniform(-1000, 1000)",
        "intercept": "uniform(-10000, 10000)",
        "scatter": "loguniform(0.001, 1000)",
    }
    supports = {"slope": (-np.inf, np.inf), "intercept": (-np.inf, np.inf)}

    def validate(self, table, columns):
        if "yerr" in columns:
            self._require(table, columns, "yerr", self.column_names["yerr"], columns["yerr"] < 0,
                          "an uncertainty yerr >= 0")
            self._require_squarable(table, columns, "yerr", "an uncertainty yerr (or 0)", allow_zero=True)

    def check_fixed(self, fixed, columns):
        scatter = fixed.get("scatter")
        if scatter is None:
            return
        if scatter < 0:
            raise UsageError(f"--fix scatter={scatter}: the scatter must be >= 0.", "--fix")
        if scatter == 0 and ("yerr" not in columns or np.any(columns["yerr"] == 0)):
            raise UsageError(
                "--fix scatter=0 leaves rows without uncertainty: it needs a yerr column with every "
                "yerr > 0.",
                "--fix",
            )

    def prepare(self, columns, starts):
        yerr = columns.get("yerr")
        variance = np.zeros_like(columns["y"]) if yerr is None else yerr**2
        return {"x": columns["x"], "y": columns["y"], "variance": variance, "starts": starts,
                "index": np.repeat(np.arange(len(starts) - 1), np.diff(starts))}

    def log_likelihood(self, params, data):
        index = data["index"]
        slope = params["slope"][..., index]
        intercept = params["intercept"][..., index]
        scatter = params["scatter"][..., index]
        variance = data["variance"] + scatter**2
        residual = data["y"] - slope * data["x"] - intercept
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = -0.5 * (residual**2 / variance + np.log(variance) + LOG_2PI)
        return segment_sum(terms, data["starts"])
