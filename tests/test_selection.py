"""Selection effects: the injection reader, ξ̂ and its variance, and the selection term.

ξ̂(α) = (1/M_total) Σ_j f(θ_j; α)/p_draw(θ_j) and Var[ξ̂]/ξ̂² = Σ v²/(Σ v)² − 1/M_total are
checked against a direct numpy computation (to 1e-10), and the variance formula
against the spread of ξ̂ over independent injection sets of a survey whose ξ and
Var[ξ̂] are known by quadrature.
"""

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from conftest import SAMPLE_DATA, cli, refused
from popinfer.errors import InputDataError, UsageError
from popinfer.injections import read_injections
from popinfer.populations import get_population
from popinfer.reweighting.selection import ROWS_PER_BLOCK, SelectionTerm, draw_rates, selection_statistics

# A threshold survey: θ ~ f, measured y = θ + N(0, NOISE), detected if y > THRESHOLD.
NOISE, THRESHOLD = 0.5, 0.5
DRAW_MU, DRAW_SIGMA = 0.0, 2.0


def detection_probability(theta):
    return stats.norm.sf((THRESHOLD - theta) / NOISE)


def simulate_injections(rng, n_total):
    """θ_j ~ N(DRAW_MU, DRAW_SIGMA), kept where detected: (θ (M,), ln p_draw (M,))."""
    theta = rng.normal(DRAW_MU, DRAW_SIGMA, n_total)
    detected = theta + rng.normal(0.0, NOISE, n_total) > THRESHOLD
    kept = theta[detected]
    return kept, stats.norm.logpdf(kept, DRAW_MU, DRAW_SIGMA)


def injections_of(theta, log_draw_prior, n_total, tmp_path, name="inj.csv"):
    path = tmp_path / name
    pd.DataFrame({"theta": theta, "log_draw_prior": log_draw_prior}).to_csv(path, index=False, float_format="%.17g")
    return read_injections(path, ["theta"], n_total=n_total)


# -- the pure statistics ---------------------------------------------------------
def direct_statistics(log_f, log_draw_prior, n_total):
    """ξ̂, Var[ξ̂] written out plainly: Var[ξ̂] = (Σ v²/M_total − ξ̂²)/M_total."""
    weights = np.exp(log_f - log_draw_prior)
    xi = weights.sum() / n_total
    variance = (np.sum(weights**2) / n_total - xi**2) / n_total
    return xi, variance


def test_statistics_match_a_direct_computation():
    rng = np.random.default_rng(1)
    log_weights = rng.normal(0.0, 2.0, 37)
    n_total = 120
    ln_xi, relative, effective = selection_statistics(np.logaddexp.reduce(log_weights),
                                                      np.logaddexp.reduce(2 * log_weights), n_total)
    xi, variance = direct_statistics(log_weights, 0.0, n_total)
    assert abs(np.exp(ln_xi) / xi - 1) < 1e-10
    assert abs(relative / (variance / xi**2) - 1) < 1e-10
    assert abs(effective / (xi**2 / variance) - 1) < 1e-10
    # ξ̂ = 0: −inf, infinite relative variance, no effective draws.
    empty = selection_statistics(-np.inf, -np.inf, n_total)
    assert empty[0] == -np.inf and empty[1] == np.inf and empty[2] == 0.0


@pytest.mark.parametrize("population, hyper", [
    ("normal", {"mu": np.array([0.0, 1.0, -0.5]), "sigma": np.array([1.0, 0.5, 2.0])}),  # linear form
    ("studentt", {"nu": np.array([3.0, 10.0]), "mu": np.array([0.0, 1.0]), "sigma": np.array([1.0, 0.7])}),  # direct
    (str(SAMPLE_DATA / "halfnormal_population.py") + ":halfnormal", {"scale": np.array([1.0, 2.5])}),  # user, -inf below 0
])
def test_selection_term_kernel_matches_direct_computation(tmp_path, population, hyper):
    """The blocked kernel (several pseudo-objects, padding) gives the direct ξ̂ and Var[ξ̂] to 1e-10."""
    rng = np.random.default_rng(2)
    n_total = 2 * ROWS_PER_BLOCK + 700
    theta, log_draw_prior = simulate_injections(rng, n_total)
    assert theta.size > ROWS_PER_BLOCK and theta.size % ROWS_PER_BLOCK  # several blocks, padded
    injections = injections_of(theta, log_draw_prior, n_total, tmp_path)
    model = get_population(population, ["theta"])
    term = SelectionTerm(model, injections, n_objects=30)
    try:
        ln_term, variance = term(hyper)
        ln_xi, _, effective = term.efficiency(hyper)
        np.testing.assert_array_equal(term(hyper, variance=False)[0], ln_term)  # the sums of squares are spared
    finally:
        term.close()
    with np.errstate(divide="ignore"):
        log_f = model.log_density(theta[None, :, None], hyper)[0]  # (M, W)
    for w in range(len(ln_xi)):
        xi, var_xi = direct_statistics(log_f[:, w], injections.log_draw_prior, n_total)
        assert abs(ln_xi[w] - np.log(xi)) < 1e-10
        assert abs(ln_term[w] + 30 * np.log(xi)) < 1e-8
        assert abs(variance[w] / (30**2 * var_xi / xi**2) - 1) < 1e-10
        assert abs(effective[w] / (xi**2 / var_xi) - 1) < 1e-10


def exact_efficiency_moments(mu, sigma):
    """ξ = Φ((μ − c)/√(s² + σ²)) and E[v² 1_det] for one injection, by quadrature."""
    xi = stats.norm.sf((THRESHOLD - mu) / np.hypot(NOISE, sigma))
    second, _ = integrate.quad(lambda t: stats.norm.pdf(t, mu, sigma) ** 2 / stats.norm.pdf(t, DRAW_MU, DRAW_SIGMA)
                               * detection_probability(t), mu - 12 * sigma, mu + 12 * sigma, epsabs=0, epsrel=1e-12)
    return xi, second


def test_variance_formula_matches_the_spread_over_independent_injection_sets(tmp_path):
    """Over R independent injection sets: ξ̂ is unbiased for the exact ξ, and both the
    spread of ξ̂ and the mean estimated Var[ξ̂] match the exact Var[ξ̂] = (E[v² 1] − ξ²)/M_total.

    Bounds, 4.5 standard errors each: ξ̂'s mean against ξ; the sample variance of R nearly
    normal values (relative sd √(2/(R − 1))); the mean of the estimated variances (its
    standard error measured from their spread). The negative control divides by the
    detected count M instead of M_total and must fail.
    """
    mu, sigma, n_total, replicates = 0.8, 0.7, 4000, 400
    xi, second = exact_efficiency_moments(mu, sigma)
    exact_variance = (second - xi**2) / n_total
    model = get_population("normal", ["theta"])
    hyper = {"mu": np.array([mu]), "sigma": np.array([sigma])}
    rng = np.random.default_rng(3)
    estimates, variances, wrong = [], [], []
    for r in range(replicates):
        theta, log_draw_prior = simulate_injections(rng, n_total)
        injections = injections_of(theta, log_draw_prior, n_total, tmp_path)
        term = SelectionTerm(model, injections, n_objects=10, threads=1)
        ln_xi, relative, _ = term.efficiency(hyper)
        term.close()
        estimates.append(np.exp(ln_xi[0]))
        variances.append(relative[0] * np.exp(2 * ln_xi[0]))
        wrong.append(np.exp(ln_xi[0]) * n_total / theta.size)
    estimates, variances = np.array(estimates), np.array(variances)
    assert abs(estimates.mean() - xi) < 4.5 * np.sqrt(exact_variance / replicates)
    assert abs(estimates.var(ddof=1) / exact_variance - 1) < 4.5 * np.sqrt(2 / (replicates - 1))
    assert abs(variances.mean() - exact_variance) < 4.5 * variances.std(ddof=1) / np.sqrt(replicates)
    assert abs(np.mean(wrong) - xi) > 4.5 * np.sqrt(exact_variance / replicates), "negative control passed"


def test_rates_follow_their_gamma_conditional():
    rng = np.random.default_rng(4)
    ln_xi = np.full(20000, np.log(0.25))
    rates = draw_rates(ln_xi, 50, 2.0, rng)
    # Gamma(N = 50, rate ξT = 0.5): mean 100, sd √50/0.5.
    assert stats.kstest(rates, stats.gamma(50, scale=1 / 0.5).cdf).pvalue > 1e-4
    assert stats.kstest(rates, stats.gamma(50, scale=1 / 0.45).cdf).pvalue < 1e-4  # negative control


# -- the reader ------------------------------------------------------------------
def test_reader_formats_agree(tmp_path):
    theta = np.array([0.5, 1.5, 2.0])
    log_p = stats.norm.logpdf(theta, 0, 2)
    frame = pd.DataFrame({"theta": theta, "snr": [9.0, 12.0, 30.0], "log_draw_prior": log_p})
    frame.to_csv(tmp_path / "i.csv", index=False, float_format="%.17g")
    frame.to_csv(tmp_path / "i.tsv", index=False, sep="\t", float_format="%.17g")
    frame.to_parquet(tmp_path / "i.parquet")
    with h5py.File(tmp_path / "i.h5", "w") as handle:
        group = handle.create_group("detected")
        for column in frame:
            group[column] = frame[column].to_numpy()
        group.attrs["injections_total"] = 10
    read = [read_injections(tmp_path / name, ["theta"], n_total=10) for name in ("i.csv", "i.tsv", "i.parquet")]
    read.append(read_injections(tmp_path / "i.h5", ["theta"], group="detected"))
    for injections in read:
        np.testing.assert_array_equal(injections.theta[:, 0], theta)
        np.testing.assert_array_equal(injections.log_draw_prior, log_p)
        assert injections.n_total == 10 and len(injections.sha256) == 64
    frame.drop(columns="log_draw_prior").to_csv(tmp_path / "d.csv", index=False, float_format="%.17g")
    declared = read_injections(tmp_path / "d.csv", ["theta"], draw_priors=["theta=normal(0, 2)"], n_total=10)
    np.testing.assert_allclose(declared.log_draw_prior, log_p, rtol=1e-12)
    # M_total from a constant column.
    frame.assign(injections_total=10).to_csv(tmp_path / "c.csv", index=False)
    assert read_injections(tmp_path / "c.csv", ["theta"]).n_total == 10


@pytest.mark.parametrize("text, kwargs, error, fragments", [
    ("x,log_draw_prior\n1,0\n", {"n_total": 5}, InputDataError, ["no column 'theta'", "'x'"]),
    ("theta,log_draw_prior\n1,0\n2,nan\n", {"n_total": 5}, InputDataError, ["row 2", "'log_draw_prior'", "finite"]),
    ("theta,log_draw_prior\n1,0\n,0\n", {"n_total": 5}, InputDataError, ["row 2", "'theta'", "empty"]),
    ("theta,log_draw_prior\n1,0\n2,0\n", {"n_total": 1}, UsageError, ["M_total = 1", "2 detected"]),
    ("theta,log_draw_prior\n1,0\n", {}, UsageError, ["--injections-total"]),
    ("theta,log_draw_prior\n1,0\n", {"n_total": 2.5}, UsageError, ["whole number"]),
    ("theta\n1\n", {"n_total": 5}, UsageError, ["--draw-prior", "log_draw_prior"]),
    ("theta,log_draw_prior\n1,0\n", {"n_total": 5, "draw_priors": ["theta=normal(0, 1)"]}, UsageError,
     ["give one"]),
    ("theta\n1\n", {"n_total": 5, "draw_priors": ["mass=normal(0, 1)"]}, UsageError, ["--draw-prior mass", "theta"]),
    ("theta\n1\n-3\n", {"n_total": 5, "draw_priors": ["theta=uniform(0, 2)"]}, InputDataError,
     ["row 2", "outside the support"]),
    ("theta,log_draw_prior\n", {"n_total": 5}, InputDataError, ["no injections"]),
    ("theta,log_draw_prior,injections_total\n1,0,5\n2,0,6\n", {}, InputDataError, ["same on every row"]),
])
def test_reader_errors_name_file_column_and_row(tmp_path, text, kwargs, error, fragments):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(error) as caught:
        read_injections(path, ["theta"], **kwargs)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    if error is InputDataError:
        assert "bad.csv" in message


def test_reader_refuses_missing_files_and_groups(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        read_injections(tmp_path / "none.csv", ["theta"], n_total=3)
    with h5py.File(tmp_path / "i.h5", "w") as handle:
        handle["theta"] = [1.0]
    with pytest.raises(InputDataError, match="no group 'missing'"):
        read_injections(tmp_path / "i.h5", ["theta"], n_total=3, group="missing")
    with pytest.raises(UsageError, match="--injections-total"):
        read_injections(tmp_path / "i.h5", ["theta"], draw_priors=["theta=normal(0, 1)"])


def _injections_h5(path, total, theta=(0.1, 0.4, 0.9)):
    with h5py.File(path, "w") as handle:
        handle["theta"] = np.asarray(theta, dtype=float)
        handle["log_draw_prior"] = np.zeros(len(theta))
        handle.attrs["injections_total"] = total


@pytest.mark.parametrize("total, found", [
    (-5, "found -5"), (np.float64(60000.5), "found 60000.5"), (np.float64(np.nan), "found nan"), ("abc", "found 'abc'"),
    (True, "found True"), (np.array([60000, 70000]), "found 2 values (60000, 70000)"),
    (np.array([], dtype=float), "found none"), (2, "M_total = 2 is smaller than the 3 detected")])
def test_a_bad_injections_total_attribute_names_the_file_and_attribute_in_plain_numbers(tmp_path, total, found):
    """The attribute of the injections file was called an option (exit 2, with --injections-total
    in the message), its value printed as numpy's repr (np.int64(-5), np.str_('abc')); an array
    lent its first value without a word, an empty one ended in "Unexpected IndexError"."""
    _injections_h5(tmp_path / "inj.h5", total)
    with pytest.raises(InputDataError) as caught:
        read_injections(tmp_path / "inj.h5", ["theta"])
    message = str(caught.value)
    assert "inj.h5, attribute 'injections_total'" in message and found in message, message
    assert "np." not in message and "array(" not in message and "--injections-total" not in message


def test_the_option_and_the_attribute_are_told_apart_in_plain_numbers(tmp_path):
    _injections_h5(tmp_path / "inj.h5", np.float64(60000.0))
    assert read_injections(tmp_path / "inj.h5", ["theta"]).n_total == 60000
    with pytest.raises(UsageError) as caught:
        read_injections(tmp_path / "inj.h5", ["theta"], n_total=50000)
    assert str(caught.value).startswith("--injections-total 50000 disagrees with the attribute 'injections_total' of ")
    assert "(60000)" in str(caught.value)
    for given in (-4, 2.5, "abc"):
        with pytest.raises(UsageError, match=r"^--injections-total must be a positive whole number") as caught:
            read_injections(tmp_path / "inj.h5", ["theta"], n_total=given)
        assert "np." not in str(caught.value)


def test_a_non_finite_hdf5_injection_is_named_in_plain_numbers(tmp_path):
    _injections_h5(tmp_path / "inj.h5", 100, theta=(0.1, np.nan, 0.9))
    with pytest.raises(InputDataError, match=r"inj.h5, row 2, column 'theta': expected a finite number, found nan "):
        read_injections(tmp_path / "inj.h5", ["theta"])


def test_cli_a_bad_injections_total_attribute_is_a_file_error(tmp_path):
    """Through the CLI: exit 1 (the file's fault), not a usage error about an option not given."""
    _injections_h5(tmp_path / "inj.h5", -5)
    samples = tmp_path / "s.h5"
    assert cli(["fit-individuals", str(SAMPLE_DATA / "eight_schools.csv"), "-o", str(samples), "--model", "normal",
                "--samples", "100", "--walkers", "8", "--seed", "1", "--quiet"]).exit_code == 0
    refused(cli(["fit-population", str(samples), "-o", str(tmp_path / "p.h5"), "--population", "normal",
                 "--selection", str(tmp_path / "inj.h5"), "--quiet"]), 1,
            "inj.h5, attribute 'injections_total'", "found -5")
    assert not (tmp_path / "p.h5").exists()


def test_injections_total_zero_without_selection_is_refused(tmp_path):
    """--injections-total 0 without --selection was ignored without a word (0 counted as not given)."""
    samples = tmp_path / "s.h5"
    assert cli(["fit-individuals", str(SAMPLE_DATA / "eight_schools.csv"), "-o", str(samples), "--model", "normal",
                "--samples", "100", "--walkers", "8", "--seed", "1", "--quiet"]).exit_code == 0
    refused(cli(["fit-population", str(samples), "-o", str(tmp_path / "p.h5"), "--population", "normal",
                 "--injections-total", "0", "--quiet"]), 2, "--injections-total describes injections")
    assert not (tmp_path / "p.h5").exists()
