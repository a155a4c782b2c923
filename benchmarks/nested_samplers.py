"""Which nested-sampling library for stage two's evidence: dynesty, nautilus or UltraNest.

Eight schools, normal population, mu ~ N(0, 5), tau ~ HalfCauchy(5), on exact
stage-one draws (theta_jk ~ N(y_j, sigma_j) under a uniform(-100, 100) interim
prior, K = 4000). Each library gets the same vectorised ln L̂(α) and the
hyperpriors' quantile functions as prior transform; ln Z is compared with the
grid value (the marginal over mu in closed form, a quadrature over tau, minus the
interim evidence). Reported: ln Z - exact, the library's error estimate, seconds
and likelihood calls, over a few seeds.

    python benchmarks/nested_samplers.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate, stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from popinfer.distributions import parse_distribution  # noqa: E402
from popinfer.populations import get_population  # noqa: E402
from popinfer.reweighting.likelihood import HyperLikelihood  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
K = 4000
PRIORS = [parse_distribution("normal(0, 5)"), parse_distribution("halfcauchy(5)")]


def exact_log_evidence(y, sigma, low=-100.0, high=100.0):
    """ln ∫∫ Π_j N(y_j; μ, √(σ_j² + τ²)) p(μ) p(τ) dμ dτ - Σ_j ln Z_j (interim evidences)."""
    def integrand(u):
        tau = PRIORS[1].ppf(u)
        cov = np.diag(sigma**2 + tau**2) + 25.0
        return np.exp(stats.multivariate_normal.logpdf(y, np.zeros_like(y), cov) + 40.0)

    value, _ = integrate.quad(integrand, 0.0, 1.0, limit=500, epsabs=0, epsrel=1e-10)
    interim = np.log((stats.norm.cdf((high - y) / sigma) - stats.norm.cdf((low - y) / sigma)) / (high - low))
    return np.log(value) - 40.0 - interim.sum()


def likelihood(y, sigma, seed):
    rng = np.random.default_rng(seed)
    theta = y[:, None, None] + sigma[:, None, None] * rng.standard_normal((len(y), K, 1))
    log_interim = np.full((len(y), K), -np.log(200.0))
    return HyperLikelihood(get_population("normal", ["theta"]), theta, log_interim)


def transform(u):
    return np.stack([prior.ppf(u[..., i]) for i, prior in enumerate(PRIORS)], axis=-1)


def run_dynesty(log_like, seed):
    import dynesty

    sampler = dynesty.NestedSampler(lambda x: float(log_like(x[None])[0]), transform, 2, nlive=250,
                                    rstate=np.random.default_rng(seed))
    sampler.run_nested(print_progress=False, dlogz=0.1)
    result = sampler.results
    return float(result.logz[-1]), float(result.logzerr[-1]), int(np.sum(result.ncall))


def run_nautilus(log_like, seed):
    import nautilus

    sampler = nautilus.Sampler(transform, lambda x: log_like(np.atleast_2d(x)), n_dim=2, vectorized=True,
                               seed=seed, pass_dict=False)
    sampler.run(verbose=False)
    # nautilus reports no error of its own estimate.
    return float(sampler.log_z), float("nan"), int(sampler.n_like)


def run_ultranest(log_like, seed):
    import ultranest

    np.random.seed(seed)  # UltraNest draws from numpy's global state
    sampler = ultranest.ReactiveNestedSampler(["mu", "tau"], lambda x: log_like(x), transform, vectorized=True)
    result = sampler.run(show_status=False, viz_callback=False, min_num_live_points=400)
    return float(result["logz"]), float(result["logzerr"]), int(result["ncall"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    frame = pd.read_csv(ROOT / "sample_data" / "eight_schools.csv")
    y, sigma = frame["y"].to_numpy(float), frame["sigma"].to_numpy(float)
    exact = exact_log_evidence(y, sigma)
    print(f"exact ln Z (relative to the interim evidence) = {exact:.4f}")
    rows = []
    for seed in range(args.seeds):
        lk = likelihood(y, sigma, 100 + seed)

        def log_like(values):
            return lk({"mu": values[:, 0], "sigma": values[:, 1]})

        for name, run in (("dynesty", run_dynesty), ("nautilus", run_nautilus), ("ultranest", run_ultranest)):
            start = time.perf_counter()
            log_z, error, calls = run(log_like, seed)
            seconds = time.perf_counter() - start
            rows.append({"library": name, "seed": seed, "lnZ - exact": log_z - exact, "reported error": error,
                         "seconds": seconds, "calls": calls})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.groupby("library").agg({"lnZ - exact": ["mean", "std", lambda v: np.abs(v).max()],
                                        "reported error": "mean", "seconds": "mean", "calls": "mean"}))


if __name__ == "__main__":
    main()
