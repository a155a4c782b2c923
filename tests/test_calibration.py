"""A CI-sized simulation-based calibration of the whole pipeline, with a negative control.

Each replicate draws (mu, sigma) from the hyperprior, simulates objects, runs both
stages under the same hyperprior and records whether the central 90 % and 50 %
intervals cover the truth, and the truth's rank among L posterior draws. Over R
replicates the number of covering replicates is Binomial(R, level) for a
calibrated pipeline (the test accepts the central 1 - 1e-4 range), and the
randomised PIT values (rank + U)/(L + 1) are Uniform(0, 1) (KS test, p > 1e-4). The interim prior here, Normal(0, 1.5), is
informative on purpose: a pipeline that forgets to divide it out (the negative
control) sees every object's data shrunk by 1.5²/(1 + 1.5²) ≈ 0.69, which
halves the population's apparent sigma, and must fall outside the range.
"""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from popinfer.calibration import CASES, run_case

# Simulation-based calibration: a long statistical run (CI runs it; pytest -m 'not slow' skips it).
pytestmark = pytest.mark.slow

R = 20
CASE = dataclasses.replace(CASES["normal-normal"], name="ci", hyperpriors={"mu": "normal(0, 1)",
                           "sigma": "lognormal(0, 0.5)"}, priors=("theta=normal(0, 1.5)",), n_objects=24, n_draws=400)


def coverage_counts(results, key):
    return {name: sum(r["hyper"][name][key] for r in results) for name in results[0]["hyper"]}


def bounds(level):
    return stats.binom.ppf([0.5e-4, 1 - 0.5e-4], R, level)


def pit_pvalues(results, seed):
    """KS p-value of the randomised PIT values of each hyperparameter."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in results[0]["hyper"]:
        ranks = np.array([r["hyper"][name]["rank"] for r in results])
        n_draws = results[0]["hyper"][name]["n_rank_draws"]
        out[name] = stats.kstest((ranks + rng.random(len(ranks))) / (n_draws + 1), "uniform").pvalue
    return out


def coverage_ok(results):
    for key, level in (("in90", 0.9), ("in50", 0.5)):
        low, high = bounds(level)
        for name, count in coverage_counts(results, key).items():
            if not low <= count <= high:
                return False, f"{name}: {count}/{R} covered by {key} (range {low:.0f}-{high:.0f})"
    return True, ""


@pytest.mark.parametrize("sampler", ["emcee", "nuts"])
def test_intervals_cover_at_their_nominal_rates_and_a_wrong_pipeline_fails(sampler):
    if sampler == "nuts":
        pytest.importorskip("nutpie")
    good = run_case(CASE, R, seed=100, workers=2, sampler=sampler)
    ok, message = coverage_ok(good)
    assert ok, message
    assert min(pit_pvalues(good, 1).values()) > 1e-4
    wrong = run_case(CASE, R, seed=100, workers=2, interim_correction=False, sampler=sampler)
    detected = not coverage_ok(wrong)[0] or min(pit_pvalues(wrong, 1).values()) < 1e-4
    assert detected, f"the wrong pipeline was not detected: {coverage_counts(wrong, 'in90')}, {pit_pvalues(wrong, 1)}"


SURVEY_CASES = {name: dataclasses.replace(CASES[name], n_objects=20, n_draws=400,
                                          survey=dataclasses.replace(CASES[name].survey, n_injections=8000))
                for name in ("threshold-survey", "threshold-survey-uncorrected")}


@pytest.mark.slow
def test_a_threshold_survey_is_calibrated_with_selection_and_not_without():
    """Objects detected only if y > 0: with --selection the intervals cover and the PIT values
    are uniform; the same replicates fitted without it (the negative control) must fail."""
    good = run_case(SURVEY_CASES["threshold-survey"], R, seed=300, workers=2)
    ok, message = coverage_ok(good)
    assert ok, message
    assert min(pit_pvalues(good, 2).values()) > 1e-4
    wrong = run_case(SURVEY_CASES["threshold-survey-uncorrected"], R, seed=300, workers=2)
    detected = not coverage_ok(wrong)[0] or min(pit_pvalues(wrong, 2).values()) < 1e-4
    assert detected, f"ignoring the selection was not detected: {coverage_counts(wrong, 'in90')}, {pit_pvalues(wrong, 2)}"
