"""Cost of a trustworthy answer: refine against raising K for every object.

For a data set, the total wall time (stage one + stage two, + refine) until the population
fit has no low-ESS warning and a median Var[ln L̂] below 1:

- refine: stage one at K, stage two, ``refine`` (its in-memory fits included), stage two
  on the refined samples;
- brute force: stage one and stage two at K, 2K, 4K, ... until the same holds (every
  attempt counted, as a user who does not know the K needed would pay; the last
  attempt alone is reported too).

Cases: the eight schools (μ ~ N(0, 5), τ ~ HalfCauchy(5)) and a simulated normal–normal
set of ``--objects`` objects (σ_n ~ U(0.5, 2), τ = 0.1: a population narrower than most
objects' posteriors).

The brute-force side stops at ``--largest`` K or once its attempts have taken ``--budget``
seconds (then it reports the bound: not reached at that K after that time). With
``--budget-ratio R`` its budget is at most R × the refine side's time (R = 5 answers "is refine ≥ 5×
cheaper?" without running brute force to the end), and with ``--total-budget S`` at most S less the
refine side's time (the whole run within S); under either it also does not start an attempt that
would, taking twice the last one's time (K doubles), end past its budget. Each phase's wall
time is printed, with the load averages (``os.getloadavg``) before and after: compare the two
sides of one run, not runs on a machine under different load.

    python benchmarks/refine.py --case eight-schools
    python benchmarks/refine.py --case normal --objects 1000 --draws 1000 --budget-ratio 5 --total-budget 4500
"""

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import popinfer
from popinfer.refinement import refine
from popinfer.reweighting import PopulationDiagnosticWarning

ROOT = Path(__file__).resolve().parent.parent


def simulated_normal(n_objects, seed):
    """The normal case's data: σ_n ~ U(0.5, 2), y_n ~ N(θ_n, σ_n), θ_n ~ N(0, 0.1)."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.5, 2.0, n_objects)
    y = rng.normal(0.0, 0.1, n_objects) + sigma * rng.normal(size=n_objects)
    return pd.DataFrame({"id": np.arange(n_objects), "y": y, "sigma": sigma})


def population_fit(samples, output, hyperpriors, seed):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = popinfer.fit_population(samples, "normal", output, hyperpriors=hyperpriors, seed=seed,
                                         progress=False, n_reweighted=10)
    warnings_ = [str(w.message) for w in caught if issubclass(w.category, PopulationDiagnosticWarning)]
    warned = bool(warnings_)
    variance = float(np.median(result.ln_likelihood_variance))
    ess = np.asarray(result.ess, dtype=float)
    print(f"    median Var[ln L̂] {variance:.3g}, smallest ESS {ess.min():.3g} (smallest 1 % quantile "
          f"{np.quantile(ess, 0.01, axis=0).min():.3g}), E[mu] {np.mean(result.hyper('mu')):.4f}, "
          f"E[sigma] {np.mean(result.hyper('sigma')):.4f}", flush=True)
    for message in warnings_:
        print(f"    warns: {message[:100]}", flush=True)
    return warned or variance > 1.0, variance, float(np.mean(result.hyper("mu"))), float(np.mean(result.hyper("sigma")))


class Phases:
    """Wall time per phase, printed as it goes."""

    def __init__(self, side):
        self.side, self.total = side, 0.0

    def __call__(self, label, function, *args, **kwargs):
        began = time.perf_counter()
        out = function(*args, **kwargs)
        seconds = time.perf_counter() - began
        self.total += seconds
        print(f"  {self.side}: {label}: {seconds:.1f} s", flush=True)
        return out


def run_refine(data, hyperpriors, n_draws, workdir, seed):
    phase = Phases("refine")
    phase(f"fit-individuals K = {n_draws}", popinfer.fit_individuals, data, "normal", f"{workdir}/s.h5",
          n_draws=n_draws, seed=seed, progress=False)
    bad, *_ = phase("fit-population", population_fit, f"{workdir}/s.h5", f"{workdir}/p.h5", hyperpriors, seed + 1)
    rounds = 0
    samples, pop = f"{workdir}/s.h5", f"{workdir}/p.h5"
    while bad and rounds < 3:
        rounds += 1
        refined = f"{workdir}/r{rounds}.h5"
        result = phase(f"refine (call {rounds})", refine, samples, pop, refined, seed=seed + 2 + rounds,
                       progress=False)
        print(f"  refine: {result.report()}")
        samples, pop = refined, f"{workdir}/p{rounds}.h5"
        bad, variance, mu, tau = phase("fit-population", population_fit, samples, pop, hyperpriors,
                                       seed + 10 + rounds)
    return phase.total, bad, rounds, popinfer.read_samples(samples).object_draw_counts.sum()


def run_brute_force(data, hyperpriors, n_draws, workdir, seed, largest, budget, foresee=False):
    phase, k, last = Phases("brute force"), n_draws, 0.0
    while True:
        if foresee and phase.total and phase.total + 2 * last > budget:
            print(f"  brute force: the attempt at K = {k} would take about {2 * last:.0f} s, past the budget "
                  f"of {budget:.0f} s: stopped", flush=True)
            return phase.total, last, k // 2, True
        before = phase.total
        phase(f"fit-individuals K = {k}", popinfer.fit_individuals, data, "normal", f"{workdir}/b{k}.h5", n_draws=k,
              seed=seed, progress=False)
        bad, *_ = phase("fit-population", population_fit, f"{workdir}/b{k}.h5", f"{workdir}/bp{k}.h5", hyperpriors,
                        seed + 1)
        last = phase.total - before
        if not bad or k >= largest or phase.total >= budget:
            return phase.total, last, k, bad
        k *= 2


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["eight-schools", "normal"], default="eight-schools")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=None, help="K of the first stage-one run")
    parser.add_argument("--largest", type=int, default=128000, help="brute force stops at this K")
    parser.add_argument("--budget", type=float, default=float("inf"),
                        help="brute force stops once its attempts have taken this many seconds")
    parser.add_argument("--budget-ratio", type=float, default=None,
                        help="brute force's budget is at most this many times the refine side's time")
    parser.add_argument("--total-budget", type=float, default=None,
                        help="brute force's budget is at most this many seconds less the refine side's time")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        if args.case == "eight-schools":
            data, hyperpriors, n_draws = str(ROOT / "sample_data" / "eight_schools.csv"), [
                "mu=normal(0, 5)", "sigma=halfcauchy(5)"], args.draws or 4000
        else:
            data = f"{workdir}/normal.csv"
            simulated_normal(args.objects, args.seed).to_csv(data, index=False)
            hyperpriors, n_draws = ["mu=normal(0, 5)", "sigma=halfnormal(2)"], args.draws or 1000
        print("load averages before: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
        seconds, bad, rounds, draws = run_refine(data, hyperpriors, n_draws, workdir, args.seed)
        print(f"refine: {seconds:.1f} s, {rounds} round(s) of refine, {draws} draws in all, "
              f"{'still warns' if bad else 'no warning, median Var[ln L̂] < 1'}")
        budget = min(args.budget, float("inf") if args.budget_ratio is None else args.budget_ratio * seconds,
                     float("inf") if args.total_budget is None else args.total_budget - seconds)
        foresee = args.budget_ratio is not None or args.total_budget is not None
        print(f"brute force budget: {budget:.0f} s", flush=True)
        total, last, k, still = run_brute_force(data, hyperpriors, n_draws, workdir, args.seed, args.largest,
                                                budget, foresee)
        reached = f"not reached at K = {k} (a lower bound)" if still else f"reached at K = {k}"
        print(f"brute force: {reached}: {total:.1f} s in all attempts, {last:.1f} s for the last; ratio to refine "
              f"{total / seconds:.2f}{' or more' if still else ''} (last alone {last / seconds:.2f})")
        print("load averages after: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
