"""What a crafted file, a concurrent run, a crash or a planted link can do: the promise
is that nothing a user has is lost, nothing a file says is followed outside it, and
every output that exits 0 is correct."""

import io
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import popinfer
import popinfer.importing
import popinfer.io.hdf5
from conftest import SAMPLE_DATA
from popinfer.cli import main
from popinfer.errors import FileFormatError, OutputError
from popinfer.io.samples import Checkpoint

EIGHT = str(SAMPLE_DATA / "eight_schools.csv")
RATS = str(SAMPLE_DATA / "rat_tumors.csv")
FAST = dict(n_draws=200, n_walkers=16, batch_size=10, progress=False)

# A user model that, on the object whose `gate` cell is 1, says so on stderr and then
# waits until the test writes to the FIFO `go` (only when POPINFER_TEST_GATE names its
# directory); on the object whose `gate` cell is 2 it fails. Results do not depend on
# the gate.
GATED_MODEL = '''
import os
import sys

import numpy as np

_opened = []


def gated(params, data):
    gate = os.environ.get("POPINFER_TEST_GATE")
    if gate and data["gate"][0] == 1 and not _opened:
        _opened.append(True)
        sys.stderr.write("GATE-REACHED\\n")
        sys.stderr.flush()
        with open(os.path.join(gate, "go")) as fifo:
            fifo.read()
    if gate and data["gate"][0] == 2:
        raise RuntimeError("failing on purpose")
    return -0.5 * np.sum(((data["y"] - params["theta"][:, None]) / data["s"]) ** 2, axis=1)


gated.parameters = {"theta": "uniform(-50, 50)"}
gated.columns = ["y", "s", "gate"]
'''

# A user population that, once its run's temporary output exists beside `pop.h5`,
# says so on stderr and waits for the FIFO `go` (when POPINFER_TEST_GATE is set).
GATED_POPULATION = '''
import os
import sys

import numpy as np

_opened = []


def gated(theta, hyper):
    gate = os.environ.get("POPINFER_TEST_GATE")
    if gate and not _opened and any(name.startswith(".pop.h5.") for name in os.listdir(".")):
        _opened.append(True)
        sys.stderr.write("GATE-REACHED\\n")
        sys.stderr.flush()
        with open(os.path.join(gate, "go")) as fifo:
            fifo.read()
    x, mu, sigma = theta["theta"], hyper["mu"], hyper["sigma"]
    return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


gated.hyperparameters = {"mu": "normal(0, 20)", "sigma": "halfnormal(20)"}
'''


def run(args, **kwargs):
    return CliRunner().invoke(main, args, **kwargs)


_started = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A failed assertion must not leave a run blocked on a gate for ever."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def process(args, cwd, gate=None, **env):
    environment = dict(os.environ, SOURCE_DATE_EPOCH="1700000000", PYTHONUNBUFFERED="1", **env)
    if gate is not None:
        environment["POPINFER_TEST_GATE"] = str(gate)
    proc = subprocess.Popen([sys.executable, "-m", "popinfer", *args], cwd=cwd, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _started.append(proc)
    return proc


def wait_for_line(proc, text):
    """Read stderr until ``text`` appears (True) or the process ends (False)."""
    seen = b""
    while chunk := os.read(proc.stderr.fileno(), 4096):
        seen += chunk
        if text.encode() in seen:
            return True
    return False


def release(gate):
    with open(gate / "go", "w") as fifo:
        fifo.write("go")


@pytest.fixture
def gated(tmp_path):
    """(directory, stage-one arguments, gate directory) for runs of the gated model on six objects."""
    (tmp_path / "gated_model.py").write_text(GATED_MODEL)
    (tmp_path / "gated_population.py").write_text(GATED_POPULATION)
    rows = ["id,y,s,gate"] + [f"o{i},{3.0 * i - 7},{1 + i % 3},{int(i == 4)}" for i in range(1, 7)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    gate = tmp_path / "gate"
    gate.mkdir()
    os.mkfifo(gate / "go")
    args = ["fit-individuals", "data.csv", "--model", "gated_model.py:gated", "--samples", "100",
            "--walkers", "8", "--batch-size", "1", "--seed", "5"]
    return tmp_path, args, gate


# 1. A concurrent --overwrite -------------------------------------------------------

def test_a_second_run_with_overwrite_cannot_touch_a_live_run(gated):
    directory, args, gate = gated
    reference = process([*args, "-o", "reference.h5", "--quiet"], directory)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    first = process([*args, "-o", "out.h5", "--quiet"], directory, gate=gate)
    assert wait_for_line(first, "GATE-REACHED")  # three batches committed, the fourth in progress
    partial = directory / "out.h5.partial"
    before = partial.read_bytes()
    for option in ("--overwrite", "--resume"):
        second = process([*args, "-o", "out.h5", "--quiet", option], directory)
        assert second.wait(timeout=300) == 1
        message = second.stderr.read().decode()
        assert "out.h5.partial" in message and "another run" in message and "Traceback" not in message
        assert partial.read_bytes() == before  # not truncated, not touched
    release(gate)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    published, reference = (popinfer.read_samples(directory / name) for name in ("out.h5", "reference.h5"))
    assert published.ids == reference.ids == [f"o{i}" for i in range(1, 7)]
    for name in ("samples", "log_interim_prior", "log_likelihood"):
        np.testing.assert_array_equal(getattr(published, name), getattr(reference, name))
    assert not partial.exists()


# 2. Checkpoints verified on resume and before publishing; fsync --------------------

def _interrupted_run(output, after):
    """Stage one on the rat tumours (8 batches), stopped after ``after`` commits."""
    real_commit = Checkpoint.commit
    commits = []

    def commit_then_stop(self, batch_index, start, result):
        real_commit(self, batch_index, start, result)
        commits.append(batch_index)
        if len(commits) == after:
            raise KeyboardInterrupt

    Checkpoint.commit = commit_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            popinfer.fit_individuals(RATS, "binomial", output, seed=3, **FAST)
    finally:
        Checkpoint.commit = real_commit
    return Path(f"{output}.partial")


def test_a_commit_counter_ahead_of_the_data_is_refused(tmp_path):
    output = tmp_path / "out.h5"
    partial = _interrupted_run(output, 2)
    with h5py.File(partial, "r+") as handle:
        handle.attrs["batches_committed"] = np.int64(7)  # five batches that were never written
    with pytest.raises(OutputError, match=r"damaged: batch 3 \(rows 21-30\) does not match"):
        popinfer.fit_individuals(RATS, "binomial", output, seed=3, resume=True, **FAST)
    assert not output.exists() and partial.exists()


def test_changed_committed_draws_are_refused_on_resume(tmp_path):
    output = tmp_path / "out.h5"
    partial = _interrupted_run(output, 3)
    with h5py.File(partial, "r+") as handle:
        handle["samples"][12, 5, 0] = 0.5
    with pytest.raises(OutputError, match=r"batch 2 \(rows 11-20\)"):
        popinfer.fit_individuals(RATS, "binomial", output, seed=3, resume=True, **FAST)
    assert not output.exists()


def test_changed_draws_are_refused_before_publishing(tmp_path, monkeypatch):
    output = tmp_path / "out.h5"
    real_commit = Checkpoint.commit

    def commit_then_damage(self, batch_index, start, result):
        real_commit(self, batch_index, start, result)
        if batch_index == 7:  # the last batch: the run goes on to publish
            self.handle["log_likelihood"][3, 0] = 0.0

    monkeypatch.setattr(Checkpoint, "commit", commit_then_damage)
    with pytest.raises(OutputError, match=r"batch 1 \(rows 1-10\)"):
        popinfer.fit_individuals(RATS, "binomial", output, seed=3, **FAST)
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5.partial"]  # kept, no temporary left


def test_commits_and_publishing_are_made_durable(tmp_path, monkeypatch):
    output = tmp_path / "out.h5"
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        counter = None
        if target.endswith(".partial"):
            with h5py.File(target, "r", locking=False) as handle:
                counter = int(handle.attrs["batches_committed"])
        synced.append((os.path.basename(target), counter))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    popinfer.fit_individuals(RATS, "binomial", output, seed=3, **FAST)
    partial_syncs = [counter for name, counter in synced if name == "out.h5.partial"]
    # Created (0), then per batch: rows and digest synced before the counter moves, then the counter.
    assert partial_syncs == [0] + [c for i in range(8) for c in (i, i + 1)]
    names = [name for name, _ in synced]
    temporary = names.index("out.h5")  # the finished temporary file, before its rename
    assert names[temporary + 1] == tmp_path.name  # then the directory, after the rename


# 7. Files reaching outside themselves ------------------------------------------------

@pytest.fixture(scope="module")
def eight_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "eight.h5"
    popinfer.fit_individuals(EIGHT, "normal", path, n_draws=200, n_walkers=16, seed=1, progress=False)
    return path


def _crafted(eight_file, directory, change):
    crafted = directory / "crafted.h5"
    crafted.write_bytes(eight_file.read_bytes())
    with h5py.File(crafted, "r+") as handle:
        change(handle)
    return crafted


SECRET = b"root:x:0:0:root:/root:/bin/bash\n" * 400  # 12800 bytes: 8 x 200 float64


@pytest.mark.parametrize("how", ["external storage", "external link", "virtual dataset"])
def test_files_that_reach_outside_themselves_are_refused(eight_file, tmp_path, how):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["data"] = np.frombuffer(SECRET, dtype="f8").reshape(8, 200)

    def change(handle):
        del handle["log_likelihood"]
        if how == "external storage":
            handle.create_dataset("log_likelihood", shape=(8, 200), dtype="f8",
                                  external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
        elif how == "external link":
            handle["log_likelihood"] = h5py.ExternalLink(str(other), "/data")
        else:
            layout = h5py.VirtualLayout(shape=(8, 200), dtype="f8")
            layout[:] = h5py.VirtualSource(str(other), "data", shape=(8, 200))
            handle.create_virtual_dataset("log_likelihood", layout)

    crafted = _crafted(eight_file, tmp_path, change)
    for args in (["summary", str(crafted), "--format", "csv"], ["inspect", str(crafted)],
                 ["export", str(crafted), "-o", "-", "--to", "csv"],
                 ["fit-population", str(crafted), "-o", str(tmp_path / "pop.h5"), "--population", "normal"]):
        result = run(args)
        assert result.exit_code == 1, (args, result.output)
        assert "crafted.h5 is refused: /log_likelihood" in result.stderr and "Traceback" not in result.stderr
        assert "root" not in result.stdout
    with pytest.raises(FileFormatError, match="refused"):
        popinfer.importing.import_samples(str(crafted), None, hdf5_group="diagnostics")


def test_a_resumed_checkpoint_may_not_reach_outside_itself(tmp_path):
    output = tmp_path / "out.h5"
    partial = _interrupted_run(output, 2)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET * 40)
    with h5py.File(partial, "r+") as handle:
        del handle["log_likelihood"]
        handle.create_dataset("log_likelihood", shape=(71, 200), dtype="f8",
                              external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    with pytest.raises(OutputError, match="external file"):
        popinfer.fit_individuals(RATS, "binomial", output, seed=3, resume=True, **FAST)


# 8. Declared sizes ----------------------------------------------------------------

def _bomb(handle):
    """Datasets declaring 3.2 GB each in chunks never written (a few KB on disk)."""
    n_draws = 50_000_000
    for name, shape in (("samples", (8, n_draws, 1)), ("log_interim_prior", (8, n_draws, 1)),
                        ("log_likelihood", (8, n_draws))):
        parameters = handle[name].attrs.get("parameters")
        del handle[name]
        dataset = handle.create_dataset(name, shape=shape, dtype="f8", chunks=(1, 2**16) + shape[2:],
                                        compression="gzip")
        if parameters is not None:
            dataset.attrs["parameters"] = parameters


def test_declared_sizes_far_beyond_the_stored_data_are_refused_before_reading(eight_file, tmp_path):
    crafted = _crafted(eight_file, tmp_path, _bomb)
    assert crafted.stat().st_size < 10**6

    def limit_memory():  # so that an attempt to read the datasets fails fast instead of exhausting the machine
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    for args in (["summary", str(crafted)], ["export", str(crafted), "-o", "-", "--to", "csv"]):
        proc = subprocess.run([sys.executable, "-m", "popinfer", *args], cwd=tmp_path, capture_output=True,
                              text=True, preexec_fn=limit_memory, timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert "crafted.h5 is refused: /log_interim_prior declares shape (8, 50000000, 1)" in proc.stderr
        assert "stores only 0 bytes" in proc.stderr and "Unexpected" not in proc.stderr


def test_declared_sizes_beyond_the_machines_memory_are_refused(eight_file, tmp_path, monkeypatch):
    monkeypatch.setattr(popinfer.io.hdf5, "memory_bytes", lambda: 8 * 200 * 8 - 1)
    result = run(["summary", str(eight_file)])
    assert result.exit_code == 1 and "more than this machine's memory" in result.stderr
    monkeypatch.setattr(popinfer.io.hdf5, "memory_bytes", lambda: 8 * 200 * 8)
    assert run(["summary", str(eight_file)]).exit_code == 0  # exactly at the bound: read


# 9. Links planted where popinfer writes ---------------------------------------------

def test_a_planted_checkpoint_link_is_never_followed(tmp_path):
    output = tmp_path / "out.h5"
    partial = Path(f"{output}.partial")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    partial.symlink_to(victim)
    for options in ({"overwrite": True}, {"resume": True}, {"resume": True, "overwrite": True}):
        with pytest.raises(OutputError, match="symbolic link"):
            popinfer.fit_individuals(RATS, "binomial", output, seed=3, **options, **FAST)
        assert victim.read_text() == "precious" and partial.is_symlink()
    partial.unlink()
    partial.symlink_to(tmp_path / "created-through-the-link")
    result = run(["fit-individuals", RATS, "-o", str(output), "--model", "binomial", "--samples", "200",
                  "--walkers", "16", "--seed", "3"])
    assert result.exit_code == 1 and "symbolic link" in result.stderr
    assert not (tmp_path / "created-through-the-link").exists() and not output.exists()


def test_plot_follows_the_overwrite_rule_and_never_writes_through_a_link(eight_file, tmp_path):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"an earlier figure")
    result = run(["plot", str(eight_file), "-o", str(figure)])
    assert result.exit_code == 1 and "use --overwrite" in result.stderr
    assert figure.read_bytes() == b"an earlier figure"
    assert run(["plot", str(eight_file), "-o", str(figure), "--overwrite"]).exit_code == 0
    assert figure.read_bytes()[:4] == b"\x89PNG"
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    link = tmp_path / "link.png"
    link.symlink_to(victim)
    assert run(["plot", str(eight_file), "-o", str(link)]).exit_code == 1
    assert run(["plot", str(eight_file), "-o", str(link), "--overwrite"]).exit_code == 0
    assert victim.read_bytes() == b"precious"  # the link was replaced, not written through
    assert not link.is_symlink() and link.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "link.png", "victim.png"]


# 10. Injection through ids -----------------------------------------------------------

HOSTILE_IDS = ["\x1b]0;owned\x07\x1b[2J", "=1+2", "+1+cmd", "@SUM(A1)", "-2+3", "plain\u202eevil"]


@pytest.fixture(scope="module")
def hostile_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ids")
    frame = pd.DataFrame({"id": HOSTILE_IDS, "y": [1.0, 2.0, -1.0, 0.5, 3.0, 2.5], "sigma": 1.0})
    path = directory / "hostile.h5"
    popinfer.fit_individuals(frame, "normal", path, n_draws=200, n_walkers=16, seed=1, progress=False)
    return path


def test_control_characters_of_ids_are_escaped_in_human_facing_output(hostile_file):
    for args in (["summary", str(hostile_file)], ["inspect", str(hostile_file)]):
        result = run(args)
        assert result.exit_code == 0
        assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
    table = run(["summary", str(hostile_file)]).stdout
    assert "\\x1b]0;owned\\x07\\x1b[2J" in table and "plain\\u202eevil" in table
    # machine formats keep the ids exactly (JSON escapes them itself)
    assert run(["summary", str(hostile_file), "--format", "json"]).stdout.count("\\u001b") == 2
    # messages naming objects are escaped too
    result = run(["fit-population", str(hostile_file), "-o", "-", "--population", "normal",
                  "--hyperprior", "mu=uniform(100, 200)"])
    assert "\x1b" not in result.stderr


def test_formula_safe_csv_export(hostile_file, tmp_path):
    output = tmp_path / "draws.csv"
    assert run(["export", str(hostile_file), "-o", str(output), "--to", "csv", "--formula-safe"]).exit_code == 0
    frame = pd.read_csv(output, keep_default_na=False)
    objects = set(frame["object"])
    assert objects == {"\x1b]0;owned\x07\x1b[2J", "'=1+2", "'+1+cmd", "'@SUM(A1)", "'-2+3",
                       "plain\u202eevil"}
    assert not any(str(cell).startswith(("=", "+", "@")) for column in frame for cell in frame[column])
    assert (frame["value"] < 0).any()  # numbers stay numbers, negative ones included
    plain = run(["export", str(hostile_file), "-o", "-", "--to", "csv"]).stdout
    assert "\n=1+2," in plain  # without the option the ids are exported as they are
    bad = run(["export", str(hostile_file), "-o", "-", "--to", "json", "--formula-safe"])
    assert bad.exit_code == 2 and "--formula-safe applies to --to csv" in bad.stderr
    # summary's csv likewise
    summary = run(["summary", str(hostile_file), "--format", "csv", "--formula-safe"])
    assert summary.exit_code == 0
    assert set(pd.read_csv(io.StringIO(summary.stdout), keep_default_na=False)["object"]) == objects
    plain = run(["summary", str(hostile_file), "--format", "csv"]).stdout
    assert "\n=1+2," in plain and "\x1b]0;owned\x07\x1b[2J" in plain  # csv keeps ids exactly (click stripped ANSI)
    bad = run(["summary", str(hostile_file), "--formula-safe"])
    assert bad.exit_code == 2 and "--formula-safe applies to --format csv" in bad.stderr


# 11. Leftovers -----------------------------------------------------------------------

def test_a_killed_run_to_stdout_leaves_a_work_directory_the_next_run_removes(gated):
    directory, args, gate = gated
    scratch = directory / "tmp"
    scratch.mkdir()
    killed = process([*args, "-o", "-"], directory, gate=gate, TMPDIR=str(scratch))
    assert wait_for_line(killed, "GATE-REACHED")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    left = os.listdir(scratch)
    assert len(left) == 1 and left[0].startswith("popinfer-stdout.")
    assert os.listdir(scratch / left[0]) == ["stdout.partial"]
    again = process([*args, "-o", "-", "--quiet"], directory, TMPDIR=str(scratch))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert out[:8] == b"\x89HDF\r\n\x1a\n"
    assert os.listdir(scratch) == []


def test_a_failure_with_stdout_output_leaves_nothing(gated):
    directory, args, gate = gated
    data = (directory / "data.csv").read_text().replace("o4,5.0,2,1", "o4,5.0,2,0").replace("o5,8.0,3,0", "o5,8.0,3,2")
    (directory / "data.csv").write_text(data)
    scratch = directory / "tmp"
    scratch.mkdir()
    failed = process([*args, "-o", "-"], directory, gate=directory / "unused", TMPDIR=str(scratch))
    out, err = failed.communicate(timeout=300)
    assert failed.returncode == 1 and b"failing on purpose" in err and out == b""
    assert os.listdir(scratch) == []


def _stage_two_at_the_gate(gated):
    """(directory, stage-two arguments, process): fit-population waiting while its temporary exists."""
    directory, args, gate = gated
    assert process([*args, "-o", "s.h5", "--quiet"], directory).wait(timeout=300) == 0
    stage_two = ["fit-population", "s.h5", "-o", "pop.h5", "--population", "gated_population.py:gated",
                 "--samples", "200", "--reweighted", "10", "--seed", "1", "--quiet"]
    waiting = process(stage_two, directory, gate=gate)
    assert wait_for_line(waiting, "GATE-REACHED")
    return directory, stage_two, waiting


def test_a_killed_fit_population_leaves_a_temporary_the_next_run_removes(gated):
    directory, stage_two, killed = _stage_two_at_the_gate(gated)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    left = [name for name in os.listdir(directory) if name.startswith(".pop.h5.")]
    assert len(left) == 1 and left[0].endswith(".tmp")
    again = process(stage_two, directory)
    assert again.wait(timeout=300) == 0, again.stderr.read()
    assert [name for name in os.listdir(directory) if name.startswith(".pop.h5.")] == []
    assert (directory / "pop.h5").exists()


def test_sigterm_removes_the_temporary_and_says_so(gated):
    directory, _, terminated = _stage_two_at_the_gate(gated)
    terminated.send_signal(signal.SIGTERM)  # interrupts the model's wait: the handler raises there
    assert terminated.wait(timeout=60) == 1
    message = terminated.stderr.read().decode()
    assert "Terminated" in message and "Traceback" not in message
    assert sorted(name for name in os.listdir(directory) if name != "__pycache__") == [
        "data.csv", "gate", "gated_model.py", "gated_population.py", "s.h5"]


# 3-5. Stage one's driver: model code in the fingerprint, the drawn seed, user code ending the process

MODEL = '''
import numpy as np


def f(params, data):
    return -0.5 * np.sum(((data["y"] - params["theta"][:, None]) / data["s"]) ** 2, axis=1)


f.parameters = {"theta": "uniform(-50, 50)"}
f.columns = ["y", "s"]
'''


def _three_objects(directory):
    (directory / "data.csv").write_text("id,y,s\na,1.0,1.0\nb,2.0,1.5\nc,-1.0,0.5\n")
    return str(directory / "data.csv")


def _stop_after_first_commit(monkeypatch):
    real_commit = Checkpoint.commit

    def commit_then_stop(self, batch_index, start, result):
        real_commit(self, batch_index, start, result)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "commit", commit_then_stop)
    return real_commit


def test_resume_after_the_model_code_changed_is_refused(tmp_path, monkeypatch):
    data, model_file, output = _three_objects(tmp_path), tmp_path / "model_v.py", tmp_path / "out.h5"
    model_file.write_text(MODEL)
    options = dict(n_draws=100, n_walkers=8, batch_size=1, seed=4, progress=False)
    real_commit = _stop_after_first_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        popinfer.fit_individuals(data, f"{model_file}:f", output, **options)
    monkeypatch.setattr(Checkpoint, "commit", real_commit)
    model_file.write_text(MODEL.replace("** 2, axis=1)", "** 4, axis=1)"))  # another likelihood, same name
    with pytest.raises(OutputError, match="other data, model, priors, settings or seed"):
        popinfer.fit_individuals(data, f"{model_file}:f", output, resume=True, **options)
    model_file.write_text(MODEL)  # the original code again: the checkpoint is its own
    resumed = popinfer.fit_individuals(data, f"{model_file}:f", output, resume=True, **options)
    assert resumed.ids == ["a", "b", "c"]
    # changed data is refused likewise
    real_commit = _stop_after_first_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        popinfer.fit_individuals(data, f"{model_file}:f", tmp_path / "two.h5", **options)
    monkeypatch.setattr(Checkpoint, "commit", real_commit)
    (tmp_path / "data.csv").write_text("id,y,s\na,1.0,1.0\nb,2.5,1.5\nc,-1.0,0.5\n")
    with pytest.raises(OutputError, match="other data"):
        popinfer.fit_individuals(data, f"{model_file}:f", tmp_path / "two.h5", resume=True, **options)


def test_a_run_without_seed_resumes_with_the_seed_it_drew(tmp_path, monkeypatch, reproducible):
    output, reference = tmp_path / "out.h5", tmp_path / "reference.h5"
    real_commit = _stop_after_first_commit(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        popinfer.fit_individuals(RATS, "binomial", output, **FAST)
    monkeypatch.setattr(Checkpoint, "commit", real_commit)
    with h5py.File(f"{output}.partial", "r") as handle:
        drawn = int(handle.attrs["seed"])
    resumed = popinfer.fit_individuals(RATS, "binomial", output, resume=True, **FAST)
    assert resumed.seed == drawn
    popinfer.fit_individuals(RATS, "binomial", reference, seed=drawn, **FAST)
    assert output.read_bytes() == reference.read_bytes()


EXITS = '''
import os
import sys

import numpy as np


def model(params, data):
    if data["y"][0] > 1.5:
        {call}
    return -0.5 * np.sum((data["y"] - params["theta"][:, None]) ** 2, axis=1)


model.parameters = {{"theta": "uniform(-50, 50)"}}
model.columns = ["y", "s"]


def population(theta, hyper):
    {call}


population.hyperparameters = {{"mu": "normal(0, 5)", "sigma": "halfnormal(5)"}}
'''


@pytest.mark.parametrize("call, said", [("sys.exit(0)", "called sys.exit(0)"), ("os._exit(0)", "called os._exit(0)"),
                                        ("raise SystemExit", "called sys.exit(None)")])
def test_user_code_ending_the_process_is_a_failure(tmp_path, call, said):
    data = _three_objects(tmp_path)
    (tmp_path / "exits.py").write_text(EXITS.format(call=call))
    fit = ["fit-individuals", data, "--model", "exits.py:model", "--samples", "100", "--walkers", "8",
           "--seed", "1", "--quiet"]
    for extra, kept in ((["--batch-size", "1", "-o", "out.h5"], True), (["-o", "one.h5"], False),
                        (["--batch-size", "1", "--workers", "2", "-o", "two.h5"], None)):
        proc = process([*fit, *extra], tmp_path)
        _, err = proc.communicate(timeout=300)
        err = err.decode()
        assert proc.returncode == 1, err
        assert "exits.py:model" in err and said in err
        assert "'b'" in err and "Traceback" not in err
        output = tmp_path / extra[-1]
        assert not output.exists()
        if kept is not None:  # object b is in the second batch of three, or in the only one
            assert Path(f"{output}.partial").exists() == kept
    (tmp_path / "good.py").write_text(MODEL)
    assert process(["fit-individuals", data, "--model", "good.py:f", "--samples", "100", "--walkers", "8",
                    "-o", "s.h5", "--quiet"], tmp_path).wait(timeout=300) == 0
    proc = process(["fit-population", "s.h5", "-o", "pop.h5", "--population", "exits.py:population", "--quiet"],
                   tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "exits.py:population" in err.decode() and "called" in err.decode()
    assert not (tmp_path / "pop.h5").exists()


def test_user_code_ending_the_process_on_import_is_a_failure(tmp_path):
    data = _three_objects(tmp_path)
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(0)\n")
    proc = process(["fit-individuals", data, "--model", "quits.py:model", "-o", "out.h5"], tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "quits.py" in err.decode() and "called sys.exit(0)" in err.decode()


# 12. The final write of stage one ---------------------------------------------------

def _checkpoint_of(path, n_objects, n_draws=200, batch=500):
    """A complete checkpoint of ``n_objects`` synthetic objects, in batches of ``batch``."""
    rng = np.random.default_rng(n_objects)
    ids = [f"object-{i:06d}" for i in range(n_objects)]
    bounds = list(range(0, n_objects, batch)) + [n_objects]
    root = {"command": "", "seed": 1, "extra": {"model": "normal", "parameters": ["theta"], "interim_prior": {},
                                                 "settings": {}}}
    checkpoint = Checkpoint(path, "fingerprint")
    checkpoint.start(False, False, ids, n_draws, ["theta"], bounds, root)
    for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        size = hi - lo
        checkpoint.commit(index, lo, {
            "samples": rng.normal(size=(size, n_draws, 1)), "log_interim_prior": rng.normal(size=(size, n_draws, 1)),
            "log_likelihood": rng.normal(size=(size, n_draws)), "acceptance_fraction": np.full(size, 0.4),
            "autocorr_time": np.ones((size, 1)), "n_steps": np.full(size, 100), "converged": np.ones(size, bool),
            "effective_draws": np.full(size, 1000.0)})
    return checkpoint


def _peak_of_final_write(directory, n_objects, from_checkpoint):
    import tracemalloc

    from popinfer.io.samples import Samples, samples_from_handle, write_samples

    checkpoint = _checkpoint_of(directory / f"{n_objects}.partial", n_objects)
    header = Samples(ids=[], parameters=["theta"], samples=None, log_interim_prior=None, log_likelihood=None,
                     diagnostics={}, model="normal", interim_prior={}, settings={}, seed=1)
    tracemalloc.start()
    try:
        if from_checkpoint:
            written = checkpoint.publish(directory / f"{n_objects}.h5", False, header)
        else:  # the straightforward reference: read everything, then write it
            written = samples_from_handle(checkpoint.handle, "checkpoint")
            write_samples(written, directory / f"{n_objects}-reference.h5")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        checkpoint.close()
    assert written.n_objects == n_objects
    return peak


def test_the_final_write_of_stage_one_needs_memory_independent_of_n(tmp_path, reproducible):
    data_bytes = {n: n * 200 * 3 * 8 for n in (2000, 16000)}  # samples, ln p0 and ln L
    small = _peak_of_final_write(tmp_path, 2000, True)
    large = _peak_of_final_write(tmp_path, 16000, True)
    assert large < 0.1 * data_bytes[16000]  # 77 MB of draws copied with a few MB
    assert large < 1.5 * small + 2**20  # 8x the objects: the same peak (ids aside)
    # negative control: reading the whole result first, as before, grows with N
    reference = _peak_of_final_write(tmp_path, 16000, False)
    assert reference > data_bytes[16000] > 10 * large
    assert (tmp_path / "16000.h5").read_bytes() == (tmp_path / "16000-reference.h5").read_bytes()


def _shards(directory, n_objects, n_draws=200):
    """Two shard files of ``n_objects`` synthetic objects each."""
    from popinfer.io.samples import Samples, write_samples

    directory.mkdir()
    rng = np.random.default_rng(n_objects)
    paths = [directory / f"part{index}.h5" for index in (1, 2)]
    for index, path in enumerate(paths, start=1):
        write_samples(Samples(
            ids=[f"s{index}-{i}" for i in range(n_objects)], parameters=["theta"],
            samples=rng.normal(size=(n_objects, n_draws, 1)), log_interim_prior=rng.normal(size=(n_objects, n_draws, 1)),
            log_likelihood=rng.normal(size=(n_objects, n_draws)),
            diagnostics={"acceptance_fraction": np.full(n_objects, 0.4), "autocorr_time": np.ones((n_objects, 1)),
                         "n_steps": np.full(n_objects, 100), "converged": np.ones(n_objects, bool),
                         "effective_draws": np.full(n_objects, 1000.0)},
            model="normal", interim_prior={}, settings={}, seed=1), path,
            extra_attrs={"shard": f"{index}/2", "fingerprint": "f", "n_objects_total": 2 * n_objects})
    return paths


def test_merge_copies_the_shards_by_blocks(tmp_path, reproducible):
    import tracemalloc

    from popinfer.io.samples import merge_shards

    def peak(paths, output):
        tracemalloc.start()
        try:
            merged = merge_shards(paths, output)
            return merged, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = _shards(tmp_path / "small", 2000), _shards(tmp_path / "large", 8000)
    _, streamed_small = peak(small, tmp_path / "small.h5")
    merged, streamed_large = peak(large, tmp_path / "large.h5")
    in_memory, whole = peak(large, None)  # negative control: the merged arrays held in memory
    draw_bytes = 200 * 3 * 8  # per object: samples, ln p0 and ln L
    assert whole > 2 * 8000 * draw_bytes  # 77 MB
    # 4x the objects: the peak grows by less than a tenth of the extra objects' draws (their ids)
    assert (streamed_large - streamed_small) / (2 * (8000 - 2000)) < 0.1 * draw_bytes
    np.testing.assert_array_equal(merged.samples, in_memory.samples)
    assert merged.ids == in_memory.ids and merged.ids[8000] == "s2-0"


def test_stale_work_directories_are_removed_but_never_a_live_runs(tmp_path):
    from popinfer.io.hdf5 import reserve_space

    make = ("import os, sys\nfrom popinfer.io.files import work_directory\n"
            "directory = work_directory(sys.argv[1])\nopen(os.path.join(directory, 'space'), 'wb').write(b'x' * 4096)\n"
            "print(directory, flush=True)\nsys.stdin.read()\nos._exit(0)\n")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    output = str(tmp_path / "out.h5")

    def holder():
        proc = subprocess.Popen([sys.executable, "-c", make, output], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=environment, text=True)
        return proc, proc.stdout.readline().strip()  # the directory exists and is locked

    dead, dead_directory = holder()
    dead.stdin.close()
    assert dead.wait(timeout=60) == 0  # died without cleaning up, as after SIGKILL
    live, live_directory = holder()
    reserve_space(output, 1024)
    assert not os.path.exists(dead_directory)  # a dead run's: removed
    assert os.listdir(live_directory) == ["space"]  # a live run's: untouched
    live.stdin.close()
    assert live.wait(timeout=60) == 0
    reserve_space(output, 1024)
    assert os.listdir(tmp_path) == []
