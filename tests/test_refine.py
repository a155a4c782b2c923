"""popinfer refine: which objects are refitted, what is kept, the data's provenance, and refusals."""

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import popinfer
from popinfer.cli import main
from popinfer.errors import InputDataError, UsageError
from popinfer.io.samples import read_samples
from popinfer.refinement import refine

from conftest import cli, refused

HYPERPRIORS = ["mu=normal(0, 10)", "sigma=halfnormal(2)"]
SMALL_FIT = dict(n_samples=400, max_steps=3000, n_reweighted=10, progress=False)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Six objects, K = 200, a population fit in which some objects have few effective draws (stage-one seed 5:
    at some seeds all six are flagged, at others one; these tests need some kept and several refitted)."""
    root = tmp_path_factory.mktemp("refine")
    rng = np.random.default_rng(3)
    sigma = np.array([0.3, 0.4, 2.0, 3.0, 3.0, 4.0])
    frame = pd.DataFrame({"id": list("abcdef"), "y": rng.normal(1.0, 0.3, 6) + sigma * rng.normal(size=6),
                          "sigma": sigma})
    frame.to_csv(root / "data.csv", index=False)
    popinfer.fit_individuals(str(root / "data.csv"), "normal", str(root / "s.h5"), n_draws=200, seed=5,
                             progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popinfer.fit_population(str(root / "s.h5"), "normal", str(root / "p.h5"), hyperpriors=HYPERPRIORS, seed=2,
                                **SMALL_FIT)
    return root


def test_refits_the_flagged_objects_and_keeps_the_others(fitted, tmp_path):
    before = read_samples(str(fitted / "s.h5"))
    result = refine(str(fitted / "s.h5"), str(fitted / "p.h5"), str(tmp_path / "r.h5"), seed=4, min_ess=10,
                    rounds=1, progress=False)
    after = read_samples(str(tmp_path / "r.h5"))
    refitted = [after.ids.index(i) for i in result.refitted]
    kept = [n for n in range(6) if n not in refitted]
    assert refitted and kept  # the narrow-likelihood objects are fine, the broad ones are flagged
    for n in kept:  # kept objects: their draws, interim densities and diagnostics as they were
        np.testing.assert_array_equal(after.samples[n, :200], before.samples[n])
        np.testing.assert_array_equal(after.log_interim_prior[n, :200], before.log_interim_prior[n])
        assert not after.joint_interim[n].any()
    for n in refitted:  # refitted: under the mixture prior (joint), never the old draws
        assert after.joint_interim[n, 0]
        assert not np.isin(after.samples[n, :after.object_draw_counts[n], 0], before.samples[n, :, 0]).any()
    (record,) = after.settings["refinement"]
    assert record["objects"] == result.refitted and record["interim_mixture"]["weight"] == 0.2
    assert record["interim_mixture"]["source"]["path"] == str(fitted / "p.h5")
    assert after.settings["data"] == before.settings["data"]  # provenance carried on
    line = result.report()
    assert line.startswith(f"Refitted {len(refitted)} object(s)") and "Var[ln L̂]" in line and "ESS" in line


def test_nothing_flagged_keeps_every_draw(fitted, tmp_path):
    result = refine(str(fitted / "s.h5"), str(fitted / "p.h5"), str(tmp_path / "r.h5"), seed=4, min_ess=1e-9,
                    progress=False)
    assert result.refitted == [] and result.report().startswith("Nothing to refit")
    np.testing.assert_array_equal(read_samples(str(tmp_path / "r.h5")).samples,
                                  read_samples(str(fitted / "s.h5")).samples)


def test_moved_data_needs_data_and_changed_data_is_refused(fitted, tmp_path):
    shutil.copy(fitted / "s.h5", tmp_path / "s.h5")
    shutil.copy(fitted / "p.h5", tmp_path / "p.h5")
    samples = str(tmp_path / "s.h5")
    recorded = read_samples(samples).settings["data"]["source"]
    moved = tmp_path / "elsewhere.csv"
    shutil.copy(recorded, moved)
    Path(recorded).rename(tmp_path / "gone.csv")
    try:
        with pytest.raises(InputDataError, match="--data"):
            refine(samples, str(tmp_path / "p.h5"), seed=4, min_ess=10, rounds=1, progress=False)
        result = refine(samples, str(tmp_path / "p.h5"), data=str(moved), seed=4, min_ess=10, rounds=1,
                        progress=False)
        assert result.refitted
        changed = tmp_path / "changed.csv"
        changed.write_text(moved.read_text() + "g,1.0,1.0\n")
        with pytest.raises(InputDataError, match=f"{changed}.*SHA-256"):
            refine(samples, str(tmp_path / "p.h5"), data=str(changed), seed=4, min_ess=10, rounds=1,
                   progress=False)
    finally:
        (tmp_path / "gone.csv").rename(recorded)


def test_data_moved_with_the_samples_is_found_beside_them(fitted, tmp_path):
    """The recorded path is absolute; a directory moved as a whole (samples, population fit and data
    under its file name) still refines without --data."""
    recorded = read_samples(str(fitted / "s.h5")).settings["data"]["source"]
    assert Path(recorded).is_absolute()
    for name in ("s.h5", "p.h5"):
        shutil.copy(fitted / name, tmp_path / name)
    shutil.copy(recorded, tmp_path / Path(recorded).name)
    Path(recorded).rename(tmp_path / "gone.csv")
    try:
        result = refine(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), seed=4, min_ess=10, rounds=1,
                        progress=False)
        assert result.refitted
        (tmp_path / Path(recorded).name).unlink()  # negative control: nothing beside, nothing at the path
        with pytest.raises(InputDataError, match="--data"):
            refine(str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), seed=4, min_ess=10, rounds=1, progress=False)
    finally:
        (tmp_path / "gone.csv").rename(recorded)


def test_a_population_fitted_to_other_samples_is_refused(fitted, tmp_path):
    popinfer.fit_individuals(str(fitted / "data.csv"), "normal", str(tmp_path / "other.h5"), n_draws=200, seed=9,
                             progress=False)
    with pytest.raises(InputDataError, match="was fitted to"):
        refine(str(tmp_path / "other.h5"), str(fitted / "p.h5"), seed=4, progress=False)
    with pytest.raises(UsageError, match="--rounds"):
        refine(str(fitted / "s.h5"), str(fitted / "p.h5"), rounds=0, progress=False)
    with pytest.raises(UsageError, match="by name"):
        refine("-", str(fitted / "p.h5"), progress=False)


def test_cli_refine(fitted, tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "r.h5")
    result = runner.invoke(main, ["refine", str(fitted / "s.h5"), str(fitted / "p.h5"), "-o", out, "--seed", "4",
                                  "--min-ess", "10", "--rounds", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Refitted" in result.stderr and result.stdout == "" and Path(out).exists()
    again = runner.invoke(main, ["refine", str(fitted / "s.h5"), str(fitted / "p.h5"), "-o", out, "--quiet"])
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    bad = runner.invoke(main, ["refine", str(fitted / "s.h5"), str(fitted / "p.h5"), "-o", str(tmp_path / "x.h5"),
                               "--data", str(tmp_path / "missing.csv"), "--quiet"])
    assert bad.exit_code == 1 and "missing.csv" in bad.stderr and "Traceback" not in bad.output
    assert not (tmp_path / "x.h5").exists()


def test_the_fits_between_rounds_keep_the_selection_term(tmp_path, monkeypatch):
    """A population fitted with --selection is fitted again with the same injections and p_draw."""
    import popinfer.reweighting as reweighting

    survey = Path(__file__).resolve().parent.parent / "sample_data"
    samples, pop = str(tmp_path / "s.h5"), str(tmp_path / "p.h5")
    pd.read_csv(survey / "survey.csv").head(30).to_csv(tmp_path / "survey.csv", index=False)
    popinfer.fit_individuals(str(tmp_path / "survey.csv"), "normal", samples, n_draws=200, seed=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popinfer.fit_population(samples, "normal", pop, hyperpriors=["mu=normal(0, 2)", "sigma=halfnormal(2)"],
                                seed=2, selection=str(survey / "survey_injections.csv"), injections_total=60000,
                                draw_priors=["theta=normal(0, 1.5)"], n_samples=200, max_steps=200,
                                n_reweighted=10, progress=False)  # a short chain: only the plumbing is tested
    calls, original = [], reweighting.fit_population

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(reweighting, "fit_population", recording)
    result = refine(samples, pop, seed=3, min_ess=400, rounds=1, progress=False, components=10)
    assert result.refitted and len(calls) == 1
    injections = calls[0]["selection"]  # read (and checked) once, before the refits
    assert injections.source == str(survey / "survey_injections.csv")
    assert injections.n_total == 60000 and injections.draw_prior == {"theta": "normal(0.0, 1.5)"}


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """A population fitted with --selection (a short chain: only the plumbing is tested), the injections
    (a copy) beside it."""
    root = tmp_path_factory.mktemp("selected")
    survey = Path(__file__).resolve().parent.parent / "sample_data"
    pd.read_csv(survey / "survey.csv").head(30).to_csv(root / "survey.csv", index=False)
    pd.read_csv(survey / "survey_injections.csv").head(2000).to_csv(root / "inj.csv", index=False)
    popinfer.fit_individuals(str(root / "survey.csv"), "normal", str(root / "s.h5"), n_draws=200, seed=1,
                             progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popinfer.fit_population(str(root / "s.h5"), "normal", str(root / "p.h5"),
                                hyperpriors=["mu=normal(0, 2)", "sigma=halfnormal(2)"], seed=2,
                                selection=str(root / "inj.csv"), injections_total=3000,
                                draw_priors=["theta=normal(0, 1.5)"], n_samples=200, max_steps=200,
                                n_reweighted=10, progress=False)
    return root


def test_moved_injections_are_refused_before_any_refit(selected, tmp_path, monkeypatch):
    """The injections a population was fitted with are found and checked before the first refit: moved,
    refine names them and --selection, and writes nothing (no output, no checkpoint)."""
    import popinfer.refinement as refinement

    for name in ("s.h5", "p.h5", "survey.csv"):
        shutil.copy(selected / name, tmp_path / name)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(selected / "inj.csv", moved / "inj.csv")  # the recorded path is selected/inj.csv
    renamed = selected / "inj.csv.away"
    shutil.move(selected / "inj.csv", renamed)
    refits = []
    monkeypatch.setattr(refinement, "fit_individuals", lambda *a, **k: refits.append(a) or 1 / 0)
    try:
        out = tmp_path / "r.h5"
        args = ["refine", str(tmp_path / "s.h5"), str(tmp_path / "p.h5"), "-o", str(out), "--seed", "3",
                "--min-ess", "400", "--rounds", "1", "--quiet"]
        refused(cli(args), 1, str(selected / "inj.csv"), "--selection")
        assert not refits and not out.exists() and not Path(f"{out}.partial").exists()
        refused(cli(args + ["--selection", str(tmp_path / "none.csv")]), 2, "none.csv", "--selection")
        # a shard does not read the injections, but a --selection naming no file is refused there too
        refused(cli(args + ["--selection", str(tmp_path / "none.csv"), "--shard", "1/2"]), 2, "none.csv",
                "--selection")
        refused(cli(args + ["--selection", str(tmp_path / "survey.csv")]), 1, "survey.csv", "SHA-256", "--selection")
        assert not refits and not out.exists() and not Path(f"{out}.partial").exists()
        monkeypatch.undo()
        done = cli(args + ["--selection", str(moved / "inj.csv")])
        assert done.exit_code == 0, done.output
        assert read_samples(str(out)).ids == read_samples(str(tmp_path / "s.h5")).ids
        shutil.copy(moved / "inj.csv", tmp_path / "inj.csv")  # beside the population file: found there
        again = cli(args + ["--overwrite"])
        assert again.exit_code == 0, again.output
    finally:
        shutil.move(renamed, selected / "inj.csv")


def test_selection_for_a_fit_without_it_is_refused(fitted, tmp_path):
    refused(cli(["refine", str(fitted / "s.h5"), str(fitted / "p.h5"), "-o", str(tmp_path / "r.h5"),
                 "--selection", str(fitted / "data.csv")]), 2, "--selection", "without selection effects")
    assert not (tmp_path / "r.h5").exists()


def test_a_failure_after_refits_says_resume_continues_them(fitted, tmp_path, monkeypatch):
    """A run that fails after some refits finished leaves them in OUT.partial and says --resume goes on."""
    import popinfer.refinement as refinement

    def failing(*args, **kwargs):
        raise InputDataError("The population fit failed.")

    monkeypatch.setattr(refinement, "_fit_again", failing)
    out = tmp_path / "r.h5"
    result = cli(["refine", str(fitted / "s.h5"), str(fitted / "p.h5"), "-o", str(out), "--seed", "4",
                  "--min-ess", "10", "--rounds", "2", "--quiet"])
    refused(result, 1, "The population fit failed.", f"{out}.partial", "--resume")
    assert Path(f"{out}.partial").is_dir() and not out.exists()


def test_fits_between_rounds_use_the_population_files_sampler(fitted, tmp_path):
    """refine's in-memory fits run the sampler (and its options) the population file was fitted with."""
    pytest.importorskip("nutpie")
    from popinfer.io.population import read_population
    from popinfer.refinement import _fit_again

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popinfer.fit_population(str(fitted / "s.h5"), "normal", str(tmp_path / "nuts.h5"), hyperpriors=HYPERPRIORS,
                                seed=2, sampler="nuts", chains=2, tune=50, n_samples=100, n_reweighted=10,
                                progress=False)
    fitted_nuts = read_population(str(tmp_path / "nuts.h5"))
    again = _fit_again(read_samples(str(fitted / "s.h5")), fitted_nuts, 10, 3, False)
    assert (again.settings["sampler"], again.settings["chains"], again.settings["tune"]) == ("nuts", 2, 50)
    # the control: a population file fitted with emcee is refitted with emcee
    again = _fit_again(read_samples(str(fitted / "s.h5")), read_population(str(fitted / "p.h5")), 10, 3, False)
    assert again.settings["sampler"] == "emcee"


def test_fits_between_rounds_use_the_population_files_moves(fitted, tmp_path):
    """emcee's --moves carry over; a file that records none (fitted before --moves) was fitted with
    the stretch move, and is refitted with it."""
    from popinfer.io.population import read_population
    from popinfer.refinement import _fit_again

    samples = read_samples(str(fitted / "s.h5"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popinfer.fit_population(str(fitted / "s.h5"), "normal", str(tmp_path / "de.h5"), hyperpriors=HYPERPRIORS,
                                seed=2, moves="de", n_samples=200, n_reweighted=10, progress=False)
    fitted_de = read_population(str(tmp_path / "de.h5"))
    assert fitted_de.settings["moves"] == "de"
    assert _fit_again(samples, fitted_de, 10, 3, False).settings["moves"] == "de"
    fitted_de.settings = {k: v for k, v in fitted_de.settings.items() if k != "moves"}
    assert _fit_again(samples, fitted_de, 10, 3, False).settings["moves"] == "stretch"


def test_fits_between_rounds_choose_again_where_the_population_file_asked_for_auto(fitted, monkeypatch):
    """A file fitted with --backend auto records what ran and the option; refine's fits choose again
    (here numpy: a CPU with a vectorised exp), while a file that named its backend keeps it."""
    from popinfer.io.population import read_population
    from popinfer.refinement import _fit_again
    from popinfer.reweighting import backends

    monkeypatch.setattr(backends, "numpy_exp_is_vectorised", lambda: True)
    samples, population = read_samples(str(fitted / "s.h5")), read_population(str(fitted / "p.h5"))
    population.settings = {**population.settings, "backend": "jax", "backend_option": "auto"}
    again = _fit_again(samples, population, 10, 3, False)
    assert (again.settings["backend"], again.settings["backend_option"]) == ("numpy", "auto")
    population.settings = {k: v for k, v in population.settings.items() if k != "backend_option"}
    population.settings["backend"] = "numpy"
    again = _fit_again(samples, population, 10, 3, False)
    assert again.settings["backend"] == "numpy" and "backend_option" not in again.settings


def test_fits_between_rounds_keep_the_population_files_exp_precision(fitted):
    """refine's fits take the file's --exp-precision; a file from before it (none recorded) is double."""
    from popinfer.io.population import read_population
    from popinfer.refinement import _fit_again

    samples, population = read_samples(str(fitted / "s.h5")), read_population(str(fitted / "p.h5"))
    population.settings = {**population.settings, "exp_precision": "single"}
    assert _fit_again(samples, population, 10, 3, False).settings["exp_precision"] == "single"
    population.settings = {k: v for k, v in population.settings.items() if k != "exp_precision"}
    assert _fit_again(samples, population, 10, 3, False).settings["exp_precision"] == "double"


USER_NORMAL = '''import numpy as np


def normal(theta, hyper):
    x = next(iter(theta.values()))
    return -0.5 * ((x - hyper["mu"]) / hyper["sigma"]) ** 2 - np.log(hyper["sigma"]) - 0.5 * np.log(2 * np.pi)


normal.hyperparameters = {"mu": "normal(0, 10)", "sigma": "halfnormal(2)"}
'''


def test_refine_under_a_user_population(fitted, tmp_path):
    """A user population's densities come back broadcast to (objects, draws, walkers); q works on
    them in place, so they must be the caller's own writable array (a broadcast view crashed
    refine with 'output array is read-only')."""
    spec = tmp_path / "user_normal.py"
    spec.write_text(USER_NORMAL)
    population = f"{spec}:normal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popinfer.fit_population(str(fitted / "s.h5"), population, str(tmp_path / "p.h5"), seed=2, **SMALL_FIT)
    result = refine(str(fitted / "s.h5"), str(tmp_path / "p.h5"), str(tmp_path / "r.h5"), seed=4, min_ess=10,
                    rounds=1, progress=False, trust_code=True)
    assert result.refitted
    after = read_samples(str(tmp_path / "r.h5"))
    assert np.isfinite(after.log_interim_prior[after.ids.index(result.refitted[0])]).all()


def test_fits_between_rounds_pass_only_the_population_files_sampler_options(fitted, tmp_path):
    """An emcee file's walkers and max_steps carry over; a nested file's fit gets none of emcee's
    options (it refuses them)."""
    pytest.importorskip("ultranest")
    from popinfer.io.population import read_population
    from popinfer.refinement import _fit_again

    samples = read_samples(str(fitted / "s.h5"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popinfer.fit_population(str(fitted / "s.h5"), "normal", str(tmp_path / "w.h5"), hyperpriors=HYPERPRIORS,
                                seed=2, n_walkers=16, max_steps=4000, n_samples=200, n_reweighted=10, progress=False)
        popinfer.fit_population(str(fitted / "s.h5"), "normal", str(tmp_path / "nested.h5"), hyperpriors=HYPERPRIORS,
                                seed=2, sampler="nested", live_points=50, n_samples=100, n_reweighted=10,
                                progress=False)
    again = _fit_again(samples, read_population(str(tmp_path / "w.h5")), 10, 3, False)
    assert (again.settings["walkers"], again.settings["max_steps"]) == (16, 4000)
    again = _fit_again(samples, read_population(str(tmp_path / "nested.h5")), 10, 3, False)
    assert again.settings["sampler"] == "nested" and again.settings["live_points"] == 50


def test_a_usage_error_beside_an_old_checkpoint_says_nothing_of_resuming(fitted, tmp_path):
    """A usage error is raised before any work: an OUT.partial left by another run is not this run's,
    and --resume would fail the same way."""
    out = tmp_path / "r.h5"
    os.makedirs(f"{out}.partial")
    result = cli(["refine", str(fitted / "s.h5"), str(fitted / "p.h5"), "-o", str(out), "--min-ess", "nan",
                  "--quiet"])
    refused(result, 2, "--min-ess")
    assert "--resume" not in result.output and "partial" not in result.output
