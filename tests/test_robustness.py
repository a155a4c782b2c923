"""Robustness: interrupted and concurrent runs, damaged files, extreme inputs, and
property-based tests of the distribution grammar and the table loader."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import popinfer
import popinfer.populations
from conftest import SAMPLE_DATA
from popinfer.cli import main
from popinfer.distributions import FAMILIES, parse_distribution
from popinfer.errors import InputDataError, UsageError
from popinfer.reweighting.likelihood import HyperLikelihood, reference_log_likelihood
from popinfer.table import read_table

RATS = str(SAMPLE_DATA / "rat_tumors.csv")
EIGHT = str(SAMPLE_DATA / "eight_schools.csv")
STAGE_ONE = ["fit-individuals", RATS, "--model", "binomial", "--samples", "200", "--walkers", "16",
             "--batch-size", "4", "--seed", "3"]


def popinfer_process(args, cwd, **kwargs):
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "popinfer", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def wait_for_progress(process, total, count, timeout=120):
    """Read the progress bar on stderr until it shows ``count`` of ``total`` done (objects
    or steps): an observable event, not a fixed sleep."""
    seen, began = b"", time.time()
    marker = f"/{total}".encode()
    while time.time() - began < timeout:
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        numbers = [int(part.split(b"/")[0].split()[-1]) for part in seen.split(b"|") if marker in part
                   and part.split(b"/")[0].split() and part.split(b"/")[0].split()[-1].isdigit()]
        if numbers and max(numbers) >= count:
            return True
    return False


def wait_for_objects(process, count, timeout=120):
    """Read the progress bar on stderr until ``count`` of the 71 rat tumours are done."""
    return wait_for_progress(process, 71, count, timeout)


def wait_for_path(path, process, timeout=120):
    """Poll until ``path`` exists (the run has claimed its output) or the process ended."""
    began = time.time()
    while not path.exists() and process.poll() is None and time.time() - began < timeout:
        time.sleep(0.02)
    return path.exists()


def test_sigkill_then_resume_gives_the_uninterrupted_file(tmp_path):
    (tmp_path / "ref").mkdir()
    reference = popinfer_process([*STAGE_ONE, "-o", "out.h5", "--quiet"], tmp_path / "ref")
    assert reference.wait(timeout=300) == 0
    (tmp_path / "run").mkdir()
    run = popinfer_process([*STAGE_ONE, "-o", "out.h5"], tmp_path / "run")
    assert wait_for_objects(run, 20)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    partial = tmp_path / "run" / "out.h5.partial"
    assert partial.exists() and not (tmp_path / "run" / "out.h5").exists()
    with h5py.File(partial, "r") as handle:
        committed = int(handle.attrs["batches_committed"])
    assert 1 <= committed < 18  # killed mid-run, with work to keep
    resumed = popinfer_process([*STAGE_ONE, "-o", "out.h5", "--quiet", "--resume"], tmp_path / "run")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert (tmp_path / "run" / "out.h5").read_bytes() == (tmp_path / "ref" / "out.h5").read_bytes()
    assert not partial.exists()


def test_sigint_exits_promptly_with_a_resume_hint(tmp_path):
    run = popinfer_process([*STAGE_ONE, "-o", "out.h5"], tmp_path)
    assert wait_for_objects(run, 8)
    run.send_signal(signal.SIGINT)
    # Exit 1 with the message and no output: a run that ignored the signal would finish (exit 0)
    # and write out.h5. The timeout only guards against a hang (the machine may be loaded).
    assert run.wait(timeout=300) == 1
    message = run.stderr.read().decode()
    assert "Interrupted" in message and "--resume" in message and "Traceback" not in message
    assert not (tmp_path / "out.h5").exists()


def test_sigint_during_fit_population_says_it_restarts(tmp_path):
    popinfer.fit_individuals(EIGHT, "normal", tmp_path / "eight.h5", n_draws=4000, seed=1, progress=False)
    run = popinfer_process(["fit-population", "eight.h5", "-o", "pop.h5", "--population", "normal",
                            "--max-steps", "20000", "--seed", "1"], tmp_path)
    assert wait_for_progress(run, 20000, 10)  # sampling the hyperparameters
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=300) == 1  # not 0: the 20000-step run did not finish (timeout: a hang guard)
    message = run.stderr.read().decode()
    assert "keeps no partial state" in message and "restart" in message
    assert sorted(os.listdir(tmp_path)) == ["eight.h5"]


def test_two_runs_on_the_same_output_one_wins(tmp_path):
    first = popinfer_process([*STAGE_ONE, "-o", "out.h5", "--quiet"], tmp_path)
    assert wait_for_path(tmp_path / "out.h5.partial", first)  # the first run has claimed the output
    second = popinfer_process([*STAGE_ONE, "-o", "out.h5", "--quiet"], tmp_path)
    codes = sorted([first.wait(timeout=300), second.wait(timeout=300)])
    assert codes == [0, 1]
    loser = first if first.returncode == 1 else second
    message = loser.stderr.read().decode()
    assert "out.h5" in message and ("another run" in message or "--resume" in message or "exists" in message)
    samples = popinfer.read_samples(tmp_path / "out.h5")
    assert samples.n_objects == 71 and np.isfinite(samples.samples).all()


def test_reading_a_file_while_its_sibling_is_written(tmp_path):
    popinfer.fit_individuals(EIGHT, "normal", tmp_path / "eight.h5", n_draws=2000, seed=1, progress=False)
    writer = popinfer_process(["fit-population", "eight.h5", "-o", "pop.h5", "--population", "normal", "--quiet",
                               "--seed", "1", "--samples", "1000", "--reweighted", "10"], tmp_path)
    reads = 0
    while writer.poll() is None:
        assert popinfer.read_samples(tmp_path / "eight.h5").n_objects == 8
        reads += 1
    assert writer.returncode == 0 and reads > 0
    assert popinfer.read_population(tmp_path / "pop.h5").hyper_samples.shape == (1000, 2)


def test_truncated_and_corrupted_files(tmp_path):
    good = tmp_path / "good.h5"
    popinfer.fit_individuals(EIGHT, "normal", good, n_draws=200, n_walkers=16, seed=1, progress=False)
    data = good.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 2])
    corrupted = bytearray(data)
    corrupted[2000:2400] = os.urandom(400)
    (tmp_path / "corrupted.h5").write_bytes(bytes(corrupted))
    for name in ("truncated.h5", "corrupted.h5"):
        result = CliRunner().invoke(main, ["summary", str(tmp_path / name)])
        assert result.exit_code == 1, (name, result.output)
        assert name in result.stderr and "Traceback" not in result.stderr


def test_output_directory_without_write_permission(tmp_path, monkeypatch):
    # The tests may run as root, which ignores permission bits; the check itself is what matters.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode))
    result = CliRunner().invoke(main, ["fit-individuals", EIGHT, "-o", str(tmp_path / "out.h5"), "--model", "normal"])
    assert result.exit_code == 1 and "no write permission" in result.stderr and str(tmp_path) in result.stderr


def test_extreme_but_legal_inputs_give_finite_results():
    sigmas = [1e-6, 1e-3, 1.0, 1e3, 1e6]
    frame = pd.DataFrame({"id": list("abcde"), "y": 0.5, "sigma": sigmas})
    samples = popinfer.fit_individuals(frame, "normal", n_draws=1000, seed=1, progress=False)
    draws = samples.draws("theta")
    assert np.isfinite(draws).all() and np.isfinite(samples.log_likelihood).all()
    for n, sigma in enumerate(sigmas[:3]):
        assert abs(draws[n].mean() - 0.5) < 0.2 * sigma and 0.8 < draws[n].std() / sigma < 1.2
    assert abs(draws[4].std() - 2000 / np.sqrt(12)) < 100  # σ = 1e6: the posterior is the flat prior
    counts = pd.DataFrame({"id": ["zero", "huge"], "count": [0, 10**7]})
    rates = popinfer.fit_individuals(counts, "poisson", priors=["rate=uniform(0, 2e7)"], n_draws=1000, seed=2,
                                     progress=False).draws("rate")
    assert np.isfinite(rates).all() and abs(rates[1].mean() - 1e7) < 5 * np.sqrt(1e7)
    assert abs(rates[0].mean() - 1.0) < 0.2  # Gamma(1, 1) posterior under a flat prior


def test_a_hundred_thousand_draws_per_object():
    frame = pd.DataFrame({"id": ["a", "b"], "y": [1.0, -2.0], "sigma": [1.0, 2.0]})
    samples = popinfer.fit_individuals(frame, "normal", n_draws=100_000, seed=3, progress=False)
    assert samples.samples.shape == (2, 100_000, 1) and np.isfinite(samples.samples).all()
    population = popinfer.populations.get_population("normal", ["theta"])
    hyper = {"mu": np.array([0.0, 50.0, 1e4]), "sigma": np.array([1.0, 0.01, 1.0])}
    likelihood = HyperLikelihood(population, samples.samples, samples.log_interim_prior[:, :, 0])
    got = likelihood(hyper)
    expected = reference_log_likelihood(population, samples.samples, samples.log_interim_prior[:, :, 0], hyper)
    assert np.isfinite(got).all()  # even 1e4 from every draw: very small, not -inf
    np.testing.assert_allclose(got, expected, rtol=1e-10)


# -- property-based tests -------------------------------------------------------------

def valid_args(family):
    finite = st.floats(-1e3, 1e3, allow_nan=False)
    positive = st.floats(1e-3, 1e3, allow_nan=False)
    names = FAMILIES[family][0]
    if family in ("uniform", "loguniform"):
        return st.tuples(positive, positive).filter(lambda t: t[0] < t[1] * (1 - 1e-9))
    if family == "truncnormal":
        return st.tuples(finite, positive, finite, finite).filter(lambda t: t[2] + 1e-3 < t[3])
    if family in ("normal", "cauchy", "lognormal"):
        return st.tuples(st.floats(-50, 50), positive)
    if family == "studentt":
        return st.tuples(positive, finite, positive)
    return st.tuples(*[positive] * len(names))


@st.composite
def specs(draw):
    family = draw(st.sampled_from(sorted(FAMILIES)))
    args = draw(valid_args(family))
    return f"{family}({', '.join(repr(a) for a in args)})"


@settings(max_examples=300, deadline=None)
@given(specs())
def test_accepted_specs_round_trip_and_have_finite_density_inside(spec):
    dist = parse_distribution(spec)
    assert parse_distribution(dist.spec) == dist
    inside = dist.ppf(0.5)
    low, high = dist.support
    if low < inside < high:  # (a median can round onto the boundary, where some densities diverge)
        assert np.isfinite(dist.logpdf(inside))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_random_text_is_a_distribution_or_a_usage_error(text):
    try:
        parse_distribution(text)
    except UsageError as exc:
        assert repr(text) in str(exc) or text.strip() == "" or "(" in text
    try:
        popinfer.distributions.parse_assignment(text)
    except UsageError:
        pass


cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                  st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), cells, cells), max_size=12))
def test_table_loader_reads_or_refuses_cleanly(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("table") / "data.csv"
    pd.DataFrame(rows, columns=["id", "y", "sigma"]).to_csv(path, index=False)
    model = popinfer.models.get_model("normal", None, ["id", "y", "sigma"])
    try:
        table = read_table(path)
        columns = model.load_columns(table)
    except (InputDataError, UsageError) as exc:
        assert "data.csv" in str(exc)
        return
    assert np.isfinite(columns["y"]).all() and (columns["sigma"] > 0).all()
    assert table.n_objects == len({str(r[0]) for r in rows})


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_loader(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("bytes") / "blob.csv"
    path.write_bytes(blob)
    try:
        read_table(path)
    except (InputDataError, UsageError) as exc:
        assert "blob.csv" in str(exc) or "--id-column" in str(exc)
