"""An object id given to two objects of a samples file (crafted, overlapping shards, a library
caller's Samples) is refused where the file is read and never written: stage two would count
that object twice."""

import shutil

import h5py
import numpy as np
import pytest

import popinfer
from conftest import SAMPLE_DATA, cli, refused
from popinfer.errors import FileFormatError, InputDataError
from popinfer.io.samples import read_samples, write_samples

EIGHT = str(SAMPLE_DATA / "eight_schools.csv")


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    directory = tmp_path_factory.mktemp("duplicates")
    popinfer.fit_individuals(EIGHT, "normal", str(directory / "s.h5"), n_draws=100, seed=1, progress=False)
    for i in (1, 2):
        popinfer.fit_individuals(EIGHT, "normal", str(directory / f"part{i}.h5"), n_draws=100, seed=1,
                                 progress=False, batch_size=4, shard=(i, 2))
    return directory


def _rename(path, row, object_id):
    with h5py.File(path, "r+") as handle:
        handle["objects/id"][row] = object_id


def test_a_file_with_a_repeated_id_is_refused_on_reading(eight, tmp_path):
    crafted = tmp_path / "dup.h5"
    shutil.copy(eight / "s.h5", crafted)
    _rename(crafted, 5, "B")  # rows 2 and 6 both 'B'
    with pytest.raises(FileFormatError, match=r"'B' more than once \(rows 2 and 6 of /objects/id"):
        read_samples(str(crafted))
    refused(cli(["summary", str(crafted)]), 1, str(crafted), "'B'", "rows 2 and 6")
    result = cli(["fit-population", str(crafted), "-o", str(tmp_path / "p.h5"), "--population", "normal",
                  "--quiet"])
    refused(result, 1, str(crafted), "'B'", "rows 2 and 6")
    assert not (tmp_path / "p.h5").exists()


def test_samples_with_a_repeated_id_are_never_written(eight, tmp_path):
    samples = read_samples(str(eight / "s.h5"))
    samples.ids[7] = samples.ids[0]
    with pytest.raises(InputDataError, match=r"'A' is given to several objects \(rows 1 and 8"):
        write_samples(samples, str(tmp_path / "out.h5"))
    assert list(tmp_path.iterdir()) == []


def test_overlapping_shards_are_not_merged(eight, tmp_path):
    for i in (1, 2):
        shutil.copy(eight / f"part{i}.h5", tmp_path / f"part{i}.h5")
    assert cli(["merge", str(tmp_path / "part1.h5"), str(tmp_path / "part2.h5"), "-o",
                str(tmp_path / "ok.h5")]).exit_code == 0
    first = read_samples(str(tmp_path / "part1.h5")).ids[0]
    _rename(tmp_path / "part2.h5", 0, first)  # shard 2 now holds an object of shard 1
    result = cli(["merge", str(tmp_path / "part1.h5"), str(tmp_path / "part2.h5"), "-o", str(tmp_path / "m.h5")])
    refused(result, 1, repr(first), "part1.h5", "part2.h5", "overlap")
    assert not (tmp_path / "m.h5").exists()


def test_import_samples_joins_an_objects_scattered_rows(tmp_path):
    """Rows of one object need not be adjacent: they make one object, never two of the same id."""
    (tmp_path / "draws.csv").write_text("star,ecc,log_prior\na,0.1,0\nb,0.2,0\na,0.3,0\nb,0.4,0\n")
    assert cli(["import-samples", str(tmp_path / "draws.csv"), "-o", str(tmp_path / "s.h5")]).exit_code == 0
    samples = read_samples(str(tmp_path / "s.h5"))
    assert samples.ids == ["a", "b"]
    np.testing.assert_array_equal(np.sort(samples.samples[0, :, 0]), [0.1, 0.3])
