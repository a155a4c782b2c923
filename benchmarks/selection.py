"""Cost of the selection term −N ln ξ̂(α) against the per-object terms.

One ln L̂ evaluation (normal population, W walkers) over N objects × K draws, with
and without a selection term of M detected injections, as stage two's sampler calls
it; the extra time is compared with the injections' share of the draws, M/(N·K).
The selection term alone (as the sampler calls it, without its variance) is also timed
against a straightforward reference in the same run: per walker,
``logsumexp(norm.logpdf(θ_j, μ, σ) − ln p_draw)``.

    python benchmarks/selection.py
    python benchmarks/selection.py --objects 1000 --draws 1000 --injections 10000 100000 1000000
"""

import argparse
import time

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from popinfer.injections import Injections
from popinfer.populations import get_population
from popinfer.reweighting.likelihood import HyperLikelihood
from popinfer.reweighting.selection import SelectionTerm


def best_of(repeats, *functions):
    """Smallest wall time of ``repeats`` calls of each function, the calls interleaved so
    that a change of load on the machine affects all of them alike."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, kept in zip(functions, times):
            began = time.perf_counter()
            function()
            kept.append(time.perf_counter() - began)
    return [min(kept) for kept in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--walkers", type=int, default=32)
    parser.add_argument("--injections", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n_objects, n_draws, n_walkers = args.objects, args.draws, args.walkers
    theta = rng.normal(size=(n_objects, 1)) * 3 + rng.normal(size=(n_objects, n_draws)) * 2
    log_p0 = np.full((n_objects, n_draws), -np.log(2000.0))
    hyper = {"mu": rng.normal(size=n_walkers), "sigma": rng.uniform(0.5, 4.0, n_walkers)}
    population = get_population("normal", ["theta"])

    plain = HyperLikelihood(population, theta[..., None], log_p0)
    plain(hyper)  # warm up the thread pool
    print(f"N = {n_objects}, K = {n_draws}, W = {n_walkers}")
    print("| M (detected injections) | M/(N·K) | ln L̂ without | ln L̂ with selection | extra time / without | "
          "term alone | reference | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for n_detected in args.injections:
        injected = rng.normal(0.0, 4.0, n_detected)
        log_draw = stats.norm.logpdf(injected, 0.0, 4.0)
        injections = Injections(source="<benchmark>", sha256="", parameters=["theta"], theta=injected[:, None],
                                log_draw_prior=log_draw, n_total=2 * n_detected, draw_prior={"theta": "normal(0, 4)"})
        term = SelectionTerm(population, injections, n_objects)
        with_term = HyperLikelihood(population, theta[..., None], log_p0, terms=[term])
        with_term(hyper)
        base, total, alone = best_of(args.repeats, lambda: plain.ln_likelihood_and_variance(hyper, variance=False),
                                     lambda: with_term.ln_likelihood_and_variance(hyper, variance=False),
                                     lambda: term(hyper, variance=False))
        with_term.close()
        term.close()

        def reference():
            for w in range(n_walkers):
                log_v = stats.norm.logpdf(injected, hyper["mu"][w], hyper["sigma"][w]) - log_draw
                logsumexp(log_v)

        reference_seconds, = best_of(1, reference)
        print(f"| {n_detected:,} | {n_detected / (n_objects * n_draws):.3g} | {1e3 * base:.1f} ms | {1e3 * total:.1f} ms | "
              f"{(total - base) / base:.3g} | {1e3 * alone:.1f} ms | {1e3 * reference_seconds:.0f} ms | "
              f"{reference_seconds / alone:.0f}x |")
    plain.close()


if __name__ == "__main__":
    main()
