"""The command line through click's CliRunner: exit status, stdout and stderr apart."""

import json
import os
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from conftest import ROOT, SAMPLE_DATA, write_csv
from popinfer.cli import main

EIGHT = str(SAMPLE_DATA / "eight_schools.csv")
FAST = ["--samples", "200", "--walkers", "16", "--quiet"]


def run(args, **kwargs):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)


@pytest.fixture
def eight_file(in_tmp):
    result = run(["fit-individuals", EIGHT, "-o", "eight.h5", "--model", "normal", "--seed", "1", *FAST])
    assert result.exit_code == 0, result.output
    return in_tmp / "eight.h5"


def test_every_command_has_help_with_an_example():
    for name, command in main.commands.items():
        result = run([name, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output, name
    assert "Example:" in run(["--help"]).output


def test_version():
    result = run(["--version"])
    assert result.exit_code == 0 and "popinfer" in result.output


def test_fit_individuals_writes_a_samples_file_and_records_the_command(eight_file):
    with h5py.File(eight_file) as handle:
        assert handle.attrs["popinfer_format"] == "samples"
        assert handle["samples"].shape == (8, 200, 1)
        command = handle.attrs["command"]
    assert command.startswith("popinfer fit-individuals ") and "--seed 1" in command
    assert "--quiet" not in command  # run-control options are not part of the result


def test_summary_in_three_formats(eight_file):
    table = run(["summary", "eight.h5"])
    assert table.exit_code == 0 and "theta" in table.stdout and table.stdout.count("\n") == 9
    csv = run(["summary", "eight.h5", "--format", "csv"])
    assert csv.stdout.splitlines()[0].startswith("object,parameter,mean,sd,q05,q50,q95")
    records = json.loads(run(["summary", "eight.h5", "--format", "json"]).stdout)
    assert [r["object"] for r in records] == list("ABCDEFGH")
    assert abs(records[0]["mean"] - 28) < 3 and records[0]["converged"] is True


def test_inspect(eight_file):
    result = run(["inspect", "eight.h5"])
    assert result.exit_code == 0
    assert "popinfer_format: samples" in result.stdout and "/samples  (8, 200, 1)" in result.stdout


def test_stdout_output_and_stdin_input(in_tmp):
    fitted = run(["fit-individuals", EIGHT, "-o", "-", "--model", "normal", "--seed", "1", *FAST])
    assert fitted.exit_code == 0
    assert fitted.stdout_bytes[:8] == b"\x89HDF\r\n\x1a\n"
    summary = run(["summary", "-", "--format", "csv"], input=fitted.stdout_bytes)
    assert summary.exit_code == 0 and summary.stdout.count("\n") == 9
    from_stdin = run(["fit-individuals", "-", "-o", "x.h5", "--model", "normal", "--seed", "1", *FAST],
                     input=Path(EIGHT).read_text())
    assert from_stdin.exit_code == 0 and Path("x.h5").exists()


def test_radon_with_id_and_column_options(in_tmp):
    result = run(["fit-individuals", str(SAMPLE_DATA / "mn_radon.csv"), "-o", "radon.h5", "--model", "normal",
                  "--id-column", "county", "--column", "y=log_radon", "--seed", "2", *FAST])
    assert result.exit_code == 0, result.output
    with h5py.File("radon.h5") as handle:
        assert handle["objects/id"].shape == (85,)
        assert list(handle["samples"].attrs["parameters"]) == ["theta", "scatter"]


def test_user_model_end_to_end(in_tmp):
    model = f"{SAMPLE_DATA / 'decay_model.py'}:decay"
    result = run(["fit-individuals", str(SAMPLE_DATA / "decay.csv"), "-o", "decay.h5", "--model", model,
                  "--seed", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    import numpy as np
    import pandas as pd
    import popinfer

    samples = popinfer.read_samples("decay.h5")
    truth = pd.read_csv(SAMPLE_DATA / "decay_truth.csv")
    assert samples.ids == list(truth["source"])
    covered = []
    for parameter in ("amplitude", "rate"):
        low, high = np.quantile(samples.draws(parameter), [0.05, 0.95], axis=1)
        covered.extend((low <= truth[parameter]) & (truth[parameter] <= high))
    # 40 intervals of 90 %: fewer than 30 covered has probability < 1e-3 (binomial).
    assert sum(covered) >= 30


def test_linear_fix_intercept(in_tmp):
    data = write_csv("line.csv", "id,x,y\n" + "".join(f"a,{x},{2 * x + 0.1 * (-1) ** x}\n" for x in range(8)))
    result = run(["fit-individuals", data, "-o", "line.h5", "--model", "linear", "--fix", "intercept=0",
                  "--seed", "1", *FAST])
    assert result.exit_code == 0, result.output
    with h5py.File("line.h5") as handle:
        assert list(handle["samples"].attrs["parameters"]) == ["slope", "scatter"]
        assert abs(handle["samples"][0, :, 0].mean() - 2) < 0.05


def test_strict_turns_a_convergence_warning_into_exit_3(in_tmp):
    args = ["fit-individuals", EIGHT, "-o", "short.h5", "--model", "normal", "--seed", "1", "--max-steps", "120",
            "--samples", "100", "--walkers", "16", "--quiet"]
    lenient = run(args)
    assert lenient.exit_code == 0
    assert "did not reach 50 autocorrelation times" in lenient.stderr and "'A'" in lenient.stderr
    strict = run(args[:3] + ["strict.h5"] + args[4:] + ["--strict"])
    assert strict.exit_code == 3 and Path("strict.h5").exists()


BAD_INPUTS = [
    # (csv text, extra args, exit code, fragments the message must contain)
    ("school,value,sigma\nA,1,2\n", [], 1, ["no column 'y'", "--column y=NAME"]),
    ("school,y,sigma\nA,1,2\nB,abc,2\n", [], 1, ["row 2 (object 'B')", "column 'y'", "'abc'"]),
    ("school,y,sigma\nA,1,2\nB,NaN,2\n", [], 1, ["row 2", "column 'y'", "NaN"]),
    ("school,y,sigma\nA,inf,2\n", [], 1, ["row 1", "column 'y'", "inf"]),
    ("school,y,sigma\nA,1,\n", [], 1, ["row 1", "column 'sigma'", "empty cell"]),
    ("school,y,sigma\nA,1,0\n", [], 1, ["row 1 (object 'A')", "column 'sigma'", "sigma > 0"]),
    ("school,y,sigma\nA,1,-2\n", [], 1, ["column 'sigma'", "'-2'"]),
    ("school,y,sigma\n", [], 1, ["no data rows"]),
    ("", [], 1, ["is empty"]),
    ("school,y,sigma\nA,1,2,9\n", [], 1, ["well-formed", "fields"]),
    ("school,y,sigma\nA,1,2\nB,1\n", [], 1, ["row 2 (object 'B')", "column 'sigma'", "empty cell"]),
    ("school,y,sigma\nA,1,2\n", ["--model", "nrmal"], 2, ["Unknown model 'nrmal'"]),
    ("school,y,sigma\nA,1,2\n", ["--prior", "theta=normal(0)"], 2, ["'normal(0)'", "2 argument"]),
    ("school,y,sigma\nA,1,2\n", ["--prior", "theta=foo(1)"], 2, ["Unknown distribution 'foo'"]),
    ("school,y,sigma\nA,1,2\n", ["--prior", "tau=normal(0, 1)"], 2, ["no parameter 'tau'", "theta"]),
    ("school,y,sigma\nA,1,2\n", ["--fix", "theta"], 2, ["'theta'", "NAME=NUMBER"]),
    ("school,y,sigma\nA,1,2\n", ["--column", "q=y"], 2, ["no column role 'q'"]),
    ("school,y,sigma\nA,1,2\n", ["--id-column", "nope"], 2, ["--id-column 'nope'"]),
    ("school,y,sigma\nA,1,2\n", ["--walkers", "3"], 2, ["--walkers 3"]),
    ("school,y,sigma\nA,1,2\n", ["--max-steps", "10"], 2, ["--max-steps 10"]),
]


@pytest.mark.parametrize("text, extra, code, fragments", BAD_INPUTS)
def test_bad_input_is_a_clear_error_and_writes_nothing(in_tmp, text, extra, code, fragments):
    data = write_csv("data.csv", text)
    args = ["fit-individuals", data, "-o", "out.h5", "--seed", "1", *FAST]
    if "--model" not in extra:
        args += ["--model", "normal"]
    result = run(args + extra)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    if code == 1:
        assert "data.csv" in result.stderr or "Unknown" in result.stderr or "--" in result.stderr
    assert sorted(os.listdir(in_tmp)) == ["data.csv"]


@pytest.mark.parametrize("text, fragments", [
    ("trial,k,n\nT1,5,4\n", ["row 1 (object 'T1')", "column 'k'", "k <= n"]),
    ("trial,k,n\nT1,-1,4\n", ["column 'k'", "'-1'"]),
    ("trial,k,n\nT1,1,-4\n", ["column 'n'", "'-4'"]),
])
def test_binomial_bad_counts(in_tmp, text, fragments):
    data = write_csv("data.csv", text)
    result = run(["fit-individuals", data, "-o", "out.h5", "--model", "binomial", *FAST])
    assert result.exit_code == 1
    for fragment in fragments:
        assert fragment in result.stderr
    assert not Path("out.h5").exists()


def test_poisson_negative_count(in_tmp):
    data = write_csv("data.csv", "id,count\nA,3\nB,-1\n")
    result = run(["fit-individuals", data, "-o", "out.h5", "--model", "poisson", *FAST])
    assert result.exit_code == 1 and "row 2 (object 'B'), column 'count'" in result.stderr


def test_binary_and_missing_data_files(in_tmp):
    Path("blob.csv").write_bytes(bytes(range(256)) * 4)
    result = run(["fit-individuals", "blob.csv", "-o", "out.h5", "--model", "normal", *FAST])
    assert result.exit_code == 1 and "blob.csv" in result.stderr and "UTF-8" in result.stderr
    result = run(["fit-individuals", "missing.csv", "-o", "out.h5", "--model", "normal", *FAST])
    assert result.exit_code == 1 and "'missing.csv' does not exist" in result.stderr
    assert not Path("out.h5").exists()


@pytest.mark.parametrize("function, code, fragments", [
    ("raises", 1, ["raised RuntimeError on object 'A'", "boom"]),
    ("returns_nan", 1, ["returned nan as the log-likelihood of object '", "finite or -inf"]),
    ("wrong_shape", 1, ["returned shape (3,) on object 'A'"]),
    ("no_parameters", 2, ["`parameters` attribute"]),
    ("missing_function", 2, ["defines no function 'missing_function'"]),
])
def test_user_model_failures_name_the_object(in_tmp, function, code, fragments):
    data = write_csv("data.csv", "id,y\nA,1\nB,2\n")
    model = f"{ROOT / 'tests' / 'models_for_tests.py'}:{function}"
    result = run(["fit-individuals", data, "-o", "out.h5", "--model", model, *FAST])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert sorted(os.listdir(in_tmp)) == ["data.csv"]


def test_user_model_file_that_does_not_exist(in_tmp):
    data = write_csv("data.csv", "id,y\nA,1\n")
    result = run(["fit-individuals", data, "-o", "out.h5", "--model", "nowhere.py:f", *FAST])
    assert result.exit_code == 2 and "'nowhere.py' does not exist" in result.stderr


def test_existing_output_needs_overwrite(eight_file):
    before = eight_file.read_bytes()
    result = run(["fit-individuals", EIGHT, "-o", "eight.h5", "--model", "normal", "--seed", "2", *FAST])
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert eight_file.read_bytes() == before
    result = run(["fit-individuals", EIGHT, "-o", "eight.h5", "--model", "normal", "--seed", "2", "--overwrite", *FAST])
    assert result.exit_code == 0 and eight_file.read_bytes() != before


def test_output_in_a_missing_directory(in_tmp):
    result = run(["fit-individuals", EIGHT, "-o", "nowhere/out.h5", "--model", "normal", *FAST])
    assert result.exit_code == 1 and "directory nowhere does not exist" in result.stderr


def test_summary_of_files_that_are_not_samples_files(in_tmp):
    Path("text.h5").write_text("not hdf5")
    result = run(["summary", "text.h5"])
    assert result.exit_code == 1 and "text.h5 is not a readable HDF5 file" in result.stderr
    with h5py.File("other.h5", "w") as handle:
        handle["x"] = [1, 2]
    result = run(["summary", "other.h5"])
    assert result.exit_code == 1 and "not one written by popinfer" in result.stderr
    with h5py.File("future.h5", "w") as handle:
        handle.attrs["popinfer_format"] = "samples"
        handle.attrs["format_version"] = 2
    result = run(["inspect", "future.h5"])
    assert result.exit_code == 1 and "format_version 2" in result.stderr and "future.h5" in result.stderr


def test_interrupt_message_says_how_to_resume(in_tmp, monkeypatch):
    from popinfer.io.samples import Checkpoint

    real_commit = Checkpoint.commit

    def interrupt(self, batch_index, start, result):
        real_commit(self, batch_index, start, result)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "commit", interrupt)
    result = run(["fit-individuals", EIGHT, "-o", "eight.h5", "--model", "normal", *FAST])
    assert result.exit_code == 1
    assert "--resume" in result.stderr and "eight.h5.partial" in result.stderr
    assert not Path("eight.h5").exists()
