"""Outputs that are not files, and import-samples' tables, refused with a message naming the
option, file, dataset or row at fault: exit 1 or 2, no traceback, nothing written."""

import os
import stat

import h5py
import numpy as np
import pytest
from conftest import cli as run
from conftest import refused, write_csv

DRAWS = "star,ecc\n" + "".join(f"{star},{0.1 + i / 100}\n" for star in "AB" for i in range(20))
PRIOR = ["--prior", "ecc=uniform(0, 1)"]


def test_an_output_that_is_a_pipe_is_refused_even_with_overwrite(in_tmp):
    write_csv("draws.csv", DRAWS)
    os.mkfifo("out.h5")
    for extra in ([], ["--overwrite"]):
        refused(run(["import-samples", "draws.csv", "-o", "out.h5", *PRIOR, *extra]), 1,
                "Output out.h5 exists and is not a regular file", "-o -")
        assert stat.S_ISFIFO(os.lstat("out.h5").st_mode)  # still the pipe, not replaced by a file
    assert sorted(os.listdir()) == ["draws.csv", "out.h5"]


def test_an_output_that_is_a_directory_says_so_first(in_tmp):
    write_csv("draws.csv", DRAWS)
    os.mkdir("out")
    refused(run(["import-samples", "draws.csv", "-o", "out", *PRIOR]), 1, "Output out is a directory")


def test_a_symlink_output_is_replaced_with_overwrite_never_followed(in_tmp):
    write_csv("draws.csv", DRAWS)
    write_csv("target.txt", "kept\n")
    os.symlink("target.txt", "out.h5")
    assert run(["import-samples", "draws.csv", "-o", "out.h5", *PRIOR, "--overwrite"]).exit_code == 0
    assert not os.path.islink("out.h5") and h5py.is_hdf5("out.h5")
    assert open("target.txt").read() == "kept\n"


def test_a_symlink_to_a_device_is_refused_even_with_overwrite(in_tmp):
    """-o /dev/stdout is such a link: --overwrite would replace the link in /dev."""
    write_csv("draws.csv", DRAWS)
    os.symlink(os.devnull, "out.h5")
    for extra in ([], ["--overwrite"]):
        refused(run(["import-samples", "draws.csv", "-o", "out.h5", *PRIOR, *extra]), 1,
                "exists and is not a regular file", "-o -")
        assert os.path.islink("out.h5")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def _hdf5_table(path, order, ids=None):
    with h5py.File(path, "w", track_order=order) as handle:
        handle["star"] = np.repeat([b"A", b"B"], 20) if ids is None else ids
        handle["ecc"] = np.linspace(0.1, 0.5, 40)


def test_hdf5_table_without_a_recorded_order_needs_the_id_column(in_tmp):
    """HDF5 lists an untracked group's datasets by name: 'ecc' would have been taken as the ids."""
    _hdf5_table("draws.h5", order=False)
    refused(run(["import-samples", "draws.h5", "-o", "s.h5", *PRIOR]), 2,
            "does not record the order of its datasets", "--id-column", "'ecc', 'star'")
    assert sorted(os.listdir()) == ["draws.h5"]
    assert run(["import-samples", "draws.h5", "-o", "s.h5", "--id-column", "star", *PRIOR]).exit_code == 0
    with h5py.File("s.h5") as handle:
        assert [v.decode() for v in handle["objects/id"][()]] == ["A", "B"]


def test_hdf5_table_with_a_recorded_order_takes_its_first_dataset_as_ids(in_tmp):
    _hdf5_table("draws.h5", order=True)
    result = run(["import-samples", "draws.h5", "-o", "s.h5", *PRIOR])
    assert result.exit_code == 0, result.output
    with h5py.File("s.h5") as handle:
        assert [v.decode() for v in handle["objects/id"][()]] == ["A", "B"]


def test_hdf5_ids_that_are_not_utf8_name_the_dataset_and_row(in_tmp):
    _hdf5_table("draws.h5", order=True, ids=np.array([b"A"] * 20 + [b"\xff\xfe"] + [b"B"] * 19))
    refused(run(["import-samples", "draws.h5", "-o", "s.h5", *PRIOR]), 1, "dataset 'star' row 21 is not UTF-8")
    assert sorted(os.listdir()) == ["draws.h5"]


def test_hdf5_group_naming_a_dataset_or_given_for_a_csv_is_a_usage_error(in_tmp):
    _hdf5_table("draws.h5", order=True)
    refused(run(["import-samples", "draws.h5", "-o", "s.h5", *PRIOR, "--hdf5-group", "ecc"]), 2,
            "--hdf5-group ecc", "not a group")
    write_csv("draws.csv", DRAWS)
    refused(run(["import-samples", "draws.csv", "-o", "s.h5", *PRIOR, "--hdf5-group", "posterior"]), 2,
            "--hdf5-group posterior", "not an HDF5 file")
    assert sorted(os.listdir()) == ["draws.csv", "draws.h5"]


@pytest.mark.parametrize("count", ["0", "-3"])
def test_import_samples_draw_count_must_be_positive(in_tmp, count):
    write_csv("draws.csv", DRAWS)
    refused(run(["import-samples", "draws.csv", "-o", "s.h5", *PRIOR, "--samples", count]), 2,
            "--samples must be a positive whole number")
    assert sorted(os.listdir()) == ["draws.csv"]


@pytest.mark.parametrize("args, fragments", [
    (["--parameter", "ecc", "--parameter", "ecc"], ["--parameter ecc is given more than once"]),
    (["--parameter", "star"], ["--parameter 'star' is", "object id column"]),
    (["--log-prior-column", "star"], ["--log-prior-column 'star' is", "object id column"]),
])
def test_import_samples_parameter_options_naming_the_ids_or_twice(in_tmp, args, fragments):
    write_csv("draws.csv", DRAWS)
    refused(run(["import-samples", "draws.csv", "-o", "s.h5", "--id-column", "star", *args]), 2, *fragments)
    assert sorted(os.listdir()) == ["draws.csv"]


def test_an_empty_output_name_says_so(in_tmp):
    write_csv("draws.csv", DRAWS)
    for extra in ([], ["--overwrite"]):
        refused(run(["import-samples", "draws.csv", "-o", "", *PRIOR, *extra]), 1, "The output name is empty")
    assert sorted(os.listdir()) == ["draws.csv"]


def test_a_row_with_extra_fields_is_reported_on_one_line_with_its_line_number(in_tmp):
    write_csv("extra.csv", "school,y,sigma\nA,28,15\nB,8,10,5\n")
    result = run(["fit-individuals", "extra.csv", "-o", "s.h5", "--model", "normal", "--quiet"])
    refused(result, 1, "extra.csv is not a well-formed CSV table: record 3 (the header is record 1) has 4 fields where the header "
                       "has 3. Every row needs as many fields as the header.")
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir()) == ["extra.csv"]


@pytest.mark.parametrize("rows", ["A,0.3\nA,0.4\nB,0.5\n", "A,0.3\nB,0.5\n"])  # ragged; every object one draw
def test_summary_of_an_object_with_one_draw_warns_of_nothing(in_tmp, rows):
    write_csv("draws.csv", "star,ecc\n" + rows)
    assert run(["import-samples", "draws.csv", "-o", "one.h5", *PRIOR]).exit_code == 0
    result = run(["summary", "one.h5", "--format", "csv"])
    assert result.exit_code == 0 and "Warning" not in result.stderr, result.stderr


def test_merge_refuses_standard_input_which_it_cannot_read_twice(in_tmp):
    write_csv("draws.csv", DRAWS)
    refused(run(["merge", "-", "other.h5", "-o", "m.h5"], ), 2, "give the shards as files, not -")
