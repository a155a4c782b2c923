"""fit-population --selection through the command line, and the files, tables and figures it makes."""

import hashlib
import json

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from popinfer.cli import main
from popinfer.io.population import read_population
from popinfer.io.samples import write_samples
from test_selection_exact import exact_samples, injection_file, survey

FAST = ["--population", "normal", "--hyperprior", "mu=normal(0, 1)", "--hyperprior", "sigma=halfnormal(2)",
        "--samples", "200", "--max-steps", "300", "--reweighted", "20", "--seed", "3", "--quiet"]


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture
def survey_files(in_tmp):
    write_samples(exact_samples(survey(31), 32), "survey.h5")
    injection_file(in_tmp / "injections.csv", 20_000, 33)
    injection_file(in_tmp / "few.csv", 300, 34)
    return in_tmp


def test_selection_fit_writes_its_terms_and_every_reader_shows_them(survey_files):
    result = run(["fit-population", "survey.h5", "-o", "pop.h5", *FAST, "--selection", "injections.csv",
                  "--injections-total", "20000", "--observing-time", "2"])
    assert result.exit_code == 0, result.output
    with h5py.File("pop.h5") as handle:
        effective = handle["hyper/selection_effective_draws"][()]
        ln_efficiency = handle["hyper/selection_ln_efficiency"][()]
        rate = handle["hyper/rate"][()]
        assert handle["hyper/rate"].attrs["observing_time"] == 2.0
        source = json.loads(handle.attrs["source"])
        assert "--selection injections.csv" in handle.attrs["command"]
    assert effective.shape == ln_efficiency.shape == rate.shape == (200,)
    assert np.all(ln_efficiency < 0) and np.all(effective > 4 * 60)
    digest = hashlib.sha256(open("injections.csv", "rb").read()).hexdigest()
    assert source["injections"]["path"] == "injections.csv" and source["injections"]["sha256"] == digest
    assert source["injections"]["injections_total"] == 20000
    # The rate: R ~ Gamma(N, ξ̂ T) at each draw, so R ξ̂ T / N has mean 1 over the draws.
    assert abs(np.mean(rate * np.exp(ln_efficiency) * 2.0 / 60) - 1) < 4 / np.sqrt(60 * 200)
    population = read_population("pop.h5")
    np.testing.assert_array_equal(population.selection_effective_draws, effective)

    text = run(["summary", "pop.h5"]).output
    assert "selection: injections.csv" in text and "N_eff,sel median" in text and "detection_efficiency" in text
    summary = json.loads(run(["summary", "pop.h5", "--format", "json"]).output)
    assert summary["diagnostics"]["selection"]["injections_total"] == 20000
    rows = {row["hyperparameter"] for row in summary["hyperparameters"]}
    assert {"mu", "sigma", "detection_efficiency", "R"} <= rows
    assert "/hyper/selection_effective_draws" in run(["inspect", "pop.h5"]).output
    exported = run(["export", "pop.h5", "-o", "-", "--to", "csv"])
    assert exported.exit_code == 0
    table = pd.read_csv(pd.io.common.StringIO(exported.output))
    assert {"selection_ln_efficiency", "selection_effective_draws", "R"} <= set(table["hyperparameter"])
    figure = run(["plot", "pop.h5", "-o", "diagnostics.png", "--kind", "diagnostics"])
    assert figure.exit_code == 0, figure.output


def test_too_few_injections_warn_and_strict_exits_3(survey_files):
    result = run(["fit-population", "survey.h5", "-o", "pop.h5", *FAST, "--selection", "few.csv",
                  "--injections-total", "300", "--strict"])
    assert result.exit_code == 3
    assert "N_eff,sel" in result.stderr and "more injections" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args, code, fragments", [
    (["--injections-total", "100"], 2, ["--injections-total", "needs --selection"]),
    (["--selection", "injections.csv"], 2, ["--injections-total M"]),
    (["--selection", "injections.csv", "--injections-total", "5"], 2, ["smaller than", "detected injections"]),
    (["--selection", "injections.csv", "--injections-total", "20000", "--draw-prior", "theta=normal(0, 2)"], 2,
     ["log_draw_prior", "give one"]),
    (["--selection", "missing.csv", "--injections-total", "20000"], 1, ["missing.csv", "does not exist"]),
    (["--selection", "injections.csv", "--injections-total", "20000", "--observing-time", "-1"], 2,
     ["--observing-time"]),
])
def test_selection_usage_and_input_errors(survey_files, args, code, fragments):
    result = run(["fit-population", "survey.h5", "-o", "pop.h5", *FAST, *args])
    assert result.exit_code == code, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert "Traceback" not in result.output and "Unexpected" not in result.output
    assert not (survey_files / "pop.h5").exists()


def test_injections_with_another_parameter_name_are_refused(survey_files):
    frame = pd.read_csv("injections.csv").rename(columns={"theta": "mass"})
    frame.to_csv("renamed.csv", index=False)
    result = run(["fit-population", "survey.h5", "-o", "pop.h5", *FAST, "--selection", "renamed.csv",
                  "--injections-total", "20000"])
    assert result.exit_code == 1
    assert "renamed.csv has no column 'theta'" in result.output and "'mass'" in result.output
