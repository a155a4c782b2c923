"""Stage one speed: batched popinfer against plain per-object emcee runs.

Fits N normal-model objects (known sigma) through ``popinfer.fit_individuals``
and, in the same run, a loop of stock ``emcee.EnsembleSampler`` runs on a subset
of the same objects with the same walkers and, object by object, the same
number of steps popinfer took. The reference log-probability is the
straightforward one: a Python function of one walker.

    python benchmarks/stage_one.py            # N = 1000, reference on 20 objects
    python benchmarks/stage_one.py --objects 200 --reference 5
"""

import argparse
import time

import emcee
import numpy as np
import pandas as pd

import popinfer


def reference_run(y, sigma, n_walkers, n_steps, rng):
    def log_prob(theta):
        if not -1000.0 <= theta[0] <= 1000.0:
            return -np.inf
        return -0.5 * ((y - theta[0]) / sigma) ** 2

    sampler = emcee.EnsembleSampler(n_walkers, 1, log_prob)
    start = y + sigma * rng.normal(size=(n_walkers, 1))
    began = time.perf_counter()
    sampler.run_mcmc(start, n_steps)
    return time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--reference", type=int, default=20, help="objects in the plain-emcee loop")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    frame = pd.DataFrame({
        "id": [f"obj{i:05d}" for i in range(args.objects)],
        "y": rng.normal(0, 10, args.objects),
        "sigma": rng.uniform(1, 5, args.objects),
    })
    began = time.perf_counter()
    samples = popinfer.fit_individuals(frame, "normal", n_draws=args.samples, seed=args.seed, progress=False)
    batched = time.perf_counter() - began
    n_walkers = samples.settings["walkers"]
    steps = samples.diagnostics["n_steps"]
    batched_per_object = batched / args.objects

    per_step = []
    for i in range(args.reference):
        seconds = reference_run(frame["y"][i], frame["sigma"][i], n_walkers, int(steps[i]), rng)
        per_step.append(seconds / steps[i])
    reference_per_object = float(np.mean(per_step) * steps.mean())

    print(f"objects: {args.objects}, walkers: {n_walkers}, K: {args.samples}, "
          f"steps per object: mean {steps.mean():.0f} (min {steps.min()}, max {steps.max()}), "
          f"converged: {samples.diagnostics['converged'].mean():.1%}")
    print(f"popinfer batched: {batched:.2f} s for {args.objects} objects = {1e3 * batched_per_object:.2f} ms/object")
    print(f"plain emcee loop: {1e3 * reference_per_object:.1f} ms/object "
          f"({args.reference} objects, same walkers and steps)")
    print(f"speed-up per object: {reference_per_object / batched_per_object:.0f}x")


if __name__ == "__main__":
    main()
