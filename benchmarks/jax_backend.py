"""The JAX backend's kernel against the numpy kernel (``--backend jax`` vs ``--backend numpy``).

Per evaluation, as stage two's samplers call the kernel, over N objects × K draws:
ln L̂ for W walkers (emcee's call, with and without the variance), and ln L̂ with
its gradient at one point (a gradient sampler's call): numpy's analytic gradient
against JAX's automatic differentiation. Populations: ``normal`` (numpy uses its
linear form, one matrix product per chunk) and ``studentt`` (no linear form: the
direct density on both sides). The calls are interleaved (best of ``--repeats``)
so a change of load affects both alike; the largest difference of ln L̂ is printed
with each row. Compilation (the first call of each shape) is timed apart.

With ``--fits``, whole stage-two fits instead (``popinfer.fit_population`` on exact posterior
draws, ``samplers.py``'s cases), numpy and jax alternating, each with the same seed: wall time,
compilation included, and the posterior means (equal to the printed digits: the same draws).
Which backend is faster depends on the CPU: numpy's float64 exp is vectorised only with
AVX-512 (the header says whether this CPU has it), which is what ``--backend auto`` reads.

    python benchmarks/jax_backend.py
    python benchmarks/jax_backend.py --objects 1000 --draws 1000 --walkers 32
    python benchmarks/jax_backend.py --fits eight normal1000 --samplers emcee nuts --fit-repeats 2
"""

import argparse
import os
import time
import warnings

import jax
import numpy as np

import popinfer
from popinfer.populations import get_population
from popinfer.reweighting.backends import numpy_exp_is_vectorised
from popinfer.reweighting.jax_backend import JaxHyperLikelihood
from popinfer.reweighting.likelihood import HyperLikelihood
from samplers import HYPERPRIORS, case_data, exact_samples
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
    parser.add_argument("--fits", nargs="+", default=None, metavar="CASE",
                        help="whole fits of these cases (eight, normalN) instead of single calls")
    parser.add_argument("--samplers", nargs="+", default=["emcee"])
    parser.add_argument("--fit-repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0]}; {os.cpu_count()} cores; numpy {np.__version__}, its "
          f"float64 exp vectorised (AVX-512): {'yes' if numpy_exp_is_vectorised() else 'no'}")
    if args.fits:
        whole_fits(args)
        return
    rng = np.random.default_rng(args.seed)
    n_objects, n_draws, n_walkers = args.objects, args.draws, args.walkers
    theta = (rng.normal(size=(n_objects, 1)) * 3 + rng.normal(size=(n_objects, n_draws)) * 2)[..., None]
    log_p0 = np.full((n_objects, n_draws), -np.log(2000.0))
    cases = {
        "normal": {"mu": rng.normal(size=n_walkers), "sigma": rng.uniform(2.0, 5.0, n_walkers)},
        "studentt": {"nu": rng.uniform(2.0, 10.0, n_walkers), "mu": rng.normal(size=n_walkers),
                     "sigma": rng.uniform(2.0, 5.0, n_walkers)},
    }
    print(f"N = {n_objects}, K = {n_draws}, W = {n_walkers}")
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


def whole_fits(args):
    print("| case | sampler | seed | numpy | jax | numpy / jax | E[mu], E[sigma] (numpy; jax) |")
    print("|---|---|---|---|---|---|---|")
    for case in args.fits:
        y, s, n_draws = case_data(case)
        samples = exact_samples(y, s, n_draws, args.seed)
        for sampler in args.samplers:
            for seed in range(1, args.fit_repeats + 1):
                seconds, means = {}, {}
                for backend in ("numpy", "jax"):
                    began = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        result = popinfer.fit_population(samples, "normal", hyperpriors=HYPERPRIORS, seed=seed,
                                                         progress=False, sampler=sampler, backend=backend)
                    seconds[backend] = time.perf_counter() - began
                    means[backend] = f"{result.hyper('mu').mean():.4f}, {result.hyper('sigma').mean():.4f}"
                print(f"| {case} | {sampler} | {seed} | {seconds['numpy']:.1f} s | {seconds['jax']:.1f} s | "
                      f"{seconds['numpy'] / seconds['jax']:.2f} | {means['numpy']}; {means['jax']} |", flush=True)


if __name__ == "__main__":
    main()
