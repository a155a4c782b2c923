"""How large a K brute force needs on ``refine.py``'s normal case, computed rather than run.

At the exact posterior of (μ, τ) (a grid over the marginal y_n ~ N(μ, (σ_n² + τ²)^½), with the
benchmark's hyperpriors μ ~ N(0, 5), τ ~ HalfNormal(2)), and with exact posterior draws of each
object (the normal model's p0 is flat, so θ_n ~ N(y_n, σ_n)), the weights w = f(θ; μ, τ) have
the large-K ESS K·E[w]²/E[w²] in closed form:

    E[w] = N(y_n; μ, (σ_n² + τ²)^½),   E[w²] = N(y_n; μ, (σ_n² + τ²/2)^½) / (2 √π τ).

For each K this prints the median over the posterior of Σ_n (1/ESS_n − 1/K) (Var[ln L̂]) and
the number of objects the low-ESS warning would name (ESS_n < 20 at ≥ 1 % of the draws).

    python benchmarks/refine_brute_force_k.py --objects 1000
"""

import argparse

import numpy as np
from scipy.stats import halfnorm, norm

from refine import simulated_normal


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1, help="refine.py's --seed (the simulated data)")
    parser.add_argument("--draws", type=int, default=4000, help="posterior draws of (μ, τ) from the grid")
    args = parser.parse_args()
    table = simulated_normal(args.objects, args.seed)
    y, s = table["y"].to_numpy(), table["sigma"].to_numpy()
    mu_step, tau_step = 0.0025, 0.0002  # cell centres; draws are spread uniformly over their cells
    mu, tau = np.arange(-0.5, 0.5, mu_step) + mu_step / 2, np.arange(0, 0.6, tau_step) + tau_step / 2
    m, t = np.meshgrid(mu, tau, indexing="ij")
    log_post = norm.logpdf(m, 0, 5) + halfnorm.logpdf(t, scale=2)
    for y_n, s_n in zip(y, s):
        log_post += norm.logpdf(y_n, m, np.sqrt(s_n ** 2 + t ** 2))
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    for name, grid in (("mu", m), ("tau", t)):
        mean = (post * grid).sum()
        print(f"exact posterior of {name}: mean {mean:.4f}, sd {np.sqrt((post * (grid - mean) ** 2).sum()):.4f}")
    rng = np.random.default_rng(0)
    pick = rng.choice(post.size, args.draws, p=post.ravel())
    am = m.ravel()[pick][:, None] + rng.uniform(-0.5, 0.5, (args.draws, 1)) * mu_step
    at = t.ravel()[pick][:, None] + rng.uniform(-0.5, 0.5, (args.draws, 1)) * tau_step
    ln_mean = norm.logpdf(y, am, np.sqrt(s ** 2 + at ** 2))
    ln_square = norm.logpdf(y, am, np.sqrt(s ** 2 + at ** 2 / 2)) - np.log(2 * np.sqrt(np.pi) * at)
    ess_share = np.exp(2 * ln_mean - ln_square)
    k = 1000
    while True:
        variance = np.median(np.sum(1 / (k * ess_share) - 1 / k, axis=1))
        flagged = int(np.sum(np.mean(k * ess_share < 20, axis=0) >= 0.01))
        print(f"K = {k}: median Var[ln L̂] {variance:.3g}, objects with low ESS {flagged}")
        if variance < 1 and not flagged or k >= 2 ** 12 * 1000:
            break
        k *= 2


if __name__ == "__main__":
    main()
