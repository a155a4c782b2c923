"""fit-population end to end: diagnostics, partial pooling, mvnormal, user populations, CLI."""

import hashlib
import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import integrate, stats

import popinfer
from conftest import SAMPLE_DATA
from popinfer.cli import main
from popinfer.errors import FileFormatError
from popinfer.populations import get_population
from popinfer.reweighting import PopulationDiagnosticWarning
from stats_helpers import replicated

EIGHT = str(SAMPLE_DATA / "eight_schools.csv")
EIGHT_HYPER = ["mu=normal(0, 5)", "sigma=halfcauchy(5)"]


@pytest.fixture(scope="module")
def eight_small(tmp_path_factory):
    """Eight schools with few draws per school (K = 200): too few for small sigma."""
    path = tmp_path_factory.mktemp("eight") / "eight200.h5"
    popinfer.fit_individuals(EIGHT, "normal", path, priors=["theta=uniform(-100, 100)"], n_draws=200, seed=5,
                             progress=False)
    return path


@pytest.fixture(scope="module")
def eight_ample(tmp_path_factory):
    path = tmp_path_factory.mktemp("eight") / "eight20000.h5"
    popinfer.fit_individuals(EIGHT, "normal", path, priors=["theta=uniform(-100, 100)"], n_draws=20000, seed=6,
                             progress=False)
    return path


def run(args, **kwargs):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)


def diagnostic_warnings(samples, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = popinfer.fit_population(samples, "normal", hyperpriors=EIGHT_HYPER, seed=3, progress=False,
                                         n_samples=2000, n_reweighted=200, **options)
    return result, [w for w in caught if issubclass(w.category, PopulationDiagnosticWarning)]


def test_ess_warning_fires_when_k_is_too_small_and_names_objects(eight_small):
    result, fired = diagnostic_warnings(eight_small)
    assert len(fired) == 1
    message = str(fired[0].message)
    assert "'A'" in message and "median ESS" in message and "of posterior draws" in message
    assert "Var[ln L̂]" in message and "--samples" in message and "--prior" in message
    assert (result.ess < 20).any()
    assert np.mean((result.ess < 20).any(axis=1)) > 0.02  # the control of the ample-K bound below


@pytest.mark.slow  # K = 20000 eight schools
def test_low_ess_is_confined_to_the_tau_tail_when_k_is_ample(eight_ample):
    """At K = 20000 every school keeps 20 effective draws except in the τ → 0 tail, where the population
    is narrower than the spacing of a school's draws and no K suffices: at most 2 % of the posterior draws
    (the warning's threshold is 1 %; K = 200 gives 65 %, the test above), all of them in τ's lowest 5 %."""
    result, fired = diagnostic_warnings(eight_ample)
    low = (result.ess < 20).any(axis=1)
    assert low.mean() <= 0.02
    tau = result.hyper("sigma")[np.asarray(result.ess_draw_index)]
    assert np.all(tau[low] < np.quantile(result.hyper("sigma"), 0.05))
    assert np.median(result.ln_likelihood_variance) < 0.1


@pytest.mark.slow  # K = 20000 eight schools
def test_strict_exits_3_only_when_a_diagnostic_fires(eight_small, eight_ample, in_tmp):
    """K = 200 warns; K = 20000 with sigma kept above 1 (the warning's remedy of restricting the
    population) has no region without effective draws, so nothing fires. (With sigma down to 0 the
    τ → 0 tail is short of draws at any K, up to 2 % of the draws at K = 20000 against the warning's
    1 %: the test above; whether a given run warns there is chance.)"""
    common = ["--population", "normal", "--hyperprior", EIGHT_HYPER[0], "--seed", "1",
              "--samples", "1000", "--reweighted", "100", "--quiet", "--strict"]
    small = run(["fit-population", str(eight_small), "-o", "small.h5", *common, "--hyperprior", EIGHT_HYPER[1]])
    assert small.exit_code == 3 and "Warning:" in small.stderr and Path("small.h5").exists()
    ample = run(["fit-population", str(eight_ample), "-o", "ample.h5", *common, "--hyperprior", "sigma=uniform(1, 30)"])
    assert ample.exit_code == 0, ample.stderr


def test_max_variance_excludes_noisy_hyperparameters(eight_small):
    free, _ = diagnostic_warnings(eight_small)
    capped, _ = diagnostic_warnings(eight_small, max_variance=1.0)
    assert np.max(capped.ln_likelihood_variance) <= 1.0
    assert np.max(free.ln_likelihood_variance) > 1.0
    assert np.quantile(capped.hyper("sigma"), 0.05) > np.quantile(free.hyper("sigma"), 0.05)


def test_partial_pooling_matches_the_conjugate_posterior():
    """With the population nearly fixed (tight hyperpriors), an object's pooled
    draws follow the normal-normal conjugate posterior; replicates measure the
    Monte Carlo error."""
    frame = pd.DataFrame({"id": ["a"], "y": [10.0], "sigma": [4.0]})
    mu, tau = 2.0, 3.0
    exact = stats.norm((10.0 / 16 + mu / tau**2) / (1 / 16 + 1 / tau**2), np.sqrt(1 / (1 / 16 + 1 / tau**2)))
    samples = popinfer.fit_individuals(replicated(frame, "id", 8), "normal", priors=["theta=uniform(-100, 100)"],
                                       seed=7, progress=False)
    means, variances = [], []
    for r in range(8):
        index = samples.ids.index(f"a#{r}")
        one = popinfer.Samples(
            ids=["a"], parameters=["theta"], samples=samples.samples[index:index + 1],
            log_interim_prior=samples.log_interim_prior[index:index + 1],
            log_likelihood=samples.log_likelihood[index:index + 1],
            diagnostics={k: v[index:index + 1] for k, v in samples.diagnostics.items()}, model="normal",
            interim_prior=samples.interim_prior, settings=samples.settings, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = popinfer.fit_population(one, "normal", hyperpriors=["mu=normal(2, 1e-6)", "sigma=normal(3, 1e-6)"],
                                             seed=r, progress=False, n_samples=500, n_reweighted=4000)
        draws = result.reweighted[0, :, 0]
        means.append(draws.mean())
        variances.append(draws.var(ddof=1))
    bound = stats.t.ppf(1 - 1e-4 / 4, 7)
    assert abs(stats.ttest_1samp(means, exact.mean()).statistic) < bound
    assert abs(stats.ttest_1samp(variances, exact.var()).statistic) < bound
    unpooled = stats.norm(10.0, 4.0)  # negative control: the independent posterior
    assert abs(stats.ttest_1samp(means, unpooled.mean()).statistic) > bound


def test_mvnormal_recovers_a_known_correlation():
    rng = np.random.default_rng(31)
    n_objects, rows, rho = 100, 8, 0.7
    mean, sd = np.array([1.0, -0.5]), np.array([0.6, 0.8])
    cov = np.array([[1, rho], [rho, 1]]) * np.outer(sd, sd)
    truth = rng.multivariate_normal(mean, cov, n_objects)
    x = np.tile(np.linspace(-1, 1, rows), n_objects)
    yerr = np.full(x.size, 0.2)
    y = np.repeat(truth[:, 0], rows) * x + np.repeat(truth[:, 1], rows) + rng.normal(size=x.size) * yerr
    frame = pd.DataFrame({"id": np.repeat([f"o{i}" for i in range(n_objects)], rows), "x": x, "y": y, "yerr": yerr})
    samples = popinfer.fit_individuals(frame, "linear", fixed=["scatter=0"], n_draws=500,
                                       priors=["slope=uniform(-20, 20)", "intercept=uniform(-20, 20)"],
                                       seed=32, progress=False)
    result = popinfer.fit_population(samples, "mvnormal", parameters=["slope", "intercept"], seed=33,
                                     progress=False, n_samples=2000, n_reweighted=100)
    assert result.hyperparameters == ["mu_slope", "mu_intercept", "sigma_slope", "sigma_intercept",
                                      "rho_slope_intercept"]
    draws = result.hyper("rho_slope_intercept")
    # The truth lies within 4 posterior sd of the posterior mean (chance of failure ~6e-5).
    assert abs(draws.mean() - rho) < 4 * draws.std()
    assert draws.std() < 0.1  # and the posterior is informative
    assert abs(draws.mean()) > 4 * draws.std()  # a zero correlation is excluded
    assert result.reweighted.shape == (n_objects, 100, 2)


def test_user_population_example(in_tmp):
    population = get_population(f"{SAMPLE_DATA / 'halfnormal_population.py'}:halfnormal", ["rate"])
    total, _ = integrate.quad(
        lambda x: float(np.exp(population.log_density(np.array([[[x]]]), {"scale": np.array([0.7])})[0, 0, 0])), 0, 30)
    assert abs(total - 1) < 1e-8
    truncated = get_population("truncnormal", ["rate"])
    theta = np.abs(np.random.default_rng(0).normal(size=(3, 10, 1)))
    hyper = {"scale": np.array([0.5, 2.0])}
    np.testing.assert_allclose(
        population.log_density(theta, hyper),
        truncated.log_density(theta, {"mu": np.zeros(2), "sigma": hyper["scale"], "low": np.zeros(2),
                                      "high": np.full(2, 1e3)}), rtol=1e-10)
    fit = run(["fit-individuals", str(SAMPLE_DATA / "decay.csv"), "-o", "decay.h5", "--quiet", "--seed", "1",
               "--samples", "1000", "--model", f"{SAMPLE_DATA / 'decay_model.py'}:decay"])
    assert fit.exit_code == 0, fit.stderr
    pop = run(["fit-population", "decay.h5", "-o", "rates.h5", "--parameter", "rate", "--quiet", "--seed", "2",
               "--samples", "1000", "--population", f"{SAMPLE_DATA / 'halfnormal_population.py'}:halfnormal"])
    assert pop.exit_code == 0, pop.stderr
    result = popinfer.read_population("rates.h5")
    rates = pd.read_csv(SAMPLE_DATA / "decay_truth.csv")["rate"]
    # The rates' root mean square is the half-normal's scale; compare within 4 posterior sd.
    scale = result.hyper("scale")
    assert abs(scale.mean() - np.sqrt(np.mean(rates**2))) < 4 * scale.std() + 0.05


def test_interim_support_warning(tmp_path):
    """A normal population against a bounded uniform interim prior that cuts it."""
    frame = pd.DataFrame({"id": [f"o{i}" for i in range(30)], "y": np.linspace(-1.8, 1.8, 30), "sigma": 0.3})
    samples = popinfer.fit_individuals(frame, "normal", priors=["theta=uniform(-2, 2)"], n_draws=1000, seed=8,
                                       progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        popinfer.fit_population(samples, "normal", seed=9, progress=False, n_samples=1000, n_reweighted=10)
    messages = [str(w.message) for w in caught if "outside the interim prior's support" in str(w.message)]
    assert len(messages) == 1 and "[-2, 2]" in messages[0] and "--prior theta" in messages[0]
    wide = popinfer.fit_individuals(frame, "normal", priors=["theta=uniform(-50, 50)"], n_draws=1000, seed=8,
                                    progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        popinfer.fit_population(wide, "normal", seed=9, progress=False, n_samples=1000, n_reweighted=10)
    assert not [w for w in caught if "outside the interim prior's support" in str(w.message)]


def test_pipeline_through_stdin_and_summaries(in_tmp):
    first = run(["fit-individuals", EIGHT, "-o", "-", "--model", "normal", "--quiet", "--seed", "1",
                 "--samples", "1000"])
    assert first.exit_code == 0
    second = run(["fit-population", "-", "-o", "pop.h5", "--population", "normal", "--quiet", "--seed", "2",
                  "--samples", "1000", "--reweighted", "100"], input=first.stdout_bytes)
    assert second.exit_code == 0, second.stderr
    with h5py.File("pop.h5") as handle:
        assert handle.attrs["popinfer_format"] == "population"
        assert handle["hyper/samples"].shape == (1000, 2)
        assert list(handle["hyper/samples"].attrs["names"]) == ["mu", "sigma"]
        assert handle["objects/ess"].shape == (1000, 8) and handle["objects/ess"].dtype == np.float32
        assert handle["objects/reweighted"].shape == (8, 100, 1)
        source = json.loads(handle.attrs["source"])
        assert source["path"] == "<stdin>"
        assert source["sha256"] == hashlib.sha256(first.stdout_bytes).hexdigest()  # hashed while spooled
    table = run(["summary", "pop.h5"])
    assert table.exit_code == 0 and "hyperparameters:" in table.stdout and "pooled_mean" in table.stdout
    payload = json.loads(run(["summary", "pop.h5", "--format", "json"]).stdout)
    assert [h["hyperparameter"] for h in payload["hyperparameters"]] == ["mu", "sigma"]
    assert len(payload["objects"]) == 8 and "ln_likelihood_variance_median" in payload["diagnostics"]
    csv = run(["summary", "pop.h5", "--format", "csv"]).stdout
    assert csv.startswith("hyperparameter,mean") and "independent_mean" not in csv  # one table per call
    csv = run(["summary", "pop.h5", "--format", "csv", "--table", "objects"]).stdout
    assert csv.startswith("object,parameter,independent_mean") and "hyperparameter" not in csv
    inspected = run(["inspect", "pop.h5"])
    assert "popinfer_format: population" in inspected.stdout and "/objects/reweighted" in inspected.stdout
    # Shrinkage: pooled estimates lie closer to the population mean than the independent ones.
    objects = pd.DataFrame(payload["objects"])
    assert (objects["pooled_sd"] < objects["independent_sd"]).all()


@pytest.mark.parametrize("args, code, fragments", [
    (["--population", "nrml"], 2, ["Unknown population 'nrml'"]),
    (["--population", "normal", "--parameter", "tau"], 2, ["no parameter 'tau'", "theta"]),
    (["--population", "normal", "--hyperprior", "mu=normal(0)"], 2, ["'normal(0)'"]),
    (["--population", "normal", "--hyperprior", "tau=normal(0, 1)"], 2, ["no hyperparameter 'tau'", "mu, sigma"]),
    (["--population", "normal", "--fix", "mu"], 2, ["NAME=NUMBER"]),
    (["--population", "powerlaw"], 2, ["--fix low=VALUE"]),
    (["--population", "mvnormal"], 2, ["two or more"]),
    (["--population", "normal", "--fix", "mu=0", "--fix", "sigma=1"], 2, ["nothing is left to sample"]),
])
def test_fit_population_usage_errors(eight_small, in_tmp, args, code, fragments):
    result = run(["fit-population", str(eight_small), "-o", "out.h5", "--quiet", *args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert not Path("out.h5").exists()


def test_wrong_kinds_of_input_file(eight_small, in_tmp):
    run(["fit-population", str(eight_small), "-o", "pop.h5", "--population", "normal", "--quiet", "--seed", "1",
         "--samples", "500", "--reweighted", "10"])
    result = run(["fit-population", "pop.h5", "-o", "again.h5", "--population", "normal", "--quiet"])
    assert result.exit_code == 1 and "pop.h5 is a popinfer population file; expected a samples file" in result.stderr
    with pytest.raises(FileFormatError, match="expected a population file"):
        popinfer.read_population(eight_small)
    Path("junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    result = run(["fit-population", "junk.h5", "-o", "x.h5", "--population", "normal", "--quiet"])
    assert result.exit_code == 1 and "junk.h5 is not a readable HDF5 file" in result.stderr
    assert not Path("x.h5").exists() and not Path("again.h5").exists()


def test_ambiguous_parameter_needs_choosing(in_tmp):
    data = SAMPLE_DATA / "mn_radon.csv"
    run(["fit-individuals", str(data), "-o", "radon.h5", "--model", "normal", "--id-column", "county",
         "--column", "y=log_radon", "--quiet", "--samples", "200", "--seed", "1"])
    result = run(["fit-population", "radon.h5", "-o", "pop.h5", "--population", "normal", "--quiet"])
    assert result.exit_code == 2 and "theta, scatter" in result.stderr and "--parameter" in result.stderr


def test_repeated_draws_are_evaluated_once_with_the_numbers_of_each(eight_small):
    """The kept draws of an ensemble repeat (walkers that stayed put): the diagnostics evaluate each
    distinct draw once, plus the M draws whose per-object ESS are stored, and every draw gets the
    numbers it gets evaluated on its own."""
    from popinfer.io.samples import read_samples
    from popinfer.reweighting.diagnostics import draws_to_evaluate, first_occurrences, likelihood_at_draws
    from popinfer.reweighting.likelihood import HyperLikelihood

    samples = read_samples(eight_small)
    likelihood = HyperLikelihood(get_population("normal", ["theta"]), samples.samples,
                                 samples.log_interim_prior[..., 0])
    rng = np.random.default_rng(4)
    distinct = np.column_stack([rng.normal(5, 3, 30), rng.uniform(0.5, 10, 30)])
    draws = distinct[rng.integers(0, 30, 200)]  # 200 draws, at most 30 distinct
    calls = []
    real = likelihood.ln_likelihood_and_variance

    def counting(hyper, **options):
        calls.append(np.column_stack([hyper["mu"], hyper["sigma"]]))
        return real(hyper, **options)

    likelihood.ln_likelihood_and_variance = counting
    n_ess = 50
    ess, object_ll = np.empty((n_ess, 8), dtype=np.float32), np.empty((n_ess, 8))
    advanced = []
    ln_l, variance, ess_index, low = likelihood_at_draws(likelihood, ["mu", "sigma"], draws, 16, ess, 20.0, object_ll,
                                                         first_occurrences(draws), advanced.append)
    # the first occurrence of every distinct draw and each ESS draw, in calls of 16 (the last padded)
    expected = sorted(set(np.unique(draws, axis=0, return_index=True)[1]) | set(ess_index.tolist()))
    # the progress callback is told of each call's draws, the padding not counted
    assert advanced == [16] * (len(expected) // 16) + ([len(expected) % 16] if len(expected) % 16 else [])
    assert draws_to_evaluate(first_occurrences(draws), n_ess)[0].tolist() == expected
    assert all(len(call) == 16 for call in calls) and len(calls) == -(-len(expected) // 16) < len(draws) // 16
    evaluated = np.concatenate(calls)
    np.testing.assert_array_equal(evaluated[:len(expected)], draws[expected])
    assert (evaluated[len(expected):] == draws[expected[-1]]).all()
    alone = [real({"mu": draw[:1], "sigma": draw[1:]}, cut=False) for draw in draws]
    np.testing.assert_allclose(ln_l, [a.ln_likelihood[0] for a in alone], rtol=1e-12)
    np.testing.assert_allclose(variance, [a.ln_likelihood_variance[0] for a in alone], rtol=1e-10)
    np.testing.assert_allclose(ess, [alone[i].ess[0] for i in ess_index], rtol=1e-6)
    log_counts = np.log(likelihood.draw_counts)
    np.testing.assert_allclose(object_ll, [alone[i].ln_sum_weights[0] - log_counts for i in ess_index], rtol=1e-12)
    np.testing.assert_allclose(low, np.mean(ess < 20.0, axis=0))


def test_the_selection_term_at_repeated_draws_is_evaluated_once_per_distinct_draw():
    from popinfer.reweighting.diagnostics import first_occurrences, selection_at_draws

    class Selection:
        """ln ξ̂ = μ + σ and N_eff,sel = μσ, recording the points it is asked for."""

        def __init__(self):
            self.points = []

        def efficiency(self, hyper):
            self.points.append(np.column_stack([hyper["mu"], hyper["sigma"]]))
            return hyper["mu"] + hyper["sigma"], None, hyper["mu"] * hyper["sigma"]

    class Likelihood:
        @staticmethod
        def hyper(names, values):
            return {name: values[:, i] for i, name in enumerate(names)}

    rng = np.random.default_rng(5)
    draws = np.column_stack([rng.normal(5, 3, 12), rng.uniform(0.5, 10, 12)])[rng.integers(0, 12, 90)]
    selection = Selection()
    advanced = []
    ln_efficiency, effective = selection_at_draws(selection, Likelihood(), ["mu", "sigma"], draws, 8,
                                                  first_occurrences(draws), advanced.append)
    assert sum(advanced) == len(np.unique(draws, axis=0)) and max(advanced) == 8
    np.testing.assert_array_equal(ln_efficiency, draws[:, 0] + draws[:, 1])
    np.testing.assert_array_equal(effective, draws[:, 0] * draws[:, 1])
    evaluated = np.concatenate(selection.points)
    n_distinct = len(np.unique(draws, axis=0))
    assert all(len(points) == 8 for points in selection.points) and len(selection.points) == -(-n_distinct // 8)
    assert len(np.unique(evaluated, axis=0)) == n_distinct


def test_progress_shows_the_diagnostics_and_the_pooling_to_their_ends(eight_small, capsys):
    """After the sampler's bar, the evaluations at the draws and the pooled draws have bars of
    their own, each run to its total; without progress, nothing is written."""
    options = dict(hyperpriors=EIGHT_HYPER, seed=3, n_samples=300, n_reweighted=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PopulationDiagnosticWarning)
        popinfer.fit_population(eight_small, "normal", progress=False, **options)
        assert capsys.readouterr().err == ""
        result = popinfer.fit_population(eight_small, "normal", progress=True, **options)
    from popinfer.reweighting.diagnostics import draws_to_evaluate, first_occurrences

    evaluations = len(draws_to_evaluate(first_occurrences(result.hyper_samples), 300)[0])
    err = capsys.readouterr().err
    diagnostics = [part for part in err.split("\r") if part.startswith("fit-population (diagnostics)")]
    pooling = [part for part in err.split("\r") if part.startswith("fit-population (pooling)")]
    assert diagnostics and "100%" in diagnostics[-1] and f" {evaluations}/{evaluations} " in diagnostics[-1]
    assert pooling and "100%" in pooling[-1] and " 400/400 " in pooling[-1]  # 8 objects × 50
    assert err.index("fit-population (diagnostics)") < err.index("fit-population (pooling)")
