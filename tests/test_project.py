"""The project's own set-up: the README's test command and CI."""

import os
import subprocess
import sys

from conftest import ROOT


def _plain_pytest(args, cwd):
    """Run pytest as its console script does: without the working directory on sys.path
    (which ``python -m pytest`` adds, hiding imports that only work from the root)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import sys, pytest; sys.path = [p for p in sys.path if p not in ('', '.')]; sys.exit(pytest.main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_plain_pytest_collects_every_test_module(tmp_path):
    result = _plain_pytest(["--collect-only", "-q", "-m", "slow or not slow", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
                            "-c", str(ROOT / "pyproject.toml"), str(ROOT / "tests")], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "error" not in result.stdout.lower().split("collected")[-1]
    assert "tests/test_published.py::" in result.stdout


def test_ci_runs_the_readme_test_command_in_a_fresh_environment():
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / ".ci" / "run").read_text()
    command = 'pip install ".[test]" && pytest'
    assert f"    {command}\n" in readme
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[-2:] == [command, "pytest -m slow -n 2"]
    assert any(line.startswith("python3 -m venv ") and "mktemp" in script for line in lines)


def test_slow_marker_is_registered_and_the_fast_subset_documented():
    readme = (ROOT / "README.md").read_text()
    assert "    pytest -m slow -n 2\n" in readme
    result = _plain_pytest(["--markers", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT)], cwd=ROOT)
    assert "@pytest.mark.slow:" in result.stdout


def test_tests_wait_for_events_and_seed_per_test():
    """No fixed sleeps before acting (wait for a line on stderr, a file, a busy worker;
    polling intervals of at most 0.1 s), and no module-level random stream shared by the
    tests of a module unless it is reseeded for each test."""
    import re

    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name == "test_project.py":  # this check's own patterns
            continue
        text = path.read_text()
        for seconds in re.findall(r"time\.sleep\(([0-9.]+)\)", text):
            assert float(seconds) <= 0.1, f"{path.name}: time.sleep({seconds})"
        assert not re.search(r"time\.sleep\((?![0-9.]+\))", text), f"{path.name}: a sleep of a computed length"
        if re.search(r"^[A-Z_]+ = np\.random\.default_rng\(", text, re.M):
            assert "_seeded_per_test" in text, f"{path.name}: a module-level generator, not reseeded per test"


def test_the_longest_tests_start_on_different_processes():
    from conftest import spread

    # 10 tests, the first 4 long; 2 processes whose first runs are 3 tests each (places 0-2, 3-5)
    order = spread(list("LMNOabcdef"), 4, 2, 3)
    assert order == list("LNaMOb") + list("cdef")
    assert spread(list("Labc"), 1, 2, 2) == list("Labc")


def test_plain_pytest_runs_on_two_processes_with_xdist_and_collects_without_it(tmp_path):
    """The README's ``pytest`` runs on two test processes where pytest-xdist is installed, and
    still collects (in one) where it is not: no -n in pyproject's options, which pytest without
    xdist cannot parse."""
    common = ["-p", "no:cacheprovider", "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")]
    one = str(ROOT / "tests" / "test_project.py") + "::test_tests_wait_for_events_and_seed_per_test"
    result = _plain_pytest([*common, one], cwd=tmp_path)
    assert result.returncode == 0 and "2 workers" in result.stdout, result.stdout[-3000:]
    result = _plain_pytest(["--collect-only", "-q", "-p", "no:xdist", *common, str(ROOT / "tests")], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "tests/test_likelihood.py::" in result.stdout and "deselected" in result.stdout


def test_plain_pytest_without_popinfers_dependencies_says_how_to_install_them(tmp_path):
    code = ("import sys, pytest\n"
            "class Missing:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'h5py':\n"
            "            raise ModuleNotFoundError(\"No module named 'h5py'\", name='h5py')\n"
            "sys.meta_path.insert(0, Missing())\n"
            "sys.exit(pytest.main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code, "--collect-only", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(ROOT / "tests")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'h5py is missing): run pip install ".[test]" first' in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
