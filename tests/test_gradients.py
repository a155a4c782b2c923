"""Gradients for gradient-based samplers: d ln L̂/dα of every built-in population that has
one (and of the selection term) against central finite differences of ln L̂ itself, the
hyperpriors' d ln p/dx against finite differences of scipy's logpdf, and the refusal
where no gradient exists.
"""

import numpy as np
import pytest
from scipy import stats

from popinfer.distributions import FAMILIES, parse_distribution
from popinfer.errors import GradientUnavailableError
from popinfer.injections import Injections
from popinfer.populations import get_population
from popinfer.reweighting.likelihood import HyperLikelihood
from popinfer.reweighting.selection import SelectionTerm

RNG_SEED = 7
N_OBJECTS, N_DRAWS = 6, 300


def draws(kind, rng, shape=(N_OBJECTS, N_DRAWS)):
    """Stage-one-like draws (n, K, 1) and a uniform-ish ln p0 for each kind of support."""
    if kind == "real":
        centres = rng.normal(1.0, 1.5, shape[0])[:, None]
        theta = centres + 0.7 * rng.standard_normal(shape)
        return theta[..., None], np.full(shape, -np.log(200.0))
    if kind == "positive":
        theta = rng.gamma(3.0, 0.8, shape) * rng.uniform(0.5, 2.0, shape[0])[:, None]
        return theta[..., None], -np.log(theta) - np.log(np.log(1e6))  # log-uniform interim prior
    if kind == "unit":
        theta = rng.beta(2.0, 5.0, shape)
        return theta[..., None], np.zeros(shape)
    if kind == "bounded":  # inside [1, 10]
        theta = 1.0 + 9.0 * rng.beta(1.5, 3.0, shape)
        return theta[..., None], np.full(shape, -np.log(9.0))
    raise ValueError(kind)


# population, draws' kind, fixed, the point α (sampled hyperparameters, in population order)
CASES = {
    "normal": ("normal", "real", {}, {"mu": 0.8, "sigma": 1.3}),
    "lognormal": ("lognormal", "positive", {}, {"mu": 0.7, "sigma": 0.6}),
    "truncnormal": ("truncnormal", "bounded", {"low": 1.0, "high": 10.0}, {"mu": 2.5, "sigma": 2.0}),
    "truncnormal-tail": ("truncnormal", "bounded", {"low": 1.0, "high": 10.0}, {"mu": -3.0, "sigma": 1.5}),
    "beta": ("beta", "unit", {}, {"a": 2.2, "b": 4.5}),
    "gamma": ("gamma", "positive", {}, {"shape": 2.5, "rate": 1.1}),
    "powerlaw": ("powerlaw", "bounded", {"low": 1.0, "high": 10.0}, {"alpha": -2.3}),
    "powerlaw-near-minus-one": ("powerlaw", "bounded", {"low": 1.0, "high": 10.0}, {"alpha": -1.0002}),
    "powerlaw-rising": ("powerlaw", "bounded", {"low": 1.0, "high": 10.0}, {"alpha": 0.8}),
    "studentt": ("studentt", "real", {}, {"nu": 3.5, "mu": 0.9, "sigma": 1.2}),
    "mixture": ("mixture", "real", {}, {"weight": 0.35, "mu1": -0.5, "sigma1": 0.9, "mu2": 2.0, "sigma2": 1.4}),
}


def likelihood_for(case, rng):
    name, kind, fixed, point = CASES[case]
    theta, log_interim = draws(kind, rng)
    return HyperLikelihood(get_population(name, ["x"]), theta, log_interim, fixed), point


def finite_difference(function, values, steps):
    """Central differences of ``function`` at ``values``, one coordinate at a time."""
    out = np.empty(len(values))
    for h, step in enumerate(steps):
        up, down = values.copy(), values.copy()
        up[h] += step
        down[h] -= step
        out[h] = (function(up) - function(down)) / (2.0 * step)
    return out


def check_gradient(likelihood, values, rtol=1e-6):
    values = np.asarray(values, dtype=float)
    names = likelihood.sampled_names

    def ln_l(v):
        return float(likelihood(likelihood.hyper(names, v[None, :]))[0])

    value, gradient = likelihood.ln_likelihood_and_gradient(values)
    assert value == pytest.approx(ln_l(values), rel=1e-12, abs=1e-10)
    # Steps ~ 1e-5 of each coordinate's scale: truncation error ~1e-10, rounding ~1e-11 relative.
    numeric = finite_difference(ln_l, values, 1e-5 * np.maximum(np.abs(values), 0.1))
    scale = np.max(np.abs(numeric)) + 1.0
    np.testing.assert_allclose(gradient, numeric, rtol=rtol, atol=rtol * scale)
    return gradient, numeric


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_finite_differences(case):
    likelihood, point = likelihood_for(case, np.random.default_rng(RNG_SEED))
    values = [point[name] for name in likelihood.sampled_names]
    check_gradient(likelihood, values)


def assert_points_get_their_own_numbers(likelihood, points, rng):
    """Every point of ``points`` evaluated among the others (in several orders and groupings)
    gets bit for bit what it gets alone (``==``, not a tolerance)."""
    alone = [likelihood.ln_likelihood_and_gradient(point) for point in points]
    orders = [np.arange(len(points)), rng.permutation(len(points)), rng.permutation(len(points))[:2]]
    # every number of points (the linear form's BLAS blocks hold 4: short, full, and one more)
    orders += [rng.permutation(len(points))[:w] for w in range(3, len(points))]
    for order in orders:
        values, gradients = likelihood.ln_likelihood_and_gradients(points[order])
        for row, index in enumerate(order):
            assert values[row] == alone[index][0] or (np.isnan(values[row]) and np.isnan(alone[index][0]))
            assert np.array_equal(gradients[row], alone[index][1])
    return alone


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("case", ["normal", "beta", "gamma", "truncnormal", "powerlaw", "studentt", "mixture"])
def test_a_point_evaluated_with_others_gets_exactly_its_own_numbers(case, cached, monkeypatch):
    """ln_likelihood_and_gradients (several NUTS chains' points in one pass) gives each point
    exactly its numbers alone, features kept or recomputed per chunk, on a file whose objects
    hold different draw counts (so chunks span objects of several K_n); and ln L̂ agrees with
    the walkers' kernel (emcee's, matrix products) to rounding."""
    import popinfer.reweighting.likelihood as module

    if not cached:
        monkeypatch.setattr(module, "FEATURE_CACHE_BYTES", 0)
    monkeypatch.setattr(module, "POINT_CHUNK_ELEMENTS", 3000)  # chunks of a few objects, of several widths
    rng = np.random.default_rng(RNG_SEED)
    name, kind, fixed, point = CASES[case]
    theta, log_interim = draws(kind, rng, (40, 700))
    counts = rng.integers(300, 701, 40)
    likelihood = HyperLikelihood(get_population(name, ["x"]), theta, log_interim, fixed, draw_counts=counts)
    names = likelihood.sampled_names
    values = np.array([point[n] for n in names])
    points = values * np.array([[1.0], [1.1], [0.9], [1.05], [0.97], [1.02], [0.95], [1.08], [0.99]])
    alone = assert_points_get_their_own_numbers(likelihood, points, rng)
    assert (likelihood._feature_cache is not None) == (cached and likelihood.form is not None)
    walkers = likelihood(likelihood.hyper(names, points))
    np.testing.assert_allclose([value for value, _ in alone], walkers, rtol=1e-12)
    assert not np.allclose(alone[1][1], alone[0][1])  # the points differ (a control)


def test_points_beyond_the_linear_forms_range_and_with_a_selection_term_get_their_own_numbers():
    """The same with a point the direct density serves (σ tiny, θ far) among linear-form ones,
    an invalid point, and a selection term (evaluated point by point)."""
    rng = np.random.default_rng(RNG_SEED)
    theta, log_interim = draws("real", rng, (30, 400))
    detected = rng.normal(0.0, 2.0, 3000)
    injections = Injections("test", "", ["x"], detected[:, None], stats.norm.logpdf(detected, 0.0, 2.0), 6000,
                            {"x": "normal(0, 2)"})
    population = get_population("normal", ["x"])
    likelihood = HyperLikelihood(population, 30.0 * theta, log_interim,
                                 terms=[SelectionTerm(population, injections, 30)])
    points = np.array([[30.0, 0.2], [30.0, 40.0], [25.0, 35.0], [30.0, -1.0]])
    linear = likelihood._linear_ok(likelihood.hyper(["mu", "sigma"], points[:3]))
    assert list(linear) == [False, True, True]
    alone = assert_points_get_their_own_numbers(likelihood, points, rng)
    assert alone[3][0] == -np.inf and np.all(alone[3][1] == 0.0)
    assert all(np.isfinite(value) for value, _ in alone[:3])


def test_the_gradient_is_wrong_when_a_coefficient_derivative_is_wrong():
    """Negative control: a normal population whose ∂A/∂σ misses its −1/σ fails the comparison."""
    likelihood, point = likelihood_for("normal", np.random.default_rng(RNG_SEED))
    right = likelihood.form.coefficient_gradients

    def wrong(hyper):
        out = right(hyper)
        d_eta, d_offset = out["sigma"]
        out["sigma"] = (d_eta, d_offset + 1.0 / hyper["sigma"])
        return out

    likelihood.form.coefficient_gradients = wrong
    with pytest.raises(AssertionError):
        check_gradient(likelihood, [point["mu"], point["sigma"]])


def test_mvnormal_gradient_matches_finite_differences():
    rng = np.random.default_rng(RNG_SEED)
    cov = np.array([[1.0, 0.5], [0.5, 2.0]])
    centres = rng.multivariate_normal([0.5, -1.0], cov, N_OBJECTS)
    theta = centres[:, None, :] + 0.4 * rng.standard_normal((N_OBJECTS, N_DRAWS, 2))
    likelihood = HyperLikelihood(get_population("mvnormal", ["a", "b"]), theta, np.full((N_OBJECTS, N_DRAWS), -5.0))
    assert likelihood.sampled_names == ["mu_a", "mu_b", "sigma_a", "sigma_b", "rho_a_b"]
    check_gradient(likelihood, [0.4, -0.8, 1.1, 1.5, 0.35])


def test_gradient_beyond_the_linear_forms_range_uses_the_direct_density_and_agrees():
    """A walker whose linear-form terms are too large for the fast path (σ tiny, θ far) is
    weighted by the direct density; the gradient's formula is the same."""
    rng = np.random.default_rng(RNG_SEED)
    theta, log_interim = draws("real", rng)
    likelihood = HyperLikelihood(get_population("normal", ["x"]), 30.0 * theta, log_interim)
    hyper = likelihood.hyper(["mu", "sigma"], np.array([[30.0, 0.2]]))
    assert not likelihood._linear_ok(hyper).all()
    check_gradient(likelihood, [30.0, 0.2])


def test_selection_term_gradient_matches_finite_differences(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    theta, log_interim = draws("real", rng)
    n_total = 5000
    injected = rng.normal(0.0, 2.0, n_total)
    detected = injected[injected + rng.normal(0.0, 0.5, n_total) > 0.5]
    injections = Injections("test", "", ["x"], detected[:, None], stats.norm.logpdf(detected, 0.0, 2.0), n_total,
                            {"x": "normal(0, 2)"})
    population = get_population("normal", ["x"])
    term = SelectionTerm(population, injections, N_OBJECTS)
    likelihood = HyperLikelihood(population, theta, log_interim, terms=[term])
    gradient, _ = check_gradient(likelihood, [0.9, 1.4])
    alone = HyperLikelihood(population, theta, log_interim).ln_likelihood_and_gradient([0.9, 1.4])[1]
    assert np.abs(gradient - alone).max() > 0.1  # the term does contribute
    # The term's own gradient against finite differences of −N ln ξ̂.
    hyper = likelihood.hyper(["mu", "sigma"], np.array([[0.9, 1.4]]))
    own = term.gradient(hyper, ["mu", "sigma"], variance=False)[2][0]
    numeric = finite_difference(lambda v: float(term(likelihood.hyper(["mu", "sigma"], v[None]), False)[0][0]),
                                np.array([0.9, 1.4]), [1e-5, 1e-5])
    np.testing.assert_allclose(own, numeric, rtol=1e-6)


def test_max_variance_cut_gives_minus_infinity_and_a_zero_gradient():
    likelihood, _ = likelihood_for("normal", np.random.default_rng(RNG_SEED))
    likelihood.max_variance = 1e-12
    value, gradient = likelihood.ln_likelihood_and_gradient([0.8, 0.05])
    assert value == -np.inf and np.all(gradient == 0.0)
    likelihood.max_variance = None
    assert np.isfinite(likelihood.ln_likelihood_and_gradient([0.8, 0.05])[0])


def test_invalid_hyperparameters_give_minus_infinity():
    likelihood, _ = likelihood_for("normal", np.random.default_rng(RNG_SEED))
    value, gradient = likelihood.ln_likelihood_and_gradient([0.8, -1.0])
    assert value == -np.inf and np.all(gradient == 0.0)


@pytest.mark.parametrize("name, fixed", [("uniform", {}), ("truncnormal", {}), ("powerlaw", {"low": 1.0})])
def test_populations_without_a_gradient_are_refused_with_the_remedy(name, fixed):
    theta, log_interim = draws("bounded", np.random.default_rng(RNG_SEED))
    likelihood = HyperLikelihood(get_population(name, ["x"]), theta, log_interim, fixed)
    assert likelihood.gradient_unavailable() is not None
    with pytest.raises(GradientUnavailableError, match="--sampler emcee"):
        likelihood.ln_likelihood_and_gradient(np.ones(len(likelihood.sampled_names)))


SPECS = {"uniform": "uniform(-1, 3)", "loguniform": "loguniform(0.1, 10)", "normal": "normal(1, 2)",
         "truncnormal": "truncnormal(1, 2, -1, 4)", "halfnormal": "halfnormal(2)", "halfcauchy": "halfcauchy(3)",
         "cauchy": "cauchy(1, 2)", "exponential": "exponential(0.5)", "lognormal": "lognormal(0.3, 0.8)",
         "beta": "beta(2.5, 1.5)", "gamma": "gamma(2.5, 1.5)", "studentt": "studentt(4, 1, 2)"}


def test_every_family_of_the_grammar_has_a_case():
    assert set(SPECS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(SPECS))
def test_hyperprior_gradient_matches_finite_differences_of_scipy(family):
    distribution = parse_distribution(SPECS[family])
    x = distribution.ppf(np.linspace(0.05, 0.95, 7))
    step = 1e-6 * np.maximum(np.abs(x), 1.0)
    numeric = (distribution.logpdf(x + step) - distribution.logpdf(x - step)) / (2 * step)
    np.testing.assert_allclose(distribution.logpdf_gradient(x), numeric, rtol=1e-6, atol=1e-8)
    low, high = distribution.support
    outside = [v for v in (low - 1.0, high + 1.0) if np.isfinite(v)]
    assert np.all(distribution.logpdf_gradient(np.array(outside)) == 0.0)


@pytest.mark.parametrize("case", ["normal", "beta", "studentt"])
def test_the_thinned_likelihood_is_the_likelihood_of_every_nth_draw(case):
    """thinned(3) (NUTS's tuning target) equals a likelihood built from draws 0, 3, 6, … of each
    object, K_n' = ⌈K_n/3⌉, on a ragged file; and the original is untouched."""
    rng = np.random.default_rng(RNG_SEED)
    name, kind, fixed, point = CASES[case]
    theta, log_interim = draws(kind, rng, (12, 200))
    counts = rng.integers(50, 201, 12)
    population = get_population(name, ["x"])
    full = HyperLikelihood(population, theta, log_interim, fixed, draw_counts=counts)
    names = full.sampled_names
    points = np.array([point[n] for n in names]) * np.array([[1.0], [1.1], [0.9]])
    before = full.ln_likelihood_and_gradients(points)
    thinned = full.thinned(3)
    strided = HyperLikelihood(population, theta[:, ::3], log_interim[:, ::3], fixed, draw_counts=-(-counts // 3))
    values, gradients = thinned.ln_likelihood_and_gradients(points)
    expected = strided.ln_likelihood_and_gradients(points)
    np.testing.assert_allclose(values, expected[0], rtol=1e-12)
    np.testing.assert_allclose(gradients, expected[1], rtol=1e-10, atol=1e-12)
    estimate = thinned.ln_likelihood_and_variance(thinned.hyper(names, points))
    np.testing.assert_allclose(estimate.ln_likelihood_variance,
                               strided.ln_likelihood_and_variance(strided.hyper(names, points)).ln_likelihood_variance,
                               rtol=1e-10)
    assert not np.allclose(values, before[0])  # fewer draws: another estimate (a control)
    after = full.ln_likelihood_and_gradients(points)
    assert np.array_equal(after[0], before[0]) and np.array_equal(after[1], before[1])
    assert full.thinned(1) is full
    thinned.close()
    full.max_variance = 0.5
    assert full.thinned(3).max_variance == 1.5  # Var[ln L̂] ∝ 1/K: the cut where the full estimate's is


def test_a_linear_form_without_coefficient_gradients_takes_them_from_the_density():
    """A population whose linear form gives no ∂η/∂α (the field is optional) but which has
    ∂ ln f/∂α per draw: the weights come from the form, the gradient from the density."""
    from popinfer.populations import LinearForm
    from popinfer.populations.univariate import NormalPopulation

    class Direct(NormalPopulation):
        def linear_form(self, fixed, center=0.0):
            form = super().linear_form(fixed, center)
            return LinearForm(form.features, form.base, form.coefficients)

        def log_density_gradient(self, theta, hyper):
            x, mu, sigma = theta[..., 0][..., None], hyper["mu"], hyper["sigma"]
            return {"mu": (x - mu) / sigma**2, "sigma": (x - mu) ** 2 / sigma**3 - 1.0 / sigma}

    theta, log_interim = draws("real", np.random.default_rng(RNG_SEED))
    direct = HyperLikelihood(Direct(["x"]), theta, log_interim)
    assert direct.form is not None and direct.form.coefficient_gradients is None
    gradient, _ = check_gradient(direct, [1.0, 1.2])
    usual = HyperLikelihood(get_population("normal", ["x"]), theta, log_interim)
    np.testing.assert_allclose(gradient, usual.ln_likelihood_and_gradient(np.array([1.0, 1.2]))[1], rtol=1e-12)


def test_a_selection_terms_points_share_one_pass_and_keep_their_own_numbers():
    """The selection term's gradient pass takes all the points of a call at once (one pass over
    the injections, as NUTS's chains share), and each point's numbers are still exactly those it
    gets alone, over many injection blocks and every number of points from 2 to 9. (A BLAS
    contraction of the blocks' shares, whose rounding depends on the number of points, fails.)"""
    rng = np.random.default_rng(RNG_SEED)
    theta = rng.normal(1.0, 1.0, (50, 500, 1))
    detected = rng.normal(0.0, 2.0, 200000)
    injections = Injections("test", "", ["x"], detected[:, None], stats.norm.logpdf(detected, 0.0, 2.0), 400000,
                            {"x": "normal(0, 2)"})
    population = get_population("normal", ["x"])
    likelihood = HyperLikelihood(population, theta, np.full((50, 500), -np.log(200.0)),
                                 terms=[SelectionTerm(population, injections, 50)])
    assert likelihood.terms[0].kernel.n_objects > 100  # many blocks of injections
    points = np.column_stack([rng.normal(1.0, 0.3, 9), rng.uniform(0.5, 2.0, 9)])
    alone = [likelihood.ln_likelihood_and_gradients(point[None]) for point in points]
    for w in range(2, 10):
        values, gradients = likelihood.ln_likelihood_and_gradients(points[:w])
        for i in range(w):
            assert values[i] == alone[i][0][0] and np.array_equal(gradients[i], alone[i][1][0]), (w, i)
