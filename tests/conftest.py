import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = ROOT / "sample_data"


# The longest tests, placed so that pytest-xdist's processes each start on their share of them:
# xdist first sends each process a run of ``chunk`` consecutive tests (see :func:`_xdist_chunk`), then
# one test at a time to whichever is free. So the i-th longest goes to process i mod n's first run,
# and with the long tests spread over the processes they end together instead of one process
# running two long tests in a row at the end (CI's machine has 2 cores and a 90-minute limit).
# Only the order changes.
LONGEST_FIRST = (
    "test_refine_eight_schools.py::",
    "test_docs.py::test_every_example_runs_as_written[README.md]",
    "test_calibration.py::",
    "test_docs.py::test_every_example_runs_as_written[sample_data/EXAMPLES.md]",
    "test_refine_exact.py::",
    "test_published.py::",
    "test_robustness.py::",
    "test_hostile.py::",
)


def _rank(item):
    name = item.nodeid.removeprefix("tests/")
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if name.startswith(prefix)), len(LONGEST_FIRST))


def _xdist_chunk(config, n_items, workers):
    """How many consecutive tests pytest-xdist's load scheduling first sends each of ``workers``
    processes (its ``LoadScheduling.schedule``)."""
    most = getattr(config.option, "maxschedchunk", None) or n_items
    return max(min(n_items // workers // 4, most), 2)


def spread(ranked, long_count, workers, chunk):
    """``ranked`` (longest first, ``long_count`` of them long) reordered so that the i-th long one is in
    process i mod ``workers``'s first run of ``chunk``; the others fill the remaining places in order."""
    slots = {}
    for i in range(long_count):
        worker, place = i % workers, i // workers
        if place >= chunk:
            break
        slots[worker * chunk + place] = ranked[i]
    rest = iter(ranked[len(slots):])
    size = len(ranked)
    return [slots[position] if position in slots else next(rest) for position in range(size)]


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns -n into its workers
def pytest_cmdline_main(config):
    """Plain ``pytest``: two test processes where pytest-xdist is installed and no -n was given
    (README), one without it (an -n in pyproject's options would stop pytest before collecting).
    Without popinfer's dependencies, one line saying how to install them. An xdist worker runs
    this hook too, with -n cleared: it must stay one process, so it is left alone."""
    if hasattr(config, "workerinput"):
        return
    try:
        import popinfer  # noqa: F401
    except ModuleNotFoundError as error:
        raise pytest.UsageError(f"popinfer's tests need popinfer and its test extra installed ({error.name} is "
                                f"missing): run pip install \".[test]\" first, as README says.") from None
    if config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses", None) is None:
        config.option.numprocesses = 2


@pytest.hookimpl(trylast=True)  # after -m's deselection: xdist schedules what is left
def pytest_collection_modifyitems(config, items):
    items.sort(key=_rank)  # stable: every other test keeps its place
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # set in xdist's processes
    if workers > 1 and len(items) >= 2 * workers:
        long_count = sum(_rank(item) < len(LONGEST_FIRST) for item in items)
        items[:] = spread(list(items), long_count, workers, _xdist_chunk(config, len(items), workers))


@pytest.fixture(autouse=True)
def kernel_backend(request, monkeypatch):
    """The default suite runs stage two on the numpy kernel whatever the shell sets; the slow suite's
    statistical runs on ``--backend auto`` (POPINFER_BACKEND=auto): jax where it is the faster kernel,
    on a CPU without AVX-512 (README "Performance"), else numpy. The kernels agree to 1e-10
    (tests/test_jax_backend.py), so the same validation holds for both, in about half the time there."""
    if request.node.get_closest_marker("slow"):
        monkeypatch.setenv("POPINFER_BACKEND", "auto")
    else:
        monkeypatch.delenv("POPINFER_BACKEND", raising=False)


@pytest.fixture
def reproducible(monkeypatch):
    """Fix the creation time so that equal runs give byte-identical files."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_csv(path, text):
    Path(path).write_text(text)
    return str(path)


def cli(args, **kwargs):
    """Run the CLI in-process (click's runner), exceptions not caught: a traceback fails the test."""
    from click.testing import CliRunner  # here, not at import: the hook above must run without click

    from popinfer.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)


def refused(result, code, *fragments):
    """The command failed cleanly: the exit status, a message naming the thing, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr and "Unexpected" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
