"""How many stage-one draws K per object are enough: Var[ln L̂], the smallest per-object ESS
and the resulting error of the posterior means, against K.

Stage-one draws are exact and independent (θ_nk ~ N(y_n, s_n), the posterior under a
flat interim prior; stage one keeps K effectively independent draws, so this is what it
delivers), normal population, mu ~ N(0, 5), tau ~ HalfCauchy(5). For the normal–normal
model the exact ln L(α) is known, so the error that ln L̂'s noise puts into the posterior
is measured without running stage two: M draws α_i of the exact posterior are reweighted
by r_i = exp(ln L̂(α_i) − ln L(α_i)), and E_K[g] = Σ r_i g(α_i) / Σ r_i is the posterior
mean that a sampler of ln L̂ would converge to (for the same α_i at every K and seed, so
the differences come from K alone).

Per case and K, over stage-one seeds: the median and 90th percentile of Var[ln L̂] at the
posterior draws, the median over posterior draws of the smallest per-object ESS
(min_n ESS_n), the fraction of posterior draws where some object has ESS < 20 (the
default ``--min-ess`` warning), and the errors of E[mu], E[tau] in posterior sd (mean and
spread over seeds), with the ESS of the weights r (when it is small the K is too small for
the reweighting itself to be trusted, and so is ln L̂). Cases: the eight schools and
N = 1000 simulated normal objects (``benchmarks/samplers.py``).

    python benchmarks/right_sized_k.py                     # both cases, K = 250 … 4000, 3 seeds
    python benchmarks/right_sized_k.py --case normal1000 --draws 500 1000 --seeds 1 2
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from popinfer.populations import get_population
from popinfer.reweighting.likelihood import HyperLikelihood

sys.path.insert(0, str(Path(__file__).resolve().parent))
from samplers import case_data, exact_samples  # noqa: E402


def exact_posterior_draws(y, s, n, seed, mu_scale=5.0, tau_scale=5.0, n_grid=20001):
    """n draws of (mu, tau) from the exact posterior: tau from its hyperprior's quantile grid, mu | tau in closed form."""
    rng = np.random.default_rng(seed)
    tau = stats.halfcauchy(scale=tau_scale).ppf((np.arange(n_grid) + 0.5) / n_grid)
    variance = s[None, :] ** 2 + tau[:, None] ** 2
    precision = 1.0 / mu_scale**2 + np.sum(1.0 / variance, axis=1)
    weighted = np.sum(y / variance, axis=1)
    log_marginal = (-0.5 * np.sum(np.log(variance) + y**2 / variance, axis=1) + 0.5 * weighted**2 / precision
                    - 0.5 * np.log(precision))
    w = np.exp(log_marginal - log_marginal.max())
    index = rng.choice(n_grid, size=n, p=w / w.sum())
    mu = weighted[index] / precision[index] + rng.standard_normal(n) / np.sqrt(precision[index])
    return mu, tau[index]


def exact_log_likelihood(y, s, mu, tau):
    """ln L(α) up to a constant: Σ_n ln N(y_n; mu, √(s_n² + tau²))."""
    return stats.norm.logpdf(y[None, :], mu[:, None], np.sqrt(s[None, :] ** 2 + tau[:, None] ** 2)).sum(axis=1)


def measure(y, s, n_draws, seed, mu, tau, exact):
    samples = exact_samples(y, s, n_draws, seed)
    likelihood = HyperLikelihood(get_population("normal", ["theta"]), samples.samples,
                                 samples.log_interim_prior[..., 0])
    estimate = likelihood.ln_likelihood_and_variance({"mu": mu, "sigma": tau}, cut=False)
    likelihood.close()
    log_r = estimate.ln_likelihood - exact
    r = np.exp(log_r - log_r.max())
    r /= r.sum()
    return {"variance": estimate.ln_likelihood_variance, "min_ess": estimate.ess.min(axis=1),
            "mu": float(r @ mu), "tau": float(r @ tau), "ess_r": 1.0 / float(r @ r)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["eight", "normal1000", "both"], default="both")
    parser.add_argument("--draws", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--posterior-draws", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    for case in (["eight", "normal1000"] if args.case == "both" else [args.case]):
        y, s, _ = case_data(case)
        mu, tau = exact_posterior_draws(y, s, args.posterior_draws, 7)
        exact = exact_log_likelihood(y, s, mu, tau)
        sd = {"mu": mu.std(), "tau": tau.std()}
        print(f"\n{case}: N = {len(y)}; {args.posterior_draws} exact posterior draws, sd mu {sd['mu']:.4f}, "
              f"sd tau {sd['tau']:.4f}; seeds {args.seeds}")
        print(f"{'K':>5s} {'Var med':>8s} {'Var p90':>8s} {'minESS med':>10s} {'P(ESS<20)':>9s} "
              f"{'err_mu/sd':>15s} {'err_tau/sd':>15s} {'ESS(r) min':>10s} {'time_s':>7s}")
        for n_draws in args.draws:
            began = time.perf_counter()
            runs = [measure(y, s, n_draws, seed, mu, tau, exact) for seed in args.seeds]
            variance = np.concatenate([run["variance"] for run in runs])
            min_ess = np.concatenate([run["min_ess"] for run in runs])
            errors = {name: np.array([(run[name] - np.mean(values)) / sd[name] for run in runs])
                      for name, values in (("mu", mu), ("tau", tau))}
            print(f"{n_draws:5d} {np.median(variance):8.3f} {np.percentile(variance, 90):8.3f} "
                  f"{np.median(min_ess):10.1f} {np.mean(min_ess < 20):9.3f} "
                  f"{errors['mu'].mean():+7.3f}±{errors['mu'].std():5.3f} "
                  f"{errors['tau'].mean():+7.3f}±{errors['tau'].std():5.3f} "
                  f"{min(run['ess_r'] for run in runs):10.0f} {time.perf_counter() - began:7.1f}", flush=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
