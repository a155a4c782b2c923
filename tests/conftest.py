from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = ROOT / "sample_data"


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
