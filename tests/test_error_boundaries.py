"""Error boundaries: each layer translates only what it can explain."""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import popinfer
from popinfer.cli import main
from popinfer.errors import FileFormatError, ModelError
from popinfer.io.hdf5 import open_popinfer_file, write_root_attributes
from popinfer.io.samples import Samples, write_samples

EXPLODING = '''
import numpy as np

def exploding(theta, hyper):
    raise RuntimeError("boom")

exploding.hyperparameters = {"scale": "loguniform(0.01, 100)"}
'''


def small_samples(path, n_objects=4, n_draws=200):
    rng = np.random.default_rng(1)
    theta = rng.uniform(0.1, 2.0, (n_objects, n_draws, 1))
    ones = np.ones(n_objects)
    write_samples(Samples(
        ids=[f"o{i}" for i in range(n_objects)], parameters=["rate"], samples=theta,
        log_interim_prior=np.full(theta.shape, -np.log(10.0)), log_likelihood=np.zeros(theta.shape[:2]),
        diagnostics={"acceptance_fraction": ones, "autocorr_time": ones[:, None], "n_steps": ones.astype(int),
                     "converged": ones.astype(bool), "effective_draws": ones},
        model="poisson", interim_prior={"rate": "uniform(0.0, 10.0)"}, settings={}, seed=1), path)


def test_a_user_populations_own_error_reaches_the_user_without_stage_two_advice(tmp_path):
    small_samples(tmp_path / "s.h5")
    (tmp_path / "exploding.py").write_text(EXPLODING)
    spec = f"{tmp_path / 'exploding.py'}:exploding"
    result = CliRunner().invoke(main, ["fit-population", str(tmp_path / "s.h5"), "-o", str(tmp_path / "p.h5"),
                                       "--population", spec, "--seed", "1", "--quiet"])
    assert result.exit_code == 1
    assert "RuntimeError" in result.stderr and "boom" in result.stderr and "exploding" in result.stderr
    assert "hyperprior" not in result.stderr and "widen" not in result.stderr.lower()
    assert "Traceback" not in result.stderr and not (tmp_path / "p.h5").exists()
    with pytest.raises(ModelError, match="exploding.*RuntimeError: boom") as caught:
        popinfer.fit_population(str(tmp_path / "s.h5"), spec, seed=1, progress=False)
    assert isinstance(caught.value.__cause__, RuntimeError)  # the user's own exception is kept as the cause


def test_a_hyperprior_with_no_valid_start_gets_stage_two_advice_only(tmp_path):
    small_samples(tmp_path / "s.h5")
    result = CliRunner().invoke(main, ["fit-population", str(tmp_path / "s.h5"), "-o", str(tmp_path / "p.h5"),
                                       "--population", "normal", "--hyperprior", "sigma=uniform(-2, -1)",
                                       "--seed", "1", "--quiet"])
    assert result.exit_code == 1
    assert "hyperparameter sampler" in result.stderr and "--hyperprior" in result.stderr
    assert "interim prior" not in result.stderr and "--prior " not in result.stderr  # not stage one's advice


def test_a_bug_inside_open_popinfer_file_is_not_reported_as_a_damaged_file(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as handle:
        write_root_attributes(handle, "samples", "", 1, {})
        handle["values"] = np.arange(3)
    for bug, error in ((lambda handle: {}["key"], KeyError), (lambda handle: int("x"), ValueError),
                       (lambda handle: handle["values"][()] / None, TypeError)):
        with pytest.raises(error):
            with open_popinfer_file(path) as handle:
                bug(handle)
    # What h5py raises while reading is still damaged content (negative control of the rule).
    with pytest.raises(FileFormatError, match="damaged"):
        with open_popinfer_file(path) as handle:
            handle["missing"]
