"""User code named by a relative path (``--population pop.py:f``, ``--model model.py:f``) is found
again by the commands that re-load it (refine, plot --trust-code) from any working directory: the
file's absolute path and SHA-256 are recorded, and a file moved with the output is found beside it."""

import os
import shutil

import pandas as pd
import pytest

from conftest import SAMPLE_DATA, cli, refused
from popinfer.io.population import read_population
from popinfer.io.samples import read_samples

POP_FAST = ["--samples", "100", "--walkers", "8", "--max-steps", "300", "--reweighted", "5", "--seed", "2", "--quiet"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Stage one with a user model and stage two with a user population, both named by relative paths
    from the directory ``work``."""
    root = tmp_path_factory.mktemp("code")
    work = root / "work"
    work.mkdir()
    shutil.copy(SAMPLE_DATA / "decay_model.py", work / "decay_model.py")
    shutil.copy(SAMPLE_DATA / "halfnormal_population.py", work / "halfnormal_population.py")
    frame = pd.read_csv(SAMPLE_DATA / "decay.csv")
    frame[frame["source"].isin(sorted(set(frame["source"]))[:4])].to_csv(work / "decay.csv", index=False)
    old = os.getcwd()
    os.chdir(work)
    try:
        result = cli(["fit-individuals", "decay.csv", "-o", "s.h5", "--model", "decay_model.py:decay",
                      "--samples", "200", "--walkers", "16", "--seed", "1", "--quiet"])
        assert result.exit_code == 0, result.output
        result = cli(["fit-population", "s.h5", "-o", "p.h5", "--parameter", "rate", "--population",
                      "halfnormal_population.py:halfnormal", *POP_FAST])
        assert result.exit_code == 0, result.output
    finally:
        os.chdir(old)
    return root


def test_the_code_files_are_recorded_with_their_digests(fitted):
    work = fitted / "work"
    assert read_population(str(work / "p.h5")).source["population"]["path"] == str(work / "halfnormal_population.py")
    assert read_samples(str(work / "s.h5")).settings["model_code"]["path"] == str(work / "decay_model.py")


def test_refine_and_plot_from_another_directory(fitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = fitted / "work"
    result = cli(["plot", str(work / "p.h5"), "-o", "pop.png", "--trust-code"])
    assert result.exit_code == 0, result.output
    # every object refitted, then the population fitted again: both user functions loaded
    result = cli(["refine", str(work / "s.h5"), str(work / "p.h5"), "-o", "r.h5", "--trust-code", "--rounds", "1",
                  "--min-ess", "1000000", "--seed", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(read_samples("r.h5").ids) == 4


def test_moved_code_is_found_beside_the_file_or_named(fitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work, moved = fitted / "work", tmp_path / "moved"
    moved.mkdir()
    for name in ("s.h5", "p.h5", "decay.csv"):
        shutil.copy(work / name, moved / name)
    away = fitted / "away"
    away.mkdir(exist_ok=True)
    for name in ("decay_model.py", "halfnormal_population.py"):
        shutil.move(work / name, away / name)
    try:
        plot = ["plot", str(moved / "p.h5"), "-o", "pop.png", "--trust-code"]
        refused(cli(plot), 1, str(work / "halfnormal_population.py"), str(moved / "halfnormal_population.py"))
        refine = ["refine", str(moved / "s.h5"), str(moved / "p.h5"), "-o", "r.h5", "--trust-code", "--quiet"]
        refused(cli(refine), 1, str(work / "decay_model.py"), str(moved / "decay_model.py"))
        shutil.copy(away / "decay_model.py", moved / "decay_model.py")
        refused(cli(refine), 1, str(work / "halfnormal_population.py"))
        assert not os.path.exists("r.h5") and not os.path.exists("r.h5.partial")
        shutil.copy(away / "halfnormal_population.py", moved / "halfnormal_population.py")
        result = cli(refine)
        assert result.exit_code == 0, result.output
        result = cli(plot)
        assert result.exit_code == 0, result.output
        with open(moved / "halfnormal_population.py", "a") as handle:
            handle.write("# edited\n")
        refused(cli(plot + ["--overwrite"]), 1, str(moved / "halfnormal_population.py"), "SHA-256")
    finally:
        for name in ("decay_model.py", "halfnormal_population.py"):
            shutil.move(away / name, work / name)


def _with_recorded_path(source_file, destination, path):
    """A copy of a population file whose record of its code points at ``path``."""
    import json

    import h5py

    shutil.copy(source_file, destination)
    with h5py.File(destination, "r+") as handle:
        source = json.loads(handle.attrs["source"])
        source["population"]["path"] = str(path)
        handle.attrs["source"] = json.dumps(source)


def test_the_trust_question_names_the_file_that_would_run(fitted, tmp_path, monkeypatch):
    """A file's record could point anywhere: the refusal without --trust-code names the file that
    would run, not only the spec as written (which, from ``work``, names another file)."""
    work = fitted / "work"
    other = tmp_path / "elsewhere" / "other.py"
    other.parent.mkdir()
    shutil.copy(work / "halfnormal_population.py", other)  # the recorded SHA-256, so it would be chosen
    _with_recorded_path(work / "p.h5", tmp_path / "p.h5", other)
    monkeypatch.chdir(work)
    # plot leaves an untrusted density out of the figure, with the refusal as a warning
    result = cli(["plot", str(tmp_path / "p.h5"), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 0, result.output
    assert f"If you trust {other}, pass --trust-code" in result.output
    refused(cli(["refine", str(work / "s.h5"), str(tmp_path / "p.h5"), "-o", str(tmp_path / "r.h5"), "--quiet"]), 2,
            f"If you trust {work / 'decay_model.py'}, pass --trust-code")


def test_the_candidate_with_the_recorded_digest_is_chosen(fitted, tmp_path, monkeypatch):
    """The recorded path holds an edited file, the one beside the population file is the recorded
    code: that one is run (the first file found used to be taken, and refused)."""
    work = fitted / "work"
    edited = tmp_path / "edited" / "halfnormal_population.py"
    edited.parent.mkdir()
    shutil.copy(work / "halfnormal_population.py", edited)
    with open(edited, "a") as handle:
        handle.write("# edited\n")
    moved = tmp_path / "moved"
    moved.mkdir()
    _with_recorded_path(work / "p.h5", moved / "p.h5", edited)
    shutil.copy(work / "halfnormal_population.py", moved / "halfnormal_population.py")
    monkeypatch.chdir(tmp_path)
    result = cli(["plot", str(moved / "p.h5"), "-o", "pop.png", "--trust-code"])
    assert result.exit_code == 0, result.output
    os.remove(moved / "halfnormal_population.py")  # now no candidate has the recorded digest
    refused(cli(["plot", str(moved / "p.h5"), "-o", "pop2.png", "--trust-code"]), 1, str(edited), "SHA-256")
