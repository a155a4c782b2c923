"""Option values that would silently change a run, or crash it as "Unexpected …", refused up
front with a message naming the option: exit 2, no traceback, nothing written."""

import os
import shutil

import pytest
from conftest import SAMPLE_DATA, refused
from conftest import cli as run

EIGHT = str(SAMPLE_DATA / "eight_schools.csv")
POP = ["--population", "normal", "--hyperprior", "mu=normal(0, 5)", "--hyperprior", "sigma=halfcauchy(5)",
       "--seed", "2", "--samples", "100", "--walkers", "8", "--max-steps", "200", "--reweighted", "5", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("options")
    samples, population = directory / "s.h5", directory / "p.h5"
    assert run(["fit-individuals", EIGHT, "-o", str(samples), "--model", "normal", "--seed", "1", "--samples", "200",
                "--walkers", "16", "--quiet"]).exit_code == 0
    result = run(["fit-population", str(samples), "-o", str(population), *POP])
    assert result.exit_code == 0, result.output
    return directory


@pytest.mark.parametrize("value", ["nan", "-5", "inf"])
def test_min_ess_must_be_a_number_of_draws(files, in_tmp, value):
    """NaN or a negative --min-ess turned the low-ESS warning (and refine's flagging) off."""
    refused(run(["fit-population", str(files / "s.h5"), "-o", "p.h5", *POP, "--min-ess", value]), 2,
            "--min-ess must be a number of effective draws")
    refused(run(["refine", str(files / "s.h5"), str(files / "p.h5"), "-o", "r.h5", "--quiet", "--min-ess", value]),
            2, "--min-ess must be a number of effective draws")
    assert os.listdir() == []


@pytest.mark.parametrize("value", ["nan", "-1", "0"])
def test_max_variance_must_be_positive(files, in_tmp, value):
    refused(run(["fit-population", str(files / "s.h5"), "-o", "p.h5", *POP, "--max-variance", value]), 2,
            "--max-variance must be a positive number")
    assert os.listdir() == []


@pytest.mark.parametrize("value", ["0", "-5", "100000"])
def test_plot_dpi_is_bounded(files, in_tmp, value):
    refused(run(["plot", str(files / "p.h5"), "-o", "f.png", "--dpi", value]), 2, "--dpi")
    assert os.listdir() == []


def test_plot_file_checks_dpi_in_the_api(files, in_tmp):
    from popinfer.errors import UsageError
    from popinfer.plot import plot_file

    with pytest.raises(UsageError, match="--dpi 0"):
        plot_file(str(files / "p.h5"), "f.png", dpi=0)


def test_nested_live_points_zero_is_refused_not_the_default(files, in_tmp):
    pytest.importorskip("ultranest")
    refused(run(["fit-population", str(files / "s.h5"), "-o", "p.h5", "--population", "normal", "--sampler", "nested",
                 "--live-points", "0", "--quiet"]), 2, "--live-points")
    assert os.listdir() == []


def test_compare_refuses_a_file_given_twice(files, in_tmp):
    shutil.copy(files / "p.h5", "p.h5")
    refused(run(["compare", "p.h5", "p.h5"]), 2, "p.h5 is given more than once")
    refused(run(["compare", "p.h5", "./p.h5"]), 2, "./p.h5 is given more than once (p.h5)")


def test_max_variance_inf_means_no_cut(files, in_tmp):
    result = run(["fit-population", str(files / "s.h5"), "-o", "p.h5", *POP, "--max-variance", "inf"])
    assert result.exit_code == 0, result.output


def test_refine_with_nothing_to_refit_says_where_the_draws_are(files, in_tmp):
    result = run(["refine", str(files / "s.h5"), str(files / "p.h5"), "-o", "r.h5", "--min-ess", "0", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "the input's draws are kept unchanged in r.h5" in result.output
