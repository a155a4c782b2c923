"""Stage two's samplers side by side: emcee against NUTS (nutpie) on the same posterior.

Stage-one draws are exact (θ_nk ~ N(y_n, s_n), the posterior under a flat interim prior
on [-100, 100]), so both samplers see the same ln L̂ and the exact posterior of
(mu, tau) is known by quadrature (mu integrated in closed form, tau on a grid of its
hyperprior's quantiles): mu ~ N(0, 5), tau ~ HalfCauchy(5).

Cases: the eight schools (K = 4000), N = 1000 simulated normal objects (K = 1000), and
N = 1000 simulated binomial experiments with a beta population (K = 1000 exact draws
Beta(k + 1, n − k + 1) under a uniform interim prior; a, b ~ LogNormal(0, 2), the exact
posterior on a grid of (ln a, ln b); the table's "mu, tau" columns are a, b).
For each sampler and seed: wall and CPU time, ln L̂ evaluations (emcee: walkers × steps
plus the start; NUTS: gradient evaluations, tuning included), the effective sample size
of every hyperparameter (emcee: popinfer's τ-based n_steps/2 · W/τ, which overstates
ensemble ESS by up to ~2×, tests/stats_helpers.py; NUTS: ArviZ's bulk ESS across chains),
evaluations per effective draw, ESS per second, and the error of E[mu], E[tau] against
the exact values in units of the posterior sd.

    python benchmarks/samplers.py                   # every case, seeds 1 and 2 (several minutes)
    python benchmarks/samplers.py --case eight --seeds 1
    python benchmarks/samplers.py --case normal1000 --seeds 1 --samples 1000 --samplers nuts
    python benchmarks/samplers.py --case normal30 normal100 normal300 --seeds 1   # where NUTS starts to pay
    python benchmarks/samplers.py --case eight --seeds 1 2 --quantiles   # a smooth ln L̂
    python benchmarks/samplers.py --case normal10000 --seeds 1 --samplers nuts --exp-precision double single
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


def exact_samples(y, s, n_draws, seed, quantiles=False):
    """Exact posterior draws of each object, N(y_n, s_n): random, or (``quantiles``) its K
    quantiles at (k + ½)/K, whose ln L̂ is smooth in the hyperparameters."""
    rng = np.random.default_rng(seed)
    if quantiles:
        standard = np.broadcast_to(stats.norm.ppf((np.arange(n_draws) + 0.5) / n_draws)[None, :, None],
                                   (len(y), n_draws, 1))
    else:
        standard = rng.standard_normal((len(y), n_draws, 1))
    theta = y[:, None, None] + s[:, None, None] * standard
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
    precision, weighted, log_marginal = np.empty(n_grid), np.empty(n_grid), np.empty(n_grid)
    step = max(1, 2**22 // len(y))  # grid points per block: (step, N) arrays of ≈ 32 MiB
    for lo in range(0, n_grid, step):
        variance = s[None, :] ** 2 + tau[lo:lo + step, None] ** 2
        precision[lo:lo + step] = 1.0 / mu_scale**2 + np.sum(1.0 / variance, axis=1)
        weighted[lo:lo + step] = np.sum(y / variance, axis=1)
        log_marginal[lo:lo + step] = (-0.5 * np.sum(np.log(variance) + y**2 / variance, axis=1)
                                      + 0.5 * weighted[lo:lo + step] ** 2 / precision[lo:lo + step]
                                      - 0.5 * np.log(precision[lo:lo + step]))
    mean = weighted / precision
    w = np.exp(log_marginal - log_marginal.max())
    w /= w.sum()
    e_mu = float(w @ mean)
    e_tau = float(w @ tau)
    sd_mu = math.sqrt(float(w @ (1.0 / precision + mean**2)) - e_mu**2)
    sd_tau = math.sqrt(float(w @ tau**2) - e_tau**2)
    return {"mu": (e_mu, sd_mu), "sigma": (e_tau, sd_tau)}


def case_data(name):
    """(y, s, K) of a case: ``eight`` (the eight schools, K = 4000) or ``normalN`` (N simulated
    normal objects, K = 1000; the first 1000 of ``normal10000`` are not ``normal1000``'s)."""
    if name == "eight":
        frame = pd.read_csv("sample_data/eight_schools.csv")
        return frame["y"].to_numpy(float), frame["sigma"].to_numpy(float), 4000
    rng = np.random.default_rng(2024)
    n = int(name.removeprefix("normal"))
    s = rng.uniform(0.5, 1.5, n)
    y = rng.normal(1.0, 0.8, n) + s * rng.standard_normal(n)
    return y, s, 1000


BETA_HYPERPRIORS = ["a=lognormal(0, 2)", "b=lognormal(0, 2)"]


def beta_case(seed=2025, n=1000, n_draws=1000):
    """Exact stage-one draws of N binomial experiments and the exact moments of (a, b)."""
    from scipy.special import betaln

    rng = np.random.default_rng(seed)
    trials = rng.integers(30, 100, n)
    successes = rng.binomial(trials, rng.beta(3.0, 12.0, n))
    draw_rng = np.random.default_rng(seed + 1)
    theta = draw_rng.beta(successes[:, None] + 1, (trials - successes)[:, None] + 1, (n, n_draws))[..., None]
    samples = popinfer.Samples(
        ids=[f"e{i}" for i in range(n)], parameters=["p"], samples=theta, log_interim_prior=np.zeros(theta.shape),
        log_likelihood=np.zeros((n, n_draws)),
        diagnostics={"acceptance_fraction": np.full(n, 0.5), "autocorr_time": np.ones((n, 1)),
                     "n_steps": np.full(n, 1000), "converged": np.ones(n, dtype=bool),
                     "effective_draws": np.full(n, float(n_draws))},
        model="binomial", interim_prior={"p": "uniform(0.0, 1.0)"}, settings={}, seed=seed)
    log_a, log_b = np.meshgrid(np.linspace(0.0, 3.0, 400), np.linspace(1.5, 4.5, 400), indexing="ij")
    a, b = np.exp(log_a), np.exp(log_b)
    log_post = stats.norm.logpdf(log_a, 0, 2) + stats.norm.logpdf(log_b, 0, 2)
    for k, m in zip(successes, trials):
        log_post += betaln(a + k, b + m - k) - betaln(a, b)
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    assert w[[0, -1], :].sum() + w[:, [0, -1]].sum() < 1e-8
    moments = {}
    for name, values in (("a", a), ("b", b)):
        mean = float((w * values).sum())
        moments[name] = (mean, math.sqrt(float((w * values**2).sum()) - mean**2))
    return samples, moments


def run(samples, sampler, seed, n_samples, population="normal", hyperpriors=HYPERPRIORS, progress=False,
        **options):
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = popinfer.fit_population(samples, population, hyperpriors=hyperpriors, seed=seed, sampler=sampler,
                                         n_samples=n_samples, n_reweighted=10, progress=progress, **options)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    settings = result.settings
    if sampler == "emcee":
        evaluations = settings["n_steps"] * settings["walkers"] + 8 * settings["walkers"]
        ess = {name: settings["n_steps"] / 2 * settings["walkers"] / tau
               for name, tau in zip(result.hyperparameters, result.autocorr_time)}
    else:
        evaluations = nuts_evaluations(settings)
        ess = dict(settings["ess_bulk"])
    warned = sorted({type(w.message).__name__ for w in caught})
    return result, wall, cpu_seconds, evaluations, ess, warned


def nuts_evaluations(settings):
    """NUTS's gradient evaluations in full-draw equivalents: those of the tuning on every
    ``tune_thin``-th draw count 1/tune_thin each."""
    thinned = settings.get("tuning_evaluations_thinned", 0)
    return round(settings["gradient_evaluations"] - thinned + thinned / settings.get("tune_thin", 1))


def case_name(text):
    if text in ("eight", "beta1000", "all") or (text.startswith("normal") and text[6:].isdigit() and int(text[6:]) > 1):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected eight, normalN (N > 1), beta1000 or all")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", default=["all"], type=case_name,
                        help="eight, normalN (N simulated normal objects, e.g. normal1000), beta1000, or all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--samplers", nargs="+", choices=["emcee", "nuts"], default=["emcee", "nuts"])
    parser.add_argument("--quantiles", action="store_true",
                        help="normal cases: each object's K posterior quantiles instead of K random draws "
                             "(a smooth ln L̂; the seed then only seeds the samplers)")
    parser.add_argument("--tune", type=int, help="nuts: adaptation steps per chain (default: fit_population's)")
    parser.add_argument("--tune-thin", type=int, help="nuts: tune on every N-th draw (default: fit_population's)")
    parser.add_argument("--progress", action="store_true", help="show stage two's progress bar")
    parser.add_argument("--exp-precision", nargs="+", choices=["double", "single"], default=["double"],
                        help="the kernel's exponentials (fit_population's exp_precision); several: each run "
                             "once per precision, alternating")
    args = parser.parse_args()
    nuts_options = {k: v for k, v in (("tune", args.tune), ("tune_thin", args.tune_thin)) if v is not None}
    cases = ["eight", "normal1000", "beta1000"] if args.case == ["all"] else args.case
    for case in cases:
        if case == "beta1000":
            beta_samples, exact = beta_case()
            names, population, hyperpriors = ("a", "b"), "beta", BETA_HYPERPRIORS
        else:
            y, s, n_draws = case_data(case)
            exact = exact_moments(y, s)
            names, population, hyperpriors = ("mu", "sigma"), "normal", HYPERPRIORS
        print(f"\n{case}: exact " + ", ".join(f"E[{n}] = {exact[n][0]:.4f} (sd {exact[n][1]:.4f})" for n in names))
        print("sampler precision seed  wall_s  cpu_s  evaluations  ESS_mu  ESS_tau  evals/ESS  ESS/s(min)  "
              "err_mu/sd  err_tau/sd  warnings")
        for seed in args.seeds:
            samples = beta_samples if case == "beta1000" else exact_samples(y, s, n_draws, seed, args.quantiles)
            for sampler, precision in [(name, p) for name in args.samplers for p in args.exp_precision]:
                options = nuts_options if sampler == "nuts" else {}
                result, wall, cpu, evaluations, ess, warned = run(samples, sampler, seed + 100, args.samples,
                                                                  population, hyperpriors, progress=args.progress,
                                                                  exp_precision=precision, **options)
                errors = [(float(result.hyper(name).mean()) - exact[name][0]) / exact[name][1] for name in names]
                low = min(ess.values())
                print(f"{sampler:7s} {precision:9s} {seed:4d} {wall:7.1f} {cpu:6.1f} {evaluations:12d} {ess[names[0]]:7.0f} "
                      f"{ess[names[1]]:8.0f} {evaluations / low:10.1f} {low / wall:11.1f} {errors[0]:+10.3f} "
                      f"{errors[1]:+11.3f}  {','.join(warned) or '-'}", flush=True)


if __name__ == "__main__":
    main()
