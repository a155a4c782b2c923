"""The interim-prior failure mode, demonstrated on the eight schools.

Stage two can only reweight what stage one drew. Two ways to starve it:

1. an interim prior too narrow for the population (theta ~ Uniform(-5, 15), while
   schools A and G measure 28 and 18): the population puts mass where the draws
   cannot go, and the estimates are biased;
2. too few draws per object (K = 100): the small-tau corner of the posterior has
   almost no effective draws.

popinfer warns in both cases, and the warnings' remedies (a wider interim prior,
more draws) restore the reference answer E[mu] = 4.40, E[tau] = 3.60 under
mu ~ Normal(0, 5), tau ~ HalfCauchy(5). Writes ``results/failure_mode.json``.

    python validation/failure_mode.py
"""

import json
import warnings
from pathlib import Path

import numpy as np

import popinfer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
HYPERPRIORS = ["mu=normal(0, 5)", "sigma=halfcauchy(5)"]

SCENARIOS = {
    "narrow interim prior (theta ~ Uniform(-5, 15), K = 4000)": {"prior": "theta=uniform(-5, 15)", "n_draws": 4000},
    "remedy: wide interim prior (theta ~ Uniform(-100, 100), K = 4000)": {"prior": "theta=uniform(-100, 100)",
                                                                           "n_draws": 4000},
    "too few draws (K = 100)": {"prior": "theta=uniform(-100, 100)", "n_draws": 100},
    "remedy: more draws (K = 20000)": {"prior": "theta=uniform(-100, 100)", "n_draws": 20000},
}


def run(prior, n_draws, seed=1):
    """Both stages; returns the estimates and the diagnostic warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = popinfer.fit_individuals(ROOT / "sample_data" / "eight_schools.csv", "normal", priors=[prior],
                                           n_draws=n_draws, seed=seed, progress=False)
        result = popinfer.fit_population(samples, "normal", hyperpriors=HYPERPRIORS, seed=seed + 100, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, popinfer.PopulationDiagnosticWarning)]
    return {"E_mu": float(result.hyper("mu").mean()), "E_tau": float(result.hyper("sigma").mean()),
            "median_ln_likelihood_variance": float(np.median(result.ln_likelihood_variance)),
            "min_median_ess": float(np.median(result.ess, axis=0).min()),
            "support_warning": any("outside the interim prior's support" in m for m in messages),
            "ess_warning": any("effective draws" in m for m in messages),
            "warnings": messages}


def main():
    RESULTS.mkdir(exist_ok=True)
    payload = {name: run(**settings) for name, settings in SCENARIOS.items()}
    (RESULTS / "failure_mode.json").write_text(json.dumps(payload, indent=1))
    for name, outcome in payload.items():
        print(f"{name}: E[mu] {outcome['E_mu']:.2f}, E[tau] {outcome['E_tau']:.2f}, "
              f"support warning {outcome['support_warning']}, ESS warning {outcome['ess_warning']}")


if __name__ == "__main__":
    main()
