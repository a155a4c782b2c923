"""Reproducibility, checkpointing and --resume of stage one."""

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import popinfer
from conftest import SAMPLE_DATA
from popinfer.errors import OutputError
from popinfer.io.samples import Checkpoint

RATS = str(SAMPLE_DATA / "rat_tumors.csv")
FAST = dict(n_draws=200, n_walkers=16, batch_size=10, progress=False)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, reproducible):
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    popinfer.fit_individuals(RATS, "binomial", one, seed=11, workers=1, **FAST)
    popinfer.fit_individuals(RATS, "binomial", two, seed=11, workers=2, **FAST)
    assert one.read_bytes() == two.read_bytes()
    other = tmp_path / "other.h5"
    popinfer.fit_individuals(RATS, "binomial", other, seed=12, workers=1, **FAST)
    assert other.read_bytes() != one.read_bytes()


def test_resume_after_interruption_gives_the_uninterrupted_file(tmp_path, reproducible, monkeypatch):
    reference = tmp_path / "reference.h5"
    popinfer.fit_individuals(RATS, "binomial", reference, seed=3, **FAST)

    interrupted = tmp_path / "interrupted.h5"
    real_commit = Checkpoint.commit
    calls = []

    def commit_then_interrupt(self, batch_index, start, result):
        real_commit(self, batch_index, start, result)
        calls.append(batch_index)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "commit", commit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        popinfer.fit_individuals(RATS, "binomial", interrupted, seed=3, **FAST)
    monkeypatch.setattr(Checkpoint, "commit", real_commit)
    assert not interrupted.exists()
    partial = Path(f"{interrupted}.partial")
    with h5py.File(partial, "r") as handle:
        assert handle.attrs["batches_committed"] == 3

    resumed_batches = []

    def counting_commit(self, batch_index, start, result):
        resumed_batches.append(batch_index)
        real_commit(self, batch_index, start, result)

    monkeypatch.setattr(Checkpoint, "commit", counting_commit)
    popinfer.fit_individuals(RATS, "binomial", interrupted, seed=3, resume=True, **FAST)
    assert resumed_batches == list(range(3, 8))  # 71 objects in batches of 10: nothing redone
    assert not partial.exists()
    assert interrupted.read_bytes() == reference.read_bytes()


def test_a_leftover_checkpoint_is_never_silently_discarded(tmp_path, monkeypatch):
    output = tmp_path / "out.h5"
    real_commit = Checkpoint.commit

    def interrupt(self, batch_index, start, result):
        real_commit(self, batch_index, start, result)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "commit", interrupt)
    with pytest.raises(KeyboardInterrupt):
        popinfer.fit_individuals(RATS, "binomial", output, seed=3, **FAST)
    monkeypatch.undo()
    with pytest.raises(OutputError, match="--resume"):
        popinfer.fit_individuals(RATS, "binomial", output, seed=3, **FAST)
    with pytest.raises(OutputError, match="other data, model, priors, settings or seed"):
        popinfer.fit_individuals(RATS, "binomial", output, seed=4, resume=True, **FAST)
    popinfer.fit_individuals(RATS, "binomial", output, seed=4, overwrite=True, **FAST)
    assert output.exists() and not Path(f"{output}.partial").exists()


def test_existing_output_is_kept_without_overwrite(tmp_path):
    output = tmp_path / "out.h5"
    output.write_bytes(b"precious")
    with pytest.raises(OutputError, match="--overwrite"):
        popinfer.fit_individuals(RATS, "binomial", output, seed=1, **FAST)
    assert output.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["out.h5"]


def test_round_trip_through_the_file(tmp_path):
    output = tmp_path / "out.h5"
    fitted = popinfer.fit_individuals(RATS, "binomial", output, seed=1, **FAST)
    read = popinfer.read_samples(output)
    assert read.ids == fitted.ids and read.parameters == ["p"]
    np.testing.assert_array_equal(read.samples, fitted.samples)
    np.testing.assert_array_equal(read.log_likelihood, fitted.log_likelihood)
    for key in fitted.diagnostics:
        np.testing.assert_array_equal(read.diagnostics[key], fitted.diagnostics[key])
    assert read.interim_prior == {"p": "uniform(0.0, 1.0)"}
    assert read.settings["samples"] == 200 and read.seed == 1
    assert read.attrs["popinfer_format"] == "samples" and read.attrs["format_version"] == 1
    # log_interim_prior and log_likelihood are what they claim to be.
    np.testing.assert_allclose(read.log_interim_prior, 0.0)
    from scipy import stats
    import pandas as pd
    table = pd.read_csv(RATS)
    expected = stats.binom.logpmf(table["k"].to_numpy()[:, None], table["n"].to_numpy()[:, None], read.samples[:, :, 0])
    np.testing.assert_allclose(read.log_likelihood, expected, rtol=1e-10)
