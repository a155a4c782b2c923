"""Stage two at N = 10⁴ and 10⁵ objects, K = 10³: what one ln L̂ evaluation costs as each
sampler makes it, and the time to ≥ 1000 effective draws of every hyperparameter that this
cost implies with the number of evaluations each sampler needs.

The draws are exact posterior draws of normal objects (``benchmarks/samplers.py``'s
``normalN`` cases, flat interim prior on [-100, 100]), in memory; the kernel is
``HyperLikelihood`` with the normal population, as ``fit_population`` builds it. Timed,
best of ``--repeat``, at points near the posterior:

- emcee's call: ln L̂ of 32 walkers in one pass (``variance=False``, as emcee's posterior asks);
- NUTS's call: ln L̂ and its gradient at one point (``ln_likelihood_and_gradient``; the
  features are recomputed per call when they exceed the 256 MiB cache, as at these N);
- NUTS's rate as its chains make it: the 4 chains in lockstep, one call of
  ``ln_likelihood_and_gradients`` for their 4 points on all the kernel's threads; the time
  per evaluation is the call's wall time over 4.

Evaluations needed for ≥ 1000 effective draws of every hyperparameter are arguments
(``--emcee-calls``, ``--nuts-gradients``), measured by full runs at smaller N (see README's
Performance: the counts do not grow with N for this posterior, whose shape only narrows).

    python benchmarks/large_n.py                          # N = 10⁴ and 10⁵ (about 3 GB of memory at 10⁵)
    python benchmarks/large_n.py --objects 10000 --repeat 3
    python benchmarks/large_n.py --exp-precision single   # the weights' exponentials in float32
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from popinfer.populations import get_population
from popinfer.reweighting.likelihood import HyperLikelihood

sys.path.insert(0, str(Path(__file__).resolve().parent))
from samplers import INTERIM, case_data, exact_moments  # noqa: E402

WALKERS = 32


def exact_draws(y, s, n_draws, seed, block=2000):
    """θ (N, K, 1) ~ N(y_n, s_n) exactly, filled block by block, and ln p0 (N, K)."""
    rng = np.random.default_rng(seed)
    theta = np.empty((len(y), n_draws, 1))
    for lo in range(0, len(y), block):
        hi = min(lo + block, len(y))
        theta[lo:hi, :, 0] = y[lo:hi, None] + s[lo:hi, None] * rng.standard_normal((hi - lo, n_draws))
    return theta, np.full((len(y), n_draws), -np.log(2 * INTERIM))


def best_of(repeat, call):
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return min(times)


def call_times(n_objects, n_draws, repeat, exp_precision="double"):
    """Seconds of one emcee call (32 walkers) and one NUTS call (a point and its gradient)."""
    y, s, _ = case_data(f"normal{n_objects}")
    exact = exact_moments(y, s, n_grid=2001)
    theta, log_interim = exact_draws(y, s, n_draws, 1)
    likelihood = HyperLikelihood(get_population("normal", ["theta"]), theta, log_interim, copy=False,
                                 exp_precision=exp_precision)
    rng = np.random.default_rng(2)
    walkers = {name: exact[name][0] + exact[name][1] * rng.standard_normal(WALKERS) for name in ("mu", "sigma")}
    point = np.array([exact["mu"][0], exact["sigma"][0]])
    emcee_call = best_of(repeat, lambda: likelihood.ln_likelihood_and_variance(walkers, variance=False))
    nuts_call = best_of(repeat, lambda: likelihood.ln_likelihood_and_gradient(point))
    nuts_rate = chains_rate(likelihood, point, repeat)
    likelihood.close()
    return emcee_call, nuts_call, nuts_rate


def chains_rate(likelihood, point, repeat, chains=4):
    """Wall seconds per evaluation with ``chains`` chains in lockstep (one call for their points)."""
    points = np.array([point * (1.0 + 0.01 * c) for c in range(chains)])
    return best_of(repeat, lambda: likelihood.ln_likelihood_and_gradients(points)) / chains


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--emcee-calls", type=int, default=1400,
                        help="32-walker calls emcee needs (steps; N = 10³ measured 1312 steps for ESS ≥ 964)")
    parser.add_argument("--nuts-gradients", type=int, default=8000,
                        help="gradient evaluations NUTS needs, tuning included, for ESS ≥ 1000 "
                             "(N = 10³, --samples 1000 measured 7893 for ESS ≥ 984)")
    parser.add_argument("--exp-precision", choices=["double", "single"], default="double",
                        help="the weights' exponentials in float64 or float32 (fit-population --exp-precision)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    print(f"{'N':>7s} {'emcee call (32 walkers)':>24s} {'ns/obj·draw·walker':>19s} "
          f"{'NUTS call (1 point + grad)':>27s} {'NUTS 4 chains in lockstep, per point':>37s} "
          f"{'emcee to 1000 ESS':>18s} {'NUTS to 1000 ESS':>17s}")
    for n_objects in args.objects:
        emcee_call, nuts_call, nuts_rate = call_times(n_objects, args.draws, args.repeat, args.exp_precision)
        per_element = emcee_call / (n_objects * args.draws * WALKERS) * 1e9
        emcee_total = emcee_call * args.emcee_calls
        nuts_total = nuts_rate * args.nuts_gradients
        print(f"{n_objects:7d} {emcee_call * 1e3:21.0f} ms {per_element:19.2f} {nuts_call * 1e3:24.1f} ms "
              f"{nuts_rate * 1e3:34.1f} ms {emcee_total / 60:14.1f} min {nuts_total / 60:13.1f} min", flush=True)
    print(f"(exponentials: {args.exp_precision}; emcee: {args.emcee_calls} calls of {WALKERS} walkers; NUTS: {args.nuts_gradients} gradient evaluations)")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
