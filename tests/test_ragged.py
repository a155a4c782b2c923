"""Samples files with a draw count per object (/objects/n_draws): every reader, the kernel,
ESS, Var[ln L̂], pooling, summary, export, merge and import-samples."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats
from scipy.special import logsumexp

import popinfer
from popinfer.cli import main
from popinfer.export import samples_table
from popinfer.importing import import_samples
from popinfer.io.samples import Samples, read_samples, write_samples
from popinfer.populations import get_population
from popinfer.reweighting.inputs import read_draws
from popinfer.reweighting.likelihood import HyperLikelihood
from popinfer.summary import samples_summary

COUNTS = np.array([300, 120, 57, 300, 211])
PRIOR = stats.uniform(-50, 100)  # theta=uniform(-50, 50)


def ragged_samples(seed=3):
    """Five objects with K_n draws each (the tail NaN), factorised uniform interim prior."""
    rng = np.random.default_rng(seed)
    n_objects, n_draws = len(COUNTS), int(COUNTS.max())
    centres = rng.normal(1.0, 2.0, n_objects)
    theta = centres[:, None, None] + rng.normal(0, 1.5, (n_objects, n_draws, 1))
    pad = np.arange(n_draws)[None, :] >= COUNTS[:, None]
    theta[pad] = np.nan
    log_interim = np.where(pad[:, :, None], np.nan, PRIOR.logpdf(theta))
    log_likelihood = np.where(pad, np.nan, -0.5 * (theta[:, :, 0] - centres[:, None]) ** 2)
    nan = np.full(n_objects, np.nan)
    return Samples(
        ids=[f"o{i}" for i in range(n_objects)], parameters=["theta"], samples=theta, log_interim_prior=log_interim,
        log_likelihood=log_likelihood,
        diagnostics={"acceptance_fraction": nan, "autocorr_time": np.full((n_objects, 1), np.nan),
                     "n_steps": np.zeros(n_objects, dtype=np.int64), "converged": np.ones(n_objects, bool),
                     "effective_draws": nan},
        model="normal", interim_prior={"theta": "uniform(-50.0, 50.0)"}, settings={}, seed=0,
        draw_counts=COUNTS.copy())


def reference(population, samples, hyper):
    """ln L̂, ESS (N,) and Var[ln L̂] per walker, object by object on the unpadded draws (scipy)."""
    out, variances, ess_all = [], [], []
    for w in range(len(next(iter(hyper.values())))):
        single = {k: v[w:w + 1] for k, v in hyper.items()}
        total, variance, ess_row = 0.0, 0.0, []
        for n, count in enumerate(COUNTS):
            theta = samples.samples[n:n + 1, :count]
            log_weight = population.log_density(theta, single)[0, :, 0] - samples.log_interim_prior[n, :count, 0]
            total += logsumexp(log_weight) - np.log(count)
            ess = np.exp(2 * logsumexp(log_weight) - logsumexp(2 * log_weight))
            variance += 1 / ess - 1 / count
            ess_row.append(ess)
        out.append(total)
        variances.append(variance)
        ess_all.append(ess_row)
    return np.array(out), np.array(ess_all), np.array(variances)


@pytest.fixture
def ragged_file(tmp_path):
    path = tmp_path / "ragged.h5"
    write_samples(ragged_samples(), str(path))
    return str(path)


def test_round_trip_keeps_counts_and_masks_the_tail(ragged_file):
    samples = read_samples(ragged_file)
    np.testing.assert_array_equal(samples.draw_counts, COUNTS)
    np.testing.assert_array_equal(samples.object_draw_counts, COUNTS)
    pad = np.arange(samples.n_draws)[None, :] >= COUNTS[:, None]
    assert np.isnan(samples.samples[pad]).all() and np.isfinite(samples.samples[~pad]).all()
    assert np.isnan(samples.log_interim_prior[pad]).all() and np.isnan(samples.log_likelihood[pad]).all()
    np.testing.assert_array_equal(samples.samples[~pad], ragged_samples().samples[~pad])


@pytest.mark.parametrize("name, hyper", [
    ("normal", {"mu": np.array([0.0, 1.0, 3.0, -2.0]), "sigma": np.array([0.3, 1.0, 2.5, 0.05])}),
    ("studentt", {"nu": np.array([2.0, 8.0]), "mu": np.array([1.0, -1.0]), "sigma": np.array([0.5, 2.0])}),
])
def test_kernel_on_a_ragged_file_equals_logsumexp_on_the_unpadded_draws(ragged_file, name, hyper):
    header, parameters, theta, log_interim, _ = read_draws(ragged_file, None)
    population = get_population(name, parameters)
    likelihood = HyperLikelihood(population, theta, log_interim, copy=False, draw_counts=header.draw_counts)
    if name == "normal":
        assert likelihood.form is not None  # the linear-form kernel is exercised
    estimate = likelihood.ln_likelihood_and_variance(hyper, cut=False)
    expected, ess, variance = reference(population, read_samples(ragged_file), hyper)
    np.testing.assert_allclose(estimate.ln_likelihood, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(estimate.ess, ess, rtol=1e-10)
    np.testing.assert_allclose(estimate.ln_likelihood_variance, variance, rtol=1e-10)


def test_negative_control_one_common_count_is_caught(ragged_file):
    """Treating every object as having K = max K_n (the padding as draws, or ln K for all)
    misses the exact per-object reference."""
    samples = read_samples(ragged_file)
    hyper = {"mu": np.array([1.0]), "sigma": np.array([1.0])}
    population = get_population("normal", ["theta"])
    expected = reference(population, samples, hyper)[0]
    _, _, theta, log_interim, _ = read_draws(ragged_file, None)
    stand_in = np.where(np.isnan(theta), theta[:, :1], theta)  # padding replaced by a real draw
    wrong = HyperLikelihood(population, stand_in, np.where(np.isnan(log_interim), log_interim[:, :1], log_interim))
    assert abs(wrong(hyper)[0] - expected[0]) > 1e-3


KERNEL_CASES = [
    ("normal", {"mu": np.array([0.0, 1.0, 3.0, -2.0]), "sigma": np.array([0.3, 1.0, 2.5, 0.8])}),
    ("mixture", {"weight": np.array([0.3, 0.7, 0.5, 0.9]), "mu1": np.array([-1.0, 0.0, 1.0, 2.0]),
                 "sigma1": np.array([0.5, 1.0, 2.0, 0.7]), "mu2": np.array([2.0, 3.0, -1.0, 0.5]),
                 "sigma2": np.array([1.0, 0.4, 1.5, 3.0])}),
]


@pytest.mark.parametrize("name, hyper", KERNEL_CASES)
def test_kernel_sorted_by_draw_count_equals_one_kernel_per_object(ragged_file, name, hyper, monkeypatch):
    """The kernel evaluates the objects sorted by K_n, each chunk at its own width, in several
    chunks on threads: every per-object result, in file order, equals a kernel run on that object's
    own K_n draws alone (no padding) — sums, squares, gradients, resampled indices and moment
    shares. Negative control: the kernel's own order (COUNTS is not sorted) is not the file's."""
    import popinfer.reweighting.likelihood as module

    header, parameters, theta, log_interim, _ = read_draws(ragged_file, None)
    population = get_population(name, parameters)
    names = list(population.hyperparameters)
    monkeypatch.setattr(module, "CHUNK_ELEMENTS", 2 * int(COUNTS.max()) * len(hyper[names[0]]))
    monkeypatch.setattr(module, "PARALLEL_MIN_ELEMENTS", 1)
    likelihood = HyperLikelihood(population, theta, log_interim, threads=2, draw_counts=header.draw_counts)
    assert (name == "normal") == (likelihood.form is not None)  # both kernels: linear form and direct density
    chunks = likelihood._chunks(len(hyper[names[0]]))
    # at least one chunk per width here (more where a width's work is cut for the threads), none across widths
    assert len(chunks) >= len(set(COUNTS.tolist()))
    assert all(any(a <= lo and hi <= b for a, b in likelihood._groups) for lo, hi in chunks)
    n_walkers = len(hyper[names[0]])
    uniforms = np.random.default_rng(5).random((n_walkers, len(COUNTS)))
    centred = np.random.default_rng(6).normal(size=(n_walkers, 2)) / n_walkers
    first, squares, derivative = likelihood.per_object_gradient(hyper, names, second=True)
    index = likelihood.resample(hyper, uniforms)
    shares = likelihood.moment_variance(hyper, centred)
    for n, count in enumerate(COUNTS):
        alone = HyperLikelihood(population, theta[n:n + 1, :count], log_interim[n:n + 1, :count])
        f, s, d = alone.per_object_gradient(hyper, names, second=True)
        np.testing.assert_allclose(first[:, n], f[:, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(squares[:, n], s[:, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(derivative[:, n], d[:, 0], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(index[:, n], alone.resample(hyper, uniforms[:, n:n + 1])[:, 0])
        np.testing.assert_allclose(shares[n], alone.moment_variance(hyper, centred)[0], rtol=1e-10, atol=1e-15)
        np.testing.assert_array_equal(likelihood.draws_at(n, n + 1, index[:, n:n + 1])[:, 0],
                                      theta[n, index[:, n]])
    assert likelihood._order is not None
    kernel_order = likelihood._per_object(hyper)[0]
    assert not np.allclose(kernel_order, first)
    likelihood.close()


def test_pooling_never_resamples_padding(ragged_file):
    header, parameters, theta, log_interim, _ = read_draws(ragged_file, None)
    likelihood = HyperLikelihood(get_population("normal", parameters), theta, log_interim,
                                 draw_counts=header.draw_counts)
    hyper = {"mu": np.full(64, 1.0), "sigma": np.full(64, 50.0)}  # broad: every real draw has weight
    index = likelihood.resample(hyper, np.random.default_rng(1).random((64, len(COUNTS))))
    assert (index < COUNTS[None, :]).all()
    assert index.max(axis=0).tolist() > (COUNTS // 2).tolist()  # and it reaches the far end of each object


def test_fit_population_summary_export_on_a_ragged_file(ragged_file, tmp_path):
    result = popinfer.fit_population(ragged_file, "normal", str(tmp_path / "pop.h5"), seed=1, n_samples=200,
                                     n_reweighted=50, max_steps=400, progress=False)
    samples = read_samples(ragged_file)
    for n, count in enumerate(COUNTS):
        draws = samples.samples[n, :count, 0]
        np.testing.assert_allclose(result.independent_summary[n, 0, :2], [draws.mean(), draws.std(ddof=1)])
        assert np.isin(result.reweighted[n, :, 0], draws).all()  # pooled draws are real draws
    table = samples_summary(samples)
    np.testing.assert_allclose(table["mean"], [samples.samples[n, :c, 0].mean() for n, c in enumerate(COUNTS)])
    assert table["n_draws"].tolist() == COUNTS.tolist()
    long = samples_table(samples)
    assert len(long) == COUNTS.sum() and long["value"].notna().all()
    assert long.groupby("object")["draw"].max().tolist() == (COUNTS - 1).tolist()


def test_import_samples_keeps_every_objects_own_count(tmp_path):
    rng = np.random.default_rng(4)
    counts = {"a": 300, "b": 250, "c": 400}
    frame = pd.DataFrame([{"object": name, "p": value} for name, count in counts.items()
                          for value in rng.beta(4, 6, count)])
    frame.to_csv(tmp_path / "draws.csv", index=False)
    samples = import_samples(str(tmp_path / "draws.csv"), str(tmp_path / "imp.h5"),
                             priors=["p=uniform(0, 1)"])
    again = read_samples(str(tmp_path / "imp.h5"))
    assert again.draw_counts.tolist() == [300, 250, 400] and again.samples.shape == (3, 400, 1)
    for n, name in enumerate(counts):
        np.testing.assert_array_equal(again.samples[n, :counts[name], 0], frame[frame.object == name]["p"])
    assert samples.draw_counts.tolist() == [300, 250, 400]
    result = CliRunner().invoke(main, ["fit-population", str(tmp_path / "imp.h5"), "-o", str(tmp_path / "p.h5"),
                                       "--population", "beta", "--quiet", "--seed", "1", "--samples", "200",
                                       "--reweighted", "10", "--max-steps", "400"])
    assert result.exit_code == 0, result.output


def test_damaged_draw_counts_are_refused(ragged_file):
    import h5py

    with h5py.File(ragged_file, "r+") as handle:
        handle["objects/n_draws"][2] = 301
    result = CliRunner().invoke(main, ["summary", ragged_file])
    assert result.exit_code == 1 and "/objects/n_draws" in result.stderr and "1 to K = 300" in result.stderr


def test_merge_keeps_each_shards_draw_counts(tmp_path):
    from dataclasses import replace

    from popinfer.io.samples import merge_shards

    whole = ragged_samples()
    parts = []
    for index, rows in ((1, slice(0, 3)), (2, slice(3, 5))):
        part = replace(whole, ids=whole.ids[rows], samples=whole.samples[rows],
                       log_interim_prior=whole.log_interim_prior[rows], log_likelihood=whole.log_likelihood[rows],
                       diagnostics={k: v[rows] for k, v in whole.diagnostics.items()},
                       draw_counts=whole.draw_counts[rows])
        parts.append(str(tmp_path / f"part{index}.h5"))
        write_samples(part, parts[-1], extra_attrs={"shard": f"{index}/2", "fingerprint": "run",
                                                    "n_objects_total": 5})
    merged = merge_shards(parts, str(tmp_path / "merged.h5"))
    again = read_samples(str(tmp_path / "merged.h5"))
    for result in (merged, again, merge_shards(parts)):
        np.testing.assert_array_equal(result.draw_counts, COUNTS)
        np.testing.assert_array_equal(result.samples, whole.samples)  # NaN padding in the same places

