"""--shard I/N and popinfer merge: shards joined equal the unsharded file; bad sets are refused."""

import os

import pytest
from click.testing import CliRunner

from conftest import SAMPLE_DATA
from popinfer.cli import main

RATS = str(SAMPLE_DATA / "rat_tumors.csv")
ARGS = ["fit-individuals", RATS, "--model", "binomial", "--samples", "200", "--walkers", "16", "--batch-size", "10",
        "--quiet"]


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shards")
    old = os.getcwd()
    os.chdir(directory)
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        for i in (1, 2, 3):
            assert run([*ARGS, "-o", f"part{i}.h5", "--seed", "4", "--shard", f"{i}/3"]).exit_code == 0
        assert run([*ARGS, "-o", "other.h5", "--seed", "5", "--shard", "3/3"]).exit_code == 0
        (directory / "whole").mkdir()
        os.chdir(directory / "whole")
        assert run([*ARGS, "-o", "samples.h5", "--seed", "4"]).exit_code == 0
    finally:
        os.chdir(old)
        del os.environ["SOURCE_DATE_EPOCH"]
    return directory


def test_merged_shards_equal_the_unsharded_file_byte_for_byte(shards, monkeypatch):
    """Merged under the same name as the unsharded run's output (the recorded
    command names the output), the file is the same, byte for byte."""
    (shards / "merged").mkdir(exist_ok=True)
    monkeypatch.chdir(shards / "merged")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    result = run(["merge", "../part3.h5", "../part1.h5", "../part2.h5", "-o", "samples.h5"])
    assert result.exit_code == 0, result.stderr
    assert (shards / "merged" / "samples.h5").read_bytes() == (shards / "whole" / "samples.h5").read_bytes()


@pytest.mark.parametrize("files, fragment", [
    (["part1.h5", "part2.h5"], "Shard(s) 3/3 are missing"),
    (["part1.h5", "part1.h5", "part2.h5", "part3.h5"], "given twice"),
    (["part1.h5", "part2.h5", "other.h5"], "different data, model, priors, settings or seed"),
    (["part1.h5", "whole/samples.h5"], "not a shard"),
])
def test_merge_refuses_bad_sets(shards, monkeypatch, files, fragment):
    monkeypatch.chdir(shards)
    result = run(["merge", *files, "-o", "bad.h5"])
    assert result.exit_code == 1 and fragment in result.stderr and not (shards / "bad.h5").exists()


def test_shard_usage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "expected I/N" in run([*ARGS, "-o", "x.h5", "--shard", "two"]).stderr
    assert "1 <= I <= N" in run([*ARGS, "-o", "x.h5", "--shard", "4/3"]).stderr
    assert "would be empty" in run([*ARGS, "-o", "x.h5", "--shard", "1/20"]).stderr  # 8 batches only
