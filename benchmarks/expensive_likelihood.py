"""An expensive per-object likelihood: popinfer's two stages against a joint hierarchical NUTS fit.

Each of N objects is an exponential decay y(t) = A exp(-r t) observed at ROWS times
(``sample_data/decay_model.py``, data simulated as ``sample_data/make_decay.py`` does:
ln A ~ N(ln 10, 0.3), ln r ~ N(ln 0.5, 0.4), t evenly spaced on [0, 6], noise sd 2).
The population is over the rate: ln r ~ N(mu, sigma) (popinfer's ``lognormal`` on
``rate``), hyperpriors mu ~ N(0, 2), sigma ~ HalfNormal(1) on both sides; A keeps the
model's interim prior loguniform(0.01, 1000) (flat in ln A) on both sides.

- popinfer: ``fit_individuals`` (the user model, K draws per object) then
  ``fit_population`` (emcee, the default, and ``--sampler nuts``).
- The joint model, centred (the data pin each object's rate far more tightly than the
  population does): mu, ln sigma, ln A_n, ln r_n, with every object's likelihood and its
  gradient evaluated at every gradient, fitted by nutpie (``from_pyfunc``, numpy) and by
  NumPyro (JAX, float64, compilation included); 4 chains × (1000 tuning + 1000 kept), one
  chain after another.
- The reference is exact quadrature: given r, the likelihood is Gaussian in A, so each
  object's marginal likelihood of ln r (A integrated against its 1/A prior by Gauss–Hermite)
  is computed on a fine grid, and the posterior of (mu, sigma) on a grid from those.
- The amortised row: stage one once, then several populations of the same samples
  (lognormal, gamma and normal on r), as a user comparing populations would;
  the joint side would refit the whole model once per population.

Reported: wall and CPU time of this process (all threads), the ESS of mu and sigma
(popinfer's emcee: its τ-based n_steps/2 · W/τ; NUTS: ArviZ bulk ESS across chains), ESS
per wall second of the smaller, and the errors of E[mu], E[sigma] in posterior sd.

    python benchmarks/expensive_likelihood.py --amortised           # N = 50, 1000 rows, K = 1000 and 4000
    python benchmarks/expensive_likelihood.py --objects 20 --rows 10000 --draws 1000 --amortised --joint nutpie nutpie-short
    python benchmarks/expensive_likelihood.py --objects 200 --draws 1000 --amortised --joint nutpie nutpie-short
    python benchmarks/expensive_likelihood.py --objects 200 --draws --joint nutpie-short   # a joint fit alone
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import popinfer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from joint_models import CHAINS, DRAWS, TUNE, bulk_ess, sample_nutpie  # noqa: E402
from joint_nuts import Clock  # noqa: E402

MODEL = str(Path(__file__).resolve().parent.parent / "sample_data" / "decay_model.py") + ":decay"
HYPERPRIORS = ["mu=normal(0, 2)", "sigma=halfnormal(1)"]
NOISE = 2.0
AMORTISED = [("lognormal", HYPERPRIORS),
             ("gamma", ["shape=lognormal(0, 2)", "rate=lognormal(0, 2)"]),
             ("normal", ["mu=normal(0, 2)", "sigma=halfnormal(1)"])]


def make_data(n_objects, n_rows, seed):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 6.0, n_rows)
    amplitude = np.exp(rng.normal(np.log(10.0), 0.3, n_objects))
    rate = np.exp(rng.normal(np.log(0.5), 0.4, n_objects))
    y = amplitude[:, None] * np.exp(-rate[:, None] * t) + rng.normal(0.0, NOISE, (n_objects, n_rows))
    return t, y


def frame_of(t, y):
    n, rows = y.shape
    return pd.DataFrame({"source": np.repeat([f"S{i:04d}" for i in range(n)], rows), "t": np.tile(t, n),
                         "y": y.ravel(), "yerr": NOISE})


def exact_moments(t, y, n_grid=201):
    """E and sd of mu and sigma by quadrature (see the module's docstring)."""
    u = np.linspace(np.log(1e-3), np.log(1e2), 6001)  # ln r over the interim prior's support
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    log_like = np.empty((len(y), len(u)))
    for start in range(0, len(u), 500):
        f = np.exp(-np.exp(u[start:start + 500])[:, None] * t)  # (G, T)
        s_ff = (f * f).sum(axis=1) / NOISE**2
        s_yf = y @ f.T / NOISE**2  # (N, G)
        s_yy = (y * y).sum(axis=1)[:, None] / NOISE**2
        a_hat, a_sd = s_yf / s_ff, 1.0 / np.sqrt(s_ff)
        # ∫ exp(-χ²/2) dA/A = exp(-(s_yy - s_yf²/s_ff)/2) √(2π/s_ff) E[1/A], A ~ N(â, 1/√s_ff), A > 0
        amplitude = a_hat[..., None] + a_sd[:, None] * nodes
        inverse = np.where(amplitude > 0, 1.0 / np.where(amplitude > 0, amplitude, 1.0), 0.0)
        mean_inverse = inverse @ weights / weights.sum()
        with np.errstate(divide="ignore"):
            log_like[:, start:start + 500] = (-0.5 * (s_yy - s_yf**2 / s_ff) + 0.5 * np.log(2 * np.pi / s_ff)
                                              + np.log(mean_inverse))
    log_like -= log_like.max(axis=1, keepdims=True)
    inside = np.flatnonzero((log_like > -40).any(axis=0))  # the evenly spaced span where objects have mass
    u, like = u[inside[0]:inside[-1] + 1], np.exp(log_like[:, inside[0]:inside[-1] + 1])
    centre = (like @ u) / like.sum(axis=1)
    spread = centre.std()
    # A broad grid first, then one over ± 12 posterior sd of each.
    mus = np.linspace(centre.mean() - 8 * spread / np.sqrt(len(y)) - 1.5,
                      centre.mean() + 8 * spread / np.sqrt(len(y)) + 1.5, n_grid)
    sigmas = np.linspace(1e-4, 4 * spread + 4.0, n_grid)
    for final in (False, True):
        w, mu, sigma = _grid_posterior(u, like, mus, sigmas)
        assert not final or w[[0, -1], :].sum() + w[:, -1].sum() < 1e-6, "the (mu, sigma) grid cuts off mass"
        out = {}
        for name, values in (("mu", mu), ("sigma", sigma)):
            mean = float((w * values).sum())
            out[name] = (mean, float(np.sqrt((w * values**2).sum() - mean**2)))
        mus = np.linspace(out["mu"][0] - 12 * out["mu"][1], out["mu"][0] + 12 * out["mu"][1], n_grid)
        sigmas = np.linspace(max(1e-4, out["sigma"][0] - 12 * out["sigma"][1]),
                             out["sigma"][0] + 12 * out["sigma"][1], n_grid)
    return out


def _grid_posterior(u, like, mus, sigmas):
    """Normalised posterior weights of (mu, sigma) on a product grid, and the grid."""
    mu, sigma = np.meshgrid(mus, sigmas, indexing="ij")
    flat_mu, flat_sigma = mu.ravel(), sigma.ravel()
    log_post = stats.norm.logpdf(flat_mu, 0, 2) + stats.halfnorm.logpdf(flat_sigma, scale=1)
    du = u[1] - u[0]
    for start in range(0, len(flat_mu), 2000):
        density = stats.norm.pdf(u[None, :], flat_mu[start:start + 2000, None], flat_sigma[start:start + 2000, None])
        with np.errstate(divide="ignore"):  # sigma far below the objects' spread: ln 0
            log_post[start:start + 2000] += np.log(like @ density.T * du).sum(axis=0)
    w = np.exp(log_post - log_post.max()).reshape(mu.shape)
    return w / w.sum(), mu, sigma


def joint_nutpie(t, y, seed, tune=TUNE, draws=DRAWS):
    """(mu chains, sigma chains, gradient evaluations with tuning) of the joint model by nutpie."""
    n = len(y)
    precision = 1.0 / NOISE**2

    def make_logp():
        def logp(x):
            mu, log_sigma, log_a, log_r = x[0], x[1], x[2:n + 2], x[n + 2:]
            sigma = np.exp(log_sigma)
            rate = np.exp(log_r)
            model = np.exp(log_a[:, None] - rate[:, None] * t)
            residual = (y - model) * precision
            z = (log_r - mu) / sigma
            value = (-0.5 * mu * mu / 4.0 - 0.5 * sigma * sigma + log_sigma - 0.5 * z @ z - n * log_sigma
                     - 0.5 * np.sum((y - model) ** 2) * precision)
            d_model = residual * model
            gradient = np.empty(2 * n + 2)
            gradient[0] = -mu / 4.0 + z.sum() / sigma
            gradient[1] = -sigma * sigma + 1.0 + z @ z - n
            gradient[2:n + 2] = d_model.sum(axis=1)
            gradient[n + 2:] = -z / sigma - rate * (d_model @ t)
            return value, gradient
        return logp

    return sample_nutpie(make_logp, 2 * n + 2, ("mu", "sigma"), seed, tune, draws)


def joint_numpyro(t, y, seed):
    """(mu chains, sigma chains, None) of the joint model by NumPyro."""
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    numpyro.enable_x64()

    def model(t, y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with numpyro.plate("objects", y.shape[0]):
            log_a = numpyro.sample("log_a", dist.ImproperUniform(dist.constraints.real, (), ()))
            log_r = numpyro.sample("log_r", dist.Normal(mu, sigma))
            curve = jax.numpy.exp(log_a[:, None] - jax.numpy.exp(log_r)[:, None] * t)
            numpyro.factor("y", -0.5 * jax.numpy.sum((y - curve) ** 2, axis=1) / NOISE**2)

    mcmc = MCMC(NUTS(model), num_warmup=TUNE, num_samples=DRAWS, num_chains=CHAINS, chain_method="sequential",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), t=t, y=y)
    draws = mcmc.get_samples(group_by_chain=True)
    return np.asarray(draws["mu"]), np.asarray(draws["sigma"]), None


def stage_one(t, y, n_draws, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return popinfer.fit_individuals(frame_of(t, y), MODEL, n_draws=n_draws, seed=seed, progress=False)


def stage_two(samples, sampler, seed, population="lognormal", hyperpriors=HYPERPRIORS):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = popinfer.fit_population(samples, population, parameters=["rate"], hyperpriors=hyperpriors,
                                         seed=seed, sampler=sampler, n_reweighted=10, progress=False)
    if sampler == "emcee":
        ess = [result.settings["n_steps"] / 2 * result.settings["walkers"] / t for t in result.autocorr_time]
    else:
        ess = [result.settings["ess_bulk"][name] for name in result.hyperparameters]
    return result, ess


def report(label, wall, cpu, mu, sigma, ess, exact):
    errors = [(float(np.mean(values)) - exact[name][0]) / exact[name][1]
              for values, name in ((mu, "mu"), (sigma, "sigma"))]
    print(f"{label:44s} {wall:7.1f} {cpu:7.1f} {ess[0]:7.0f} {ess[1]:7.0f} {min(ess) / wall:8.1f} "
          f"{errors[0]:+9.3f} {errors[1]:+9.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--draws", type=int, nargs="*", default=[1000, 4000], help="stage-one K values (none: no popinfer)")
    parser.add_argument("--samplers", nargs="+", default=["emcee", "nuts"])
    parser.add_argument("--joint", nargs="*", choices=["nutpie", "nutpie-short", "numpyro"],
                        default=["nutpie", "nutpie-short", "numpyro"])
    parser.add_argument("--amortised", action="store_true", help="also fit the other populations (emcee)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    t, y = make_data(args.objects, args.rows, 20261122)
    exact = exact_moments(t, y)
    print(f"N = {args.objects} objects × {args.rows} rows; exact E[mu] = {exact['mu'][0]:.4f} "
          f"(sd {exact['mu'][1]:.4f}), E[sigma] = {exact['sigma'][0]:.4f} (sd {exact['sigma'][1]:.4f})")
    print(f"{'fit':44s} {'wall_s':>7s} {'cpu_s':>7s} {'ESS_mu':>7s} {'ESS_sig':>7s} {'ESS/s':>8s} "
          f"{'err_mu/sd':>9s} {'err_sig/sd':>9s}")
    for n_draws in args.draws:
        with Clock() as one:
            samples = stage_one(t, y, n_draws, args.seed)
        steps = float(np.mean(samples.diagnostics["n_steps"]))
        walkers = samples.settings["walkers"]
        print(f"  stage one K = {n_draws}: {one.wall:.1f} s wall, {one.cpu:.1f} s CPU; {steps:.0f} steps × "
              f"{walkers} walkers = {steps * walkers:.0f} likelihood evaluations per object", flush=True)
        for sampler in args.samplers:
            with Clock() as two:
                result, ess = stage_two(samples, sampler, args.seed + 1)
            variance = np.asarray(result.ln_likelihood_variance)
            print(f"  stage two {sampler}: {two.wall:.1f} s wall; median Var[ln L̂] at the kept draws "
                  f"{np.median(variance):.3f}, smallest per-object ESS {float(np.min(result.ess)):.0f}", flush=True)
            report(f"popinfer K={n_draws} {sampler} (stage 1 + 2)", one.wall + two.wall, one.cpu + two.cpu,
                   result.hyper("mu"), result.hyper("sigma"), ess, exact)
        if args.amortised:
            walls, cpus = [one.wall], [one.cpu]
            for population, hyperpriors in AMORTISED:
                with Clock() as two:
                    stage_two(samples, "emcee", args.seed + 1, population, hyperpriors)
                walls.append(two.wall)
                cpus.append(two.cpu)
                print(f"  amortised: stage two {population}: {two.wall:.1f} s wall, {two.cpu:.1f} s CPU", flush=True)
            print(f"  amortised K={n_draws}: stage one once + {len(AMORTISED)} populations: {sum(walls):.1f} s wall, "
                  f"{sum(cpus):.1f} s CPU; per population {sum(walls) / len(AMORTISED):.1f} s wall", flush=True)
    joint = [("nutpie", f"joint nutpie 4 × ({TUNE} + {DRAWS})", joint_nutpie, {}),
             ("nutpie-short", "joint nutpie 4 × (300 + 250)", joint_nutpie, {"tune": 300, "draws": 250}),
             ("numpyro", f"joint NumPyro 4 × ({TUNE} + {DRAWS})", joint_numpyro, {})]
    for name, label, fit, options in joint:
        if name in args.joint:
            with Clock() as clock:
                mu, sigma, gradients = fit(t, y, args.seed, **options)
            report(label, clock.wall, clock.cpu, mu.ravel(), sigma.ravel(), [bulk_ess(mu), bulk_ess(sigma)], exact)
            if gradients:
                print(f"  {label}: {gradients} gradient evaluations (each: every object's likelihood and gradient)")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
