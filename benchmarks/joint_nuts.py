"""popinfer (both stages) against a joint hierarchical NUTS fit, in the same run.

The joint fits live in ``joint_models.py``; ``whole_process.py`` times each side as its own
process. The joint model is the usual non-centred normal–normal hierarchy
    mu ~ N(0, 5), tau ~ HalfCauchy(5), z_n ~ N(0, 1), theta_n = mu + tau z_n, y_n ~ N(theta_n, s_n),
fitted with
- nutpie (``from_pyfunc``: the joint ln p and its gradient in numpy, u = ln tau), and
- NumPyro's NUTS (JAX, float64, compilation included in the time),
each with 4 chains of 1000 tuning and 1000 kept draws, run one chain after another;
popinfer runs stage one (``fit_individuals``, K draws per object) and stage two with
emcee and with NUTS. The exact posterior moments of mu and tau come from
``benchmarks/samplers.py`` (tau on a quantile grid, mu in closed form).

Reported per fit: wall and CPU time (of this process: JAX and nutpie threads
included), the ESS of mu and tau (ArviZ bulk ESS across chains for the NUTS fits;
emcee's τ-based estimate, n_steps/2 · W/τ, for popinfer's emcee), ESS per second of
the smaller, and the errors of E[mu], E[tau] in posterior sd.

    python benchmarks/joint_nuts.py                 # eight schools and N = 1000 (a few minutes)
    python benchmarks/joint_nuts.py --case eight
    python benchmarks/joint_nuts.py --case normal10000 --samplers nuts --samples 1000   # N = 10⁴
    python benchmarks/joint_nuts.py --case normal1000 --samplers nuts --exp-precision single --joint numpyro
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import popinfer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from joint_models import bulk_ess, joint_numpyro, joint_nutpie  # noqa: E402
from samplers import HYPERPRIORS, case_data, exact_moments, nuts_evaluations  # noqa: E402


class Clock:
    """Wall and CPU seconds of a block (CPU: this process, all threads)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def popinfer_both_stages(y, s, n_draws, sampler, seed, n_samples=4000, exp_precision="double"):
    frame = pd.DataFrame({"id": [f"o{i}" for i in range(len(y))], "y": y, "sigma": s})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Clock() as one:
            samples = popinfer.fit_individuals(frame, "normal", n_draws=n_draws, seed=seed, progress=False)
        result = popinfer.fit_population(samples, "normal", hyperpriors=HYPERPRIORS, seed=seed + 1, sampler=sampler,
                                         n_samples=n_samples, n_reweighted=10, progress=False,
                                         exp_precision=exp_precision)
    print(f"  (stage one: {one.wall:.1f} s wall, {one.cpu:.1f} s CPU)")
    if sampler == "emcee":
        ess = [result.settings["n_steps"] / 2 * result.settings["walkers"] / t for t in result.autocorr_time]
        evaluations = result.settings["n_steps"] * result.settings["walkers"]
    else:
        ess = [result.settings["ess_bulk"]["mu"], result.settings["ess_bulk"]["sigma"]]
        evaluations = nuts_evaluations(result.settings)
    return result.hyper("mu"), result.hyper("sigma"), ess, evaluations


def report(label, clock, mu, tau, ess, exact):
    errors = [(float(np.mean(values)) - exact[name][0]) / exact[name][1]
              for values, name in ((mu, "mu"), (tau, "sigma"))]
    low = min(ess)
    print(f"{label:28s} {clock.wall:7.1f} {clock.cpu:7.1f} {ess[0]:7.0f} {ess[1]:7.0f} {low / clock.wall:8.1f} "
          f"{errors[0]:+9.3f} {errors[1]:+9.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["eight", "normal1000", "normal10000", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samplers", nargs="*", default=["emcee", "nuts"], help="popinfer's stage-two samplers")
    parser.add_argument("--samples", type=int, default=4000, help="popinfer's stage-two draws kept (S)")
    parser.add_argument("--exp-precision", default="double", choices=["double", "single"],
                        help="popinfer's stage two: the numpy kernel's exponentials (fit-population --exp-precision)")
    parser.add_argument("--joint", nargs="*", default=["nutpie", "numpyro"], choices=["nutpie", "numpyro"],
                        help="the joint fits to run (none: popinfer's alone)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    for case in (["eight", "normal1000"] if args.case == "both" else [args.case]):
        y, s, _ = case_data(case)
        n_draws = 4000 if case == "eight" else 1000
        exact = exact_moments(y, s)
        print(f"\n{case}: N = {len(y)}; exact E[mu] = {exact['mu'][0]:.4f} (sd {exact['mu'][1]:.4f}), "
              f"E[tau] = {exact['sigma'][0]:.4f} (sd {exact['sigma'][1]:.4f})")
        print(f"{'fit':28s} {'wall_s':>7s} {'cpu_s':>7s} {'ESS_mu':>7s} {'ESS_tau':>7s} {'ESS/s':>8s} "
              f"{'err_mu/sd':>9s} {'err_tau/sd':>9s}")
        for sampler in args.samplers:
            with Clock() as clock:
                mu, tau, ess, evaluations = popinfer_both_stages(y, s, n_draws, sampler, args.seed, args.samples,
                                                                 args.exp_precision)
            report(f"popinfer K={n_draws}, {sampler}, {args.exp_precision}", clock, mu, tau, ess, exact)
            print(f"  (stage two: {evaluations} ln L̂ evaluations (NUTS: in full-draw equivalents), "
                  f"{evaluations / min(ess):.1f} per effective draw)")
        for joint, fit, label in (("nutpie", joint_nutpie, "joint nutpie (numpy grad)"),
                                  ("numpyro", joint_numpyro, "joint NumPyro")):
            if joint in args.joint:
                with Clock() as clock:
                    mu, tau = fit(y, s, args.seed)
                report(label, clock, mu.ravel(), tau.ravel(), [bulk_ess(mu), bulk_ess(tau)], exact)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
