"""Simulation-based calibration of popinfer's two-stage pipeline.

Runs the cases of ``popinfer.calibration`` (normal + normal, binomial + beta,
linear + normal on the slope, poisson at low counts + gamma), writes
``results/sbc_<case>.json`` and, where matplotlib is installed, the rank
histograms ``results/sbc_<case>.png``. ``python validation/report.py`` then
rebuilds REPORT.md.

    python validation/sbc.py --replicates 200 --workers 2
    python validation/sbc.py --cases normal-normal --replicates 50
    python validation/sbc.py --cases normal-normal --replicates 50 --sampler nuts   # results/sbc_<case>-nuts.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

from popinfer.calibration import CASES, RANK_BINS, run_case, summarize

RESULTS = Path(__file__).resolve().parent / "results"


def plot(case, summary, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(summary)
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3))
    for axis, name in zip(axes, names):
        counts = summary[name]["rank_histogram"]
        replicates = sum(counts)
        axis.bar(range(RANK_BINS), counts, width=0.9, color="#4c72b0")
        expected = replicates / RANK_BINS
        axis.axhline(expected, color="k", lw=1)
        from scipy import stats

        low, high = stats.binom.ppf([0.005, 0.995], replicates, 1 / RANK_BINS)
        axis.axhspan(low, high, color="0.85", zorder=0)
        axis.set_title(f"{name}: χ² p = {summary[name]['chi2_pvalue']:.2f}")
        axis.set_xlabel("rank bin")
        axis.set_xticks([])
    axes[0].set_ylabel("replicates")
    figure.suptitle(f"{case.name}: {case.description}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", default="emcee", help="stage two's sampler (fit-population --sampler)")
    args = parser.parse_args()
    suffix = "" if args.sampler == "emcee" else f"-{args.sampler}"
    RESULTS.mkdir(exist_ok=True)
    for name in args.cases:
        case = CASES[name]
        began = time.perf_counter()

        def progress(done):
            print(f"\r{name}: {done}/{args.replicates}", end="", file=sys.stderr, flush=True)

        results = run_case(case, args.replicates, seed=args.seed, workers=args.workers, progress=progress,
                           sampler=args.sampler)
        seconds = time.perf_counter() - began
        summary = summarize(results)
        payload = {"case": name, "description": case.description, "population": case.population,
                   "parameter": case.parameter, "hyperpriors": case.hyperpriors, "model": case.model,
                   "priors": list(case.priors), "n_objects": case.n_objects, "n_draws": case.n_draws,
                   "replicates": args.replicates, "seed": args.seed, "sampler": args.sampler, "seconds": seconds,
                   "summary": summary,
                   "warnings": sum(r["warnings"] for r in results), "results": results}
        (RESULTS / f"sbc_{name}{suffix}.json").write_text(json.dumps(payload, indent=1))
        plotted = plot(case, summary, RESULTS / f"sbc_{name}{suffix}.png")
        print(f"\r{name}: {args.replicates} replicates in {seconds:.0f} s; "
              + "; ".join(f"{h}: χ² p {s['chi2_pvalue']:.3f}, 50% {s['coverage50']:.2f}, 90% {s['coverage90']:.2f}"
                          for h, s in summary.items()) + ("" if plotted else " (no matplotlib: no PNG)"),
              file=sys.stderr)


if __name__ == "__main__":
    main()
