"""The stage-two sampler interface, end to end with a second sampler: exact sampling on a grid."""

import json
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import cli, refused
from scipy import stats

from popinfer.cli import main
from popinfer.errors import UsageError
from popinfer.io.population import read_population
from popinfer.io.samples import Samples, write_samples
from popinfer.reweighting import SamplerResult
from popinfer.reweighting import samplers

Y = np.array([-2.1, -0.7, 0.0, 0.4, 1.3, 2.2, 2.9, 3.5, 4.8, 6.0])  # one measurement per object, s = 1
S_MEASURE, SIGMA, K = 1.0, 2.0, 4000


class GridSampler:
    """Exact sampling of a single hyperparameter on a grid of the unit cube (inverse CDF).

    Grid points equally spaced in u = F(α) carry equal prior mass, so each is weighted by L(α).
    """

    name = "grid"

    def __init__(self, points=4001):
        self.points = points

    @property
    def settings(self):
        return {"grid_points": self.points}

    def check(self, names):
        if len(names) != 1:
            raise UsageError("the grid sampler handles one hyperparameter", "--sampler")

    def sample(self, posterior, n_samples, seed, progress=False):
        unit = (np.arange(self.points) + 0.5) / self.points
        values = posterior.prior_transform(unit[:, None])
        log_like = posterior.log_likelihood(values, np.isfinite(posterior.log_prior(values)))
        cdf = np.cumsum(np.exp(log_like - log_like.max()))
        index = np.searchsorted(cdf / cdf[-1], np.random.default_rng(seed).random(n_samples))
        return SamplerResult(values[index], {"max_log_likelihood": float(log_like.max())})


@pytest.fixture
def grid_sampler(monkeypatch):
    monkeypatch.setitem(samplers.SAMPLERS, "grid", lambda options: GridSampler())


def exact_samples(path):
    """Exact stage-one posteriors θ_n ~ N(y_n, 1) under a flat interim prior on [-50, 50]."""
    rng = np.random.default_rng(11)
    n = len(Y)
    theta = Y[:, None, None] + S_MEASURE * rng.standard_normal((n, K, 1))
    ones = np.ones(n)
    samples = Samples(
        ids=[f"o{i}" for i in range(n)], parameters=["theta"], samples=theta,
        log_interim_prior=np.full((n, K, 1), -np.log(100.0)),
        log_likelihood=stats.norm.logpdf(Y[:, None], theta[..., 0], S_MEASURE),
        diagnostics={"acceptance_fraction": 0.5 * ones, "autocorr_time": ones[:, None], "n_steps": 1000 * ones.astype(int),
                     "converged": ones.astype(bool), "effective_draws": K * ones},
        model="normal", interim_prior={"theta": "uniform(-50.0, 50.0)"}, settings={}, seed=11)
    write_samples(samples, path)


def exact_posterior(sigma):
    """p(μ | y) for y_n ~ N(μ, √(s² + σ²)) and a flat hyperprior (its bounds are ≫ 10 sd away)."""
    precision = len(Y) / (S_MEASURE**2 + sigma**2)
    return stats.norm(np.mean(Y), 1.0 / np.sqrt(precision))


def test_a_second_sampler_runs_end_to_end_file_and_summary_included(tmp_path, grid_sampler):
    exact_samples(tmp_path / "s.h5")
    runner = CliRunner()
    args = ["fit-population", str(tmp_path / "s.h5"), "-o", str(tmp_path / "pop.h5"), "--population", "normal",
            "--fix", f"sigma={SIGMA}", "--hyperprior", "mu=uniform(-10, 10)", "--sampler", "grid",
            "--samples", "2000", "--reweighted", "200", "--seed", "3", "--quiet"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.stderr

    population = read_population(tmp_path / "pop.h5")
    draws = population.hyper("mu")
    assert stats.kstest(draws, exact_posterior(SIGMA).cdf).pvalue > 1e-3
    assert stats.kstest(draws, exact_posterior(1.3 * SIGMA).cdf).pvalue < 1e-3  # negative control
    assert population.autocorr_time is None and population.settings["sampler"] == "grid"
    assert population.settings["grid_points"] == 4001 and "max_log_likelihood" in population.settings
    assert "walkers" not in population.settings
    np.testing.assert_allclose(population.log_posterior, population.log_likelihood - np.log(20.0))
    assert population.reweighted.shape == (len(Y), 200, 1) and np.all(np.isfinite(population.ln_likelihood_variance))
    with h5py.File(tmp_path / "pop.h5") as handle:
        assert "hyper/autocorr_time" not in handle and "hyper/samples" in handle

    summary = runner.invoke(main, ["summary", str(tmp_path / "pop.h5"), "--format", "json"])
    assert summary.exit_code == 0, summary.stderr
    payload = json.loads(summary.stdout)
    assert payload["diagnostics"]["sampler"] == "grid" and payload["diagnostics"]["n_steps"] is None
    assert payload["hyperparameters"][0]["autocorr_time"] is None
    assert abs(payload["hyperparameters"][0]["mean"] - float(np.mean(draws))) < 1e-9
    table = runner.invoke(main, ["summary", str(tmp_path / "pop.h5")])
    assert table.exit_code == 0 and "sampler: grid" in table.stdout


def test_the_default_sampler_records_its_name_and_an_unknown_one_is_a_usage_error(tmp_path):
    exact_samples(tmp_path / "s.h5")
    runner = CliRunner()
    base = ["fit-population", str(tmp_path / "s.h5"), "--population", "normal", "--fix", f"sigma={SIGMA}",
            "--samples", "400", "--reweighted", "10", "--seed", "3", "--quiet"]
    bad = runner.invoke(main, base + ["-o", str(tmp_path / "bad.h5"), "--sampler", "nope"])
    assert bad.exit_code == 2 and "--sampler nope" in bad.stderr and "emcee" in bad.stderr
    assert not (tmp_path / "bad.h5").exists()
    good = runner.invoke(main, base + ["-o", str(tmp_path / "pop.h5")])
    assert good.exit_code == 0, good.stderr
    population = read_population(tmp_path / "pop.h5")
    assert population.settings["sampler"] == "emcee" and population.autocorr_time.shape == (1,)


@pytest.mark.parametrize("moves", ["de", "stretch"])
def test_each_emcee_move_set_draws_the_exact_posterior(tmp_path, moves):
    """Both --moves against the closed-form posterior of μ (σ fixed), KS on draws thinned to
    half the τ-based effective size (which overstates an ensemble's, tests/stats_helpers.py);
    the same draws against a posterior shifted by half its sd must fail (negative control)."""
    exact_samples(tmp_path / "s.h5")
    result = CliRunner().invoke(main, [
        "fit-population", str(tmp_path / "s.h5"), "-o", str(tmp_path / "pop.h5"), "--population", "normal",
        "--fix", f"sigma={SIGMA}", "--hyperprior", "mu=uniform(-10, 10)", "--moves", moves,
        "--samples", "4000", "--reweighted", "10", "--seed", "5", "--quiet"])
    assert result.exit_code == 0, result.stderr
    population = read_population(tmp_path / "pop.h5")
    assert population.settings["moves"] == moves and population.settings["converged"]
    steps, walkers = population.settings["n_steps"], population.settings["walkers"]
    n_effective = int(steps / 2 * walkers / population.autocorr_time[0] / 2)
    draws = population.hyper("mu")
    thinned = draws[np.round(np.linspace(0, len(draws) - 1, min(n_effective, len(draws)))).astype(int)]
    exact = exact_posterior(SIGMA)
    assert stats.kstest(thinned, exact.cdf).pvalue > 1e-3
    assert stats.kstest(thinned, stats.norm(exact.mean() + 0.5 * exact.std(), exact.std()).cdf).pvalue < 1e-3


def test_the_emcee_moves_default_to_stretch_and_others_are_refused(tmp_path):
    exact_samples(tmp_path / "s.h5")
    runner = CliRunner()
    base = ["fit-population", str(tmp_path / "s.h5"), "--population", "normal", "--fix", f"sigma={SIGMA}",
            "--samples", "400", "--reweighted", "10", "--seed", "3", "--quiet"]
    good = runner.invoke(main, base + ["-o", str(tmp_path / "pop.h5")])
    assert good.exit_code == 0, good.stderr
    assert read_population(tmp_path / "pop.h5").settings["moves"] == "stretch"
    bad = runner.invoke(main, base + ["-o", str(tmp_path / "bad.h5"), "--moves", "walk"])
    assert bad.exit_code == 2 and "--moves walk" in bad.stderr and "de, stretch" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad.h5").exists()
    other = runner.invoke(main, base + ["-o", str(tmp_path / "other.h5"), "--moves", "de", "--sampler", "nested"])
    assert other.exit_code == 2 and "--moves is an option of --sampler emcee" in other.stderr
    assert not (tmp_path / "other.h5").exists()
    import popinfer

    for moves in (["de"], ""):  # from the API: not a name, or an empty one
        with pytest.raises(UsageError, match="--moves"):
            popinfer.fit_population(str(tmp_path / "s.h5"), "normal", fixed=[f"sigma={SIGMA}"], moves=moves,
                                    n_samples=400, n_reweighted=10, progress=False)


def test_an_error_inside_the_log_probability_prints_nothing_on_stdout(capfd):
    """emcee's own wrapper prints the walkers and a traceback to stdout before passing an
    exception on; popinfer's samplers call the function directly (stdout may carry a file)."""
    import emcee

    from popinfer.mcmc import ensemble_sampler

    class Stop(Exception):
        pass

    def log_prob(coords):
        raise Stop("explained elsewhere")

    start = np.random.default_rng(1).normal(size=(8, 2))
    with pytest.raises(Stop):
        ensemble_sampler(8, 2, log_prob, [emcee.moves.StretchMove()]).run_mcmc(start, 2)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    # the negative control: emcee's sampler, as constructed before, prints both
    with pytest.raises(Stop):
        emcee.EnsembleSampler(8, 2, log_prob, vectorize=True).run_mcmc(start, 2)
    out, err = capfd.readouterr()
    assert "emcee: Exception while calling your likelihood function" in out and "Traceback" in err


@pytest.mark.parametrize("sampler, option, value, owner", [
    ("nuts", "--moves", "de", "emcee"), ("nuts", "--live-points", "50", "nested"),
    ("nested", "--chains", "2", "nuts"), ("nested", "--tune", "50", "nuts"), ("nested", "--tune-thin", "2", "nuts"),
    ("emcee", "--chains", "2", "nuts"), ("emcee", "--tune", "50", "nuts"), ("emcee", "--tune-thin", "2", "nuts"),
    ("emcee", "--live-points", "50", "nested")])
def test_a_sampler_option_given_with_a_sampler_that_ignores_it_is_a_usage_error(tmp_path, sampler, option, value,
                                                                                 owner):
    """A sampler option given with a sampler that does not use it is refused, naming the option and
    its sampler (--walkers and --max-steps are named in a warning instead: below)."""
    exact_samples(tmp_path / "s.h5")
    result = cli(["fit-population", str(tmp_path / "s.h5"), "-o", str(tmp_path / "pop.h5"), "--population", "normal",
                  "--fix", f"sigma={SIGMA}", "--sampler", sampler, option, value, "--quiet"])
    refused(result, 2, f"{option} is an option of --sampler {owner}, not of {sampler}")
    assert not (tmp_path / "pop.h5").exists()


def test_the_emcee_options_left_out_take_their_documented_defaults(tmp_path):
    """--walkers and --max-steps default to None in the library and resolve to emcee's 32 and 20000."""
    import popinfer

    exact_samples(tmp_path / "s.h5")
    result = popinfer.fit_population(str(tmp_path / "s.h5"), "normal", fixed=[f"sigma={SIGMA}"], n_samples=200,
                                     n_reweighted=10, seed=1, progress=False)
    assert (result.settings["walkers"], result.settings["max_steps"]) == (32, 20000)


@pytest.mark.parametrize("sampler, option, value", [
    ("nuts", "--walkers", "8"), ("nuts", "--max-steps", "100"), ("nested", "--walkers", "8"),
    ("nested", "--max-steps", "100")])
def test_walkers_and_max_steps_with_another_sampler_are_named_in_a_warning(tmp_path, sampler, option, value):
    """--walkers and --max-steps were accepted with every sampler (their defaults were click's, so a
    given value could not be told from none) and ignored without a word: scripts passing them keep
    working (the interface changes only by adding), and are told the option is ignored."""
    pytest.importorskip("nutpie" if sampler == "nuts" else "ultranest")
    exact_samples(tmp_path / "s.h5")
    result = cli(["fit-population", str(tmp_path / "s.h5"), "-o", str(tmp_path / "pop.h5"), "--population", "normal",
                  "--fix", f"sigma={SIGMA}", "--sampler", sampler, option, value, "--samples", "100",
                  "--reweighted", "5", "--seed", "1", "--quiet", *(["--live-points", "50"] if sampler == "nested"
                                                                  else ["--chains", "2", "--tune", "50"])])
    assert result.exit_code == 0, result.output
    assert f"{option} is an option of --sampler emcee, not of {sampler}, which ignores it" in result.stderr


def test_the_registry_decides_which_options_a_third_party_sampler_takes(tmp_path, monkeypatch):
    """A sampler registered with the options it uses gets them; the others are refused (they would
    be ignored), naming the samplers that use them, but --walkers and --max-steps, which every
    sampler accepted before, are named in a warning; one registered without saying takes those two,
    as before; a sampler object takes none."""
    import popinfer

    exact_samples(tmp_path / "s.h5")
    received = []

    def factory(options):
        received.append(options)
        return GridSampler()

    monkeypatch.setitem(samplers.SAMPLERS, "grid", None)
    monkeypatch.setitem(samplers.SAMPLER_OPTIONS, "grid", ())
    samplers.register_sampler("grid", factory, options=["n_walkers"])
    common = dict(fixed=[f"sigma={SIGMA}"], hyperpriors=["mu=uniform(-10, 10)"], n_samples=200, n_reweighted=10,
                  seed=1, progress=False)
    popinfer.fit_population(str(tmp_path / "s.h5"), "normal", sampler="grid", n_walkers=6, **common)
    assert received[-1]["n_walkers"] == 6 and received[-1]["max_steps"] is None
    with pytest.warns(UserWarning, match="--max-steps is an option of --sampler emcee, not of grid, which ignores"):
        popinfer.fit_population(str(tmp_path / "s.h5"), "normal", sampler="grid", max_steps=100, **common)
    assert received[-1]["max_steps"] is None
    with pytest.raises(UsageError, match="--chains is an option of --sampler nuts, not of grid"):
        popinfer.fit_population(str(tmp_path / "s.h5"), "normal", sampler="grid", chains=3, **common)
    samplers.register_sampler("grid", factory, options=[])
    with pytest.warns(UserWarning, match="--walkers is an option of --sampler emcee, not of grid"):
        popinfer.fit_population(str(tmp_path / "s.h5"), "normal", sampler="grid", n_walkers=6, **common)
    # registered as before the registry knew the options: emcee's two settings, their defaults filled
    # in, and the other options refused, as they were
    samplers.register_sampler("grid", factory)
    popinfer.fit_population(str(tmp_path / "s.h5"), "normal", sampler="grid", **common)
    assert (received[-1]["n_walkers"], received[-1]["max_steps"], received[-1]["chains"]) == (32, 20000, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: this sampler may use them
        popinfer.fit_population(str(tmp_path / "s.h5"), "normal", sampler="grid", n_walkers=6, max_steps=50,
                                **common)
    assert (received[-1]["n_walkers"], received[-1]["max_steps"]) == (6, 50)
    for option, value, flag in (("chains", 3, "--chains"), ("moves", "de", "--moves"),
                                ("live_points", 50, "--live-points")):
        with pytest.raises(UsageError, match=f"{flag} is an option of --sampler"):
            popinfer.fit_population(str(tmp_path / "s.h5"), "normal", sampler="grid", **{option: value}, **common)
    with pytest.warns(UserWarning, match="--walkers is an option of --sampler emcee, not of the sampler object 'grid'"):
        popinfer.fit_population(str(tmp_path / "s.h5"), "normal", sampler=GridSampler(), n_walkers=6, **common)
    with pytest.raises(UsageError, match="--tune is an option of --sampler nuts, not of the sampler object 'grid'"):
        popinfer.fit_population(str(tmp_path / "s.h5"), "normal", sampler=GridSampler(), tune=6, **common)
