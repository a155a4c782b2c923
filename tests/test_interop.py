"""popinfer plot, export and import-samples, through the CLI."""

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import popinfer
import popinfer.importing
from conftest import SAMPLE_DATA, write_csv
from popinfer.cli import main

EIGHT = str(SAMPLE_DATA / "eight_schools.csv")
PNG = b"\x89PNG\r\n\x1a\n"


def run(args, **kwargs):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("interop")
    samples = directory / "eight.h5"
    popinfer.fit_individuals(EIGHT, "normal", samples, n_draws=1000, seed=1, progress=False)
    population = directory / "eight-pop.h5"
    popinfer.fit_population(samples, "normal", population, seed=2, progress=False, n_samples=1000, n_reweighted=200)
    return samples, population


def image_size(path):
    import matplotlib.image

    return matplotlib.image.imread(path).shape[:2]


@pytest.mark.parametrize("which, kind", [("population", None), ("population", "forest"), ("population", "corner"),
                                         ("population", "diagnostics"), ("samples", None), ("samples", "trace")])
def test_every_plot_kind_renders_a_real_image(files, in_tmp, which, kind):
    source = files[1] if which == "population" else files[0]
    args = ["plot", str(source), "-o", "figure.png"] + (["--kind", kind] if kind else [])
    result = run(args)
    assert result.exit_code == 0, result.stderr
    data = Path("figure.png").read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    height, width = image_size("figure.png")
    assert 200 < height < 4000 and 300 < width < 4000


def test_plot_formats_and_errors(files, in_tmp):
    for name in ("figure.pdf", "figure.svg"):
        assert run(["plot", str(files[1]), "-o", name]).exit_code == 0
    assert Path("figure.pdf").read_bytes()[:4] == b"%PDF" and b"<svg" in Path("figure.svg").read_bytes()[:2000]
    bad = run(["plot", str(files[1]), "-o", "figure.gif"])
    assert bad.exit_code == 2 and ".png, .pdf, .svg" in bad.stderr
    wrong_kind = run(["plot", str(files[0]), "-o", "x.png", "--kind", "corner"])
    assert wrong_kind.exit_code == 2 and "forest, trace" in wrong_kind.stderr


def test_plot_without_matplotlib_says_how_to_install(files, in_tmp, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = run(["plot", str(files[1]), "-o", "figure.png"])
    assert result.exit_code == 1 and "pip install 'popinfer[plot]'" in result.stderr
    assert not Path("figure.png").exists()


def test_exports_load_back_with_the_other_libraries(files, in_tmp):
    samples = popinfer.read_samples(files[0])
    result = popinfer.read_population(files[1])
    assert run(["export", str(files[0]), "-o", "draws.csv", "--to", "csv"]).exit_code == 0
    draws = pd.read_csv("draws.csv", dtype={"object": str})
    assert list(draws.columns) == ["object", "draw", "parameter", "value"] and len(draws) == 8 * 1000
    school_a = draws[draws["object"] == "A"].sort_values("draw")["value"].to_numpy()
    np.testing.assert_allclose(school_a, samples.samples[0, :, 0], rtol=1e-15)

    assert run(["export", str(files[1]), "-o", "hyper.parquet", "--to", "parquet"]).exit_code == 0
    import pyarrow.parquet

    hyper = pyarrow.parquet.read_table("hyper.parquet").to_pandas()
    mu = hyper[hyper["hyperparameter"] == "mu"].sort_values("draw")["value"].to_numpy()
    np.testing.assert_array_equal(mu, result.hyper("mu"))
    assert set(hyper["hyperparameter"]) == {"mu", "sigma", "lp", "log_likelihood", "ln_likelihood_variance"}

    assert run(["export", str(files[1]), "-o", "pooled.json", "--to", "json", "--table", "pooled"]).exit_code == 0
    pooled = json.loads(Path("pooled.json").read_text())
    assert len(pooled) == 8 * 200 and pooled[0]["object"] == "A"
    # json is written with 15 significant digits (pandas' largest double_precision): equal to within 1e-14
    assert pooled[0]["value"] == pytest.approx(result.reweighted[0, 0, 0], rel=1e-14, abs=0)

    assert run(["export", str(files[1]), "-o", "pop.nc", "--to", "netcdf"]).exit_code == 0
    import arviz

    data = arviz.from_netcdf("pop.nc")
    assert dict(data.posterior.sizes) == {"chain": 1, "draw": 1000}
    np.testing.assert_array_equal(data.posterior["sigma"].values[0], result.hyper("sigma"))
    np.testing.assert_array_equal(data.sample_stats["lp"].values[0], result.log_posterior)
    summary = arviz.summary(data, var_names=["mu"], kind="stats")
    assert abs(summary.loc["mu", "mean"] - result.hyper("mu").mean()) < 1e-2

    assert run(["export", str(files[0]), "-o", "draws.nc", "--to", "netcdf"]).exit_code == 0
    stage_one = arviz.from_netcdf("draws.nc")
    assert dict(stage_one.posterior.sizes) == {"chain": 1, "draw": 1000, "object": 8}
    assert list(stage_one.posterior["object"].values) == list("ABCDEFGH")


def test_export_to_stdout_and_refusals(files, in_tmp):
    result = run(["export", str(files[1]), "-o", "-", "--to", "csv", "--table", "pooled"])
    assert result.exit_code == 0 and result.stdout.startswith("object,draw,parameter,value")
    assert run(["export", str(files[0]), "-o", "x.csv", "--to", "csv", "--table", "pooled"]).exit_code == 2
    Path("exists.csv").write_text("keep")
    again = run(["export", str(files[0]), "-o", "exists.csv", "--to", "csv"])
    assert again.exit_code == 1 and "--overwrite" in again.stderr and Path("exists.csv").read_text() == "keep"


def test_import_samples_with_declared_priors_and_unequal_counts(in_tmp):
    rng = np.random.default_rng(5)
    rows = []
    for name, count, centre in (("a", 300, 0.2), ("b", 250, 0.5), ("c", 400, 0.8)):
        for value in rng.beta(centre * 20, (1 - centre) * 20, count):
            rows.append({"object": name, "p": value})
    pd.DataFrame(rows).to_csv("draws.csv", index=False)
    result = run(["import-samples", "draws.csv", "-o", "imported.h5", "--prior", "p=uniform(0, 1)", "--seed", "3",
                  "--samples", "250"])
    assert result.exit_code == 0, result.stderr
    samples = popinfer.read_samples("imported.h5")
    assert samples.ids == ["a", "b", "c"] and samples.samples.shape == (3, 250, 1)
    frame = pd.DataFrame(rows)
    np.testing.assert_array_equal(samples.samples[1, :, 0], frame[frame["object"] == "b"]["p"].to_numpy())
    kept_a = samples.samples[0, :, 0]
    original_a = frame[frame["object"] == "a"]["p"].to_numpy()
    assert np.isin(kept_a, original_a).all() and len(np.unique(kept_a)) == 250  # without replacement
    assert samples.interim_prior == {"p": "uniform(0.0, 1.0)"} and samples.settings["samples"] == 250
    again = popinfer.importing.import_samples("draws.csv", priors=["p=uniform(0, 1)"], seed=3, n_draws=250)
    np.testing.assert_array_equal(again.samples, samples.samples)  # seeded
    pop = run(["fit-population", "imported.h5", "-o", "pop.h5", "--population", "beta", "--quiet", "--seed", "1",
               "--samples", "500", "--reweighted", "10"])
    assert pop.exit_code == 0, pop.stderr


def test_import_samples_with_a_log_prior_column_from_hdf5(in_tmp):
    rng = np.random.default_rng(6)
    ids = np.repeat(["s1", "s2"], 200)
    x, y = rng.normal(size=400), rng.normal(size=400)
    log_prior = -0.5 * (x**2 + y**2) / 100.0
    with h5py.File("draws.h5", "w") as handle:
        group = handle.create_group("posterior")
        group["star"] = ids.astype("S")
        group["x"], group["y"], group["log_prior"] = x, y, log_prior
    result = run(["import-samples", "draws.h5", "--hdf5-group", "posterior", "--id-column", "star", "-o", "s.h5"])
    assert result.exit_code == 0, result.stderr
    samples = popinfer.read_samples("s.h5")
    assert samples.parameters == ["x", "y"] and samples.settings["joint_interim_prior"]
    np.testing.assert_allclose(samples.log_interim_prior[:, :, 0].ravel(), log_prior)
    subset = run(["fit-population", "s.h5", "-o", "p.h5", "--population", "normal", "--parameter", "x", "--quiet"])
    assert subset.exit_code == 2 and "joint interim prior" in subset.stderr


@pytest.mark.parametrize("text, args, code, fragment", [
    ("id,p\na,0.5\na,1.5\n", ["--prior", "p=uniform(0, 1)"], 1, "outside the support of its declared interim prior"),
    ("id,p\na,0.5\n", [], 2, "The interim prior of p is unknown"),
    ("id,p\na,0.5\nb,0.4\n", ["--prior", "p=uniform(0, 1)", "--samples", "2"], 1, "fewer than --samples 2"),
    ("id,p\na,x\n", ["--prior", "p=uniform(0, 1)"], 1, "row 1 (object 'a'), column 'p'"),
    ("id,p\na,0.5\n", ["--prior", "q=uniform(0, 1)"], 2, "no parameter column 'q'"),
    ("id,p,log_prior\na,0.5,0\n", ["--prior", "p=uniform(0, 1)"], 2, "not both"),
])
def test_import_samples_errors(in_tmp, text, args, code, fragment):
    data = write_csv("draws.csv", text)
    result = run(["import-samples", data, "-o", "out.h5", *args])
    assert result.exit_code == code, result.output
    assert fragment in result.stderr and not Path("out.h5").exists()
