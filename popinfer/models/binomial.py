"""``binomial``: k_r ~ Binomial(n_r, p)."""

import numpy as np
from scipy.special import gammaln, xlog1py, xlogy

from ..errors import UsageError
from .base import Model, segment_sum


class BinomialModel(Model):
    """k successes in n trials with success probability ``p``.

    ln L = Σ_r ln C(n_r, k_r) + k ln p + (n - k) ln(1 - p), with k = Σ k_r, n = Σ n_r.
    """

    name = "binomial"
    roles = {"k": True, "n": True}
    parameters = ("p",)
    default_priors = {"p": "uniform(0, 1)"}

    def validate(self, table, columns):
        k, n = columns["k"], columns["n"]
        name_k, name_n = self.column_names["k"], self.column_names["n"]
        self._require(table, columns, "n", name_n, (n < 0) | (n != np.round(n)), "a whole number of trials n >= 0")
        self._require(table, columns, "k", name_k, (k < 0) | (k != np.round(k)), "a whole number of successes k >= 0")
        self._require(table, columns, "k", name_k, k > n, f"k <= n (the {name_n!r} column)")

    def check_fixed(self, fixed, columns):
        if not 0 <= fixed.get("p", 0.5) <= 1:
            raise UsageError(f"--fix p={fixed['p']}: a probability must lie in [0, 1].", "--fix")

    def prepare(self, columns, starts):
        k, n = columns["k"], columns["n"]
        log_binomial = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
        return {"k": segment_sum(k, starts), "failures": segment_sum(n - k, starts),
                "constant": segment_sum(log_binomial, starts)}

    def log_likelihood(self, params, data):
        p = params["p"]
        return data["constant"] + xlogy(data["k"], p) + xlog1py(data["failures"], -p)
