"""Monte Carlo error bookkeeping for statistical tests of MCMC draws."""

import numpy as np
from scipy import stats


def effective_sizes(samples):
    """ESS of each object's K kept draws, shape (N, D).

    The K draws are spread evenly over the kept second half of a chain of
    n_steps steps and W walkers, which holds n_steps·W/2 positions with
    integrated autocorrelation time τ (in steps): ESS = min(K, n_steps·W / (2τ)).
    """
    walkers = samples.settings["walkers"]
    steps = samples.diagnostics["n_steps"][:, None]
    tau = samples.diagnostics["autocorr_time"]
    return np.minimum(samples.n_draws, steps * walkers / (2.0 * tau))


def moment_statistic(draws, ess, exact):
    """Σ z² over objects of the mean and variance errors, ~ χ²(2N) if ``exact`` is right.

    Parameters
    ----------
    draws : (N, K) array; ess : (N,) array; exact : list of frozen scipy distributions.
    """
    total = 0.0
    for values, n_eff, dist in zip(draws, ess, exact):
        mean, var, _, excess_kurtosis = (float(m) for m in dist.stats(moments="mvsk"))
        z_mean = (values.mean() - mean) / np.sqrt(var / n_eff)
        z_var = (values.var(ddof=1) - var) / (var * np.sqrt((excess_kurtosis + 2.0) / n_eff))
        total += z_mean**2 + z_var**2
    return total


def chi2_bound(n_terms, p=1e-4):
    """Upper (1 - p) quantile of χ²(n_terms): exceeded by chance with probability p."""
    return stats.chi2.ppf(1.0 - p, n_terms)
