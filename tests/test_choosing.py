"""Choosing a population: evidence by nested sampling, PSIS-LOO over objects,
``popinfer compare``, and the predictive and plate-diagram figures.

Stage-one draws are made exactly (θ_nk ~ N(y_n, σ_n), the posterior under a flat
interim prior, whose truncation at ±100 is negligible), so that every oracle is a
closed form or a one-dimensional quadrature: the evidence and the posterior of
eight schools under mu ~ N(0, 5), tau ~ HalfCauchy(5) (the marginal over mu is
Gaussian in closed form; tau is integrated in quantile space).
"""

import io
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import integrate, stats
from scipy.special import logsumexp

import popinfer
from conftest import SAMPLE_DATA
from popinfer.cli import main
from popinfer.comparison import ComparisonWarning, compare_populations, leave_one_out
from popinfer.io.samples import write_samples

EIGHT = pd.read_csv(SAMPLE_DATA / "eight_schools.csv")
EIGHT_HYPER = ["mu=normal(0, 5)", "sigma=halfcauchy(5)"]
INTERIM = (-100.0, 100.0)


def exact_samples(y, sigma, n_draws, seed, ids=None):
    """Samples whose draws are exact posterior draws under a uniform(-100, 100) interim prior."""
    y, sigma = np.asarray(y, float), np.asarray(sigma, float)
    rng = np.random.default_rng(seed)
    theta = y[:, None, None] + sigma[:, None, None] * rng.standard_normal((len(y), n_draws, 1))
    n = len(y)
    return popinfer.Samples(
        ids=list(ids) if ids is not None else [f"o{i}" for i in range(n)], parameters=["theta"], samples=theta,
        log_interim_prior=np.full((n, n_draws, 1), -np.log(INTERIM[1] - INTERIM[0])),
        log_likelihood=stats.norm.logpdf(theta[:, :, 0], y[:, None], sigma[:, None]),
        diagnostics={"acceptance_fraction": np.full(n, 0.5), "autocorr_time": np.ones((n, 1)),
                     "n_steps": np.full(n, 1000), "converged": np.ones(n, dtype=bool),
                     "effective_draws": np.full(n, float(n_draws))},
        model="normal", interim_prior={"theta": f"uniform({INTERIM[0]}, {INTERIM[1]})"},
        settings={"columns": {"y": "y", "sigma": "sigma"}}, seed=seed)


def interim_log_evidence(y, sigma):
    """Σ_n ln Z0_n, Z0_n = ∫ N(y_n; θ, σ_n) p0(θ) dθ under the uniform interim prior."""
    low, high = INTERIM
    return float(np.sum(np.log((stats.norm.cdf((high - y) / sigma) - stats.norm.cdf((low - y) / sigma))
                               / (high - low))))


class EightSchoolsExact:
    """ln Z and the marginal posterior CDFs of (mu, tau) for mu ~ N(0, s_mu), tau ~ HalfCauchy(5)."""

    def __init__(self, y, sigma, mu_scale=5.0, tau_scale=5.0, n_grid=4001):
        self.y, self.sigma, self.mu_scale = y, sigma, mu_scale
        self.tau_prior = stats.halfcauchy(scale=tau_scale)
        u = (np.arange(n_grid) + 0.5) / n_grid  # midpoints in the prior's quantile space
        self.tau = self.tau_prior.ppf(u)
        variance = sigma[None, :] ** 2 + self.tau[:, None] ** 2
        precision = 1.0 / mu_scale**2 + np.sum(1.0 / variance, axis=1)
        self.mu_mean = np.sum(y / variance, axis=1) / precision
        self.mu_sd = 1.0 / np.sqrt(precision)
        self.log_marginal = np.array([self._log_marginal(t) for t in self.tau])  # ln p(y | tau)
        self.weights = np.exp(self.log_marginal - self.log_marginal.max())
        self.weights /= self.weights.sum()

    def _log_marginal(self, tau):
        cov = np.diag(self.sigma**2 + tau**2) + self.mu_scale**2
        return stats.multivariate_normal.logpdf(self.y, np.zeros_like(self.y), cov)

    def log_evidence(self):
        """ln ∫∫ Π_j N(y_j; mu, √(σ_j² + tau²)) p(mu) p(tau) dmu dtau − Σ ln Z0_j (adaptive quadrature over u)."""
        shift = self.log_marginal.max()
        value, _ = integrate.quad(lambda u: math.exp(self._log_marginal(self.tau_prior.ppf(u)) - shift), 0.0, 1.0,
                                  limit=500, epsabs=0.0, epsrel=1e-10)
        return math.log(value) + shift - interim_log_evidence(self.y, self.sigma)

    def tau_cdf(self, x, stretch=1.0):
        return np.interp(np.asarray(x) / stretch, self.tau, np.cumsum(self.weights))

    def mu_cdf(self, x, shift=0.0):
        x = np.asarray(x)[:, None] - shift
        return stats.norm.cdf((x - self.mu_mean[None, :]) / self.mu_sd[None, :]) @ self.weights


def ks_pvalue(draws, cdf, n_effective):
    """KS p-value of ``draws`` against ``cdf`` for an effective sample size ``n_effective``."""
    statistic = stats.kstest(draws, cdf).statistic
    return float(stats.kstwo.sf(statistic, max(int(n_effective), 1)))


@pytest.fixture(scope="module")
def eight_exact():
    return exact_samples(EIGHT["y"], EIGHT["sigma"], 4000, seed=5, ids=EIGHT["school"])


@pytest.fixture(scope="module")
def eight_oracle():
    return EightSchoolsExact(EIGHT["y"].to_numpy(float), EIGHT["sigma"].to_numpy(float))


def quiet_fit(samples, population, output=None, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return popinfer.fit_population(samples, population, output, progress=False, **options)


@pytest.mark.slow
def test_nested_evidence_and_draws_match_the_eight_schools_grid(eight_exact, eight_oracle, tmp_path):
    result = quiet_fit(eight_exact, "normal", tmp_path / "nested.h5", hyperpriors=EIGHT_HYPER, seed=3,
                       sampler="nested", n_samples=2000, n_reweighted=100)
    exact = eight_oracle.log_evidence()
    # Error budget: the sampler's own error and the Monte Carlo error of ln L̂ from K draws
    # (Var[ln L̂] at the posterior median bounds it: Ẑ averages L̂ over the posterior).
    importance = math.sqrt(float(np.median(result.ln_likelihood_variance)))
    tolerance = 3.0 * math.hypot(result.log_evidence_error, importance)
    assert abs(result.log_evidence - exact) < min(tolerance, 0.2), (result.log_evidence, exact, tolerance)
    # Negative control: a hyperprior mu ~ N(0, 20) (an Occam factor of about e^-0.5) is told apart.
    wrong = EightSchoolsExact(eight_oracle.y, eight_oracle.sigma, mu_scale=20.0).log_evidence()
    assert abs(result.log_evidence - wrong) > min(tolerance, 0.2)
    # It is stored and read back.
    back = popinfer.read_population(tmp_path / "nested.h5")
    assert back.log_evidence == result.log_evidence and back.log_evidence_error == result.log_evidence_error
    assert back.settings["sampler"] == "nested"

    # The draws pass the KS test against the grid posterior; resampling the weighted points
    # adds its own noise: 1/n_eff = 1/ESS + 1/S.
    n_effective = 1.0 / (1.0 / result.settings["effective_sample_size"] + 1.0 / len(result.hyper_samples))
    mu, tau = result.hyper("mu"), result.hyper("sigma")
    assert ks_pvalue(mu, eight_oracle.mu_cdf, n_effective) > 1e-3
    assert ks_pvalue(tau, eight_oracle.tau_cdf, n_effective) > 1e-3
    # Negative controls: a posterior of tau stretched by 30 %, of mu shifted by 1.
    assert ks_pvalue(tau, lambda x: eight_oracle.tau_cdf(x, stretch=1.3), n_effective) < 1e-3
    assert ks_pvalue(mu, lambda x: eight_oracle.mu_cdf(x, shift=1.0), n_effective) < 1e-3




@pytest.mark.slow
def test_emcee_draws_pass_the_same_ks_test(eight_exact, eight_oracle):
    result = quiet_fit(eight_exact, "normal", hyperpriors=EIGHT_HYPER, seed=3, n_samples=2000, n_reweighted=100)
    assert result.log_evidence is None
    # Thinned chain: its τ-based effective size, halved for safety (tests/stats_helpers.py).
    effective = result.settings["n_steps"] / 2 * result.settings["walkers"] / np.max(result.autocorr_time) / 2
    n_effective = min(len(result.hyper_samples), effective)
    assert ks_pvalue(result.hyper("mu"), eight_oracle.mu_cdf, n_effective) > 1e-3
    assert ks_pvalue(result.hyper("sigma"), eight_oracle.tau_cdf, n_effective) > 1e-3
    assert ks_pvalue(result.hyper("sigma"), lambda x: eight_oracle.tau_cdf(x, stretch=1.3), n_effective) < 1e-3


def test_psis_loo_matches_brute_force_leave_one_object_out():
    """Eight objects, one of them 4σ out: PSIS-LOO's elpd equals the sum of ln p(data_n | data_−n)
    over refits without object n (the held-out term exact: N(y_n; mu, √(σ² + tau²)) / Z0_n),
    within its standard error."""
    y = np.array([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5, 4.0])
    sigma = np.full(8, 1.0)
    samples = exact_samples(y, sigma, 2000, seed=11)
    hyper = ["mu=normal(0, 5)", "sigma=halfnormal(3)"]
    full = quiet_fit(samples, "normal", hyperpriors=hyper, seed=1, n_samples=2000, n_reweighted=10)
    loo = leave_one_out(full)
    brute = []
    for n in range(8):
        keep = [i for i in range(8) if i != n]
        rest = popinfer.Samples(
            ids=[samples.ids[i] for i in keep], parameters=["theta"], samples=samples.samples[keep],
            log_interim_prior=samples.log_interim_prior[keep], log_likelihood=samples.log_likelihood[keep],
            diagnostics={k: v[keep] for k, v in samples.diagnostics.items()}, model="normal",
            interim_prior=samples.interim_prior, settings=samples.settings, seed=0)
        refit = quiet_fit(rest, "normal", hyperpriors=hyper, seed=100 + n, n_samples=2000, n_reweighted=10)
        held_out = (stats.norm.logpdf(y[n], refit.hyper("mu"), np.sqrt(sigma[n] ** 2 + refit.hyper("sigma") ** 2))
                    - interim_log_evidence(y[n:n + 1], sigma[n:n + 1]))
        brute.append(float(logsumexp(held_out) - np.log(len(held_out))))
    brute = np.array(brute)
    assert abs(loo.elpd_loo - brute.sum()) < loo.se, (loo.elpd_loo, brute.sum(), loo.se)
    assert loo.pareto_k.shape == (8,) and loo.pointwise.shape == (8,)
    # Negative control: the in-sample score (no object left out) is several times further off.
    in_sample = logsumexp(full.object_log_likelihood, axis=0) - np.log(len(full.object_log_likelihood))
    assert abs(in_sample.sum() - brute.sum()) > 3 * abs(loo.elpd_loo - brute.sum())


def two_group_samples(bimodal, seed, n_objects=30, n_draws=1000):
    rng = np.random.default_rng(seed)
    if bimodal:
        truth = np.where(np.arange(n_objects) % 2 == 0, -3.0, 3.0) + 0.5 * rng.standard_normal(n_objects)
    else:
        truth = rng.standard_normal(n_objects)
    sigma = np.full(n_objects, 0.5)
    return exact_samples(truth + sigma * rng.standard_normal(n_objects), sigma, n_draws, seed=seed + 1)


def fit_files(root, fits, n_objects, n_draws, **options):
    """Population files {(shape, name): path} of ``fits`` {name: (population, hyperpriors)} on
    bimodal and on unimodal objects (one samples file each)."""
    files = {}
    for shape, bimodal in (("bimodal", True), ("unimodal", False)):
        samples_path = root / f"{shape}.h5"
        write_samples(two_group_samples(bimodal, seed=31 if bimodal else 41, n_objects=n_objects, n_draws=n_draws),
                      str(samples_path))
        for name, (population, hyper) in fits.items():
            path = root / f"{shape}-{name}.h5"
            quiet_fit(str(samples_path), population, str(path), hyperpriors=hyper, seed=7, **options)
            files[shape, name] = str(path)
    return files


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Two normal populations (different hyperpriors) on one samples file, one on another."""
    fits = {"wide": ("normal", ["mu=normal(0, 10)", "sigma=halfnormal(10)"]),
            "narrow": ("normal", ["mu=normal(0, 1)", "sigma=halfnormal(1)"])}
    return fit_files(tmp_path_factory.mktemp("compare"), fits, 12, 500, n_samples=500, n_reweighted=20)


def test_compare_formats_and_refuses_files_of_different_samples(compared):
    runner = CliRunner()
    files = [compared["bimodal", "wide"], compared["bimodal", "narrow"]]
    result = runner.invoke(main, ["compare", *files, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    for key in ("file", "population", "elpd_loo", "elpd_loo_se", "log_evidence", "log_evidence_error"):
        assert all(key in row for row in rows)
    assert [row["rank"] for row in rows] == [1, 2] and rows[0]["delta_elpd_loo"] == 0.0
    assert rows[0]["elpd_loo"] >= rows[1]["elpd_loo"] and rows[1]["delta_elpd_loo_se"] > 0
    assert all(row["log_evidence"] is None for row in rows)  # emcee computes no evidence
    table = runner.invoke(main, ["compare", *files])
    assert table.exit_code == 0 and "elpd_loo" in table.stdout and "interim evidence" in table.stdout
    csv = runner.invoke(main, ["compare", *files, "--format", "csv"])
    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert list(frame["file"]) == [row["file"] for row in rows]

    mixed = runner.invoke(main, ["compare", compared["bimodal", "wide"], compared["unimodal", "wide"]])
    assert mixed.exit_code == 1
    assert "different samples files" in mixed.stderr and "SHA-256" in mixed.stderr
    assert "Traceback" not in mixed.output


NESTED_HYPER = {
    "normal": ["mu=normal(0, 5)", "sigma=halfnormal(5)"],
    "mixture": ["weight=uniform(0, 1)", "mu1=normal(0, 5)", "mu2=normal(0, 5)", "sigma1=halfnormal(5)",
                "sigma2=halfnormal(5)"],
}


@pytest.fixture(scope="module")
def nested_compared(tmp_path_factory):
    """normal and mixture by nested sampling, on bimodal and on unimodal objects (files on disk)."""
    fits = {name: (name, hyper) for name, hyper in NESTED_HYPER.items()}
    return fit_files(tmp_path_factory.mktemp("nested"), fits, 16, 300, sampler="nested", live_points=100,
                     n_samples=500, n_reweighted=10)


def by_population(rows):
    return {row["population"]: row for row in rows}


def compare_json(*files):
    result = CliRunner().invoke(main, ["compare", *files, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_compare_ranks_the_mixture_first_on_bimodal_objects_only(nested_compared):
    rows = compare_json(nested_compared["bimodal", "normal"], nested_compared["bimodal", "mixture"])
    mixture, normal = by_population(rows)["mixture"], by_population(rows)["normal"]
    assert rows[0]["population"] == "mixture" and mixture["rank"] == 1
    # The normal's Δelpd is beyond 3 of its standard errors, its ln B beyond 3 of its errors.
    assert normal["delta_elpd_loo"] > 3 * normal["delta_elpd_loo_se"]
    assert mixture["log_bayes_factor"] == 0.0 and -normal["log_bayes_factor"] > 3 * normal["log_bayes_factor_error"]

    rows = compare_json(nested_compared["unimodal", "normal"], nested_compared["unimodal", "mixture"])
    mixture, normal = by_population(rows)["mixture"], by_population(rows)["normal"]
    log_b = mixture["log_evidence"] - normal["log_evidence"]
    error = math.hypot(mixture["log_evidence_error"], normal["log_evidence_error"])
    assert log_b < 2 * error  # the evidence does not favour the mixture (Occam's factor)


def test_compare_of_emcee_files_has_null_evidence_and_names_high_k(tmp_path):
    samples = exact_samples([-1.0, 0.0, 0.5, 1.0, 40.0], [1.0] * 5, 1000, seed=3)
    write_samples(samples, str(tmp_path / "s.h5"))
    path = tmp_path / "normal.h5"
    quiet_fit(str(tmp_path / "s.h5"), "normal", str(path), seed=1, n_samples=1000, n_reweighted=20,
              hyperpriors=["mu=normal(0, 10)", "sigma=halfnormal(2)"])
    result = CliRunner().invoke(main, ["compare", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["log_evidence"] is None and row["log_evidence_error"] is None and row["log_bayes_factor"] is None
    assert row["elpd_loo"] is not None and row["n_hyperparameters"] == 2
    # The object at 40 cannot be left out by importance sampling: it is named.
    assert "o4" in row["high_pareto_k_objects"] and row["max_pareto_k"] > 0.7
    assert "Pareto k > 0.7" in result.stderr and "'o4'" in result.stderr


def test_compare_warns_when_a_file_has_no_per_object_likelihoods(tmp_path):
    samples = exact_samples([-1.0, 0.0, 1.0], [1.0] * 3, 500, seed=4)
    result = quiet_fit(samples, "normal", seed=1, n_samples=500, n_reweighted=10)
    result.object_log_likelihood = None  # as in a file written before they were stored
    with pytest.warns(ComparisonWarning, match="no per-object log-likelihoods"):
        (row,) = compare_populations([result], ["old.h5"])
    assert row["elpd_loo"] is None and row["rank"] is None


@pytest.fixture(scope="module")
def eight_files(tmp_path_factory, eight_exact):
    root = tmp_path_factory.mktemp("plots")
    write_samples(eight_exact, str(root / "eight.h5"))
    quiet_fit(str(root / "eight.h5"), "normal", str(root / "pop.h5"), hyperpriors=EIGHT_HYPER, seed=2,
              n_samples=1000, n_reweighted=200)
    return root


@pytest.mark.parametrize("source, kind", [("pop.h5", "predictive"), ("pop.h5", "model"), ("eight.h5", "model")])
def test_new_plot_kinds_render(eight_files, tmp_path, source, kind):
    pytest.importorskip("matplotlib")
    output = tmp_path / f"{kind}.png"
    result = CliRunner().invoke(main, ["plot", str(eight_files / source), "-o", str(output), "--kind", kind])
    assert result.exit_code == 0, result.output
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 5000


def test_model_plot_names_the_hyperpriors_and_the_interim_prior(eight_files, tmp_path):
    pytest.importorskip("daft")
    output = tmp_path / "model.svg"
    result = CliRunner().invoke(main, ["plot", str(eight_files / "pop.h5"), "-o", str(output), "--kind", "model"])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    for fragment in ("normal(0.0, 5.0)", "halfcauchy(5.0)", "uniform(-100.0, 100.0)", "N = 8"):
        assert fragment in text, fragment


def test_predictive_plot_runs_no_untrusted_code(eight_files, tmp_path):
    """A file naming a user population is drawn without importing it: the density band is
    left out with a warning."""
    import h5py

    copy = tmp_path / "user.h5"
    copy.write_bytes((eight_files / "pop.h5").read_bytes())
    with h5py.File(copy, "r+") as handle:
        handle.attrs["population"] = str(tmp_path / "evil.py") + ":population"
    (tmp_path / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    output = tmp_path / "check.png"
    result = CliRunner().invoke(main, ["plot", str(copy), "-o", str(output), "--kind", "predictive"])
    assert result.exit_code == 0, result.output
    assert output.exists() and not (tmp_path / "ran").exists()
    assert "--trust-code" in result.stderr
