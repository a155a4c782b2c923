"""Stage two's samplers side by side: emcee against NUTS (nutpie) on the same posterior.

Stage-one draws are exact (θ_nk ~ N(y_n, s_n), the posterior under a flat interim prior
on [-100, 100]), so both samplers see the same ln L̂ and the exact posterior of
(mu, tau) is known by quadrature (mu integrated in closed form, tau on a grid of its
hyperprior's quantiles): mu ~ N(0, 5), tau ~ HalfCauchy(5).

Cases: the eight schools (K = 4000) and N = 1000 simulated normal objects (K = 1000).
For each sampler and seed: wall and CPU time, ln L̂ evaluations (emcee: walkers × steps
plus the start; NUTS: gradient evaluations, tuning included), the effective sample size
of every hyperparameter (emcee: popinfer's τ-based n_steps/2 · W/τ, which overstates
ensemble ESS by up to ~2×, tests/stats_helpers.py; NUTS: ArviZ's bulk ESS across chains),
evaluations per effective draw, ESS per second, and the error of E[mu], E[tau] against
the exact values in units of the posterior sd.

    python benchmarks/samplers.py                   # both cases, seeds 1 and 2 (a few minutes)
    python benchmarks/samplers.py --case eight --seeds 1
"""

import argparse
import math
import resource
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats

import popinfer

HYPERPRIORS = ["mu=normal(0, 5)", "sigma=halfcauchy(5)"]
INTERIM = 100.0


def exact_samples(y, s, n_draws, seed):
    rng = np.random.default_rng(seed)
    theta = y[:, None, None] + s[:, None, None] * rng.standard_normal((len(y), n_draws, 1))
    n = len(y)
    return popinfer.Samples(
        ids=[f"o{i}" for i in range(n)], parameters=["theta"], samples=theta,
        log_interim_prior=np.full((n, n_draws, 1), -np.log(2 * INTERIM)),
        log_likelihood=stats.norm.logpdf(theta[..., 0], y[:, None], s[:, None]),
        diagnostics={"acceptance_fraction": np.full(n, 0.5), "autocorr_time": np.ones((n, 1)),
                     "n_steps": np.full(n, 1000), "converged": np.ones(n, dtype=bool),
                     "effective_draws": np.full(n, float(n_draws))},
        model="normal", interim_prior={"theta": f"uniform({-INTERIM}, {INTERIM})"},
        settings={"columns": {"y": "y", "sigma": "sigma"}}, seed=seed)


def exact_moments(y, s, mu_scale=5.0, tau_scale=5.0, n_grid=20001):
    """E and sd of mu and tau: tau on its hyperprior's quantile grid, mu in closed form given tau."""
    tau = stats.halfcauchy(scale=tau_scale).ppf((np.arange(n_grid) + 0.5) / n_grid)
    variance = s[None, :] ** 2 + tau[:, None] ** 2
    precision = 1.0 / mu_scale**2 + np.sum(1.0 / variance, axis=1)
    weighted = np.sum(y / variance, axis=1)
    mean = weighted / precision
    log_marginal = (-0.5 * np.sum(np.log(variance) + y**2 / variance, axis=1) + 0.5 * weighted**2 / precision
                    - 0.5 * np.log(precision))
    w = np.exp(log_marginal - log_marginal.max())
    w /= w.sum()
    e_mu = float(w @ mean)
    e_tau = float(w @ tau)
    sd_mu = math.sqrt(float(w @ (1.0 / precision + mean**2)) - e_mu**2)
    sd_tau = math.sqrt(float(w @ tau**2) - e_tau**2)
    return {"mu": (e_mu, sd_mu), "sigma": (e_tau, sd_tau)}


def case_data(name):
    if name == "eight":
        frame = pd.read_csv("sample_data/eight_schools.csv")
        return frame["y"].to_numpy(float), frame["sigma"].to_numpy(float), 4000
    rng = np.random.default_rng(2024)
    n = 1000
    s = rng.uniform(0.5, 1.5, n)
    y = rng.normal(1.0, 0.8, n) + s * rng.standard_normal(n)
    return y, s, 1000


def run(samples, sampler, seed, n_samples):
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = popinfer.fit_population(samples, "normal", hyperpriors=HYPERPRIORS, seed=seed, sampler=sampler,
                                         n_samples=n_samples, n_reweighted=10, progress=False)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    settings = result.settings
    if sampler == "emcee":
        evaluations = settings["n_steps"] * settings["walkers"] + 8 * settings["walkers"]
        ess = {name: settings["n_steps"] / 2 * settings["walkers"] / tau
               for name, tau in zip(result.hyperparameters, result.autocorr_time)}
    else:
        evaluations = settings["gradient_evaluations"]
        ess = dict(settings["ess_bulk"])
    warned = sorted({type(w.message).__name__ for w in caught})
    return result, wall, cpu_seconds, evaluations, ess, warned


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["eight", "normal1000", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--samples", type=int, default=4000)
    args = parser.parse_args()
    cases = ["eight", "normal1000"] if args.case == "both" else [args.case]
    for case in cases:
        y, s, n_draws = case_data(case)
        exact = exact_moments(y, s)
        print(f"\n{case}: N = {len(y)}, K = {n_draws}; exact E[mu] = {exact['mu'][0]:.4f} (sd {exact['mu'][1]:.4f}), "
              f"E[tau] = {exact['sigma'][0]:.4f} (sd {exact['sigma'][1]:.4f})")
        print("sampler seed  wall_s  cpu_s  evaluations  ESS_mu  ESS_tau  evals/ESS  ESS/s(min)  "
              "err_mu/sd  err_tau/sd  warnings")
        for seed in args.seeds:
            samples = exact_samples(y, s, n_draws, seed)
            for sampler in ("emcee", "nuts"):
                result, wall, cpu, evaluations, ess, warned = run(samples, sampler, seed + 100, args.samples)
                errors = {name: (float(result.hyper(name).mean()) - exact[name][0]) / exact[name][1]
                          for name in ("mu", "sigma")}
                low = min(ess.values())
                print(f"{sampler:7s} {seed:4d} {wall:7.1f} {cpu:6.1f} {evaluations:12d} {ess['mu']:7.0f} "
                      f"{ess['sigma']:8.0f} {evaluations / low:10.1f} {low / wall:11.1f} {errors['mu']:+10.3f} "
                      f"{errors['sigma']:+11.3f}  {','.join(warned) or '-'}", flush=True)


if __name__ == "__main__":
    main()
