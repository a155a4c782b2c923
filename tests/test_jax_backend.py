"""The JAX backend (``--backend jax``): its kernel equals the numpy kernel to 1e-10 (float64)
for every built-in population, with ragged draw counts, the variance cut and the selection
term; its autodiff gradients match central finite differences (and numpy's analytic ones);
user populations in jax.numpy work, numpy ones are refused with the remedy; the CLI option
and the missing-extra error. Negative controls: a 1e-9 change of one hyperparameter and an
unweighted gradient both fail the comparisons.
"""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

jax = pytest.importorskip("jax")

from test_gradients import CASES as GRADIENT_CASES  # noqa: E402
from test_gradients import check_gradient, draws  # noqa: E402

from popinfer.cli import main  # noqa: E402
from popinfer.errors import GradientUnavailableError, ModelError, UsageError  # noqa: E402
from popinfer.injections import Injections  # noqa: E402
from popinfer.populations import BUILTIN_POPULATIONS, get_population  # noqa: E402
from popinfer.reweighting.jax_backend import JaxHyperLikelihood  # noqa: E402
from popinfer.reweighting.likelihood import HyperLikelihood  # noqa: E402
from popinfer.reweighting.selection import SelectionTerm  # noqa: E402

SEED = 11
N_OBJECTS, N_DRAWS, N_WALKERS = 23, 400, 7
TOLERANCE = 1e-10


def _walkers(rng, **ranges):
    return {name: rng.uniform(low, high, N_WALKERS) for name, (low, high) in ranges.items()}


# draws' kind, fixed, walkers' ranges, and the last walker made invalid: (hyperparameter, value)
KERNEL_CASES = {
    "normal": ("real", {}, dict(mu=(-1, 2), sigma=(0.3, 3)), ("sigma", -1.0)),
    "truncnormal": ("bounded", {"low": 1.0, "high": 10.0}, dict(mu=(-2, 6), sigma=(0.5, 4)), ("sigma", 0.0)),
    "truncnormal-free-bounds": ("bounded", {}, dict(mu=(0, 6), sigma=(0.5, 4), low=(0.5, 2), high=(6, 12)),
                                ("high", 0.1)),
    "lognormal": ("positive", {}, dict(mu=(-0.5, 1.5), sigma=(0.3, 1.5)), ("sigma", -0.5)),
    "beta": ("unit", {}, dict(a=(0.5, 5), b=(0.5, 5)), ("a", -1.0)),
    "gamma": ("positive", {}, dict(shape=(0.5, 5), rate=(0.3, 3)), ("rate", 0.0)),
    "powerlaw": ("bounded", {"low": 1.0, "high": 10.0}, dict(alpha=(-4, 2)), None),
    "powerlaw-free-bounds": ("bounded", {}, dict(alpha=(-3, 1), low=(0.5, 2), high=(6, 12)), ("low", -1.0)),
    "uniform": ("bounded", {}, dict(low=(0.0, 2.0), high=(5.0, 11.0)), ("high", -1.0)),
    "studentt": ("real", {}, dict(nu=(0.5, 20), mu=(-1, 2), sigma=(0.3, 3)), ("nu", -2.0)),
    "mixture": ("real", {}, dict(weight=(0.1, 0.9), mu1=(-2, 0.5), sigma1=(0.3, 2), mu2=(0.6, 3), sigma2=(0.3, 2)),
                ("weight", 1.5)),
}


def _kernel_inputs(case, rng):
    kind, fixed, ranges, invalid = KERNEL_CASES[case]
    theta, log_interim = draws(kind, rng, (N_OBJECTS, N_DRAWS))
    hyper = {**_walkers(rng, **ranges), **{k: np.full(N_WALKERS, v) for k, v in fixed.items()}}
    if invalid is not None:
        hyper[invalid[0]][-1] = invalid[1]
    return get_population(case.split("-")[0], ["x"]), theta, log_interim, fixed, hyper


def assert_estimates_equal(numpy_estimate, jax_estimate, tolerance=TOLERANCE):
    for field in ("ln_likelihood", "ln_sum_weights", "ln_sum_squared_weights", "ess", "ln_likelihood_variance"):
        expected, got = getattr(numpy_estimate, field), getattr(jax_estimate, field)
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected), err_msg=field)
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance, err_msg=field)


@pytest.mark.parametrize("case", sorted(KERNEL_CASES))
def test_jax_kernel_equals_the_numpy_kernel(case):
    population, theta, log_interim, fixed, hyper = _kernel_inputs(case, np.random.default_rng(SEED))
    expected = HyperLikelihood(population, theta, log_interim, fixed).ln_likelihood_and_variance(hyper)
    got = JaxHyperLikelihood(population, theta, log_interim, fixed).ln_likelihood_and_variance(hyper)
    assert np.isfinite(expected.ln_likelihood[:-1]).all()
    assert (expected.ln_likelihood[-1] == -np.inf) == (KERNEL_CASES[case][3] is not None)
    assert_estimates_equal(expected, got)


def test_jax_kernel_equals_the_numpy_kernel_for_mvnormal():
    rng = np.random.default_rng(SEED)
    theta = rng.multivariate_normal([0.5, -1.0, 2.0], np.diag([1.0, 2.0, 0.5]), (N_OBJECTS, N_DRAWS))
    log_interim = rng.normal(-3.0, 0.2, (N_OBJECTS, N_DRAWS))
    population = get_population("mvnormal", ["a", "b", "c"])
    hyper = {**_walkers(rng, mu_a=(0, 1), mu_b=(-2, 0), mu_c=(1, 3), sigma_a=(0.5, 2), sigma_b=(0.5, 2),
                        sigma_c=(0.5, 2), rho_a_b=(-0.5, 0.5), rho_a_c=(-0.5, 0.5), rho_b_c=(-0.5, 0.5))}
    hyper["rho_a_b"][-1] = 1.5  # not positive definite
    expected = HyperLikelihood(population, theta, log_interim).ln_likelihood_and_variance(hyper)
    got = JaxHyperLikelihood(population, theta, log_interim).ln_likelihood_and_variance(hyper)
    assert expected.ln_likelihood[-1] == -np.inf
    assert_estimates_equal(expected, got)


def test_ragged_draw_counts_and_the_variance_cut_are_the_numpy_kernels():
    population, theta, log_interim, fixed, hyper = _kernel_inputs("normal", np.random.default_rng(SEED))
    counts = np.random.default_rng(SEED + 1).integers(N_DRAWS // 4, N_DRAWS + 1, N_OBJECTS)
    kernels = [cls(population, theta, log_interim, fixed, draw_counts=counts, max_variance=0.05)
               for cls in (HyperLikelihood, JaxHyperLikelihood)]
    expected, got = (kernel.ln_likelihood_and_variance(hyper) for kernel in kernels)
    assert_estimates_equal(expected, got)
    cut = np.isfinite(expected.ln_likelihood_variance) & (expected.ln_likelihood_variance > 0.05)
    assert cut.any() and not cut.all()  # the cut is exercised both ways
    assert np.all(got.ln_likelihood[cut] == -np.inf)


def test_the_thinned_jax_kernel_is_the_thinned_numpy_kernel():
    """thinned(3) (NUTS's tuning target) on the JAX backend: its own draws on the device, every 3rd of
    each object (ragged K_n, the cut scaled), equal to the numpy kernel's thinned(3); the original
    keeps all its draws."""
    population, theta, log_interim, fixed, hyper = _kernel_inputs("normal", np.random.default_rng(SEED))
    counts = np.random.default_rng(SEED + 1).integers(N_DRAWS // 4, N_DRAWS + 1, N_OBJECTS)
    kernels = [cls(population, theta, log_interim, fixed, draw_counts=counts, max_variance=0.05)
               for cls in (HyperLikelihood, JaxHyperLikelihood)]
    before = kernels[1].ln_likelihood_and_variance(hyper)
    expected, got = (kernel.thinned(3) for kernel in kernels)
    assert isinstance(got, JaxHyperLikelihood) and got.max_variance == 0.05 * 3
    assert got._data[1].shape[-1] == -(-N_DRAWS // 3)
    assert_estimates_equal(expected.ln_likelihood_and_variance(hyper), got.ln_likelihood_and_variance(hyper))
    one = {name: value[:1] for name, value in hyper.items()}
    names = ["mu", "sigma"]
    np.testing.assert_allclose(got.ln_likelihood_and_variance(one, gradient=names).gradient,
                               expected.ln_likelihood_and_variance(one, gradient=names).gradient,
                               rtol=TOLERANCE, atol=TOLERANCE)
    assert not np.allclose(got.ln_likelihood_and_variance(hyper).ln_likelihood, before.ln_likelihood)  # a control
    assert_estimates_equal(before, kernels[1].ln_likelihood_and_variance(hyper))
    assert kernels[1].thinned(1) is kernels[1]


def test_batches_of_varying_size_compile_a_few_shapes_and_keep_their_own_numbers(monkeypatch):
    """Batches of 1 to 20 points (as UltraNest's vary) are padded to the sizes 1, 2, 3, 4, 6, 8, 12, 16, 24:
    nine compilations, not twenty; each point's numbers equal the numpy kernel's, and a point's sums do not
    depend on the batch it came in (to 1e-12)."""
    from popinfer.reweighting import jax_backend

    traced = []
    original = JaxHyperLikelihood._traced_sums
    monkeypatch.setattr(JaxHyperLikelihood, "_traced_sums",
                        lambda self, data, hyper, **kw: traced.append(1) or original(self, data, hyper, **kw))
    population, theta, log_interim, fixed, _ = _kernel_inputs("normal", np.random.default_rng(SEED))
    rng = np.random.default_rng(SEED + 2)
    hyper = {"mu": rng.uniform(-1, 2, 20), "sigma": rng.uniform(0.3, 3, 20)}
    kernels = HyperLikelihood(population, theta, log_interim, fixed), JaxHyperLikelihood(population, theta, log_interim,
                                                                                        fixed)
    alone = kernels[1].ln_likelihood_and_variance({k: v[:1] for k, v in hyper.items()})
    for n in range(1, 21):
        batch = {k: v[:n] for k, v in hyper.items()}
        assert_estimates_equal(kernels[0].ln_likelihood_and_variance(batch), kernels[1].ln_likelihood_and_variance(batch))
        np.testing.assert_allclose(kernels[1].ln_likelihood_and_variance(batch).ln_likelihood[0], alone.ln_likelihood[0],
                                   rtol=1e-12)
    assert len(traced) == len({jax_backend.batch_size(n) for n in range(1, 21)}) == 9
    assert [jax_backend.batch_size(n) for n in (1, 2, 3, 5, 7, 9, 13, 17, 25, 33)] == [1, 2, 3, 6, 8, 12, 16, 24, 32, 48]


def _injections(rng, n_total=5000):
    injected = rng.normal(0.0, 2.0, n_total)
    detected = injected[injected + rng.normal(0.0, 0.5, n_total) > 0.5]
    return Injections("test", "", ["x"], detected[:, None], stats.norm.logpdf(detected, 0.0, 2.0), n_total,
                      {"x": "normal(0, 2)"})


def test_selection_term_on_the_jax_kernel_equals_numpy():
    rng = np.random.default_rng(SEED)
    population, theta, log_interim, fixed, hyper = _kernel_inputs("normal", rng)
    injections = _injections(rng)
    estimates = []
    for cls in (HyperLikelihood, JaxHyperLikelihood):
        term = SelectionTerm(population, injections, N_OBJECTS, kernel=cls)
        assert isinstance(term.kernel, cls)
        estimates.append(cls(population, theta, log_interim, terms=[term]).ln_likelihood_and_variance(hyper))
    assert_estimates_equal(*estimates)
    without = HyperLikelihood(population, theta, log_interim).ln_likelihood_and_variance(hyper)
    assert np.abs(estimates[1].ln_likelihood[:-1] - without.ln_likelihood[:-1]).min() > 1.0  # the term counts


def test_a_one_part_in_a_billion_change_fails_the_comparison():
    """Negative control: the 1e-10 comparison sees σ changed by 1e-9 (relative) in the JAX kernel's input."""
    population, theta, log_interim, fixed, hyper = _kernel_inputs("normal", np.random.default_rng(SEED))
    expected = HyperLikelihood(population, theta, log_interim, fixed).ln_likelihood_and_variance(hyper)
    nudged = {**hyper, "sigma": hyper["sigma"] * (1 + 1e-9)}
    got = JaxHyperLikelihood(population, theta, log_interim, fixed).ln_likelihood_and_variance(nudged)
    with pytest.raises(AssertionError):
        assert_estimates_equal(expected, got)


def test_every_builtin_population_is_ported():
    cases = {case.split("-")[0] for case in KERNEL_CASES} | {"mvnormal"}
    assert cases == set(BUILTIN_POPULATIONS)


def _jax_likelihood_for(case, rng):
    name, kind, fixed, point = GRADIENT_CASES[case]
    theta, log_interim = draws(kind, rng)
    return JaxHyperLikelihood(get_population(name, ["x"]), theta, log_interim, fixed), point


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_autodiff_gradient_matches_finite_differences_and_numpys_analytic_gradient(case):
    likelihood, point = _jax_likelihood_for(case, np.random.default_rng(SEED))
    values = [point[name] for name in likelihood.sampled_names]
    gradient, _ = check_gradient(likelihood, values)
    name, kind, fixed, _ = GRADIENT_CASES[case]
    theta, log_interim = draws(kind, np.random.default_rng(SEED))
    analytic = HyperLikelihood(get_population(name, ["x"]), theta, log_interim, fixed)
    np.testing.assert_allclose(gradient, analytic.ln_likelihood_and_gradient(values)[1], rtol=1e-9, atol=1e-9)


def test_mvnormal_autodiff_gradient_matches_finite_differences():
    rng = np.random.default_rng(SEED)
    centres = rng.multivariate_normal([0.5, -1.0], [[1.0, 0.5], [0.5, 2.0]], 6)
    theta = centres[:, None, :] + 0.4 * rng.standard_normal((6, 300, 2))
    likelihood = JaxHyperLikelihood(get_population("mvnormal", ["a", "b"]), theta, np.full((6, 300), -5.0))
    check_gradient(likelihood, [0.4, -0.8, 1.1, 1.5, 0.35])


def test_the_selection_terms_gradient_runs_on_the_jax_kernel():
    rng = np.random.default_rng(SEED)
    theta, log_interim = draws("real", rng)
    population = get_population("normal", ["x"])
    term = SelectionTerm(population, _injections(rng), theta.shape[0], kernel=JaxHyperLikelihood)
    likelihood = JaxHyperLikelihood(population, theta, log_interim, terms=[term])
    gradient, _ = check_gradient(likelihood, [0.9, 1.4])
    alone = JaxHyperLikelihood(population, theta, log_interim).ln_likelihood_and_gradient([0.9, 1.4])[1]
    assert np.abs(gradient - alone).max() > 0.1  # the term does contribute


def test_an_unweighted_gradient_fails_the_finite_difference_check(monkeypatch):
    """Negative control: d ln L̂/dα taken as the plain mean of ∂ ln f/∂α over the draws (the
    weights w̃_nk forgotten) is rejected by the same check."""
    likelihood, point = _jax_likelihood_for("normal", np.random.default_rng(SEED))
    right = likelihood.ln_likelihood_and_gradient

    def unweighted(values):
        value, _ = right(values)
        mu, sigma = values
        z = (likelihood.theta[..., 0] - mu) / sigma
        return value, np.array([np.sum(np.mean(z / sigma, axis=1)), np.sum(np.mean((z * z - 1) / sigma, axis=1))])

    monkeypatch.setattr(likelihood, "ln_likelihood_and_gradient", unweighted)
    with pytest.raises(AssertionError):
        check_gradient(likelihood, [point["mu"], point["sigma"]])


def test_sampled_support_bounds_have_no_gradient():
    theta, log_interim = draws("bounded", np.random.default_rng(SEED))
    likelihood = JaxHyperLikelihood(get_population("uniform", ["x"]), theta, log_interim)
    with pytest.raises(GradientUnavailableError, match="--fix"):
        likelihood.ln_likelihood_and_gradient([0.5, 11.0])


def test_invalid_hyperparameters_give_minus_infinity_and_a_zero_gradient():
    likelihood, _ = _jax_likelihood_for("beta", np.random.default_rng(SEED))
    value, gradient = likelihood.ln_likelihood_and_gradient([2.0, -1.0])
    assert value == -np.inf and np.all(gradient == 0.0)


USER_JAX = '''
import jax.numpy as jnp

def exponential(theta, hyper):
    x, scale = theta["x"], hyper["scale"]
    return jnp.where(x >= 0, -jnp.log(scale) - x / scale, -jnp.inf)

exponential.hyperparameters = {"scale": "loguniform(0.01, 100)"}
'''

USER_NUMPY = USER_JAX.replace("import jax.numpy as jnp", "import numpy as jnp")

# ln f = a ln x + ln(a + 1) on (0, 1]: −inf (and an infinite ∂/∂a) at the draws clipped to 0
USER_CLIPPED = '''
import jax.numpy as jnp

def power(theta, hyper):
    a = hyper["a"]
    return a * jnp.log(jnp.clip(theta["x"], 0.0, 1.0)) + jnp.log(a + 1.0)

power.hyperparameters = {"a": "loguniform(0.01, 100)"}
'''


def test_draws_of_zero_weight_add_nothing_to_the_gradient(tmp_path):
    """Draws where ln f = −inf have an infinite tangent; weighted by w = 0 they must add nothing
    (a plain Σ w·t gives NaN). The gradient matches finite differences and the closed form
    Σ_n E_w̃[ln x] + N/(a + 1)."""
    (tmp_path / "pop.py").write_text(USER_CLIPPED)
    population = get_population(f"{tmp_path / 'pop.py'}:power", ["x"])
    rng = np.random.default_rng(SEED)
    theta = rng.uniform(-0.3, 1.0, (N_OBJECTS, N_DRAWS, 1))  # about a quarter of the draws at x ≤ 0
    log_interim = np.full((N_OBJECTS, N_DRAWS), -np.log(1.3))
    likelihood = JaxHyperLikelihood(population, theta, log_interim)
    gradient, _ = check_gradient(likelihood, [1.5])
    x = theta[..., 0]
    inside = x > 0
    weights = np.where(inside, np.exp(1.5 * np.log(np.where(inside, x, 1.0))), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    exact = np.sum(np.sum(weights * np.log(np.where(inside, x, 1.0)), axis=1)) + N_OBJECTS / 2.5
    assert np.isfinite(gradient[0]) and gradient[0] == pytest.approx(exact, rel=1e-10)


def test_a_gradient_over_no_names_is_empty_and_the_sums_unchanged():
    likelihood, point = _jax_likelihood_for("normal", np.random.default_rng(SEED))
    hyper = likelihood.hyper(likelihood.sampled_names, np.array([[point["mu"], point["sigma"]]]))
    first, _, derivative = likelihood._per_object(hyper, gradient=[])
    assert derivative.shape == (1, likelihood.n_objects, 0)
    np.testing.assert_array_equal(first, likelihood._per_object(hyper)[0])


@pytest.mark.parametrize("case", ["normal", "studentt", "mixture"])
def test_forward_and_reverse_mode_give_the_same_gradient(case, monkeypatch):
    """Gradients are taken in forward mode up to FORWARD_MODE_MAX sampled hyperparameters and in
    reverse mode above: both modes agree on every case, to rounding."""
    import popinfer.reweighting.jax_backend as module

    gradients = {}
    for mode, limit in (("forward", 100), ("reverse", 0)):
        monkeypatch.setattr(module, "FORWARD_MODE_MAX", limit)
        likelihood, point = _jax_likelihood_for(case, np.random.default_rng(SEED))
        values = [point[name] for name in likelihood.sampled_names]
        gradients[mode] = likelihood.ln_likelihood_and_gradient(values)
    assert gradients["forward"][0] == pytest.approx(gradients["reverse"][0], rel=1e-13)
    np.testing.assert_allclose(gradients["forward"][1], gradients["reverse"][1], rtol=1e-10, atol=1e-10)


def test_a_user_population_in_jax_numpy_matches_numpy_and_has_a_gradient(tmp_path):
    (tmp_path / "pop.py").write_text(USER_JAX)
    population = get_population(f"{tmp_path / 'pop.py'}:exponential", ["x"])
    theta, log_interim = draws("positive", np.random.default_rng(SEED))
    hyper = {"scale": np.array([0.5, 2.0, 5.0])}
    expected = HyperLikelihood(population, theta, log_interim).ln_likelihood_and_variance(hyper)
    likelihood = JaxHyperLikelihood(population, theta, log_interim)
    assert_estimates_equal(expected, likelihood.ln_likelihood_and_variance(hyper))
    gradient, _ = check_gradient(likelihood, [2.0])
    # d/ds Σ_n ln Σ_k w_nk with ln f = −ln s − θ/s: Σ_n E_w̃[θ/s² − 1/s]
    weights = np.exp(-np.log(2.0) - theta[..., 0] / 2.0 - log_interim)
    weights /= weights.sum(axis=1, keepdims=True)
    exact = np.sum(np.sum(weights * (theta[..., 0] / 4.0 - 0.5), axis=1))
    assert gradient[0] == pytest.approx(exact, rel=1e-10)


def test_a_user_population_in_numpy_is_refused_with_the_remedy(tmp_path):
    (tmp_path / "pop.py").write_text(USER_NUMPY)
    population = get_population(f"{tmp_path / 'pop.py'}:exponential", ["x"])
    theta, log_interim = draws("positive", np.random.default_rng(SEED))
    with pytest.raises(UsageError, match="jax.numpy.*--backend numpy"):
        JaxHyperLikelihood(population, theta, log_interim)


def test_float64_is_scoped_to_the_backend():
    population, theta, log_interim, fixed, hyper = _kernel_inputs("normal", np.random.default_rng(SEED))
    JaxHyperLikelihood(population, theta, log_interim, fixed).ln_likelihood_and_variance(hyper)
    assert not jax.config.jax_enable_x64


@pytest.fixture(scope="module")
def eight_schools(tmp_path_factory):
    path = tmp_path_factory.mktemp("jax") / "eight.h5"
    result = CliRunner().invoke(main, ["fit-individuals", "sample_data/eight_schools.csv", "-o", str(path),
                                       "--model", "normal", "--samples", "1000", "--seed", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    return path


def test_fit_population_backend_jax_records_it_and_its_likelihood_is_numpys(eight_schools, tmp_path):
    output = tmp_path / "pop.h5"
    result = CliRunner().invoke(main, ["fit-population", str(eight_schools), "-o", str(output), "--population",
                                       "normal", "--backend", "jax", "--samples", "400", "--reweighted", "50",
                                       "--seed", "2", "--quiet"])
    assert result.exit_code in (0, 3), result.output
    with h5py.File(output) as f:
        assert json.loads(f.attrs["settings"])["backend"] == "jax"
        draws_ = f["/hyper/samples"][:100]
        stored = f["/hyper/log_likelihood"][:100]
    with h5py.File(eight_schools) as f:
        theta, log_interim = f["/samples"][:], f["/log_interim_prior"][:, :, 0]
    numpy_kernel = HyperLikelihood(get_population("normal", ["theta"]), theta, log_interim)
    np.testing.assert_allclose(stored, numpy_kernel(numpy_kernel.hyper(["mu", "sigma"], draws_)), rtol=TOLERANCE)


def test_backend_jax_without_jax_is_a_usage_error_naming_the_extra(eight_schools, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    result = CliRunner().invoke(main, ["fit-population", str(eight_schools), "-o", str(tmp_path / "pop.h5"),
                                       "--population", "normal", "--backend", "jax", "--quiet"])
    assert result.exit_code == 2
    assert 'popinfer[jax]' in result.output and "Traceback" not in result.output
    assert not (tmp_path / "pop.h5").exists()


@pytest.mark.parametrize("vectorised, installed, sampler, expected", [
    (True, True, "emcee", "numpy"), (False, True, "emcee", "jax"), (False, False, "emcee", "numpy"),
    (False, True, "nuts", "numpy"), (False, True, "nested", "jax"), (True, True, "nested", "numpy")])
def test_auto_is_jax_for_emcee_and_nested_where_numpys_exp_is_scalar_and_jax_is_installed(vectorised, installed, sampler,
                                                                                    expected, monkeypatch):
    import importlib.util

    from popinfer.reweighting import backends

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" and not installed else real(name, *a))
    monkeypatch.setattr(backends, "numpy_exp_is_vectorised", lambda: vectorised)
    assert backends.resolve_backend("auto", sampler) == expected
    assert backends.likelihood_class("auto", sampler) is {"numpy": HyperLikelihood,
                                                          "jax": JaxHyperLikelihood}[expected]
    assert (backends.resolve_backend("numpy", sampler), backends.resolve_backend("jax", sampler)) == ("numpy", "jax")
    with pytest.raises(UsageError, match="numpy, jax, auto"):
        backends.likelihood_class("cuda")


def test_auto_keeps_numpy_for_mvnormal_and_for_a_users_population(monkeypatch):
    """mvnormal's JAX density ran 0.31× numpy's linear form; a user's function may be numpy code,
    which jax cannot trace: auto keeps numpy for both, and takes jax for the built-ins measured faster."""
    from conftest import ROOT
    from popinfer.reweighting import backends

    monkeypatch.setattr(backends, "numpy_exp_is_vectorised", lambda: False)
    user = get_population(f"{ROOT / 'sample_data/halfnormal_population.py'}:halfnormal", ["rate"])
    assert backends.resolve_backend("auto", "emcee", get_population("mvnormal", ["a", "b"])) == "numpy"
    assert backends.resolve_backend("auto", "emcee", user) == "numpy"
    for name in backends.AUTO_JAX_POPULATIONS:
        assert backends.resolve_backend("auto", "emcee", get_population(name, ["x"])) == "jax", name
    assert backends.resolve_backend("jax", "emcee", user) == "jax"  # an explicit choice stays


def test_backend_auto_runs_jax_on_a_cpu_without_avx512_and_records_it(eight_schools, tmp_path, monkeypatch):
    """The file of --backend auto holds the draws of the backend it chose (the same seed gives the
    same draws) and records both: backend (what ran) and backend_option (auto)."""
    from popinfer.reweighting import backends

    monkeypatch.setattr(backends, "numpy_exp_is_vectorised", lambda: False)
    files = {}
    for backend in ("auto", "jax"):
        files[backend] = tmp_path / f"{backend}.h5"
        result = CliRunner().invoke(main, ["fit-population", str(eight_schools), "-o", str(files[backend]),
                                           "--population", "normal", "--backend", backend, "--samples", "200",
                                           "--reweighted", "20", "--seed", "2", "--quiet"])
        assert result.exit_code in (0, 3), result.output
    with h5py.File(files["auto"]) as auto, h5py.File(files["jax"]) as chosen:
        settings = json.loads(auto.attrs["settings"])
        assert (settings["backend"], settings["backend_option"]) == ("jax", "auto")
        assert "backend_option" not in json.loads(chosen.attrs["settings"])
        assert np.array_equal(auto["/hyper/samples"][:], chosen["/hyper/samples"][:])


def test_popinfer_backend_sets_the_default_and_an_option_overrides_it(eight_schools, tmp_path, monkeypatch):
    """POPINFER_BACKEND is the default of --backend (recorded like the option); --backend wins over
    it; a value that names no backend is refused, naming the variable, before anything is written."""
    from popinfer.reweighting import backends

    monkeypatch.setattr(backends, "numpy_exp_is_vectorised", lambda: False)
    arguments = ["--population", "normal", "--samples", "200", "--reweighted", "20", "--seed", "2", "--quiet"]

    def settings_of(name, *options):
        result = CliRunner().invoke(main, ["fit-population", str(eight_schools), "-o", str(tmp_path / name),
                                           *arguments, *options])
        assert result.exit_code in (0, 3), result.output
        with h5py.File(tmp_path / name) as handle:
            return json.loads(handle.attrs["settings"])

    monkeypatch.setenv("POPINFER_BACKEND", "auto")
    settings = settings_of("env.h5")
    assert (settings["backend"], settings["backend_option"]) == ("jax", "auto")
    settings = settings_of("option.h5", "--backend", "numpy")
    assert settings["backend"] == "numpy" and "backend_option" not in settings
    monkeypatch.setenv("POPINFER_BACKEND", "cuda")
    result = CliRunner().invoke(main, ["fit-population", str(eight_schools), "-o", str(tmp_path / "bad.h5"),
                                       *arguments])
    assert result.exit_code == 2 and "POPINFER_BACKEND='cuda'" in result.output, result.output
    assert "numpy, jax, auto" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "bad.h5").exists()
    monkeypatch.delenv("POPINFER_BACKEND")
    assert backends.default_backend() == "numpy"


def test_the_sample_jax_population_equals_the_numpy_one_on_both_backends():
    from conftest import ROOT

    theta, log_interim = draws("positive", np.random.default_rng(SEED))
    hyper = {"scale": np.array([0.5, 2.0, 5.0])}
    numpy_population = get_population(f"{ROOT / 'sample_data/halfnormal_population.py'}:halfnormal", ["rate"])
    jax_population = get_population(f"{ROOT / 'sample_data/halfnormal_population_jax.py'}:halfnormal", ["rate"])
    expected = HyperLikelihood(numpy_population, theta, log_interim).ln_likelihood_and_variance(hyper)
    for got in (HyperLikelihood(jax_population, theta, log_interim).ln_likelihood_and_variance(hyper),
                JaxHyperLikelihood(jax_population, theta, log_interim).ln_likelihood_and_variance(hyper)):
        assert_estimates_equal(expected, got)


def test_hyperparameters_at_infinity_give_minus_infinity_as_on_numpy():
    """α at ±∞ (a gradient sampler's unconstrained coordinates can overflow) makes the normal
    density NaN; both kernels then give −inf, and the JAX gradient stays finite."""
    population, theta, log_interim, fixed, _ = _kernel_inputs("normal", np.random.default_rng(SEED))
    hyper = {"mu": np.array([np.inf, 0.5, -np.inf]), "sigma": np.array([np.inf, np.inf, 1.0])}
    with np.errstate(invalid="ignore"):  # numpy's own NaN there, turned into −inf
        expected = HyperLikelihood(population, theta, log_interim).ln_likelihood_and_variance(hyper)
    likelihood = JaxHyperLikelihood(population, theta, log_interim)
    assert_estimates_equal(expected, likelihood.ln_likelihood_and_variance(hyper))
    assert np.all(expected.ln_likelihood == -np.inf)
    gradient = likelihood.ln_likelihood_and_variance(hyper, variance=False, gradient=["mu", "sigma"]).gradient
    assert np.all(gradient == 0.0)


def test_a_user_populations_nan_is_an_error_naming_it(tmp_path):
    (tmp_path / "pop.py").write_text(USER_JAX.replace("-jnp.inf)", "jnp.nan)"))
    population = get_population(f"{tmp_path / 'pop.py'}:exponential", ["x"])
    theta, log_interim = draws("real", np.random.default_rng(SEED))  # some θ < 0: the NaN branch
    likelihood = JaxHyperLikelihood(population, theta, log_interim)
    with pytest.raises(ModelError, match="exponential.*NaN"):
        likelihood.ln_likelihood_and_variance({"scale": np.array([1.0])})


def test_nuts_runs_on_a_jax_user_population_which_numpy_cannot_differentiate(eight_schools, tmp_path):
    """The point of autodiff: --sampler nuts with a user population. Numpy refuses it (no
    gradient); on JAX the draws agree with the built-in normal's (same density) within their
    Monte Carlo error."""
    (tmp_path / "pop.py").write_text(USER_NORMAL)
    common = ["--hyperprior", "mu=normal(0, 5)", "--hyperprior", "sigma=halfcauchy(5)", "--sampler", "nuts",
              "--chains", "2", "--tune", "200", "--samples", "1000", "--reweighted", "20", "--seed", "3", "--quiet"]
    user = f"{tmp_path / 'pop.py'}:normal"
    refused = CliRunner().invoke(main, ["fit-population", str(eight_schools), "-o", str(tmp_path / "no.h5"),
                                        "--population", user, *common])
    assert refused.exit_code == 2 and "--sampler emcee" in refused.output
    means, errors = [], []
    for population, backend, name in ((user, "jax", "user.h5"), ("normal", "numpy", "builtin.h5")):
        result = CliRunner().invoke(main, ["fit-population", str(eight_schools), "-o", str(tmp_path / name),
                                           "--population", population, "--backend", backend, *common])
        assert result.exit_code in (0, 3), result.output
        with h5py.File(tmp_path / name) as f:
            mu = f["/hyper/samples"][:, 0]
            ess = json.loads(f.attrs["settings"])["ess_bulk"]["mu"]
        means.append(mu.mean())
        errors.append(mu.std() / np.sqrt(ess))
    assert abs(means[0] - means[1]) < 4.0 * np.hypot(*errors)


USER_NORMAL = '''
import jax.numpy as jnp

def normal(theta, hyper):
    z = (theta["theta"] - hyper["mu"]) / hyper["sigma"]
    return -0.5 * z * z - jnp.log(hyper["sigma"]) - 0.5 * jnp.log(2 * jnp.pi)

normal.hyperparameters = {"mu": "normal(0, 5)", "sigma": "halfcauchy(5)"}
'''


def test_backend_jax_with_a_jax_too_old_is_a_usage_error_naming_the_version(monkeypatch):
    from popinfer.reweighting.backends import likelihood_class

    monkeypatch.delattr(jax, "enable_x64")
    with pytest.raises(UsageError, match="jax 0.8 or later"):
        likelihood_class("jax")


@pytest.mark.parametrize("chunk_draws", [400, 1000, 10**6])  # one object a chunk; padded chunks; one chunk
def test_chunking_and_padding_leave_the_sums_and_gradients_unchanged(chunk_draws, monkeypatch):
    import popinfer.reweighting.jax_backend as jax_backend

    population, theta, log_interim, fixed, hyper = _kernel_inputs("normal", np.random.default_rng(SEED))
    monkeypatch.setattr(jax_backend, "CHUNK_DRAWS", chunk_draws)
    likelihood = JaxHyperLikelihood(population, theta, log_interim, fixed)
    n_chunks, per_chunk = likelihood._data[1].shape[:2]
    assert n_chunks * per_chunk >= N_OBJECTS and (n_chunks > 1) == (chunk_draws < N_OBJECTS * N_DRAWS)
    got = likelihood.ln_likelihood_and_variance(hyper, gradient=["mu", "sigma"])
    numpy_kernel = HyperLikelihood(population, theta, log_interim, fixed)
    assert_estimates_equal(numpy_kernel.ln_likelihood_and_variance(hyper), got)
    expected = numpy_kernel.ln_likelihood_and_variance(hyper, gradient=["mu", "sigma"]).gradient
    np.testing.assert_allclose(got.gradient, expected, rtol=1e-9, atol=1e-9)
