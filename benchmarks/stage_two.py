"""Stage two speed: the hyper-likelihood kernel, and the whole eight-schools pipeline.

1. ln L evaluations for N objects × K draws × W walkers (normal population),
   popinfer's kernel against the straightforward reference in the same run:
   per walker, ``logsumexp(norm.logpdf(θ, μ, σ) - log p0, axis=1).sum()``.
   Reports ns per (object × draw × walker) and the largest relative difference.
2. The eight-schools pipeline, both stages, K = 20000 draws per school.

    python benchmarks/stage_two.py
    python benchmarks/stage_two.py --objects 200 --draws 500
"""

import argparse
import time

import numpy as np
from scipy import stats
from scipy.special import logsumexp

import popinfer
from popinfer.populations import get_population
from popinfer.reweighting.likelihood import HyperLikelihood


def kernel(n_objects, n_draws, n_walkers, repeats, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(n_objects, 1)) * 3 + rng.normal(size=(n_objects, n_draws)) * 2
    log_p0 = np.full((n_objects, n_draws), -np.log(2000.0))
    hyper = {"mu": rng.normal(size=n_walkers), "sigma": rng.uniform(0.5, 4.0, n_walkers)}

    began = time.perf_counter()
    reference = np.array([logsumexp(stats.norm.logpdf(theta, hyper["mu"][w], hyper["sigma"][w]) - log_p0, axis=1).sum()
                          for w in range(n_walkers)]) - n_objects * np.log(n_draws)
    reference_seconds = time.perf_counter() - began

    likelihood = HyperLikelihood(get_population("normal", ["theta"]), theta[..., None], log_p0)
    likelihood(hyper)  # warm up the thread pool
    began = time.perf_counter()
    for _ in range(repeats):
        fast = likelihood(hyper)
    fast_seconds = (time.perf_counter() - began) / repeats
    likelihood.close()
    elements = n_objects * n_draws * n_walkers
    print(f"kernel: N = {n_objects}, K = {n_draws}, W = {n_walkers}")
    print(f"  reference: {1e9 * reference_seconds / elements:.2f} ns per object x draw x walker")
    print(f"  popinfer:  {1e9 * fast_seconds / elements:.2f} ns per object x draw x walker")
    print(f"  speed-up: {reference_seconds / fast_seconds:.1f}x; "
          f"max relative difference {np.max(np.abs(fast - reference) / np.abs(reference)):.1e}")


def eight_schools(draws, seed):
    began = time.perf_counter()
    samples = popinfer.fit_individuals("sample_data/eight_schools.csv", "normal", priors=["theta=uniform(-100, 100)"],
                                       n_draws=draws, seed=seed, progress=False)
    middle = time.perf_counter()
    result = popinfer.fit_population(samples, "normal", hyperpriors=["mu=normal(0, 5)", "sigma=halfcauchy(5)"],
                                     seed=seed + 1, progress=False)
    end = time.perf_counter()
    print(f"eight schools, K = {draws}: stage one {middle - began:.1f} s "
          f"({samples.settings['walkers']} walkers, {samples.diagnostics['n_steps'].mean():.0f} steps), "
          f"stage two {end - middle:.1f} s ({result.settings['n_steps']} steps), total {end - began:.1f} s; "
          f"E[mu] = {result.hyper('mu').mean():.2f}, E[tau] = {result.hyper('sigma').mean():.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--walkers", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eight-schools-draws", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    kernel(args.objects, args.draws, args.walkers, args.repeats, args.seed)
    eight_schools(args.eight_schools_draws, args.seed)


if __name__ == "__main__":
    main()
