"""``--sampler nuts``: nutpie's NUTS on the hyperparameters, against exact posteriors.

Stage-one draws are exact (the posterior under a flat interim prior), so every oracle is
a closed form or a grid. For the eight schools they are the posterior's K quantiles at
(k + ½)/K rather than random draws: NUTS follows ln L̂ closely, and where the population
is narrower than the draws' spacing (small tau) the Monte Carlo roughness of ln L̂ from
random draws makes chains stick (measured: bulk ESS of tau 230 of 4000 draws, against
2000 with quantiles; README, "Samplers"); the quantiles keep that roughness out of a test
of the sampler. The oracles: the eight schools under mu ~ N(0, 5), tau ~ HalfCauchy(5)
(tests/test_choosing.py's oracle), the rat tumours' beta population under
a, b ~ LogNormal(0, 2) (beta-binomial on a grid). The KS bounds use the draws' effective
size: the smaller of ArviZ's bulk and tail ESS across chains (rank-normalised, Vehtari et
al. 2021), capped by the draws kept. Negative controls (a stretched or shifted oracle) must fail.
"""

import hashlib
import json
import math
import os
import signal
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats
from scipy.special import betaln, logsumexp

import popinfer
from conftest import SAMPLE_DATA
from popinfer.cli import main
from popinfer.errors import GradientUnavailableError, PopinferError, UsageError
from popinfer.io.samples import write_samples
from popinfer.mcmc import ConvergenceWarning
from popinfer.reweighting.samplers.nuts import _after_tuning
from test_choosing import EIGHT, EIGHT_HYPER, EightSchoolsExact, exact_samples, ks_pvalue

pytest.importorskip("nutpie")

RATS_HYPER = ["a=lognormal(0, 2)", "b=lognormal(0, 2)"]


def quiet_fit(samples, population, output=None, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return popinfer.fit_population(samples, population, output, progress=False, **options)


def nuts_effective(result):
    """Effective size for a KS bound: min over hyperparameters of bulk and tail ESS, ≤ S."""
    settings = result.settings
    return min(len(result.hyper_samples), settings["min_ess_bulk"], settings["min_ess_tail"])


def emcee_effective(result):
    """The chain's τ-based effective size, halved for safety (tests/stats_helpers.py)."""
    effective = result.settings["n_steps"] / 2 * result.settings["walkers"] / np.max(result.autocorr_time) / 2
    return min(len(result.hyper_samples), effective)


EFFECTIVE = {"nuts": nuts_effective, "emcee": emcee_effective}


def assert_normal_normal_ks(result, oracle, n_effective, shift):
    """mu and tau pass KS against ``oracle`` (an EightSchoolsExact); the negative controls, tau's
    posterior stretched by 30 % and mu's shifted by ``shift``, fail it."""
    assert n_effective > 150
    mu, tau = result.hyper("mu"), result.hyper("sigma")
    assert ks_pvalue(mu, oracle.mu_cdf, n_effective) > 1e-3
    assert ks_pvalue(tau, oracle.tau_cdf, n_effective) > 1e-3
    assert ks_pvalue(tau, lambda x: oracle.tau_cdf(x, stretch=1.3), n_effective) < 1e-3
    assert ks_pvalue(mu, lambda x: oracle.mu_cdf(x, shift=shift), n_effective) < 1e-3


@pytest.fixture(scope="module")
def eight_exact():
    """Each school's posterior N(y, σ) (flat interim prior) as its K = 4000 quantiles."""
    samples = exact_samples(EIGHT["y"], EIGHT["sigma"], 4000, seed=5, ids=EIGHT["school"])
    quantiles = stats.norm.ppf((np.arange(4000) + 0.5) / 4000)
    y, sigma = EIGHT["y"].to_numpy(float), EIGHT["sigma"].to_numpy(float)
    samples.samples[:] = (y[:, None] + sigma[:, None] * quantiles)[..., None]
    samples.log_likelihood[:] = stats.norm.logpdf(samples.samples[..., 0], y[:, None], sigma[:, None])
    return samples


@pytest.fixture(scope="module")
def eight_oracle():
    return EightSchoolsExact(EIGHT["y"].to_numpy(float), EIGHT["sigma"].to_numpy(float))


@pytest.mark.slow
@pytest.mark.parametrize("sampler, exp_precision", [("nuts", "double"), ("emcee", "double"), ("nuts", "single")])
def test_eight_schools_draws_pass_ks_against_the_grid(sampler, exp_precision, eight_exact, eight_oracle):
    """NUTS's chains occasionally stick in the τ → 0 corner of the eight schools (README: "NUTS
    follows ln L̂ closely"), with divergences and a ConvergenceWarning, and then the tail ESS of τ
    is too small for the stretched-τ control to have power: over seeds 1–8, one such chain each
    before and after the gradient pass's einsums (seed 8, tail ESS 535; then seed 3, 168), the
    others ≥ 966. Seed 1 is the first seed; both samplers use it, and NUTS again with the weights'
    exponentials in float32 (``--exp-precision single``)."""
    result = quiet_fit(eight_exact, "normal", hyperpriors=EIGHT_HYPER, seed=1, sampler=sampler, n_samples=4000,
                       n_reweighted=20, exp_precision=exp_precision)
    assert (result.settings["sampler"], result.settings["exp_precision"]) == (sampler, exp_precision)
    assert_normal_normal_ks(result, eight_oracle, EFFECTIVE[sampler](result), shift=1.0)
    if sampler == "nuts":
        settings = result.settings
        assert settings["chains"] == 4 and settings["draws_per_chain"] == 1000
        assert set(settings["rhat"]) == {"mu", "sigma"} and settings["max_rhat"] < 1.01
        assert settings["transforms"] == {"mu": "identity", "sigma": "log"}
        assert settings["gradient_evaluations"] > 4 * (settings["tune"] + settings["draws_per_chain"])
        assert result.autocorr_time is None


def rats_exact_samples(n_draws, seed):
    """Exact stage-one draws of every experiment's rate, Beta(k + 1, n − k + 1) under p0 = uniform(0, 1)."""
    frame = pd.read_csv(SAMPLE_DATA / "rat_tumors.csv")
    k, n = frame["k"].to_numpy(float), frame["n"].to_numpy(float)
    rng = np.random.default_rng(seed)
    theta = rng.beta(k[:, None] + 1, (n - k)[:, None] + 1, (len(k), n_draws))[..., None]
    count = len(k)
    return popinfer.Samples(
        ids=[str(e) for e in frame["experiment"]], parameters=["p"], samples=theta,
        log_interim_prior=np.zeros((count, n_draws, 1)), log_likelihood=stats.binom.logpmf(k[:, None], n[:, None],
                                                                                           theta[..., 0]),
        diagnostics={"acceptance_fraction": np.full(count, 0.5), "autocorr_time": np.ones((count, 1)),
                     "n_steps": np.full(count, 1000), "converged": np.ones(count, dtype=bool),
                     "effective_draws": np.full(count, float(n_draws))},
        model="binomial", interim_prior={"p": "uniform(0.0, 1.0)"}, settings={"columns": {"k": "k", "n": "n"}},
        seed=seed), k, n


def rats_marginal_cdfs(k, n, size=500):
    """CDFs of ln a and ln b under the beta-binomial posterior, a, b ~ LogNormal(0, 2), on a grid."""
    log_a, log_b = np.linspace(-4, 6, size), np.linspace(-2, 8, size)
    la, lb = np.meshgrid(log_a, log_b, indexing="ij")
    a, b = np.exp(la), np.exp(lb)
    # LogNormal(0, 2) on a is Normal(0, 2) on ln a (the Jacobian included).
    log_post = stats.norm.logpdf(la, 0, 2) + stats.norm.logpdf(lb, 0, 2)
    for kj, nj in zip(k, n):
        log_post += betaln(a + kj, b + nj - kj) - betaln(a, b)
    post = np.exp(log_post - logsumexp(log_post))
    assert post[[0, -1], :].sum() + post[:, [0, -1]].sum() < 1e-8  # the grid holds the posterior
    return (log_a, np.cumsum(post.sum(axis=1))), (log_b, np.cumsum(post.sum(axis=0)))


@pytest.mark.slow
def test_rat_tumours_beta_population_passes_ks_against_the_beta_binomial_grid():
    samples, k, n = rats_exact_samples(1000, seed=8)
    result = quiet_fit(samples, "beta", hyperpriors=RATS_HYPER, seed=4, sampler="nuts", n_samples=4000,
                       n_reweighted=20)
    n_effective = nuts_effective(result)
    assert n_effective > 150
    (grid_a, cdf_a), (grid_b, cdf_b) = rats_marginal_cdfs(k, n)
    log_a, log_b = np.log(result.hyper("a")), np.log(result.hyper("b"))
    assert ks_pvalue(log_a, lambda x: np.interp(x, grid_a, cdf_a), n_effective) > 1e-3
    assert ks_pvalue(log_b, lambda x: np.interp(x, grid_b, cdf_b), n_effective) > 1e-3
    # Negative control: the posterior of ln a shifted by a third of its sd.
    shift = np.std(log_a) / 3
    assert ks_pvalue(log_a, lambda x: np.interp(x - shift, grid_a, cdf_a), n_effective) < 1e-3
    assert result.settings["transforms"] == {"a": "log", "b": "log"}


def test_same_seed_same_file_and_another_seed_differs(tmp_path, eight_exact, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    digests = []
    for name, seed in (("a.h5", 7), ("b.h5", 7), ("c.h5", 8)):
        quiet_fit(eight_exact, "normal", tmp_path / name, hyperpriors=EIGHT_HYPER, seed=seed, sampler="nuts",
                  n_samples=200, n_reweighted=10, chains=2, tune=100)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_chains_run_at_once_give_the_file_of_chains_run_one_after_another(tmp_path, eight_exact, monkeypatch):
    from popinfer.reweighting.samplers.nuts import NutsSampler

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    digests = []
    for name, concurrent in (("at-once.h5", True), ("in-turn.h5", False)):
        monkeypatch.setattr(NutsSampler, "concurrent", concurrent)
        quiet_fit(eight_exact, "normal", tmp_path / name, hyperpriors=EIGHT_HYPER, seed=5, sampler="nuts",
                  n_samples=300, n_reweighted=10, chains=3, tune=100)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_too_short_a_run_warns_about_convergence(eight_exact):
    with pytest.warns(ConvergenceWarning, match="effective sample size below"):
        popinfer.fit_population(eight_exact, "normal", hyperpriors=EIGHT_HYPER, seed=3, sampler="nuts",
                                n_samples=40, n_reweighted=10, chains=2, tune=20, progress=False)


def test_population_without_gradients_is_refused_with_the_remedy(tmp_path, eight_exact):
    with pytest.raises(GradientUnavailableError, match="--sampler emcee"):
        quiet_fit(eight_exact, "uniform", sampler="nuts", seed=1, n_samples=100, n_reweighted=10)
    write_samples(eight_exact, tmp_path / "eight.h5")
    result = CliRunner().invoke(main, ["fit-population", str(tmp_path / "eight.h5"), "-o", str(tmp_path / "u.h5"),
                                       "--population", "uniform", "--sampler", "nuts", "--quiet"])
    assert result.exit_code == 2 and "--sampler emcee" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "u.h5").exists()


@pytest.mark.parametrize("options, fragment", [({"chains": 3}, "--chains is an option of --sampler nuts"),
                                               ({"tune": 50}, "--tune is an option of --sampler nuts"),
                                               ({"tune_thin": 2}, "--tune-thin is an option of --sampler nuts")])
def test_nuts_options_belong_to_nuts(eight_exact, options, fragment):
    with pytest.raises(UsageError, match=fragment):
        quiet_fit(eight_exact, "normal", sampler="emcee", **options)


def test_one_chain_is_refused(eight_exact):
    with pytest.raises(UsageError, match="--chains 1"):
        quiet_fit(eight_exact, "normal", sampler="nuts", chains=1)


@pytest.mark.parametrize("thin", [0, 2.5])
def test_a_tune_thin_that_is_not_a_positive_whole_number_is_refused(eight_exact, thin):
    with pytest.raises(UsageError, match=f"--tune-thin {thin}: need a whole number of at least 1"):
        quiet_fit(eight_exact, "normal", sampler="nuts", tune_thin=thin)


def test_cli_records_the_sampler_and_its_diagnostics(tmp_path, eight_exact):
    write_samples(eight_exact, tmp_path / "eight.h5")
    runner = CliRunner()
    result = runner.invoke(main, ["fit-population", str(tmp_path / "eight.h5"), "-o", str(tmp_path / "p.h5"),
                                  "--population", "normal", "--sampler", "nuts", "--chains", "2", "--tune", "100",
                                  "--tune-thin", "2", "--samples", "400", "--reweighted", "10", "--seed", "2",
                                  "--quiet", "--hyperprior", "mu=normal(0, 5)", "--hyperprior", "sigma=halfcauchy(5)"])
    assert result.exit_code == 0, result.stderr
    population = popinfer.read_population(tmp_path / "p.h5")
    assert population.settings["sampler"] == "nuts" and population.settings["chains"] == 2
    assert population.settings["tune_thin"] == 2 and 0 < population.settings["tuning_evaluations_thinned"] < \
        population.settings["gradient_evaluations"]
    assert math.isfinite(population.settings["max_rhat"]) and population.hyper_samples.shape == (400, 2)
    summary = runner.invoke(main, ["summary", str(tmp_path / "p.h5")])
    assert summary.exit_code == 0 and "nuts: 2 chains, max R̂" in summary.stdout
    payload = json.loads(runner.invoke(main, ["summary", str(tmp_path / "p.h5"), "--format", "json"]).stdout)
    rows = {row["hyperparameter"]: row for row in payload["hyperparameters"]}
    assert rows["mu"]["rhat"] == pytest.approx(population.settings["rhat"]["mu"], rel=1e-12)
    assert rows["sigma"]["ess_bulk"] == pytest.approx(population.settings["ess_bulk"]["sigma"], rel=1e-12)
    assert payload["diagnostics"]["divergences"] == population.settings["divergences"]


@pytest.mark.slow
def test_threshold_survey_with_selection_matches_its_grid_and_without_it_does_not(tmp_path):
    """The selection term's gradient end to end (tests/test_selection_exact.py's survey and grid).

    The negative control (the fit without the selection term) is tested at no more than the corrected
    fit's effective size, so the KS test's power is shown at the size it is used with, not assumed from a
    fixed floor: on this posterior a chain's tail ESS of σ varies with the CPU's last digits (seeds
    1–8 on one machine: 105 to 1206, the lowest with 42 divergences and R̂ 1.014), and at 105 the
    corrected fit passes (p 0.99999) while the uncorrected one fails by 140 orders of magnitude."""
    import test_selection_exact as survey_case

    y = survey_case.survey(11)
    samples = survey_case.exact_samples(y, 12)
    injections = survey_case.injection_file(tmp_path / "injections.csv", 30_000, 13)
    marginals = survey_case.grid_marginals(y)

    def ks(result, n_effective):
        return {name: ks_pvalue(result.hyper(name), lambda x, g=grid, c=cdf: np.interp(x, g, c), n_effective)
                for name, (grid, cdf) in zip(("mu", "sigma"), marginals)}

    corrected = quiet_fit(samples, "normal", hyperpriors=survey_case.HYPERPRIORS, seed=5, sampler="nuts",
                          selection=injections, injections_total=30_000, n_samples=4000, n_reweighted=10)
    n_effective = nuts_effective(corrected)
    assert n_effective >= 20, corrected.settings  # a KS statistic at all
    assert min(ks(corrected, n_effective).values()) > 1e-3, (n_effective, ks(corrected, n_effective))
    biased = quiet_fit(samples, "normal", hyperpriors=survey_case.HYPERPRIORS, seed=5, sampler="nuts",
                       n_samples=4000, n_reweighted=10)
    n_control = min(n_effective, nuts_effective(biased))  # no more than either fit's own effective size
    assert min(ks(biased, n_control).values()) < 1e-3, (n_control, ks(biased, n_control))


@pytest.mark.slow
def test_slopes_of_a_linear_model_pass_ks_against_the_grid():
    """A population of the slope only (the intercept's interim prior must not be divided out):
    each object's draws are exact Gaussian posterior draws of (slope, intercept) under flat
    interim priors, so the hyperposterior is normal–normal in the slope estimates β̂ with
    standard errors √V_ss (tests/test_choosing.py's oracle)."""
    rng = np.random.default_rng(23)
    n_objects, rows, n_draws = 12, 6, 4000
    x = np.linspace(-1, 2, rows)
    design = np.column_stack([x, np.ones(rows)]) / 0.3
    covariance = np.linalg.inv(design.T @ design)
    slopes, intercepts = rng.normal(1.0, 0.5, n_objects), rng.normal(0.0, 1.0, n_objects)
    estimates = np.array([covariance @ design.T @ ((s * x + c + 0.3 * rng.standard_normal(rows)) / 0.3)
                          for s, c in zip(slopes, intercepts)])
    draws = estimates[:, None, :] + rng.multivariate_normal(np.zeros(2), covariance, (n_objects, n_draws))
    samples = popinfer.Samples(
        ids=[f"o{i}" for i in range(n_objects)], parameters=["slope", "intercept"], samples=draws,
        log_interim_prior=np.stack([np.full((n_objects, n_draws), -np.log(100.0)),
                                    np.full((n_objects, n_draws), -np.log(1000.0))], axis=-1),
        log_likelihood=np.zeros((n_objects, n_draws)),
        diagnostics={"acceptance_fraction": np.full(n_objects, 0.5), "autocorr_time": np.ones((n_objects, 2)),
                     "n_steps": np.full(n_objects, 1000), "converged": np.ones(n_objects, dtype=bool),
                     "effective_draws": np.full(n_objects, float(n_draws))},
        model="linear", interim_prior={"slope": "uniform(-50.0, 50.0)", "intercept": "uniform(-500.0, 500.0)"},
        settings={}, seed=23)
    result = quiet_fit(samples, "normal", parameters=["slope"], hyperpriors=EIGHT_HYPER, seed=6, sampler="nuts",
                       n_samples=4000, n_reweighted=10)
    oracle = EightSchoolsExact(estimates[:, 0], np.full(n_objects, math.sqrt(covariance[0, 0])))
    assert_normal_normal_ks(result, oracle, nuts_effective(result), shift=0.3)


def test_without_nutpie_the_sampler_is_a_usage_error_naming_the_extra(eight_exact, monkeypatch):
    monkeypatch.setitem(sys.modules, "nutpie", None)  # import nutpie raises ImportError
    with pytest.raises(UsageError, match=r"popinfer\[nuts\]"):
        quiet_fit(eight_exact, "normal", sampler="nuts", seed=1, n_samples=100, n_reweighted=10)


def test_sigint_during_nuts_stops_the_run_without_output(tmp_path, eight_exact):
    """nutpie's own blocking call would turn Ctrl-C into a shortened trace; the run must stop
    instead (exit 1, no file)."""
    from test_robustness import popinfer_process, wait_for_progress

    write_samples(eight_exact, tmp_path / "eight.h5")
    run = popinfer_process(["fit-population", "eight.h5", "-o", "pop.h5", "--population", "normal", "--sampler",
                            "nuts", "--samples", "400000", "--seed", "1"], tmp_path)
    from popinfer.reweighting.samplers.nuts import NutsSampler

    draws = 4 * (NutsSampler.DEFAULT_TUNE + 400000 // 4 + NutsSampler.SETTLE)
    assert wait_for_progress(run, draws, 1)  # the draws' progress bar moves: sampling has begun
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=300) == 1  # not 0: 4 × 100 000 draws did not finish (timeout: a hang guard)
    message = run.stderr.read().decode()
    assert "Traceback" not in message and "restart" in message
    assert sorted(os.listdir(tmp_path)) == ["eight.h5"]


class _CountingTarget:
    """A stand-in for UnconstrainedPosterior: ln p = −Σu²/2, recording each call's batch."""

    def __init__(self, fail_at=None):
        self.batches, self.fail_at = [], fail_at

    def log_density_and_gradients(self, points):
        self.batches.append(len(points))
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            raise FloatingPointError("kernel failure")
        return -0.5 * (points ** 2).sum(axis=1), -points


class _Run:
    """A stand-in for a nutpie run: finished or (nutpie's way of saying so) still running."""

    def __init__(self, finished=False):
        self.finished = finished

    @property
    def is_finished(self):
        if not self.finished:
            raise TimeoutError("Timeout while waiting for sampler to finish")
        return True


def run_chains(lockstep, steps):
    """Each chain c evaluates the points (c, s) for s < steps[c], making a draw after each (as
    nutpie does after a trajectory); returns what each got (or the exception it raised)."""
    import threading

    got = {}

    def chain(c):
        got[c] = []
        try:
            for s in range(steps[c]):
                got[c].append(lockstep.evaluate(c, np.array([c, s], dtype=float)))
                lockstep.drawn(c)
        except Exception as error:  # noqa: BLE001 - handed back for the test to inspect
            got[c] = error

    threads = [threading.Thread(target=chain, args=(c,)) for c in range(len(steps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)  # a hang guard, not a timing
    return got


def test_lockstep_evaluates_the_chains_together_and_each_gets_its_own_result():
    from popinfer.reweighting.samplers.nuts import _Lockstep

    target = _CountingTarget()
    got = run_chains(_Lockstep((target, target), [_Run(), _Run(), _Run()], 0, 5), [5, 5, 5])
    for c in range(3):
        assert [value for value, _ in got[c]] == [-0.5 * (c * c + s * s) for s in range(5)]
        assert all(np.array_equal(gradient, [-c, -s]) for s, (_, gradient) in enumerate(got[c]))
    assert target.batches == [3] * 5


def test_lockstep_goes_on_without_a_chain_whose_run_stopped_early(monkeypatch):
    """A chain nutpie stopped before its last draw (here: before its first) is noticed from its
    run (is_finished); the others then go on in pairs."""
    from popinfer.reweighting.samplers.nuts import _Lockstep

    monkeypatch.setattr(_Lockstep, "STALL", 0.01)
    target = _CountingTarget()
    got = run_chains(_Lockstep((target, target), [_Run(), _Run(), _Run(finished=True)], 0, 4), [4, 4, 0])
    assert len(got[0]) == len(got[1]) == 4 and got[2] == []
    assert target.batches == [2, 2, 2, 2]


def test_lockstep_hands_an_evaluation_error_to_every_chain_of_the_batch():
    from popinfer.reweighting.samplers.nuts import _Lockstep

    target = _CountingTarget(fail_at=2)
    got = run_chains(_Lockstep((target, target), [_Run(), _Run()], 0, 3), [3, 3])
    assert all(isinstance(got[c], FloatingPointError) for c in (0, 1))


def test_lockstep_evaluates_tuning_draws_on_the_tuning_target_and_the_rest_on_the_full_one():
    from popinfer.reweighting.samplers.nuts import _Lockstep

    tuning, full = _CountingTarget(), _CountingTarget()
    got = run_chains(_Lockstep((tuning, full), [_Run(), _Run()], 2, 5), [5, 5])
    assert tuning.batches == [2, 2] and full.batches == [2, 2, 2]
    assert len(got[0]) == len(got[1]) == 5


def test_thinned_tuning_keeps_a_max_variance_cut_at_the_full_estimates_level(eight_exact):
    """With --max-variance, the adaptation on every 64th draw (Var[ln L̂] ≈ 64× the full one's)
    cuts where the full estimate would, not almost everywhere: the run goes through."""
    result = quiet_fit(eight_exact, "normal", sampler="nuts", chains=2, tune=100, tune_thin=64, max_variance=0.3,
                       n_samples=400, n_reweighted=10, seed=3, hyperpriors=EIGHT_HYPER)
    assert result.settings["tuning_evaluations_thinned"] > 0
    assert np.all(np.isfinite(result.hyper_samples)) and np.all(result.ln_likelihood_variance <= 0.3)


class _FailedRun:
    """A nutpie run that failed (asked whether it finished, nutpie raises its error), or, as
    ``awaited``, one the main thread is waiting on (asking then raises "Already borrowed")."""

    def __init__(self, message):
        self.message, self.asked = message, 0

    @property
    def is_finished(self):
        self.asked += 1
        raise RuntimeError(self.message)


def test_lockstep_counts_a_failed_run_as_stopped_and_never_asks_the_awaited_one(monkeypatch):
    from popinfer.reweighting.samplers.nuts import _Lockstep

    monkeypatch.setattr(_Lockstep, "STALL", 0.01)
    target = _CountingTarget()
    awaited, failed = _FailedRun("Already borrowed"), _FailedRun("sampler failed")
    lockstep = _Lockstep((target, target), [awaited, _Run(), failed], 0, 3)
    lockstep.awaited = awaited
    got = run_chains(lockstep, [3, 3, 0])
    assert len(got[0]) == len(got[1]) == 3 and got[2] == []
    assert target.batches == [2, 2, 2] and failed.asked >= 1 and awaited.asked == 0
    # A run the main thread began waiting on just after the check read ``awaited``: still running.
    lockstep = _Lockstep((target, target), [_FailedRun("Already borrowed"), _Run()], 0, 1)
    with lockstep._condition:
        lockstep._check_runs()
    assert lockstep._stopped == [False, False]


def test_an_evaluation_error_inside_the_chains_surfaces_as_itself(eight_exact, monkeypatch):
    """A failure of ln L̂ while nutpie runs the chains is raised with its own type and message
    (not nutpie's report of a failed chain, nor a missing trace), and nothing is left running."""
    from popinfer.reweighting.likelihood import HyperLikelihood

    real = HyperLikelihood.ln_likelihood_and_gradients
    calls = []

    def failing(self, values):
        calls.append(len(values))
        if len(calls) == 200:
            raise FloatingPointError("kernel failure at call 200")
        return real(self, values)

    monkeypatch.setattr(HyperLikelihood, "ln_likelihood_and_gradients", failing)
    with pytest.raises(FloatingPointError, match="kernel failure at call 200"):
        popinfer.fit_population(eight_exact, "normal", hyperpriors=EIGHT_HYPER, sampler="nuts", seed=1,
                                n_samples=400, progress=False)
    assert len(calls) >= 200


def test_the_raw_trace_gives_the_draws_divergences_and_step_sizes_of_nutpies_own_conversion():
    # The sampler reads nutpie's raw (Arrow) trace; nutpie's ArviZ conversion of the same run
    # (same model, seed and settings) is the reference: the draws after tuning, bit for bit.
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    scales = np.array([1.0, 0.01])  # a badly scaled Gaussian: the step size and mass matrix adapt

    def make_logp():
        return lambda u: (float(-0.5 * np.sum((u / scales) ** 2)), -np.asarray(u) / scales**2)

    def make_expand(seed1, seed2, chain):
        return lambda u: {"u": np.array(u, dtype=float)}

    model = from_pyfunc(2, make_logp, make_expand, [np.dtype("float64")], [(2,)], ["u"],
                        make_initial_point_fn=lambda seed: np.array([0.5, 0.005]))
    options = dict(draws=60, tune=40, chains=1, cores=1, seed=7, progress_bar=False, save_warmup=False)
    reference = nutpie.sample(model, **options)
    draws, diverging, step_size = _after_tuning(nutpie.sample(model, return_raw_trace=True, **options), 2)
    assert draws.shape == (60, 2)
    assert np.array_equal(draws, np.asarray(reference.posterior["u"].values[0]))
    assert np.array_equal(diverging, np.asarray(reference.sample_stats["diverging"].values[0]))
    assert np.array_equal(step_size, np.asarray(reference.sample_stats["step_size"].values[0]))
    # Negative control: the tuning draws are not the kept ones (a raw trace is read once: the same run again).
    everything = np.array(nutpie.sample(model, return_raw_trace=True, **options).get_arrow_trace()[0][0]
                          .column("u").to_pylist())
    assert everything.shape == (100, 2) and not np.array_equal(everything[:60], draws)


def test_a_raw_trace_without_draws_is_a_chain_that_stopped_and_more_than_one_chain_is_refused():
    class Trace:
        def __init__(self, batches):
            self.batches = batches

        def get_arrow_trace(self):
            return self.batches, self.batches

    draws, diverging, step_size = _after_tuning(Trace([]), 3)
    assert draws.shape == (0, 3) and diverging.shape == step_size.shape == (0,)
    with pytest.raises(PopinferError, match="2 chains' draws for a run of one chain"):
        _after_tuning(Trace([object(), object()]), 3)
