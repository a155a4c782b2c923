"""``normal``: y_r ~ Normal(theta, sigma_r) with known sigma, or a fitted ``scatter``."""

import numpy as np

from ..errors import UsageError
from .base import Model, segment_sum

LOG_2PI = np.log(2.0 * np.pi)


class NormalModel(Model):
    """Measurements ``y`` of one true value ``theta`` per object.

    With a ``sigma`` column (known standard errors):
    ln L = -1/2 Σ_r ((y_r - θ)/σ_r)² - Σ_r ln σ_r - (n/2) ln 2π.
    Without it, a common ``scatter`` s is fitted: σ_r = s.
    Both are evaluated through sufficient statistics (weighted mean and
    residual sum of squares), so many rows per object cost nothing per step.
    """

    name = "normal"
    roles = {"y": True, "sigma": False}
    default_priors = {"theta": "uniform(-1000, 1000)", "scatter": "loguniform(0.001, 1000)"}
    supports = {"theta": (-np.inf, np.inf)}

    def __init__(self, columns=None, table_columns=None):
        super().__init__(columns, table_columns)
        self.known_sigma = "sigma" in self.present
        self.parameters = ("theta",) if self.known_sigma else ("theta", "scatter")

    def validate(self, table, columns):
        if self.known_sigma:
            self._require(table, columns, "sigma", self.column_names["sigma"], columns["sigma"] <= 0,
                          "a standard error sigma > 0")
            self._require_squarable(table, columns, "sigma", "a standard error sigma")

    def check_fixed(self, fixed, columns):
        if fixed.get("scatter", 1.0) <= 0:
            raise UsageError(f"--fix scatter={fixed['scatter']}: the scatter must be > 0.", "--fix")

    def prepare(self, columns, starts):
        y = columns["y"]
        counts = np.diff(starts).astype(float)
        if self.known_sigma:
            weights = 1.0 / columns["sigma"] ** 2
        else:
            weights = np.ones_like(y)
        precision = segment_sum(weights, starts)
        # The mean is kept as (reference, offset) with the object's first y as the
        # reference, so that θ - mean stays accurate when |y| >> spread.
        reference = y[starts[:-1]]
        offset_rows = y - np.repeat(reference, np.diff(starts))
        offset = segment_sum(weights * offset_rows, starts) / precision
        residual = segment_sum(weights * (offset_rows - np.repeat(offset, np.diff(starts))) ** 2, starts)
        constant = -0.5 * counts * LOG_2PI
        if self.known_sigma:
            constant = constant - segment_sum(np.log(columns["sigma"]), starts)
        return {"precision": precision, "reference": reference, "offset": offset, "residual": residual, "counts": counts,
                "constant": constant}

    def log_likelihood(self, params, data):
        theta = params["theta"]
        quadratic = data["precision"] * ((theta - data["reference"]) - data["offset"]) ** 2 + data["residual"]
        if self.known_sigma:
            return data["constant"] - 0.5 * quadratic
        scatter = params["scatter"]
        return data["constant"] - 0.5 * quadratic / scatter**2 - data["counts"] * np.log(scatter)
