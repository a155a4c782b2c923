"""``--exp-precision single``: the weights' exponentials in float32, against float64.

Every number but the exponential is the same float64 arithmetic in both precisions, so the
two kernels differ only by each weight's relative error ε_nk, bounded by IEEE rounding: the
log weight x_nk ≤ 0 rounded to float32 (≤ |x_nk|·2⁻²⁴, carried through the exponential) plus
numpy's float32 exp itself (≤ 4 ulp = 4·2⁻²³, the budget ``reweighting.likelihood`` states);
below float32's normal range (x < ln 2⁻¹²⁶) the error is at most 2⁻¹²⁶ absolute. To first
order this moves each object's

    ln Σ_k w_nk              by at most  Σ_k w_nk e_nk / Σ_k w_nk,
    E_w̃[g] (its gradient)    by at most  Σ_k w_nk e_nk |g_nk − E_w̃[g]| / Σ_k w_nk,

with g_nk = ∂ ln f(θ_nk)/∂α, plus the float64 sums' rounding (K·2⁻⁵² relative). The bounds
are computed from float64 weights and every object is held to them; the negative control
(float16 exponentials, 2⁻¹¹ per weight) must break them.
"""

import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import popinfer
from popinfer.cli import main
from popinfer.errors import UsageError
from popinfer.io.samples import write_samples
from popinfer.populations import get_population
from popinfer.reweighting import likelihood as kernel_module
from popinfer.reweighting.likelihood import HyperLikelihood
from test_choosing import EIGHT, EIGHT_HYPER, exact_samples

NORMAL_FLOOR = np.log(2.0**-126)  # the smallest normal float32 weight, against the peak's 1
EXP_BUDGET = 4 * 2.0**-23  # numpy's float32 exp, in ulp (relative)
CASES = {"normal": {"mu": [0.3, -1.0, 2.0, 0.0], "sigma": [1.5, 0.4, 3.0, 0.05]},
         "studentt": {"mu": [0.3, -1.0, 2.0, 0.0], "sigma": [1.5, 0.4, 3.0, 0.2], "nu": [4.0, 2.5, 30.0, 1.5]}}


def draws(seed=0, n_objects=60, n_draws=500):
    """Objects' draws N(y_n, s_n), s_n from 0.05 to 4 (weights from flat to a few spikes), ln p0 flat."""
    rng = np.random.default_rng(seed)
    y, s = rng.normal(0.0, 2.0, n_objects), np.exp(rng.uniform(np.log(0.05), np.log(4.0), n_objects))
    theta = (y[:, None] + s[:, None] * rng.standard_normal((n_objects, n_draws)))[..., None]
    return theta, np.full((n_objects, n_draws), -np.log(200.0))


def float64_weights(population, theta, log_interim, hyper):
    """x_nk (log weights less their peak), w_nk = exp(x_nk), (W, N, K), in float64."""
    log_weight = population.log_density(theta, hyper).transpose(2, 0, 1) - log_interim
    shifted = log_weight - log_weight.max(axis=2, keepdims=True)
    return shifted, np.exp(shifted)


def relative_error_bound(shifted):
    """e_nk·w_nk's bound per draw: relative where the float32 weight is normal, else absolute."""
    weights = np.exp(shifted)
    relative = weights * (np.abs(shifted) * 2.0**-24 + EXP_BUDGET)
    return np.where(shifted >= NORMAL_FLOOR, relative, 2.0**-126)


def log_density_gradient(population, theta, hyper):
    """∂ ln f(θ_nk)/∂α, (N, K, W) per name: the population's own, or the normal's in closed form
    (its kernel's gradient comes from its linear form)."""
    own = population.log_density_gradient(theta, hyper)
    if own is not None:
        return own
    z = (theta - hyper["mu"]) / hyper["sigma"]
    return {"mu": z / hyper["sigma"], "sigma": (z**2 - 1) / hyper["sigma"]}


def kernels(name, exp_precision="double"):
    population = get_population(name, ["theta"])
    theta, log_interim = draws()
    return population, theta, log_interim, HyperLikelihood(population, theta, log_interim, threads=1,
                                                          exp_precision=exp_precision)


def violations(name, hyper):
    """Objects (W, N) whose float32-exponential ln Σ w, ln Σ w² and gradient break the bounds."""
    population, theta, log_interim, double = kernels(name)
    single = HyperLikelihood(population, theta, log_interim, threads=1, exp_precision="single")
    names = [n for n in hyper]
    first, squares, gradient = double.per_object_gradient(hyper, names, second=True)
    first_s, squares_s, gradient_s = single.per_object_gradient(hyper, names, second=True)
    shifted, weights = float64_weights(population, theta, log_interim, hyper)
    total = weights.sum(axis=2)
    per_draw = relative_error_bound(shifted)
    rounding = theta.shape[1] * 2.0**-52
    bound = per_draw.sum(axis=2) / total + rounding
    # w² carries twice each weight's relative error
    square_bound = 2 * (per_draw * weights).sum(axis=2) / (weights**2).sum(axis=2) + rounding
    broken = (np.abs(first_s - first) > bound) | (np.abs(squares_s - squares) > square_bound)
    per_draw_gradient = log_density_gradient(population, theta, hyper)
    for h, name_h in enumerate(names):
        g = np.broadcast_to(per_draw_gradient[name_h], theta.shape[:2] + (len(hyper[name_h]),)).transpose(2, 0, 1)
        mean = (weights * g).sum(axis=2) / total
        spread = (per_draw * np.abs(g - mean[..., None])).sum(axis=2) / total
        scale = (weights * np.abs(g)).sum(axis=2) / total
        broken |= np.abs(gradient_s[..., h] - gradient[..., h]) > spread + rounding * (scale + np.abs(mean))
    moved = np.mean(first_s != first)
    for kernel in (double, single):
        kernel.close()
    return broken, moved


@pytest.mark.parametrize("name", sorted(CASES))
def test_single_precision_moves_every_term_within_the_rounding_bound(name):
    hyper = {k: np.asarray(v) for k, v in CASES[name].items()}
    broken, moved = violations(name, hyper)
    assert not broken.any(), f"{broken.sum()} of {broken.size} object terms outside the bound"
    assert moved > 0.5  # the option changes the numbers: the bound is not met by doing nothing


def test_half_precision_exponentials_break_the_bound(monkeypatch):
    """The negative control: float16 weights (2⁻¹¹ relative) are caught by the same bounds."""
    monkeypatch.setitem(kernel_module.EXP_PRECISIONS, "single", np.float16)
    hyper = {k: np.asarray(v) for k, v in CASES["normal"].items()}
    broken, _ = violations("normal", hyper)
    assert broken.mean() > 0.5


def test_single_precision_ln_likelihood_and_variance_move_by_at_most_the_summed_bound():
    """ln L̂ = Σ_n ln Σ_k w_nk − Σ ln K_n + A: moves by at most the sum of the objects' bounds."""
    population, theta, log_interim, double = kernels("normal")
    single = HyperLikelihood(population, theta, log_interim, threads=1, exp_precision="single")
    hyper = {k: np.asarray(v) for k, v in CASES["normal"].items()}
    a, b = double.ln_likelihood_and_variance(hyper), single.ln_likelihood_and_variance(hyper)
    shifted, weights = float64_weights(population, theta, log_interim, hyper)
    bound = (relative_error_bound(shifted).sum(axis=2) / weights.sum(axis=2)).sum(axis=1) + 1e-12 * np.abs(
        a.ln_likelihood)
    assert np.all(np.abs(b.ln_likelihood - a.ln_likelihood) <= bound)
    assert np.all(b.ln_likelihood != a.ln_likelihood)
    np.testing.assert_allclose(b.ln_likelihood_variance, a.ln_likelihood_variance, rtol=1e-4)


def test_an_unknown_precision_is_refused():
    population = get_population("normal", ["theta"])
    theta, log_interim = draws(n_objects=2, n_draws=10)
    with pytest.raises(ValueError, match="exp_precision"):
        HyperLikelihood(population, theta, log_interim, exp_precision="half")


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    samples = exact_samples(EIGHT["y"], EIGHT["sigma"], 400, seed=5, ids=EIGHT["school"])
    path = tmp_path_factory.mktemp("eight") / "eight.h5"
    write_samples(samples, path)
    return path


def test_cli_records_single_precision_and_its_run_is_reproducible(tmp_path, eight):
    runner = CliRunner()
    outputs = []
    for name in ("a.h5", "b.h5"):
        out = tmp_path / name
        result = runner.invoke(main, ["fit-population", str(eight), "-o", str(out), "--population", "normal",
                                      "--hyperprior", EIGHT_HYPER[0], "--hyperprior", EIGHT_HYPER[1],
                                      "--exp-precision", "single", "--samples", "200", "--reweighted", "5",
                                      "--max-steps", "300", "--seed", "3", "--quiet"])
        assert result.exit_code == 0, result.output
        outputs.append(out)
    fitted = popinfer.read_population(outputs[0])
    assert fitted.settings["exp_precision"] == "single" and fitted.settings["backend"] == "numpy"
    assert popinfer.read_population(outputs[1]).hyper_samples.tobytes() == fitted.hyper_samples.tobytes()


def test_default_precision_is_recorded_as_double(eight):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = popinfer.fit_population(eight, "normal", hyperpriors=EIGHT_HYPER, n_samples=100, n_reweighted=2,
                                         max_steps=200, seed=1, progress=False)
    assert fitted.settings["exp_precision"] == "double"


@pytest.mark.parametrize("options, fragment", [
    (["--exp-precision", "single", "--backend", "jax"], "--exp-precision single is the numpy kernel's"),
    (["--exp-precision", "half"], "'half' is not one of"),
])
def test_cli_refuses_single_precision_off_the_numpy_kernel_and_unknown_values(tmp_path, eight, options, fragment):
    out = tmp_path / "pop.h5"
    result = CliRunner().invoke(main, ["fit-population", str(eight), "-o", str(out), "--population", "normal",
                                       "--quiet", *options])
    assert result.exit_code != 0 and fragment in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_single_precision_with_jax_from_the_environment_names_the_variable(tmp_path, eight, monkeypatch):
    monkeypatch.setenv("POPINFER_BACKEND", "jax")
    out = tmp_path / "pop.h5"
    result = CliRunner().invoke(main, ["fit-population", str(eight), "-o", str(out), "--population", "normal",
                                       "--quiet", "--exp-precision", "single"])
    assert result.exit_code != 0 and "not $POPINFER_BACKEND=jax in the environment" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_auto_resolves_to_numpy_for_single_precision_whatever_the_machine():
    from popinfer.reweighting.backends import resolve_backend

    assert resolve_backend("auto", "emcee", exp_precision="single") == "numpy"
    assert resolve_backend("numpy", "emcee", exp_precision="single") == "numpy"
    assert resolve_backend("jax", "nuts", exp_precision="double") == "jax"


def test_api_refuses_an_unknown_precision_before_reading(tmp_path):
    with pytest.raises(UsageError, match="--exp-precision 'half'"):
        popinfer.fit_population(tmp_path / "missing.h5", "normal", exp_precision="half")


def test_auto_backend_with_single_precision_runs_numpy(eight):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = popinfer.fit_population(eight, "normal", hyperpriors=EIGHT_HYPER, n_samples=100, n_reweighted=2,
                                         max_steps=200, seed=1, progress=False, backend="auto",
                                         exp_precision="single")
    assert fitted.settings["backend"] == "numpy" and fitted.settings["backend_option"] == "auto"


def test_the_jax_kernel_refuses_single_precision_rather_than_ignore_it():
    pytest.importorskip("jax")
    from popinfer.reweighting.jax_backend import JaxHyperLikelihood

    population = get_population("normal", ["theta"])
    theta, log_interim = draws(n_objects=2, n_draws=10)
    with pytest.raises(ValueError, match="the numpy kernel's"):
        JaxHyperLikelihood(population, theta, log_interim, exp_precision="single")
