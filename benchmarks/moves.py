"""Stage two's emcee proposals side by side (``--moves de`` against ``--moves stretch``), with an
effective sample size measured rather than estimated.

The τ-based effective size of an ensemble (n_steps/2 · W/τ) overstates what the ensemble's
means deliver (tests/stats_helpers.py), and by how much depends on the proposal, so it cannot
compare two proposals. Here every case's stage-one draws are fixed (exact posterior draws, as in
``samplers.py``) and stage two is run for many sampler seeds: the spread of the posterior means
over the seeds is the Monte Carlo error the user gets, and

    ESS = (posterior sd)² / var(E[α] over seeds)

is the number of independent draws that error corresponds to (relative uncertainty
√(2/(seeds − 1)): ±26 % at 30 seeds). Evaluations are ln L̂ at walkers × steps; the run length is
the sampler's own rule (≥ 50 τ), so the ESS is what a default run gives.

    python benchmarks/moves.py                                   # eight schools and 100 objects, 30 seeds
    python benchmarks/moves.py --case eight --seeds 20 --moves de stretch
"""

import argparse
import json
import time
import warnings

import numpy as np

import popinfer
from samplers import HYPERPRIORS, case_data, exact_samples


def spread(samples, moves, seeds, n_walkers):
    """Per sampler seed: E[mu], E[sigma], their posterior sds, evaluations, wall time, τ-based ESS."""
    rows = []
    for seed in range(1, seeds + 1):
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = popinfer.fit_population(samples, "normal", hyperpriors=HYPERPRIORS, seed=seed, progress=False,
                                             moves=moves, n_walkers=n_walkers)
        wall = time.perf_counter() - began
        steps = result.settings["n_steps"]
        claimed = steps / 2 * n_walkers / np.asarray(result.autocorr_time)
        rows.append([result.hyper("mu").mean(), result.hyper("sigma").mean(), result.hyper("mu").std(),
                     result.hyper("sigma").std(), steps * n_walkers, wall, *claimed])
    return np.array(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", default=["eight", "normal100"], help="eight or normalN (samplers.py)")
    parser.add_argument("--moves", nargs="+", default=["de", "stretch"])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--walkers", type=int, default=32)
    args = parser.parse_args()
    for case in args.case:
        y, s, n_draws = case_data(case)
        samples = exact_samples(y, s, n_draws, 1)
        for moves in args.moves:
            rows = spread(samples, moves, args.seeds, args.walkers)
            mean, sd = rows.mean(axis=0), rows.std(axis=0, ddof=1)
            ess = (mean[2:4] / sd[0:2]) ** 2
            print(json.dumps({
                "case": case, "moves": moves, "seeds": args.seeds, "walkers": args.walkers,
                "E": [round(v, 4) for v in mean[0:2]], "se": [round(v, 4) for v in sd[0:2] / np.sqrt(len(rows))],
                "evaluations": round(mean[4]), "wall_s": round(mean[5], 2),
                "ess_measured": [round(v) for v in ess], "ess_tau_based": [round(v) for v in mean[6:8]],
                "evaluations_per_ess": [round(mean[4] / v, 1) for v in ess]}), flush=True)


if __name__ == "__main__":
    main()
