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


@pytest.mark.parametrize("population, fixes, fragments", [
    ("normal", ["sigma=-1"], ["--fix sigma=-1", "population 'normal'", "sigma > 0"]),
    ("normal", ["sigma=0"], ["--fix sigma=0", "population 'normal'", "sigma > 0"]),
    ("lognormal", ["sigma=-0.5"], ["--fix sigma=-0.5", "population 'lognormal'", "sigma > 0"]),
    ("studentt", ["nu=0"], ["--fix nu=0", "population 'studentt'", "nu > 0"]),
    ("mixture", ["weight=1.5"], ["--fix weight=1.5", "population 'mixture'", "0 < weight < 1"]),
    ("mixture", ["weight=0.5", "mu1=2", "mu2=1"], ["--fix mu1=2 --fix mu2=1", "population 'mixture'", "mu1 < mu2"]),
    ("uniform", ["low=5", "high=1"], ["--fix low=5 --fix high=1", "population 'uniform'", "low < high"]),
    ("powerlaw", ["low=-1"], ["--fix low=-1", "population 'powerlaw'", "low > 0"])])
def test_fix_outside_the_populations_domain_is_a_usage_error(files, in_tmp, population, fixes, fragments):
    """A held hyperparameter outside the population's domain made f = -inf (or NaN) at every α: the
    sampler could not start ("Could not start the hyperparameter sampler ... check the --fix values")."""
    options = [item for fix in fixes for item in ("--fix", fix)]
    refused(run(["fit-population", str(files / "s.h5"), "-o", "p.h5", "--population", population, *options,
                 "--quiet"]), 2, *fragments)
    assert os.listdir() == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_fix_of_a_non_finite_value_is_a_usage_error(files, in_tmp, value):
    refused(run(["fit-population", str(files / "s.h5"), "-o", "p.h5", *POP, "--fix", f"mu={value}"]), 2,
            f"--fix mu={value}: expected a finite number")
    assert os.listdir() == []


def test_fix_checks_in_the_api_and_of_an_unknown_name(files):
    import popinfer
    from popinfer.errors import UsageError

    for fixed, message in (({"mu": float("nan")}, "--fix mu=nan: population 'normal' needs a finite number"),
                           ({"mu": "abc"}, "--fix mu='abc': expected a number"),
                           ({"sigma": -2.0}, "--fix sigma=-2 is outside the domain of population 'normal'"),
                           ({"tau": 1.0}, "population 'normal' has no hyperparameter 'tau'")):
        with pytest.raises(UsageError, match=message):
            popinfer.fit_population(str(files / "s.h5"), "normal", fixed=fixed, progress=False)
    # the rho of mvnormal: a correlation in (-1, 1)
    from popinfer.populations import get_population
    from popinfer.reweighting.posterior import check_fixed

    with pytest.raises(UsageError, match=r"-1 < rho_a_b < 1"):
        check_fixed(get_population("mvnormal", ["a", "b"]), {"rho_a_b": 1.0})
    # a name mvnormal lacks (sigma_* of no parameter) is left to the unknown-name check, not told its domain
    assert check_fixed(get_population("mvnormal", ["a", "b"]), {"sigma_typo": -1.0}) == {"sigma_typo": -1.0}
    assert check_fixed(get_population("mvnormal", ["a", "b"]), {"rho_a_b": 0.5, "sigma_a": 2}) == {
        "rho_a_b": 0.5, "sigma_a": 2.0}


def _binary_to_stdout(files):
    """Every command that writes an HDF5 file, asked to write it to stdout (-o -)."""
    samples, population = str(files / "s.h5"), str(files / "p.h5")
    return {
        "fit-individuals": ["fit-individuals", EIGHT, "-o", "-", "--model", "normal", "--quiet"],
        "merge": ["merge", samples, "-o", "-"],
        "fit-population": ["fit-population", samples, "-o", "-", *POP],
        "refine": ["refine", samples, population, "-o", "-", "--quiet"],
        "import-samples": ["import-samples", str(SAMPLE_DATA / "stan_draws.csv"), "-o", "-", "--id-column", "star",
                           "--prior", "ecc=uniform(0, 1)"],
    }


@pytest.mark.parametrize("command", ["fit-individuals", "merge", "fit-population", "refine", "import-samples"])
def test_binary_output_to_a_terminal_is_refused(files, in_tmp, monkeypatch, command):
    """-o - with stdout a terminal wrote the HDF5 file's bytes to it; it is a usage error, with nothing written."""
    import popinfer.io.files

    monkeypatch.setattr(popinfer.io.files, "stdout_is_terminal", lambda: True)
    result = run(_binary_to_stdout(files)[command])
    refused(result, 2, "-o -: stdout is a terminal", "pipe it")
    assert result.stdout == "" and os.listdir() == []


def test_text_export_to_a_terminal_is_fine(files, monkeypatch):
    import popinfer.io.files

    monkeypatch.setattr(popinfer.io.files, "stdout_is_terminal", lambda: True)
    result = run(["export", str(files / "p.h5"), "-o", "-", "--to", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("draw") or "," in result.stdout.splitlines()[0]


def test_a_real_terminal_is_recognised(tmp_path):
    """The check itself, on a pseudo-terminal as stdout (a subprocess: click's runner is no terminal)."""
    import subprocess
    import sys
    import threading

    primary, secondary = os.openpty()
    shown = []

    def drain():  # what reaches the terminal (a full pseudo-terminal would block the writer)
        try:
            while chunk := os.read(primary, 65536):
                shown.append(chunk)
        except OSError:  # the writer closed its end
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        result = subprocess.run([sys.executable, "-m", "popinfer", "fit-individuals", EIGHT, "-o", "-", "--model",
                                 "normal", "--samples", "100", "--quiet"], stdout=secondary, stderr=subprocess.PIPE,
                                cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120)
    finally:
        os.close(secondary)
        reader.join(timeout=10)
        os.close(primary)
    assert b"HDF" not in b"".join(shown)
    assert result.returncode == 2, result.stderr
    assert b"stdout is a terminal" in result.stderr and b"Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []
