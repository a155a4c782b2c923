"""The joint hierarchical NUTS fits the benchmarks compare popinfer with, importing only numpy
at module level (so a process that fits the joint model alone pays for nutpie's or NumPyro's
imports, not popinfer's, pandas' or scipy's).

The joint model is the usual non-centred normal–normal hierarchy
    mu ~ N(0, 5), tau ~ HalfCauchy(5), z_n ~ N(0, 1), theta_n = mu + tau z_n, y_n ~ N(theta_n, s_n),
fitted with nutpie (``from_pyfunc``: the joint ln p and its gradient in numpy, u = ln tau) or
NumPyro's NUTS (JAX, float64), each with CHAINS chains of TUNE tuning and DRAWS kept draws.
"""

import csv
from pathlib import Path

import numpy as np

CHAINS, TUNE, DRAWS = 4, 1000, 1000
EIGHT_SCHOOLS = Path(__file__).resolve().parent.parent / "sample_data" / "eight_schools.csv"


def eight_schools():
    """(y, s) of the eight schools, read with the standard library."""
    with open(EIGHT_SCHOOLS, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([float(row["y"]) for row in rows]), np.array([float(row["sigma"]) for row in rows])


def bulk_ess(chains):
    import arviz

    return float(arviz.ess(np.asarray(chains), method="bulk"))


def joint_nutpie(y, s, seed, cores=1):
    """The non-centred joint model with nutpie (``cores`` chains at once; None: nutpie's default, one per
    core); returns (mu chains, tau chains), each (C, D)."""
    n = len(y)
    inverse_variance = 1.0 / s**2

    def make_logp():
        def logp(x):
            mu, u, z = x[0], x[1], x[2:]
            tau = np.exp(u)
            residual = (y - mu - tau * z) * inverse_variance  # d/dθ of ln N(y; θ, s)
            value = (-0.5 * mu * mu / 25.0 + np.log(2.0 / np.pi / 5.0) - np.log1p((tau / 5.0) ** 2) + u
                     - 0.5 * z @ z - 0.5 * np.sum((y - mu - tau * z) ** 2 * inverse_variance))
            gradient = np.empty(n + 2)
            gradient[0] = -mu / 25.0 + residual.sum()
            gradient[1] = tau * (-2.0 * tau / (25.0 + tau * tau) + residual @ z) + 1.0
            gradient[2:] = -z + tau * residual
            return value, gradient
        return logp

    mu, tau, _ = sample_nutpie(make_logp, n + 2, ("mu", "tau"), seed, cores=cores)
    return mu, tau


def sample_nutpie(make_logp, n_dim, names, seed, tune=TUNE, draws=DRAWS, cores=1):
    """nutpie on a numpy (ln p, gradient) whose coordinates 0 and 1 are names[0] and ln names[1];
    returns (chains of names[0], chains of names[1], gradient evaluations with tuning), chains (C, D)."""
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    def make_expand(seed1, seed2, chain):
        def expand(x):
            return {names[0]: np.array(x[0]), names[1]: np.array(np.exp(x[1]))}
        return expand

    model = from_pyfunc(n_dim, make_logp, make_expand, [np.dtype("float64")] * 2, [(), ()], list(names))
    trace = nutpie.sample(model, draws=draws, tune=tune, chains=CHAINS, cores=cores, seed=seed, progress_bar=False)
    gradients = int(trace.sample_stats["n_steps"].sum() + trace.warmup_sample_stats["n_steps"].sum())
    return trace.posterior[names[0]].values, trace.posterior[names[1]].values, gradients


def joint_numpyro(y, s, seed):
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    numpyro.enable_x64()

    def model(y, s):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("objects", len(y)):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(mu + tau * z, s), obs=y)

    mcmc = MCMC(NUTS(model), num_warmup=TUNE, num_samples=DRAWS, num_chains=CHAINS, chain_method="sequential",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), y=y, s=s)
    draws = mcmc.get_samples(group_by_chain=True)
    return np.asarray(draws["mu"]), np.asarray(draws["tau"])


