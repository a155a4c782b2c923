"""User code (models and populations named as file.py:function): a file never runs code
unless the user asks, and what user code prints never corrupts ``-o -``."""

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import popinfer
from conftest import SAMPLE_DATA
from popinfer.cli import main

EIGHT = str(SAMPLE_DATA / "eight_schools.csv")
FAST = ["--samples", "200", "--walkers", "16", "--quiet"]
POP_FAST = ["--samples", "100", "--walkers", "8", "--max-steps", "200", "--reweighted", "20", "--quiet"]

CHATTY_MODEL = textwrap.dedent('''
    import numpy as np
    print("importing the chatty model")

    def chatty(params, data):
        print("chatty model called")
        return -0.5 * np.sum(((data["y"][None, :] - params["theta"][:, None]) / data["sigma"][None, :]) ** 2, axis=1)

    chatty.parameters = {"theta": "uniform(-100, 100)"}
    chatty.columns = ["y", "sigma"]
''')

POPULATION = textwrap.dedent('''
    import numpy as np
    {prelude}

    def wide(theta, hyper):
        {call}
        return -0.5 * ((theta["theta"] - hyper["mu"]) / 20.0) ** 2 - np.log(20.0 * np.sqrt(2 * np.pi))

    wide.hyperparameters = {{"mu": "normal(0, 20)"}}
''')


def run(args, **kwargs):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)


def write_population(path, prelude="", call="pass"):
    path.write_text(POPULATION.format(prelude=prelude, call=call))
    return f"{path}:wide"


def hdf5_from(data):
    handle = h5py.File(io.BytesIO(data), "r")
    return handle


# ---- item 6: a printing user model or population and -o - -----------------------------------

def test_a_printing_user_model_does_not_corrupt_stdout(in_tmp):
    Path("chatty.py").write_text(CHATTY_MODEL)
    result = run(["fit-individuals", EIGHT, "-o", "-", "--model", "chatty.py:chatty", "--seed", "1", *FAST])
    assert result.exit_code == 0, result.stderr
    with hdf5_from(result.stdout_bytes) as handle:
        assert handle["samples"].shape == (8, 200, 1)
    assert "importing the chatty model" in result.stderr and "chatty model called" in result.stderr


def test_a_printing_user_population_does_not_corrupt_stdout(in_tmp):
    samples = run(["fit-individuals", EIGHT, "-o", "eight.h5", "--model", "normal", "--seed", "1", *FAST])
    assert samples.exit_code == 0
    spec = write_population(Path("chatty_pop.py").resolve(), prelude='print("importing the population")',
                            call='print("population called")')
    result = run(["fit-population", "eight.h5", "-o", "-", "--population", spec, "--seed", "2", *POP_FAST])
    assert result.exit_code == 0, result.stderr
    with hdf5_from(result.stdout_bytes) as handle:
        assert handle.attrs["popinfer_format"] == "population"
    assert "importing the population" in result.stderr and "population called" in result.stderr


def test_worker_processes_print_to_stderr_too(tmp_path):
    """With --workers 2 the model runs in other processes, whose stdout is the pipe itself."""
    (tmp_path / "chatty.py").write_text(CHATTY_MODEL)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(popinfer.__file__).parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "popinfer", "fit-individuals", EIGHT, "-o", "-", "--model",
                           "chatty.py:chatty", "--seed", "1", "--workers", "2", "--batch-size", "4", *FAST],
                          cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    with hdf5_from(done.stdout) as handle:
        assert handle["samples"].shape == (8, 200, 1)
    assert b"chatty model called" in done.stderr


# ---- item 5: plot never runs code named in a file unless trusted -----------------------------

@pytest.fixture
def foreign_population_file(in_tmp):
    """A population file whose `population` attribute names code that leaves a mark when imported."""
    assert run(["fit-individuals", EIGHT, "-o", "eight.h5", "--model", "normal", "--seed", "1", *FAST]).exit_code == 0
    spec = write_population(Path("wide.py").resolve())
    result = run(["fit-population", "eight.h5", "-o", "pop.h5", "--population", spec, "--seed", "2", *POP_FAST])
    assert result.exit_code == 0, result.stderr
    marker = in_tmp / "code-ran"
    foreign = write_population((in_tmp / "foreign.py").resolve(),
                               prelude=f"open({str(marker)!r}, 'a').write('imported')")
    with h5py.File("pop.h5", "r+") as handle:
        handle.attrs["population"] = foreign
    return in_tmp / "pop.h5", marker


def test_plot_does_not_import_a_population_named_in_the_file(foreign_population_file):
    path, marker = foreign_population_file
    for kind in ("population", "forest", "corner", "diagnostics"):
        result = run(["plot", str(path), "-o", f"{kind}.png", "--kind", kind])
        assert result.exit_code == 0, result.stderr
        assert Path(f"{kind}.png").read_bytes()[:4] == b"\x89PNG"
    population = run(["plot", str(path), "-o", "again.png"])
    assert "foreign.py:wide" in population.stderr and "--trust-code" in population.stderr
    assert "density is left out" in population.stderr
    assert not marker.exists()


def test_plot_with_trust_code_draws_the_user_density(foreign_population_file):
    path, marker = foreign_population_file
    result = run(["plot", str(path), "-o", "trusted.png", "--trust-code"])
    assert result.exit_code == 0, result.stderr
    assert marker.read_text() == "imported" and "--trust-code" not in result.stderr


def test_the_one_gate_for_populations_named_in_files(foreign_population_file):
    path, marker = foreign_population_file
    from popinfer.errors import UntrustedCodeError

    result = popinfer.read_population(path)
    with pytest.raises(UntrustedCodeError, match="foreign.py:wide"):
        popinfer.populations.population_of_file(result.population, result.parameters, str(path))
    assert not marker.exists()
    built_in = popinfer.populations.population_of_file("normal", ["theta"], str(path))
    assert built_in.name == "normal"


# ---- the per-object calls ---------------------------------------------------------------------

RECORDING_MODEL = textwrap.dedent('''
    import numpy as np
    calls = []

    def recording(params, data):
        calls.append({name: np.array(value) for name, value in params.items()})
        return params["a"] * data["y"].sum() + params["b"]

    recording.parameters = {"a": "uniform(-10, 10)", "b": "uniform(-10, 10)"}
    recording.columns = ["y"]
''')


def test_each_object_is_called_with_its_own_rows_and_valid_walkers(tmp_path):
    """Walkers outside the prior (``valid`` False) are left out of that object's call and get
    -inf; every other walker gets its own number, from its object's rows."""
    from popinfer.models.user import UserModel
    (tmp_path / "recording.py").write_text(RECORDING_MODEL)
    model = UserModel(f"{tmp_path / 'recording.py'}:recording")
    y = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 5.0])
    starts = np.array([0, 3, 5, 6])  # three objects: rows 0-2, 3-4, 5
    data = model.prepare({"y": y}, starts)
    data["ids"] = ["p", "q", "r"]
    rng = np.random.default_rng(3)
    params = {"a": rng.normal(size=(5, 3)), "b": rng.normal(size=(5, 3))}
    valid = np.ones((5, 3), bool)
    valid[[1, 3], 1] = False  # object q: two walkers outside the prior
    valid[:, 2] = False  # object r: none inside
    out = model.log_likelihood(params, data, valid)
    sums = np.array([6.0, 30.0, 5.0])
    expected = np.where(valid, params["a"] * sums + params["b"], -np.inf)
    np.testing.assert_array_equal(out, expected)
    calls = model._function.__globals__["calls"]
    assert len(calls) == 2  # r is not called
    np.testing.assert_array_equal(calls[1]["a"], params["a"][[0, 2, 4], 1])
    np.testing.assert_array_equal(model.log_likelihood(params, data), params["a"] * sums + params["b"])
