"""Published results reproduced with popinfer (sample_data/EXAMPLES.md has the commands).

Each example runs through the public API exactly as the documented commands do,
for several seeds, and records the mean and the seed-to-seed standard deviation
of each estimate (the Monte Carlo error of the whole two-stage pipeline) in
``results/published.json``. The tests use those measured errors as tolerances.

    python validation/published.py            # 5 seeds (about 10 minutes on 2 cores)
    python validation/published.py --seeds 2
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import betaln

import popinfer
from popinfer.distributions import parse_assignment

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "sample_data"
RESULTS = Path(__file__).resolve().parent / "results"

EIGHT_HYPERPRIORS = ["mu=normal(0, 5)", "sigma=halfcauchy(5)"]
RATS_HYPERPRIORS = ["a=lognormal(0, 2)", "b=lognormal(0, 2)"]
BASEBALL_HYPERPRIORS = ["a=loguniform(0.1, 1000)", "b=loguniform(0.1, 1000)"]


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs, progress=False)
    return result, [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]


def eight_schools(seed, n_draws=20000):
    """E[mu], E[tau] under mu ~ Normal(0, 5), tau ~ HalfCauchy(5) (reference: 4.40, 3.60)."""
    samples, _ = _quiet(popinfer.fit_individuals, DATA / "eight_schools.csv", "normal",
                        priors=["theta=uniform(-100, 100)"], n_draws=n_draws, seed=seed)
    result, messages = _quiet(popinfer.fit_population, samples, "normal", hyperpriors=EIGHT_HYPERPRIORS, seed=seed + 100)
    return {"E_mu": float(result.hyper("mu").mean()), "E_tau": float(result.hyper("sigma").mean()),
            "warnings": len(messages)}


def rats_exact(hyperpriors=RATS_HYPERPRIORS, size=600):
    """Posterior means of a, b, a/(a+b) and ln(a+b) by quadrature over (ln a, ln b)."""
    frame = pd.read_csv(DATA / "rat_tumors.csv")
    k, n = frame["k"].to_numpy(), frame["n"].to_numpy()
    priors = dict(parse_assignment(spec) for spec in hyperpriors)
    log_a, log_b = np.meshgrid(np.linspace(-5, 7, size), np.linspace(-3, 9, size), indexing="ij")
    a, b = np.exp(log_a), np.exp(log_b)
    log_post = priors["a"].logpdf(a) + priors["b"].logpdf(b) + log_a + log_b  # Jacobian of (ln a, ln b)
    for kj, nj in zip(k, n):
        log_post += betaln(a + kj, b + nj - kj) - betaln(a, b)
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    edge = weights[[0, -1], :].sum() + weights[:, [0, -1]].sum()
    return {"E_a": float((weights * a).sum()), "E_b": float((weights * b).sum()),
            "E_mean": float((weights * a / (a + b)).sum()), "E_log_concentration": float((weights * np.log(a + b)).sum()),
            "mass_on_grid_edge": float(edge)}


def rats(seed):
    """Beta population of the rat tumour rates under a, b ~ LogNormal(0, 2)."""
    samples, _ = _quiet(popinfer.fit_individuals, DATA / "rat_tumors.csv", "binomial", seed=seed)
    result, messages = _quiet(popinfer.fit_population, samples, "beta", hyperpriors=RATS_HYPERPRIORS, seed=seed + 100)
    a, b = result.hyper("a"), result.hyper("b")
    return {"E_a": float(a.mean()), "E_b": float(b.mean()), "E_mean": float((a / (a + b)).mean()),
            "E_log_concentration": float(np.log(a + b).mean()), "warnings": len(messages)}


def baseball(seed):
    """Efron-Morris: partially pooled batting averages against the rest of the season."""
    frame = pd.read_csv(DATA / "efron_morris_1975.csv")
    samples, _ = _quiet(popinfer.fit_individuals, frame, "binomial", columns=["k=hits", "n=at_bats"], seed=seed)
    result, messages = _quiet(popinfer.fit_population, samples, "beta", hyperpriors=BASEBALL_HYPERPRIORS,
                              seed=seed + 100)
    pooled = result.reweighted[:, :, 0].mean(axis=1)
    raw = (frame["hits"] / frame["at_bats"]).to_numpy()
    truth = frame["remaining_average"].to_numpy()
    mse_raw, mse_pooled = float(np.mean((raw - truth) ** 2)), float(np.mean((pooled - truth) ** 2))
    return {"mse_raw": mse_raw, "mse_pooled": mse_pooled, "ratio": mse_pooled / mse_raw, "warnings": len(messages)}


def radon(seed, n_draws=4000):
    """County intercepts: normal model per county (scatter free), mvnormal over (theta, scatter)."""
    samples, _ = _quiet(popinfer.fit_individuals, DATA / "mn_radon.csv", "normal", id_column="county",
                        columns=["y=log_radon"], priors=["scatter=uniform(0.05, 3)"], n_draws=n_draws, seed=seed)
    result, messages = _quiet(popinfer.fit_population, samples, "mvnormal", parameters=["theta", "scatter"],
                              seed=seed + 100)
    out = {"warnings": len(messages)}
    for name, key in (("mu_theta", "mu_a"), ("sigma_theta", "sigma_a"), ("mu_scatter", "sigma_y")):
        draws = result.hyper(name)
        out[key] = float(draws.mean())
        out[f"{key}_posterior_sd"] = float(draws.std())
    return out


EXAMPLES = {"eight_schools": eight_schools, "rats": rats, "baseball": baseball, "radon": radon}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--examples", nargs="*", default=list(EXAMPLES), choices=list(EXAMPLES))
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "published.json"
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload["rats_exact"] = rats_exact()
    for name in args.examples:
        began = time.perf_counter()
        runs = [EXAMPLES[name](seed) for seed in range(1, args.seeds + 1)]
        keys = [k for k in runs[0] if k != "warnings"]
        payload[name] = {
            "seeds": args.seeds, "seconds_per_run": (time.perf_counter() - began) / args.seeds,
            "mean": {k: float(np.mean([r[k] for r in runs])) for k in keys},
            "sd": {k: float(np.std([r[k] for r in runs], ddof=1)) for k in keys},
            "runs": runs,
        }
        print(name, json.dumps(payload[name]["mean"]), file=sys.stderr)
        path.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
