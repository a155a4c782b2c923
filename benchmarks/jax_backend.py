"""The JAX backend's kernel against the numpy kernel (``--backend jax`` vs ``--backend numpy``).

Per evaluation, as stage two's samplers call the kernel, over N objects × K draws:
ln L̂ for W walkers (emcee's call, with and without the variance), and ln L̂ with
its gradient at one point (a gradient sampler's call): numpy's analytic gradient
against JAX's automatic differentiation. Populations: ``normal`` (numpy uses its
linear form, one matrix product per chunk) and ``studentt`` (no linear form: the
direct density on both sides). The calls are interleaved (best of ``--repeats``)
so a change of load affects both alike; the largest difference of ln L̂ is printed
with each row. Compilation (the first call of each shape) is timed apart.

    python benchmarks/jax_backend.py
    python benchmarks/jax_backend.py --objects 1000 --draws 1000 --walkers 32
"""

import argparse
import os
import time

import jax
import numpy as np

from popinfer.populations import get_population
from popinfer.reweighting.jax_backend import JaxHyperLikelihood
from popinfer.reweighting.likelihood import HyperLikelihood
from selection import best_of  # benchmarks/selection.py: interleaved calls, best of each


def timed(function):
    began = time.perf_counter()
    function()
    return time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--walkers", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n_objects, n_draws, n_walkers = args.objects, args.draws, args.walkers
    theta = (rng.normal(size=(n_objects, 1)) * 3 + rng.normal(size=(n_objects, n_draws)) * 2)[..., None]
    log_p0 = np.full((n_objects, n_draws), -np.log(2000.0))
    cases = {
        "normal": {"mu": rng.normal(size=n_walkers), "sigma": rng.uniform(2.0, 5.0, n_walkers)},
        "studentt": {"nu": rng.uniform(2.0, 10.0, n_walkers), "mu": rng.normal(size=n_walkers),
                     "sigma": rng.uniform(2.0, 5.0, n_walkers)},
    }
    print(f"N = {n_objects}, K = {n_draws}, W = {n_walkers}; jax {jax.__version__} on {jax.devices()[0]}; "
          f"{os.cpu_count()} cores")
    print("| population | call | numpy | jax | numpy / jax | ns per object·draw·walker (numpy, jax) | "
          "max abs difference | jax compile (first call) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, hyper in cases.items():
        population = get_population(name, ["theta"])
        kernels = HyperLikelihood(population, theta, log_p0), JaxHyperLikelihood(population, theta, log_p0)
        names = list(hyper)
        one = {key: value[:1] for key, value in hyper.items()}
        calls = {
            f"ln L̂, {n_walkers} walkers": (n_walkers, lambda k: k.ln_likelihood_and_variance(hyper, variance=False)),
            f"ln L̂ + Var, {n_walkers} walkers": (n_walkers, lambda k: k.ln_likelihood_and_variance(hyper)),
            "ln L̂ + gradient, 1 point": (1, lambda k: k.ln_likelihood_and_variance(one, variance=False,
                                                                                    gradient=names)),
        }
        for label, (walkers, call) in calls.items():
            compile_seconds = timed(lambda: call(kernels[1]))
            call(kernels[0])
            numpy_seconds, jax_seconds = best_of(args.repeats, lambda: call(kernels[0]), lambda: call(kernels[1]))
            expected, got = call(kernels[0]), call(kernels[1])
            difference = np.max(np.abs(expected.ln_likelihood - got.ln_likelihood))
            if expected.gradient is not None:
                difference = max(difference, np.max(np.abs(expected.gradient - got.gradient)))
            elements = n_objects * n_draws * walkers
            print(f"| {name} | {label} | {numpy_seconds * 1e3:.1f} ms | {jax_seconds * 1e3:.1f} ms | "
                  f"{numpy_seconds / jax_seconds:.2f} | {numpy_seconds / elements * 1e9:.2f}, "
                  f"{jax_seconds / elements * 1e9:.2f} | {difference:.1e} | {compile_seconds:.2f} s |")
        kernels[0].close()


if __name__ == "__main__":
    main()
