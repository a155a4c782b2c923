"""Hostile and damaged inputs a newcomer meets: each is refused with a message naming the
thing that is wrong, exit 1 or 2, no traceback, and nothing written."""

import io
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import popinfer
from conftest import SAMPLE_DATA, refused, write_csv
from conftest import cli as run
from popinfer.errors import FileFormatError, UsageError

EIGHT = str(SAMPLE_DATA / "eight_schools.csv")
FAST = ["--samples", "200", "--walkers", "16", "--quiet"]
POP_FAST = ["--samples", "100", "--walkers", "8", "--max-steps", "200", "--reweighted", "20", "--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A small samples file and a population file fitted from it."""
    directory = tmp_path_factory.mktemp("made")
    samples, population = directory / "eight.h5", directory / "pop.h5"
    assert run(["fit-individuals", EIGHT, "-o", str(samples), "--model", "normal", "--seed", "1",
                *FAST]).exit_code == 0
    result = run(["fit-population", str(samples), "-o", str(population), "--population", "normal", "--seed", "2",
                  "--hyperprior", "mu=normal(0, 5)", "--hyperprior", "sigma=halfcauchy(5)", *POP_FAST])
    assert result.exit_code == 0, result.output
    return {"samples": samples, "population": population}


def listing(directory):
    return sorted(os.listdir(directory))


# ---- item 4: an output that is (or links to) an input -------------------------------------------

@pytest.mark.parametrize("how", ["same name", "another spelling", "symlink", "hard link"])
def test_fit_individuals_refuses_to_overwrite_its_input(in_tmp, how):
    shutil.copy(EIGHT, "data.csv")
    output = {"same name": "data.csv", "another spelling": "./sub/../data.csv", "symlink": "link.csv",
              "hard link": "hard.csv"}[how]
    os.mkdir("sub")
    if how == "symlink":
        os.symlink("data.csv", "link.csv")
    if how == "hard link":
        os.link("data.csv", "hard.csv")
    before = listing(in_tmp)
    result = run(["fit-individuals", "data.csv", "-o", output, "--model", "normal", "--overwrite", *FAST])
    refused(result, 1, f"Output {output} is the input data.csv", "Choose another output name")
    assert Path("data.csv").read_text() == Path(EIGHT).read_text()
    assert listing(in_tmp) == before


def test_fit_population_export_merge_and_plot_refuse_to_overwrite_their_input(made, in_tmp):
    shutil.copy(made["samples"], "s.h5")
    shutil.copy(made["population"], "p.h5")
    original = {name: Path(name).read_bytes() for name in ("s.h5", "p.h5")}
    cases = [
        ["fit-population", "s.h5", "-o", "s.h5", "--population", "normal", "--overwrite", *POP_FAST],
        ["export", "s.h5", "-o", "s.h5", "--to", "csv", "--overwrite"],
        ["export", "p.h5", "-o", "p.h5", "--to", "netcdf", "--overwrite"],
        ["merge", "s.h5", "-o", "s.h5", "--overwrite"],
    ]
    for args in cases:
        refused(run(args), 1, f"Output {args[3]} is the input {args[1]}")
    Path("p.png").write_bytes(original["p.h5"])  # a population file under a figure's name
    refused(run(["plot", "p.png", "-o", "p.png"]), 1, "Output p.png is the input p.png")
    for name, content in original.items():
        assert Path(name).read_bytes() == content
    assert Path("p.png").read_bytes() == original["p.h5"]
    assert listing(in_tmp) == ["p.h5", "p.png", "s.h5"]


def test_import_samples_refuses_to_overwrite_its_input(in_tmp):
    write_csv("draws.csv", "star,e\n" + "".join(f"a,{0.1 + i / 100}\n" for i in range(20)))
    refused(run(["import-samples", "draws.csv", "-o", "draws.csv", "--prior", "e=uniform(0, 1)", "--overwrite"]),
            1, "Output draws.csv is the input draws.csv")
    assert Path("draws.csv").read_text().startswith("star,e\n")


# ---- item 8: --seed out of range ------------------------------------------------------------------

@pytest.mark.parametrize("seed", ["-1", str(2**63), "1e3"])
def test_seed_out_of_range_is_a_usage_error_stating_the_range(in_tmp, seed):
    shutil.copy(EIGHT, "data.csv")
    result = run(["fit-individuals", "data.csv", "-o", "out.h5", "--model", "normal", "--seed", seed, *FAST])
    refused(result, 2, "--seed")
    assert "0<=x<=9223372036854775807" in result.stderr or "not a valid integer" in result.stderr
    assert listing(in_tmp) == ["data.csv"]  # no .partial that would block the rerun
    assert run(["fit-individuals", "data.csv", "-o", "out.h5", "--model", "normal", "--seed", "1",
                *FAST]).exit_code == 0


def test_seed_range_on_every_command(made, in_tmp):
    for args in (["fit-population", str(made["samples"]), "-o", "p.h5", "--population", "normal", *POP_FAST],
                 ["import-samples", EIGHT, "-o", "i.h5", "--prior", "y=uniform(-100, 100)",
                  "--parameter", "y"]):
        for seed in ("-1", str(2**63)):
            refused(run(args + ["--seed", seed]), 2, "--seed", "0<=x<=9223372036854775807")
    assert listing(in_tmp) == []


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True])
def test_the_library_checks_the_seed_and_leaves_no_checkpoint(in_tmp, seed):
    with pytest.raises(UsageError, match=r"--seed .*expected an integer from 0 to 9223372036854775807"):
        popinfer.fit_individuals(EIGHT, "normal", "out.h5", n_draws=200, n_walkers=16, seed=seed, progress=False)
    assert listing(in_tmp) == []
    samples = popinfer.fit_individuals(EIGHT, "normal", "out.h5", n_draws=200, n_walkers=16, seed=2**63 - 1,
                                       progress=False)
    assert samples.seed == 2**63 - 1 and popinfer.read_samples("out.h5").seed == 2**63 - 1


# ---- item 9: repeated column names ---------------------------------------------------------------

@pytest.mark.parametrize("header", ["school,y,y,sigma", "school,y,sigma,sigma,y", "school,y , y,sigma"])
def test_repeated_column_names_are_named(in_tmp, header):
    n_fields = header.count(",") + 1
    data = write_csv("data.csv", f"{header}\nA,{','.join(['1'] * (n_fields - 1))}\n")
    result = run(["fit-individuals", data, "-o", "out.h5", "--model", "normal", *FAST])
    refused(result, 1, "data.csv", "more than once", "'y'")
    assert listing(in_tmp) == ["data.csv"]


def test_repeated_column_names_in_import_samples_and_the_api(in_tmp):
    data = write_csv("draws.csv", "star,e,e\na,0.1,0.2\na,0.3,0.4\n")
    refused(run(["import-samples", data, "-o", "out.h5", "--prior", "e=uniform(0, 1)"]), 1, "'e'", "more than once")
    frame = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["school", "y", "y"])
    with pytest.raises(popinfer.errors.InputDataError, match="'y' more than once"):
        popinfer.fit_individuals(frame, "normal", progress=False)
    assert listing(in_tmp) == ["draws.csv"]


# ---- items 10 and 11: damaged or hand-edited files, non-finite draws ---------------------------

def _edit(path, change):
    with h5py.File(path, "r+") as handle:
        change(handle)


def _replace(handle, name, data):
    attrs = dict(handle[name].attrs)
    del handle[name]
    handle[name] = data
    handle[name].attrs.update(attrs)


def _as_group(handle, name):
    """``name`` replaced by a group (with its attributes): no dataset where one is expected."""
    attrs = dict(handle[name].attrs)
    del handle[name]
    handle.create_group(name).attrs.update(attrs)


SAMPLES_DAMAGE = {
    "ids shorter": (lambda h: _replace(h, "objects/id", h["objects/id"][:7]), ["/objects/id", "(7,)", "(8,)"]),
    "ids longer": (lambda h: _replace(h, "objects/id", np.concatenate([h["objects/id"][()], [b"I"]])),
                   ["/objects/id", "(9,)", "(8,)"]),
    "K = 0": (lambda h: [_replace(h, name, h[name][:, :0]) for name in ("samples", "log_interim_prior",
                                                                          "log_likelihood")],
              ["/samples", "(8, 0, 1)", "empty axis"]),
    "N = 0": (lambda h: [_replace(h, name, h[name][:0]) for name in ("samples", "log_interim_prior",
                                                                       "log_likelihood", "objects/id")]
              + [_replace(h, f"diagnostics/{n}", h[f"diagnostics/{n}"][:0]) for n in h["diagnostics"]],
              ["/samples", "(0, 200, 1)", "empty axis"]),
    "settings a list": (lambda h: h.attrs.__setitem__("settings", "[1, 2]"), ["'settings'", "JSON object"]),
    "interim prior a number": (lambda h: h.attrs.__setitem__("interim_prior", "3"), ["'interim_prior'"]),
    "log prior short": (lambda h: _replace(h, "log_interim_prior", h["log_interim_prior"][:, :100]),
                        ["/log_interim_prior", "(8, 100, 1)", "(8, 200, 1)"]),
    "2-D samples": (lambda h: _replace(h, "samples", h["samples"][:, :, 0]), ["/samples", "(8, 200)"]),
    "NaN draw": (lambda h: h["samples"].__setitem__((3, 17, 0), np.nan), ["object 'D'", "non-finite", "nan"]),
    "+inf draw": (lambda h: h["samples"].__setitem__((5, 0, 0), np.inf), ["object 'F'", "non-finite", "inf"]),
    "-inf draw": (lambda h: h["samples"].__setitem__((0, 199, 0), -np.inf), ["object 'A'", "-inf"]),
    "samples a group": (lambda h: _as_group(h, "samples"), ["damaged samples file", "/samples is a group"]),
    "samples strings": (lambda h: _replace(h, "samples", np.full(h["samples"].shape, b"x", dtype="S1")),
                        ["damaged samples file", "/samples holds strings"]),
    "samples complex": (lambda h: _replace(h, "samples", h["samples"][()].astype(np.complex128)),
                        ["damaged samples file", "/samples holds complex numbers"]),
    "log likelihood a group": (lambda h: _as_group(h, "log_likelihood"),
                               ["damaged samples file", "/log_likelihood is a group"]),
    "ids numbers": (lambda h: _replace(h, "objects/id", np.arange(8.0)), ["/objects/id", "not strings"]),
}


@pytest.mark.parametrize("damage", list(SAMPLES_DAMAGE))
def test_damaged_samples_files_are_refused_by_every_reader(made, in_tmp, damage):
    change, fragments = SAMPLES_DAMAGE[damage]
    shutil.copy(made["samples"], "bad.h5")
    _edit("bad.h5", change)
    commands = [["fit-population", "bad.h5", "-o", "pop.h5", "--population", "normal", *POP_FAST],
                ["summary", "bad.h5"], ["summary", "bad.h5", "--format", "csv"],
                ["export", "bad.h5", "-o", "out.csv", "--to", "csv"], ["plot", "bad.h5", "-o", "out.png"]]
    for args in commands:
        refused(run(args), 1, "bad.h5", *fragments)
    refused(run(["fit-population", "-", "-o", "pop.h5", "--population", "normal", *POP_FAST],
                input=Path("bad.h5").read_bytes()), 1, "<stdin>", *fragments)
    with pytest.raises(FileFormatError, match="bad.h5"):
        popinfer.read_samples("bad.h5")
    assert listing(in_tmp) == ["bad.h5"]


def test_non_finite_draws_given_in_memory_are_refused_naming_the_object(made):
    samples = popinfer.read_samples(made["samples"])
    samples.samples[6, 3, 0] = np.nan
    with pytest.raises(FileFormatError, match="object 'G' has a non-finite draw"):
        popinfer.fit_population(samples, "normal", n_walkers=8, max_steps=200, n_samples=100, n_reweighted=20,
                                seed=1, progress=False)


POPULATION_DAMAGE = {
    "ids shorter": (lambda h: _replace(h, "objects/id", h["objects/id"][:7]), ["/objects/id", "(7,)", "(8,)"]),
    "ess wrong shape": (lambda h: _replace(h, "objects/ess", h["objects/ess"][:, :5]), ["/objects/ess", "(100, 5)"]),
    "reweighted wrong shape": (lambda h: _replace(h, "objects/reweighted", h["objects/reweighted"][:4]),
                               ["/objects/id", "(8,)", "(4,)"]),
    "reweighted 2-D": (lambda h: _replace(h, "objects/reweighted", h["objects/reweighted"][:, :, 0]),
                       ["/objects/reweighted", "(8, 20)"]),
    "log likelihood short": (lambda h: _replace(h, "hyper/log_likelihood", h["hyper/log_likelihood"][:3]),
                             ["/hyper/log_likelihood", "(3,)", "(100,)"]),
    "no hyper draws": (lambda h: [_replace(h, f"hyper/{n}", h[f"hyper/{n}"][:0])
                                  for n in ("samples", "log_posterior", "log_likelihood", "ln_likelihood_variance")],
                       ["/hyper/samples", "empty axis"]),
    "settings a string": (lambda h: h.attrs.__setitem__("settings", '"fast"'), ["'settings'", "JSON object"]),
    "hyper draws a group": (lambda h: _as_group(h, "hyper/samples"), ["/hyper/samples is a group"]),
    "reweighted complex": (lambda h: _replace(h, "objects/reweighted", h["objects/reweighted"][()].astype(complex)),
                           ["/objects/reweighted holds complex numbers"]),
    "ess strings": (lambda h: _replace(h, "objects/ess", h["objects/ess"][()].astype("S8")),
                    ["/objects/ess holds strings"]),
}


@pytest.mark.parametrize("damage", list(POPULATION_DAMAGE))
def test_damaged_population_files_are_refused_by_summary_plot_and_export(made, in_tmp, damage):
    change, fragments = POPULATION_DAMAGE[damage]
    shutil.copy(made["population"], "bad.h5")
    _edit("bad.h5", change)
    for args in (["summary", "bad.h5"], ["summary", "bad.h5", "--format", "json"],
                 ["export", "bad.h5", "-o", "out.csv", "--to", "csv", "--table", "pooled"],
                 ["export", "bad.h5", "-o", "out.nc", "--to", "netcdf"],
                 ["plot", "bad.h5", "-o", "out.png", "--kind", "diagnostics"]):
        refused(run(args), 1, "bad.h5", "damaged population file", *fragments)
    assert listing(in_tmp) == ["bad.h5"]


def _set_names(handle, key, names):
    handle.attrs.create(key, names, dtype=h5py.string_dtype())


NAMES_DAMAGE = {
    "another built-in population": (lambda h: h.attrs.__setitem__("population", "beta"),
                                    ["attribute population is 'beta'", "hyperparameters are a, b",
                                     "draws of mu, sigma"]),
    "an unknown population": (lambda h: h.attrs.__setitem__("population", "nosuch"),
                              ["attribute population is 'nosuch'", "neither a built-in population"]),
    "mvnormal of one parameter": (lambda h: h.attrs.__setitem__("population", "mvnormal"),
                                  ["'mvnormal'", "two or more parameters", "parameters names 1 (theta)"]),
    "population not text": (lambda h: h.attrs.__setitem__("population", 3), ["attribute population is 3"]),
    "hyperparameters edited": (lambda h: _set_names(h, "hyperparameters", ["mu", "tau"]),
                               ["attribute hyperparameters (mu, tau)", "/hyper/samples (mu, sigma)"]),
    "a hyperparameter dropped": (lambda h: _set_names(h, "hyperparameters", ["mu"]),
                                 ["attribute hyperparameters (mu)", "/hyper/samples (mu, sigma)"]),
    "parameters edited": (lambda h: _set_names(h, "parameters", ["zz"]),
                          ["attribute parameters (zz)", "/objects/reweighted (theta)"]),
    "a fixed hyperparameter also sampled": (lambda h: h.attrs.__setitem__("fixed", '{"sigma": 1.0}'),
                                            ["'normal'", "draws of mu, sigma and holds sigma fixed"]),
    "held bounds out of order": (lambda h: (h.attrs.__setitem__("population", "truncnormal"),
                                            h.attrs.__setitem__("fixed", '{"low": 5, "high": 1}')),
                                 ["attribute fixed holds low=5, high=1", "'truncnormal'", "low < high"]),
    "a held value not a number": (lambda h: (h.attrs.__setitem__("population", "truncnormal"),
                                             h.attrs.__setitem__("fixed", '{"low": -1, "high": "abc"}')),
                                  ["attribute fixed holds high: 'abc'", "expected a finite number"]),
}


@pytest.mark.parametrize("damage", list(NAMES_DAMAGE))
def test_population_files_whose_names_disagree_are_refused_by_every_reader(made, in_tmp, damage):
    """A population attribute that does not fit the hyperparameters ("beta" over draws of mu and
    sigma) ended plot and refine in "Unexpected KeyError: 'a'", mvnormal of one parameter in a
    usage error about --parameter; edited hyperparameters or parameters attributes were read
    without a word. Each is refused as damaged, naming the file and the attribute."""
    change, fragments = NAMES_DAMAGE[damage]
    shutil.copy(made["population"], "bad.h5")
    shutil.copy(made["population"], "good.h5")
    _edit("bad.h5", change)
    for args in (["summary", "bad.h5"], ["export", "bad.h5", "-o", "out.csv", "--to", "csv"],
                 ["export", "bad.h5", "-o", "out.nc", "--to", "netcdf"], ["plot", "bad.h5", "-o", "out.png"],
                 ["compare", "bad.h5", "good.h5"], ["refine", str(made["samples"]), "bad.h5", "-o", "r.h5", "--quiet"]):
        refused(run(args), 1, "bad.h5 is a damaged population file", *fragments)
    assert listing(in_tmp) == ["bad.h5", "good.h5"]


def test_a_population_file_naming_user_code_is_read_and_its_code_not_run(made, in_tmp):
    """A name of code (file.py:function) is not checked against the hyperparameters (only the code
    declares them) and is not run: summary reads the file, refine asks for --trust-code."""
    shutil.copy(made["population"], "user.h5")
    Path("evil.py").write_text("raise SystemExit('ran')\n")
    _edit("user.h5", lambda h: h.attrs.__setitem__("population", "evil.py:f"))
    assert run(["summary", "user.h5"]).exit_code == 0
    refused(run(["refine", str(made["samples"]), "user.h5", "-o", "r.h5", "--quiet"]), 2, "--trust-code")
    assert listing(in_tmp) == ["evil.py", "user.h5"]


def test_merge_refuses_shards_with_different_draw_counts(in_tmp):
    base = ["fit-individuals", EIGHT, "--model", "normal", "--seed", "1", "--batch-size", "4", *FAST]
    for i in (1, 2):
        assert run(base + ["-o", f"part-{i}.h5", "--shard", f"{i}/2"]).exit_code == 0
    _edit("part-2.h5", lambda h: [_replace(h, name, h[name][:, :100])
                                  for name in ("samples", "log_interim_prior", "log_likelihood")])
    refused(run(["merge", "part-1.h5", "part-2.h5", "-o", "merged.h5"]), 1, "part-2.h5", "100 draws", "200")
    assert not Path("merged.h5").exists()


@pytest.mark.parametrize("attrs, fragments", [
    ({"shard": "abc", "fingerprint": "x", "n_objects_total": 8}, ["'shard' attribute is 'abc'", "I/N"]),
    ({"shard": "0/2", "fingerprint": "x", "n_objects_total": 8}, ["'shard' attribute is '0/2'"]),
    ({"shard": "1/1", "fingerprint": "x", "n_objects_total": "lots"}, ["'n_objects_total' attribute is 'lots'"]),
    ({"shard": "1/1", "fingerprint": np.arange(3), "n_objects_total": 8}, ["'fingerprint' attribute"]),
])
def test_merge_refuses_a_shard_with_malformed_identity_attributes(made, in_tmp, attrs, fragments):
    shutil.copy(made["samples"], "bad.h5")
    _edit("bad.h5", lambda h: h.attrs.update(attrs))
    refused(run(["merge", "bad.h5", "-o", "merged.h5"]), 1, "bad.h5 is a damaged shard", *fragments)
    assert listing(in_tmp) == ["bad.h5"]


@pytest.mark.parametrize("kind", ["samples", "population"])
def test_a_fixed_length_bytes_format_attribute_is_read_by_every_reader(made, in_tmp, kind):
    shutil.copy(made[kind], "bytes.h5")
    _edit("bytes.h5", lambda h: h.attrs.__setitem__("popinfer_format", np.bytes_(kind.encode())))
    commands = [["summary", "bytes.h5"], ["export", "bytes.h5", "-o", "out.csv", "--to", "csv"]]
    if kind == "samples":
        commands.append(["fit-population", "bytes.h5", "-o", "pop.h5", "--population", "normal", *POP_FAST])
    for args in commands:
        result = run(args)
        assert result.exit_code == 0, result.output
        assert "b'" not in result.stderr and "Unexpected" not in result.stderr, result.stderr


# ---- --scheduler: an address Dask cannot read is a usage error -----------------------------------

@pytest.mark.parametrize("address", ["bogus", "http://127.0.0.1:1", "tcp://127.0.0.1:port"])
def test_a_malformed_scheduler_address_is_a_usage_error(made, in_tmp, address):
    pytest.importorskip("distributed")
    for args in (["fit-individuals", EIGHT, "-o", "o.h5", "--model", "normal", *FAST],
                 ["refine", str(made["samples"]), str(made["population"]), "-o", "r.h5", "--quiet"]):
        refused(run(args + ["--scheduler", address]), 2, f"--scheduler {address}", "tcp://HOST:PORT")
        assert listing(in_tmp) == []


# ---- item 13: summary --format csv is one valid CSV table ------------------------------------

def test_summary_csv_is_one_table_per_call(made, in_tmp):
    hyper = run(["summary", str(made["population"]), "--format", "csv"])
    assert hyper.exit_code == 0
    frame = pd.read_csv(io.StringIO(hyper.stdout))
    assert list(frame["hyperparameter"]) == ["mu", "sigma"] and len(frame) == 2
    chosen = run(["summary", str(made["population"]), "--format", "csv", "--table", "hyper"])
    assert chosen.stdout == hyper.stdout
    objects = pd.read_csv(io.StringIO(run(["summary", str(made["population"]), "--format", "csv",
                                          "--table", "objects"]).stdout))
    assert list(objects["object"]) == list("ABCDEFGH") and "pooled_mean" in objects
    records = json.loads(run(["summary", str(made["population"]), "--format", "json", "--table", "objects"]).stdout)
    assert [r["object"] for r in records] == list("ABCDEFGH")
    samples = pd.read_csv(io.StringIO(run(["summary", str(made["samples"]), "--format", "csv"]).stdout))
    assert list(samples["object"]) == list("ABCDEFGH")
    refused(run(["summary", str(made["samples"]), "--table", "hyper"]), 2, "--table hyper", "objects")
    refused(run(["summary", str(made["population"]), "--table", "pooled"]), 2, "--table")


# ---- item 7: a full disk is an ordinary runtime error -------------------------------------------

def _popinfer_with_file_size_limit(args, cwd, limit, stdout=None):
    """Run popinfer in a process that may write at most ``limit`` bytes per file (EFBIG
    beyond, as on a full disk: the write fails with an OSError)."""
    resource = pytest.importorskip("resource")
    import signal
    import subprocess
    import sys

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(popinfer.__file__).parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "popinfer", *args], cwd=cwd, env=env, preexec_fn=limited,
                          stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=300)


def _clean_failure(done, *fragments):
    message = done.stderr.decode()
    assert done.returncode == 1, message
    assert "Traceback" not in message and "Unexpected" not in message, message
    assert "free some space, or write elsewhere" in message.lower(), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert len([line for line in message.splitlines() if line.startswith("Error:")][0]) < 400


def test_a_full_disk_during_fit_population_fails_cleanly(made, tmp_path):
    shutil.copy(made["samples"], tmp_path / "s.h5")
    done = _popinfer_with_file_size_limit(
        ["fit-population", "s.h5", "-o", "pop.h5", "--population", "normal", *POP_FAST], tmp_path,
        limit=os.path.getsize(tmp_path / "s.h5") // 20)
    _clean_failure(done, "Cannot write pop.h5", "File too large", "Nothing was written")
    assert listing(tmp_path) == ["s.h5"]


def test_a_full_disk_during_fit_individuals_fails_cleanly(tmp_path):
    done = _popinfer_with_file_size_limit(
        ["fit-individuals", EIGHT, "-o", "eight.h5", "--model", "normal", "--samples", "4000", "--quiet"],
        tmp_path, limit=50_000)
    _clean_failure(done, "Cannot write eight.h5.partial", "File too large")
    assert listing(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_a_full_device_fails_cleanly(made, tmp_path):
    with open("/dev/full", "wb") as full:
        done = _popinfer_with_file_size_limit(
            ["fit-population", str(made["samples"]), "-o", "-", "--population", "normal", *POP_FAST], tmp_path,
            limit=2**40, stdout=full)
    _clean_failure(done, "Writing stdout failed: No space left on device")
    assert listing(tmp_path) == []


# ---- item 12: extreme standard errors give a clear error or a finite answer, never a numpy warning --

@pytest.mark.parametrize("model, header, row, column", [
    ("normal", "school,y,sigma", "A,1,1e-300", "sigma"),
    ("normal", "school,y,sigma", "A,1,1e300", "sigma"),
    ("linear", "id,x,y,yerr", "A,1,1,1e-300", "yerr"),
    ("linear", "id,x,y,yerr", "A,1,1,1e300", "yerr"),
])
def test_unsquarable_standard_errors_are_a_clear_error(in_tmp, model, header, row, column):
    extra = "A,2,2,1\nA,3,3,1\n" if model == "linear" else "B,2,1\n"
    data = write_csv("data.csv", f"{header}\n{row}\n{extra}")
    result = run(["fit-individuals", data, "-o", "out.h5", "--model", model, *FAST])
    refused(result, 1, "data.csv, row 1 (object 'A')", f"column '{column}'", "between 1e-150 and 1e+150",
            "rescale")
    assert "encountered in" not in result.stderr
    assert listing(in_tmp) == ["data.csv"]


@pytest.mark.parametrize("sigma", ["1e-100", "1e100", "1e-6", "1e6"])
def test_extreme_but_valid_standard_errors_raise_no_numpy_warning(in_tmp, sigma):
    data = write_csv("data.csv", f"school,y,sigma\nA,0,{sigma}\nB,1,{sigma}\nC,2,{sigma}\n")
    result = run(["fit-individuals", data, "-o", "s.h5", "--model", "normal", "--max-steps", "2000", *FAST])
    assert result.exit_code == 0, result.stderr
    fitted = run(["fit-population", "s.h5", "-o", "p.h5", "--population", "normal", *POP_FAST])
    summary = run(["summary", "p.h5"]) if fitted.exit_code == 0 else fitted
    for step in (result, fitted, summary):
        assert "encountered in" not in step.stderr and "Mean of empty slice" not in step.stderr, step.stderr
        assert "Traceback" not in step.stderr and "Unexpected" not in step.stderr, step.stderr


def test_a_reader_that_stops_early_is_not_a_failure(made, tmp_path):
    """`popinfer export ... -o - | head`: the closed pipe ends the command quietly, exit 0."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(popinfer.__file__).parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    big = ["fit-individuals", EIGHT, "--model", "normal", "--seed", "1", "--samples", "4000", "--quiet"]
    assert run(big + ["-o", str(tmp_path / "big.h5")]).exit_code == 0  # ~0.8 MB: more than a pipe holds
    for args in (["export", "big.h5", "-o", "-", "--to", "csv"], big + ["-o", "-"]):
        process = subprocess.Popen([sys.executable, "-m", "popinfer", *args], cwd=tmp_path, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert len(process.stdout.read(100)) == 100
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=300) == 0, stderr
        assert "Error" not in stderr and "Traceback" not in stderr and "Exception" not in stderr, stderr
    assert listing(tmp_path) == ["big.h5"]
