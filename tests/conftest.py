from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = ROOT / "sample_data"


# The longest tests, started first: pytest-xdist hands a test to whichever process is free, so with
# these at the head of the queue the two processes end together instead of one running a long test
# alone at the end (CI's machine has 2 cores and a 90-minute limit). Only the order changes.
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
    name = item.nodeid.rsplit("/", 1)[-1]
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if name.startswith(prefix)), len(LONGEST_FIRST))


def pytest_collection_modifyitems(items):
    items.sort(key=_rank)  # stable: every other test keeps its place


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
