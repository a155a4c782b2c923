"""popinfer refine run as fit-individuals runs: --resume after an interruption or a kill, --scheduler
(Dask), --shard and merge, and the refusals that keep a checkpoint from being continued by the wrong run."""

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import popinfer
from popinfer.cli import main
from popinfer.errors import OutputError, UsageError
from popinfer.io.samples import Checkpoint, read_samples
from popinfer.refinement import refine
from test_refine import fitted  # noqa: F401 (the fixture)

# batch_size=1: every refitted object is a batch of its own, so a refit commits several times
RUN = dict(seed=4, min_ess=10, progress=False, batch_size=1)
REAL_COMMIT = Checkpoint.commit


@pytest.fixture(scope="module")
def inputs(fitted):
    """test_refine's six objects (K = 200) and their population fit, in which some have few effective draws."""
    return str(fitted / "s.h5"), str(fitted / "p.h5")


def _counting_commits(monkeypatch, stop_after=None):
    """Record every committed batch (object ids); raise KeyboardInterrupt after the ``stop_after``-th."""
    committed = []

    def commit(self, batch_index, start, result):
        REAL_COMMIT(self, batch_index, start, result)
        committed.append((self.path, batch_index))
        if stop_after is not None and len(committed) == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "commit", commit)
    return committed


def test_resume_after_interruption_gives_the_uninterrupted_file(inputs, tmp_path, reproducible, monkeypatch):
    reference = tmp_path / "reference.h5"
    everything = _counting_commits(monkeypatch)
    refine(*inputs, str(reference), rounds=2, **RUN)
    assert len(everything) >= 4 and not Path(f"{reference}.partial").exists()  # removed once written

    groups = [os.path.basename(path) for path, _ in everything]
    assert groups[0].startswith("round1") and groups[-1].startswith("round2")  # the premise: two rounds
    output = tmp_path / "interrupted.h5"
    stop = next(k for k, name in enumerate(groups) if name.startswith("round2")) + 1  # round 2's first batch
    _counting_commits(monkeypatch, stop_after=stop)
    with pytest.raises(KeyboardInterrupt):
        refine(*inputs, str(output), rounds=2, **RUN)
    assert not output.exists()  # nothing half-written under the output's name
    kept = os.listdir(f"{output}.partial")  # round 1's finished refit and round 2's committed batch
    assert any(n.startswith("round1") and n.endswith(".h5") for n in kept)
    assert any(n.startswith("round2") and n.endswith(".h5.partial") for n in kept)

    resumed = _counting_commits(monkeypatch)
    result = refine(*inputs, str(output), rounds=2, resume=True, **RUN)
    assert len(resumed) == len(everything) - stop  # nothing committed is redone
    assert output.read_bytes() == reference.read_bytes()
    assert not Path(f"{output}.partial").exists()
    assert result.refitted


def test_a_leftover_checkpoint_is_never_silently_discarded_nor_continued_by_another_run(inputs, tmp_path,
                                                                                        monkeypatch):
    output = tmp_path / "out.h5"
    _counting_commits(monkeypatch, stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        refine(*inputs, str(output), rounds=1, **RUN)
    monkeypatch.undo()
    with pytest.raises(OutputError, match="--resume"):
        refine(*inputs, str(output), rounds=1, **RUN)
    for changed in ({"seed": 5}, {"min_ess": 12}, {"rounds": 2}):
        with pytest.raises(OutputError, match="other input files, seed or settings"):
            refine(*inputs, str(output), resume=True, **{**RUN, "rounds": 1, **changed})
    assert os.listdir(f"{output}.partial") and not output.exists()
    refine(*inputs, str(output), rounds=1, overwrite=True, **{**RUN, "seed": 5})
    assert output.exists() and not Path(f"{output}.partial").exists()


def test_a_run_without_seed_resumes_with_the_seed_it_drew(inputs, tmp_path, monkeypatch):
    output = tmp_path / "out.h5"
    _counting_commits(monkeypatch, stop_after=2)
    options = {**RUN, "seed": None}
    with pytest.raises(KeyboardInterrupt):
        refine(*inputs, str(output), rounds=1, **options)
    monkeypatch.undo()
    result = refine(*inputs, str(output), rounds=1, resume=True, **options)
    drawn = result.samples.settings["refinement"][0]["seed"]
    assert result.samples.seed == drawn and output.exists()


def test_resume_needs_a_file_output(inputs):
    with pytest.raises(UsageError, match="--resume needs a file output"):
        refine(*inputs, "-", resume=True, **RUN)
    with pytest.raises(UsageError, match="--resume needs a file output"):
        refine(*inputs, resume=True, **RUN)
    with pytest.raises(UsageError, match="--batch-size"):
        refine(*inputs, **{**RUN, "batch_size": 0})


def test_cli_interrupted_refine_says_how_to_resume_and_resumes(inputs, tmp_path, reproducible, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["refine", *inputs, "-o", "r.h5", "--seed", "4", "--min-ess", "10", "--rounds", "1", "--batch-size", "1",
            "--quiet"]
    _counting_commits(monkeypatch, stop_after=2)
    interrupted = runner.invoke(main, args)
    assert interrupted.exit_code == 1 and "r.h5.partial" in interrupted.stderr and "--resume" in interrupted.stderr
    assert "Traceback" not in interrupted.output and not (tmp_path / "r.h5").exists()
    monkeypatch.setattr(Checkpoint, "commit", REAL_COMMIT)
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1 and "--resume" in refused.stderr and "Traceback" not in refused.output
    resumed = runner.invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    whole = runner.invoke(main, [*args[:4], "whole.h5", *args[5:]])
    assert whole.exit_code == 0, whole.output
    # the recorded command names the output; equal but for that
    a, b = popinfer.io.samples.read_samples("r.h5"), popinfer.io.samples.read_samples("whole.h5")
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.log_interim_prior, b.log_interim_prior)
    assert a.settings == b.settings
    bad = runner.invoke(main, [*args[:4], "-", *args[5:], "--resume"])
    assert bad.exit_code == 2 and "--resume" in bad.stderr


def test_refits_on_a_local_dask_cluster_give_the_same_file(inputs, tmp_path, reproducible):
    pytest.importorskip("distributed")
    local, dask = tmp_path / "local.h5", tmp_path / "dask.h5"
    refine(*inputs, str(local), rounds=1, **{**RUN, "batch_size": 2})
    refine(*inputs, str(dask), rounds=1, scheduler="local:2", **{**RUN, "batch_size": 2})
    assert dask.read_bytes() == local.read_bytes()


def test_shards_merged_equal_the_unsharded_file(inputs, tmp_path, reproducible, monkeypatch):
    """Three shards of the refits (batches of one object: one per refitted object, at least three
    here, or a shard would hold none and be refused) and of the kept objects, merged under the
    unsharded run's output name, give its file byte for byte."""
    runner = CliRunner()
    args = ["refine", *inputs, "--seed", "4", "--min-ess", "10", "--rounds", "1", "--batch-size", "1", "--quiet"]
    for directory in ("whole", "shards", "merged"):
        (tmp_path / directory).mkdir()
    monkeypatch.chdir(tmp_path / "whole")
    whole = runner.invoke(main, [*args, "-o", "r.h5"])
    assert whole.exit_code == 0, whole.output
    monkeypatch.chdir(tmp_path / "shards")
    for i in (1, 2, 3):
        part = runner.invoke(main, [*args, "-o", f"part{i}.h5", "--shard", f"{i}/3"])
        assert part.exit_code == 0, part.output
        assert f"Shard {i}/3" in part.stderr and "popinfer merge" in part.stderr
        assert not Path(f"part{i}.h5.partial").exists()
    monkeypatch.chdir(tmp_path / "merged")
    merged = runner.invoke(main, ["merge", "../shards/part2.h5", "../shards/part3.h5", "../shards/part1.h5",
                                  "-o", "r.h5"])
    assert merged.exit_code == 0, merged.output
    assert (tmp_path / "merged" / "r.h5").read_bytes() == (tmp_path / "whole" / "r.h5").read_bytes()
    from popinfer.io.samples import merge_shards  # and in memory
    joined = merge_shards([str(tmp_path / "shards" / f"part{i}.h5") for i in (3, 1, 2)])
    reference = popinfer.io.samples.read_samples(str(tmp_path / "whole" / "r.h5"))
    assert joined.ids == reference.ids and joined.settings == reference.settings
    for key in ("samples", "log_interim_prior", "log_likelihood", "draw_counts", "joint_interim"):
        np.testing.assert_array_equal(getattr(joined, key), getattr(reference, key))


def test_shard_refusals(inputs, tmp_path):
    runner = CliRunner()
    base = ["refine", *inputs, "--seed", "4", "--min-ess", "10", "--quiet"]
    both = runner.invoke(main, [*base, "-o", str(tmp_path / "x.h5"), "--shard", "1/2", "--rounds", "2"])
    assert both.exit_code == 2 and "--shard" in both.stderr and "--rounds" in both.stderr
    for bad in ("two", "3/2", "0/2"):
        result = runner.invoke(main, [*base, "-o", str(tmp_path / "x.h5"), "--shard", bad])
        assert result.exit_code == 2 and "I/N" in result.stderr
    empty = runner.invoke(main, [*base, "-o", str(tmp_path / "x.h5"), "--shard", "1/7", "--min-ess", "1e-9"])
    assert empty.exit_code == 2 and "no object" in empty.stderr and "Traceback" not in empty.output
    assert os.listdir(tmp_path) == []


def test_what_is_in_the_way_of_the_checkpoint_is_never_touched(inputs, tmp_path):
    output = tmp_path / "out.h5"
    in_the_way = Path(f"{output}.partial")
    in_the_way.write_text("not popinfer's")
    for options in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(OutputError, match="not a directory"):
            refine(*inputs, str(output), rounds=1, **RUN, **options)
    assert in_the_way.read_text() == "not popinfer's" and not output.exists()
    in_the_way.unlink()
    in_the_way.mkdir()
    (in_the_way / "run.json").write_text("{damaged")
    with pytest.raises(OutputError, match="damaged"):
        refine(*inputs, str(output), rounds=1, resume=True, **RUN)


@pytest.mark.slow  # three CLI processes; the in-process interruption above covers resume in the default suite
def test_sigkill_then_resume_gives_the_uninterrupted_file(inputs, tmp_path):
    """A refine killed outright (no cleanup runs) mid-refit resumes into the uninterrupted file."""
    from test_robustness import popinfer_process, wait_for_progress

    # --min-ess above K = 200 flags all six objects: six refits, two committed before the kill
    args = ["refine", *inputs, "-o", "r.h5", "--seed", "4", "--min-ess", "1000", "--rounds", "1", "--batch-size", "1"]
    for directory in ("ref", "run"):
        (tmp_path / directory).mkdir()
    reference = popinfer_process([*args, "--quiet"], tmp_path / "ref")
    assert reference.wait(timeout=300) == 0
    (record,) = read_samples(str(tmp_path / "ref" / "r.h5")).settings["refinement"]
    refits = len(record["objects"])  # one batch per refitted object (--batch-size 1)
    assert refits >= 3
    run = popinfer_process(args, tmp_path / "run")
    assert wait_for_progress(run, refits, 2)  # two of the refits committed, not all
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    partial = tmp_path / "run" / "r.h5.partial"
    assert os.listdir(partial) and not (tmp_path / "run" / "r.h5").exists()
    resumed = popinfer_process([*args, "--quiet", "--resume"], tmp_path / "run")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert (tmp_path / "run" / "r.h5").read_bytes() == (tmp_path / "ref" / "r.h5").read_bytes()
    assert not partial.exists()


def test_a_bad_scheduler_is_refused_and_leaves_nothing(inputs, tmp_path):
    pytest.importorskip("distributed")
    with pytest.raises(UsageError, match="local:N"):
        refine(*inputs, str(tmp_path / "r.h5"), rounds=1, scheduler="local:zero", **RUN)
    assert os.listdir(tmp_path) == []
