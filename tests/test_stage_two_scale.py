"""Stage two at scale: memory bounded by the draws it needs, streamed outputs equal to
in-memory ones, and the blockwise pieces (pooled draws, ESS medians, warning ranking)
equal to what they replace."""

import hashlib
import io
import tracemalloc
import warnings

import h5py
import numpy as np
import pytest
from scipy import stats

import popinfer
from popinfer.io.population import read_population
from popinfer.io.samples import write_samples
from popinfer.populations import get_population
from popinfer.reweighting.fit import PopulationDiagnosticWarning, _partial_pooling, column_medians, diagnose
from popinfer.reweighting.likelihood import HyperLikelihood

INTERIM = 40.0  # uniform(-20, 20)


def exact_normal_samples(n_objects, n_draws, seed, sigma=1.0, extra=False):
    """Samples of normal objects (θ_n ~ N(0, 1), y_n ~ N(θ_n, σ)) with exact posterior
    draws under a uniform(-20, 20) interim prior; ``extra`` adds an unmodelled second
    parameter. Returns (Samples, y)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n_objects) + sigma * rng.normal(size=n_objects)
    columns = [y[:, None] + sigma * rng.normal(size=(n_objects, n_draws))]
    if extra:
        columns.append(rng.normal(size=(n_objects, n_draws)))
    theta = np.stack(columns, axis=-1)
    parameters = ["theta", "other"][:theta.shape[-1]]
    samples = popinfer.Samples(
        ids=[f"obj{n}" for n in range(n_objects)], parameters=parameters, samples=theta,
        log_interim_prior=np.full(theta.shape, -np.log(INTERIM)),
        log_likelihood=stats.norm.logpdf(y[:, None], theta[..., 0], sigma),
        diagnostics={"acceptance_fraction": np.full(n_objects, 0.5), "autocorr_time": np.ones((n_objects, len(parameters))),
                     "n_steps": np.full(n_objects, n_draws), "converged": np.ones(n_objects, bool),
                     "effective_draws": np.full(n_objects, float(n_draws))},
        model="normal", interim_prior={p: "uniform(-20, 20)" for p in parameters}, settings={}, seed=seed)
    return samples, y


FAST = dict(hyperpriors=["mu=normal(0, 5)", "sigma=halfnormal(5)"], max_steps=20, n_samples=64, n_reweighted=40,
            progress=False)


def test_peak_memory_is_within_twice_the_draws_it_needs(tmp_path):
    """tracemalloc counts numpy's buffers. The file holds a second, unmodelled parameter
    and the log likelihoods (5 N K values); stage two needs θ and ln p0 of one (2 N K)."""
    samples, _ = exact_normal_samples(4000, 500, seed=1, extra=True)
    write_samples(samples, tmp_path / "s.h5")
    del samples
    needed = 4000 * 500 * 2 * 8

    def traced_peak(function):
        tracemalloc.start()
        try:
            function()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peak = traced_peak(lambda: popinfer.fit_population(tmp_path / "s.h5", "normal", tmp_path / "p.h5",
                                                           parameters=["theta"], seed=1, **FAST))
    print(f"peak {peak / 2**20:.1f} MiB for {needed / 2**20:.1f} MiB of draws")
    assert peak <= 2 * needed, f"peak {peak / 2**20:.1f} MiB > 2 x {needed / 2**20:.1f} MiB"
    # Negative control: reading the whole file, as stage two used to, is caught by the same measure.
    whole = traced_peak(lambda: popinfer.read_samples(tmp_path / "s.h5"))
    assert whole > 2 * needed


def test_streamed_output_equals_the_in_memory_run(tmp_path, reproducible):
    samples, _ = exact_normal_samples(40, 400, seed=2)
    write_samples(samples, tmp_path / "s.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory = popinfer.fit_population(samples, "normal", seed=5, **FAST)
        streamed = popinfer.fit_population(tmp_path / "s.h5", "normal", tmp_path / "p.h5", seed=5, **FAST)
    assert isinstance(streamed.reweighted, np.memmap) and isinstance(streamed.ess, np.memmap)
    np.testing.assert_array_equal(streamed.hyper_samples, memory.hyper_samples)
    np.testing.assert_array_equal(streamed.ess, memory.ess)
    np.testing.assert_array_equal(streamed.reweighted, memory.reweighted)
    np.testing.assert_array_equal(streamed.independent_summary, memory.independent_summary)
    reread = read_population(tmp_path / "p.h5")
    np.testing.assert_array_equal(reread.ess, memory.ess)
    np.testing.assert_array_equal(reread.reweighted, memory.reweighted)
    assert streamed.source["sha256"] == hashlib.sha256((tmp_path / "s.h5").read_bytes()).hexdigest()


def test_a_failed_run_leaves_no_output_and_no_temporary(tmp_path):
    samples, _ = exact_normal_samples(10, 200, seed=3)
    with pytest.raises(popinfer.PopinferError):
        # Every hyperparameter drawn from these hyperpriors is invalid (sigma < 0): nothing to sample.
        popinfer.fit_population(samples, "normal", tmp_path / "p.h5", hyperpriors=["sigma=uniform(-2, -1)"],
                                seed=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def chi_square_of_pooled_means(pooled, exact_mean, exact_sd, ess):
    """Σ_n z_n² for the pooled draws' means against the exact conditional posterior means;
    the variance of a mean of R draws resampled from ESS effective particles is
    σ²(1/R + 1/ESS)."""
    n_reweighted = pooled.shape[1]
    z = (pooled.mean(axis=1) - exact_mean) / (exact_sd * np.sqrt(1 / n_reweighted + 1 / ess))
    return float(np.sum(z**2))


def test_blockwise_partial_pooling_draws_from_the_conditional_posterior():
    """At fixed α = (μ, τ) each pooled draw follows N(θ | y, μ, τ) exactly (normal-normal);
    the objects go in blocks of three, so block edges are crossed many times."""
    n_objects, n_draws, n_reweighted = 60, 2000, 400
    samples, y = exact_normal_samples(n_objects, n_draws, seed=4)
    theta = samples.samples
    mu, tau = 0.5, 1.0
    likelihood = HyperLikelihood(get_population("normal", ["theta"]), theta, samples.log_interim_prior[..., 0])
    sink = np.empty((n_objects, n_reweighted, 1))
    draws = np.array([[mu, tau]])
    advanced = []
    _partial_pooling(likelihood, ["mu", "sigma"], draws, 32, sink, np.random.default_rng(7),
                     elements=3 * n_reweighted, advance=advanced.append)
    # progress: every pooled draw counted once, block by block and 32 at a time
    assert sum(advanced) == n_objects * n_reweighted and max(advanced) == 3 * 32
    first, squares = likelihood.per_object(likelihood.hyper(["mu", "sigma"], draws), second=True)
    ess = likelihood.variance(first, squares)[0][0]
    likelihood.close()
    precision = 1.0 + 1.0 / tau**2
    exact_mean, exact_sd = (y + mu / tau**2) / precision, np.sqrt(1.0 / precision)
    critical = stats.chi2.ppf(1 - 1e-4, n_objects)
    assert chi_square_of_pooled_means(sink[..., 0], exact_mean, exact_sd, ess) < critical
    # Negative control: the stage-one draws unweighted (no pooling) are far off.
    unweighted = theta[:, :n_reweighted, 0]
    assert chi_square_of_pooled_means(unweighted, exact_mean, exact_sd, ess) > critical


@pytest.mark.parametrize("as_dataset", [False, True])
def test_column_medians_by_blocks_equal_numpy(tmp_path, as_dataset):
    rng = np.random.default_rng(5)
    ess = rng.gamma(2.0, 50.0, size=(37, 101)).astype(np.float32)
    objects = np.sort(rng.choice(101, size=23, replace=False))
    expected = np.median(ess[:, objects], axis=0)
    if as_dataset:
        with h5py.File(tmp_path / "e.h5", "w") as handle:
            handle["ess"] = ess
        with h5py.File(tmp_path / "e.h5", "r") as handle:
            found = column_medians(handle["ess"], objects, elements=37 * 7)
    else:
        found = column_medians(ess, objects, elements=37 * 7)
    np.testing.assert_array_equal(found, expected)


def test_warning_lists_the_same_objects_as_a_full_ranking():
    """Only objects that can make the list get their medians read; the list must be the
    full ranking's top ten (largest fraction below --min-ess, then smallest median)."""
    rng = np.random.default_rng(6)
    n_draws, n_objects = 50, 400
    ess = rng.uniform(5, 200, size=(n_draws, n_objects)).astype(np.float32)
    ess[:, :30] = rng.uniform(1, 15, size=(n_draws, 30))  # 30 objects tied at fraction 1
    ids = [f"o{n}" for n in range(n_objects)]
    fraction = (ess < 20).mean(axis=0)
    median = np.median(ess, axis=0)
    flagged = np.flatnonzero(fraction >= 0.01)
    expected = [ids[n] for n in flagged[np.lexsort((median[flagged], -fraction[flagged]))][:10]]
    with pytest.warns(PopulationDiagnosticWarning) as caught:
        diagnose(ids, fraction, ess, np.full(n_draws, 0.5), 1000, 20.0)
    message = str(caught[0].message)
    listed = [part.split("'")[1] for part in message.split(": ", 1)[1].split("; ")[:10]]
    assert listed == expected
    assert f"{len(flagged)} of {n_objects} object(s)" in message


def test_population_file_to_stdout(tmp_path, monkeypatch):
    """-o -: the file is streamed into a temporary file, copied to stdout and removed."""
    from click.testing import CliRunner

    from popinfer.cli import main

    samples, _ = exact_normal_samples(12, 300, seed=8)
    write_samples(samples, tmp_path / "s.h5")
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))
    monkeypatch.setattr("tempfile.tempdir", None)
    result = CliRunner().invoke(main, ["fit-population", str(tmp_path / "s.h5"), "-o", "-", "--population", "normal",
                                       "--max-steps", "20", "--samples", "64", "--reweighted", "30", "--seed", "1",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    with h5py.File(io.BytesIO(result.stdout_bytes), "r") as handle:
        assert handle.attrs["popinfer_format"] == "population"
        assert handle["objects/reweighted"].shape == (12, 30, 1) and handle["objects/ess"].shape == (64, 12)
        assert np.isfinite(handle["objects/reweighted"][()]).all()
    assert list(spool.iterdir()) == []
