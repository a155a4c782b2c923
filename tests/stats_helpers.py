"""Monte Carlo error bookkeeping for statistical tests of MCMC draws.

The Monte Carlo error of MCMC estimates is measured, not assumed: every object
is fitted R times as independent replicates (separate objects with the same
data, hence independent chains), and the spread of the R replicate estimates is
the Monte Carlo error. A one-sample t-test of the replicate estimates against
the exact value gives a p-value per object and moment; under a correct sampler
these are uniform, so Fisher's X = -2 Σ ln p is χ² with 2·(number of tests)
degrees of freedom.

(The effective sample size implied by emcee's integrated autocorrelation time,
n_steps · W / (2τ), overestimates the effective size of ensemble means; in
replicated runs of the binomial model we measured the Monte Carlo variance to be
1.6–2.1 times the τ-based prediction. Hence replicates.)
"""

import numpy as np
import pandas as pd
from scipy import stats

REPLICATES = 8


def replicated(frame, id_column="id", replicates=REPLICATES):
    """The table with every object repeated as ``replicates`` independent objects."""
    parts = []
    for r in range(replicates):
        copy = frame.copy()
        copy[id_column] = copy[id_column].astype(str) + f"#{r}"
        parts.append(copy)
    return pd.concat(parts, ignore_index=True)


def by_replicate(samples, parameter, object_ids, replicates=REPLICATES):
    """Draws of one parameter, shape (n_objects, replicates, K)."""
    draws = samples.draws(parameter)
    index = {object_id: i for i, object_id in enumerate(samples.ids)}
    return np.array([[draws[index[f"{o}#{r}"]] for r in range(replicates)] for o in object_ids])


def moment_pvalues(draws, exact):
    """t-test p-values of the replicate means and variances against ``exact``.

    Parameters
    ----------
    draws : (n_objects, R, K) array
    exact : list of frozen scipy distributions
    """
    pvalues = []
    for replicate_draws, dist in zip(draws, exact):
        mean, var = (float(m) for m in dist.stats(moments="mv"))
        pvalues.append(stats.ttest_1samp(replicate_draws.mean(axis=1), mean).pvalue)
        pvalues.append(stats.ttest_1samp(replicate_draws.var(axis=1, ddof=1), var).pvalue)
    return np.array(pvalues)


def fisher_statistic(pvalues):
    """Fisher's combination -2 Σ ln p, χ²(2·len(pvalues)) under the null."""
    return float(-2.0 * np.sum(np.log(np.maximum(pvalues, 1e-300))))


def fisher_bound(n_pvalues, p=1e-4):
    """Upper (1 - p) quantile of χ²(2·n_pvalues): exceeded by chance with probability p."""
    return stats.chi2.ppf(1.0 - p, 2 * n_pvalues)


def effective_sizes(samples):
    """τ-based ESS of each object's draws, min(K, n_steps·W/(2τ)), shape (N, D).

    Used to thin draws for KS tests, with the measured factor 2 of safety (see
    the module docstring).
    """
    walkers = samples.settings["walkers"]
    steps = samples.diagnostics["n_steps"][:, None]
    tau = samples.diagnostics["autocorr_time"]
    return np.minimum(samples.n_draws, steps * walkers / (2.0 * tau)) / 2.0
