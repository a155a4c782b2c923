"""The HMB hyper-likelihood kernel against straightforward scipy references."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from popinfer.populations import get_population
from popinfer.reweighting.likelihood import HyperLikelihood, reference_log_likelihood

RNG = np.random.default_rng(42)


@pytest.fixture(autouse=True)
def _seeded_per_test():
    """Every test draws from the same fresh stream, whichever tests ran before it."""
    global RNG
    RNG = np.random.default_rng(42)


N, K, W = 37, 500, 9

CASES = {
    "normal": ({}, lambda n: {"mu": RNG.normal(0, 2, n), "sigma": RNG.uniform(0.3, 3, n)}),
    "truncnormal": ({"low": 0.1, "high": 3.0}, lambda n: {"mu": RNG.normal(1, 1, n), "sigma": RNG.uniform(0.3, 2, n)}),
    "lognormal": ({}, lambda n: {"mu": RNG.normal(0, 0.5, n), "sigma": RNG.uniform(0.3, 1.5, n)}),
    "beta": ({}, lambda n: {"a": RNG.uniform(0.5, 5, n), "b": RNG.uniform(0.5, 5, n)}),
    "gamma": ({}, lambda n: {"shape": RNG.uniform(0.5, 5, n), "rate": RNG.uniform(0.5, 3, n)}),
    "powerlaw": ({"low": 0.05, "high": 3.0}, lambda n: {"alpha": RNG.normal(-1, 1.5, n)}),
    "uniform": ({}, lambda n: {"low": RNG.uniform(-0.5, 0.1, n), "high": RNG.uniform(2.5, 4, n)}),
    "studentt": ({}, lambda n: {"nu": RNG.uniform(1, 10, n), "mu": RNG.normal(1, 1, n), "sigma": RNG.uniform(0.3, 2, n)}),
    "mixture": ({}, lambda n: {"weight": RNG.uniform(0.1, 0.9, n), "mu1": RNG.uniform(-1, 0.5, n),
                               "sigma1": RNG.uniform(0.2, 1, n), "mu2": RNG.uniform(1, 2, n), "sigma2": RNG.uniform(0.2, 1, n)}),
}


def draws(positive=True):
    theta = RNG.uniform(0.01, 0.99, size=(N, K, 1)) * 3 if positive else RNG.normal(size=(N, K, 1))
    log_interim = RNG.normal(-1, 0.3, size=(N, K))
    return theta, log_interim


@pytest.mark.parametrize("name", CASES)
def test_kernel_equals_scipy_logsumexp_reference(name):
    fixed, make = CASES[name]
    theta, log_interim = draws(positive=True)
    if name == "beta":
        theta = theta / 3.0
    population = get_population(name, ["x"])
    likelihood = HyperLikelihood(population, theta, log_interim, fixed)
    hyper = {**make(W), **{k: np.full(W, v) for k, v in fixed.items()}}
    got = likelihood(hyper)
    expected = reference_log_likelihood(population, theta, log_interim, hyper)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    if population.linear_form(fixed) is not None:
        assert likelihood.form is not None  # the fast path was exercised


def test_small_sigma_far_populations_and_invalid_walkers():
    theta, log_interim = draws(positive=False)
    population = get_population("normal", ["x"])
    likelihood = HyperLikelihood(population, theta, log_interim)
    hyper = {"mu": np.array([0.0, 0.1, 1000.0, 0.0, 0.0]), "sigma": np.array([1.0, 1e-4, 1.0, -1.0, 1e3])}
    got = likelihood(hyper)
    valid = hyper["sigma"] > 0
    expected = reference_log_likelihood(population, theta, log_interim, {k: v[valid] for k, v in hyper.items()})
    np.testing.assert_allclose(got[valid], expected, rtol=1e-10)
    assert np.isfinite(got[2]) and got[2] < -1e7  # far from every draw: tiny, but not -inf
    assert got[3] == -np.inf


@pytest.mark.parametrize("name, fixed", [("lognormal", {}), ("truncnormal", {"low": 0.5, "high": 2.0})])
def test_direct_density_fallback_with_a_base_term(name, fixed):
    """Walkers whose linear form would cancel badly (σ = 1e-3) take the direct density; the
    kernel keeps -ln p0 + b(θ) for the linear form, and the fallback must recover -ln p0
    (lognormal: b = -ln θ; truncnormal: b = -inf outside [low, high], where draws lie too)."""
    theta, log_interim = draws(positive=True)
    population = get_population(name, ["x"])
    likelihood = HyperLikelihood(population, theta, log_interim, fixed)
    centre = float(np.log(theta[0, 0, 0])) if name == "lognormal" else float(theta[0, 0, 0])
    if name == "truncnormal":
        centre = float(np.clip(centre, 0.6, 1.9))
    hyper = {"mu": np.array([centre, 0.0, centre]), "sigma": np.array([1e-3, 0.7, 0.05]),
             **{k: np.full(3, v) for k, v in fixed.items()}}
    assert not likelihood._linear_ok(hyper)[0] and likelihood._linear_ok(hyper)[1]
    np.testing.assert_allclose(likelihood(hyper), reference_log_likelihood(population, theta, log_interim, hyper),
                               rtol=1e-10)


def test_mvnormal_kernel_equals_reference():
    theta = RNG.normal(size=(N, K, 2))
    log_interim = np.full((N, K), -3.0)
    population = get_population("mvnormal", ["a", "b"])
    likelihood = HyperLikelihood(population, theta, log_interim)
    hyper = {"mu_a": RNG.normal(0, 0.3, W), "mu_b": RNG.normal(0, 0.3, W), "sigma_a": RNG.uniform(0.5, 2, W),
             "sigma_b": RNG.uniform(0.5, 2, W), "rho_a_b": RNG.uniform(-0.9, 0.9, W)}
    np.testing.assert_allclose(likelihood(hyper), reference_log_likelihood(population, theta, log_interim, hyper),
                               rtol=1e-10)


def test_threaded_chunks_equal_a_single_chunk(monkeypatch):
    import popinfer.reweighting.likelihood as module

    theta, log_interim = draws(positive=False)
    population = get_population("normal", ["x"])
    hyper = CASES["normal"][1](W)
    single = HyperLikelihood(population, theta, log_interim, threads=1)(hyper)
    monkeypatch.setattr(module, "CHUNK_ELEMENTS", 4 * K * W)
    monkeypatch.setattr(module, "PARALLEL_MIN_ELEMENTS", 1)
    threaded = HyperLikelihood(population, theta, log_interim, threads=2)
    np.testing.assert_allclose(threaded(hyper), single, rtol=1e-13)
    threaded.close()


def test_work_above_the_parallel_threshold_is_shared_among_the_threads():
    """Work of PARALLEL_MIN_ELEMENTS or more is cut into at least a chunk per thread (the eight
    schools' half ensemble, 8 objects × 4000 draws × 16 walkers, used to be one chunk on one core),
    and each object's sums are the same, bit for bit."""
    from popinfer.reweighting.likelihood import PARALLEL_MIN_ELEMENTS

    rng = np.random.default_rng(5)
    theta = rng.normal(0, 3, (8, 4000, 1))
    log_interim = np.full((8, 4000), -np.log(200.0))
    hyper = {"mu": rng.normal(0, 2, 16), "sigma": rng.uniform(0.5, 5, 16)}
    assert 8 * 4000 * 16 >= PARALLEL_MIN_ELEMENTS
    population = get_population("normal", ["x"])
    single = HyperLikelihood(population, theta, log_interim, threads=1)
    shared = HyperLikelihood(population, theta, log_interim, threads=2)
    assert len(single._chunks(16)) == 1 and len(shared._chunks(16)) >= 2
    for one, other in zip(single.per_object(hyper, second=True), shared.per_object(hyper, second=True)):
        assert np.array_equal(one, other)
    shared.close()


def _shared_likelihood(monkeypatch):
    """A likelihood on two threads whose 9-walker calls are cut into many chunks."""
    import popinfer.reweighting.likelihood as module

    monkeypatch.setattr(module, "CHUNK_ELEMENTS", 4 * K * W)
    monkeypatch.setattr(module, "PARALLEL_MIN_ELEMENTS", 1)
    theta, log_interim = draws(positive=False)
    return HyperLikelihood(get_population("normal", ["x"]), theta, log_interim, threads=2), theta, log_interim


def test_the_calling_thread_works_beside_the_helpers(monkeypatch):
    """The calling thread takes chunks itself, beside the pool's helper: each of two chunks waits
    inside its work until the other has started, so both ran at once, one in the caller."""
    import threading

    likelihood, _, _ = _shared_likelihood(monkeypatch)
    chunks = likelihood._chunks(W)[:2]
    both, ran = threading.Barrier(2, timeout=60), {}

    def work(chunk):
        both.wait()
        ran[chunk] = threading.get_ident()

    likelihood._map(work, chunks, W)
    likelihood.close()
    assert sorted(ran) == sorted(chunks)
    assert threading.get_ident() in ran.values() and len(set(ran.values())) == 2


def test_a_call_does_not_wait_for_a_helper_that_has_not_started(monkeypatch):
    """With the pool's one helper busy elsewhere (here: held by another task), a call does all of
    its chunks itself and returns; it used to wait until the helper was free."""
    import threading

    likelihood, theta, log_interim = _shared_likelihood(monkeypatch)
    hyper = CASES["normal"][1](W)
    expected = HyperLikelihood(get_population("normal", ["x"]), theta, log_interim, threads=1)(hyper)
    likelihood(hyper)  # the pool exists
    held, release = threading.Event(), threading.Event()
    blocker = likelihood._pool.submit(lambda: (held.set(), release.wait(120)))
    assert held.wait(60)
    done, result = threading.Event(), {}

    def call():
        result["value"] = likelihood(hyper)
        done.set()

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        returned = done.wait(60)
    finally:
        release.set()
    blocker.result()
    caller.join(60)
    assert returned, "the call waited for the busy helper"
    assert np.array_equal(result["value"], expected)
    likelihood.close()


@pytest.mark.parametrize("failing", [0, -1])
def test_a_failing_chunk_is_raised_by_the_call_and_the_kernel_still_works(monkeypatch, failing):
    likelihood, theta, log_interim = _shared_likelihood(monkeypatch)
    hyper = CASES["normal"][1](W)
    expected = HyperLikelihood(get_population("normal", ["x"]), theta, log_interim, threads=1)(hyper)
    chunks = likelihood._chunks(W)
    assert len(chunks) > 2

    def work(chunk):
        if chunk == chunks[failing]:
            raise ValueError("chunk failed")

    with pytest.raises(ValueError, match="chunk failed"):
        likelihood._map(work, chunks, W)
    assert np.array_equal(likelihood(hyper), expected)
    likelihood.close()


def test_ess_and_variance_match_their_definitions():
    theta, log_interim = draws(positive=False)
    population = get_population("normal", ["x"])
    likelihood = HyperLikelihood(population, theta, log_interim)
    hyper = CASES["normal"][1](W)
    first, squares = likelihood.per_object(hyper, second=True)
    ess, variance = likelihood.variance(first, squares)
    for w in range(W):
        log_w = stats.norm.logpdf(theta[..., 0], hyper["mu"][w], hyper["sigma"][w]) - log_interim
        weights = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        expected_ess = weights.sum(axis=1) ** 2 / (weights**2).sum(axis=1)
        np.testing.assert_allclose(ess[w], expected_ess, rtol=1e-10)
        np.testing.assert_allclose(variance[w], np.sum(1 / expected_ess - 1 / K), rtol=1e-10)
        np.testing.assert_allclose(first[w], logsumexp(log_w, axis=1), rtol=1e-12)


def test_resampling_follows_the_weights():
    theta = np.linspace(-2, 2, 5)[None, :, None].repeat(3, axis=0)
    log_interim = np.zeros((3, 5))
    population = get_population("normal", ["x"])
    likelihood = HyperLikelihood(population, theta, log_interim)
    n = 20000
    hyper = {"mu": np.full(n, 0.5), "sigma": np.full(n, 1.0)}
    index = likelihood.resample(hyper, np.random.default_rng(0).random((n, 3)))
    weights = stats.norm.pdf(theta[0, :, 0], 0.5, 1.0)
    expected = n * weights / weights.sum()
    for obj in range(3):
        counts = np.bincount(index[:, obj], minlength=5)
        assert stats.chisquare(counts, expected).pvalue > 1e-4
    shifted = n * stats.norm.pdf(theta[0, :, 0], 0.7, 1.0) / stats.norm.pdf(theta[0, :, 0], 0.7, 1.0).sum()
    assert stats.chisquare(np.bincount(index[:, 0], minlength=5), shifted).pvalue < 1e-4  # negative control


def _inverse_cdf_violations(weights, uniforms, index):
    """Rows where ``index`` is not the inverse CDF's draw: one of positive weight whose cumulative
    weight exceeds u·Σ w while the one before it does not (to rounding: 1e-12 of Σ w)."""
    cumulative = np.cumsum(weights, axis=-1)
    total = cumulative[..., -1]
    target = uniforms * total
    at = np.take_along_axis(cumulative, index[..., None], -1)[..., 0]
    before = np.where(index > 0, np.take_along_axis(cumulative, np.maximum(index - 1, 0)[..., None], -1)[..., 0], 0.0)
    positive = np.take_along_axis(weights, index[..., None], -1)[..., 0] > 0
    slack = 1e-12 * total
    good = positive & (at >= target - slack) & (before <= target + slack)
    return np.sum(~good & (total > 0))


@pytest.mark.parametrize("n_draws", [1, 5, 63, 64, 65, 1000, 4037])
def test_the_two_step_inverse_cdf_picks_the_draw_that_reaches_the_target(n_draws):
    """Pooling's inverse CDF over blocks of draws, then within the chosen block, against the
    definition; rows with zero weights (outside the support, padding), whose positive weights sit
    only in a short last block or in one draw, and uniforms at 0 and just below 1. The off-by-one
    draw is the negative control."""
    from popinfer.reweighting.likelihood import RESAMPLE_BLOCK, _inverse_cdf

    rng = np.random.default_rng(n_draws)
    weights = rng.exponential(size=(30, 7, n_draws)) * (rng.random((30, 7, n_draws)) < 0.7)
    weights[0, :, :-1] = 0.0  # only the last draw
    weights[1, :, n_draws // 2:] = 0.0  # padding
    weights[2, :, :(n_draws // RESAMPLE_BLOCK) * RESAMPLE_BLOCK] = 0.0  # only the short last block, if any
    weights[3] = 0.0
    weights[3, :, rng.integers(n_draws)] = 1.0
    weights[4] *= np.exp(rng.normal(0, 30, n_draws))  # weights spanning many orders of magnitude
    weights[5, :3, 0], weights[5, :3, -1] = 0.0, 1.0  # at u = 0 below: the first draw has no weight
    weights[6] = 0.0  # no positive weight: draw 0
    uniforms = rng.random((30, 7))
    uniforms[5, :3], uniforms[5, 3:] = 0.0, 1.0 - 2.0 ** -53
    uniforms[1:3, 4:] = 1.0 - 2.0 ** -53  # at the end of rows with zeros at their ends
    index = _inverse_cdf(weights.copy(), uniforms)
    assert index.shape == uniforms.shape and index.min() >= 0 and index.max() < n_draws
    assert _inverse_cdf_violations(weights, uniforms, index) == 0
    assert np.all(index[6] == 0)
    # The single-step count of cumulative weights below u·Σ w, as pooling had it, takes a draw of
    # weight 0 at u = 0 where the first draws have none.
    single_step = np.minimum(np.sum(np.cumsum(weights, -1) < (uniforms * weights.sum(-1))[..., None], -1), n_draws - 1)
    assert (_inverse_cdf_violations(weights, uniforms, single_step) > 0) == (n_draws > 1)
    if n_draws > 1:
        assert _inverse_cdf_violations(weights, uniforms, np.minimum(index + 1, n_draws - 1)) > 0


def test_resampling_a_group_mixing_walkers_in_and_beyond_the_linear_form_follows_each_ones_weights():
    theta = np.linspace(-2, 2, 5)[None, :, None].repeat(3, axis=0)
    likelihood = HyperLikelihood(get_population("normal", ["x"]), theta, np.zeros((3, 5)))
    n = 20000
    # Even rows: σ = 1 (the linear form); odd rows: σ = 0.001, beyond its range (the direct density),
    # where all the weight is on the draw at θ = 1 (index 3), nearest μ = 0.9.
    hyper = {"mu": np.tile([0.5, 0.9], n // 2), "sigma": np.tile([1.0, 0.001], n // 2)}
    linear = likelihood._linear_ok(hyper)
    assert linear[0] and not linear[1]
    uniforms = np.random.default_rng(0).random((n, 3))
    index = likelihood.resample(hyper, uniforms)
    assert np.all(index[1::2] == 3)
    weights = stats.norm.pdf(theta[0, :, 0], 0.5, 1.0)
    for obj in range(3):
        counts = np.bincount(index[0::2, obj], minlength=5)
        assert stats.chisquare(counts, n / 2 * weights / weights.sum()).pvalue > 1e-4
    shifted = stats.norm.pdf(theta[0, :, 0], 0.7, 1.0)
    assert stats.chisquare(np.bincount(index[0::2, 0], minlength=5), n / 2 * shifted / shifted.sum()).pvalue < 1e-4
    # Each walker's draw is the one it gets when resampled with its own kind alone.
    for rows in (slice(0, None, 2), slice(1, None, 2)):
        alone = likelihood.resample({name: value[rows] for name, value in hyper.items()}, uniforms[rows])
        np.testing.assert_array_equal(index[rows], alone)


def _reference_estimate(theta, log_interim, hyper, w):
    log_w = stats.norm.logpdf(theta[..., 0], hyper["mu"][w], hyper["sigma"][w]) - log_interim
    ln_sum = logsumexp(log_w, axis=1)
    ess = np.exp(2 * ln_sum - logsumexp(2 * log_w, axis=1))
    return ln_sum.sum() - theta.shape[0] * np.log(theta.shape[1]), np.sum(1 / ess - 1 / theta.shape[1]), ess


def test_ln_likelihood_and_variance_matches_its_definitions_and_cuts():
    theta, log_interim = draws(positive=False)
    population = get_population("normal", ["x"])
    hyper = CASES["normal"][1](W)
    hyper["sigma"][0] = 0.02  # a noisy estimate: few draws near any μ at this σ
    estimate = HyperLikelihood(population, theta, log_interim).ln_likelihood_and_variance(hyper)
    for w in range(W):
        ln_l, var, ess = _reference_estimate(theta, log_interim, hyper, w)
        np.testing.assert_allclose(estimate.ln_likelihood[w], ln_l, rtol=1e-10)
        np.testing.assert_allclose(estimate.ln_likelihood_variance[w], var, rtol=1e-9)
        np.testing.assert_allclose(estimate.ess[w], ess, rtol=1e-9)
    np.testing.assert_allclose(estimate.ln_sum_weights.sum(axis=1) - N * np.log(K), estimate.ln_likelihood)
    limit = float(np.median(estimate.ln_likelihood_variance))
    cut = HyperLikelihood(population, theta, log_interim, max_variance=limit).ln_likelihood_and_variance(
        hyper, variance=False)
    noisy = estimate.ln_likelihood_variance > limit
    assert noisy.any() and (~noisy).any()
    assert np.all(cut.ln_likelihood[noisy] == -np.inf)
    np.testing.assert_array_equal(cut.ln_likelihood[~noisy], estimate.ln_likelihood[~noisy])
    uncut = HyperLikelihood(population, theta, log_interim, max_variance=limit).ln_likelihood_and_variance(
        hyper, cut=False)
    np.testing.assert_array_equal(uncut.ln_likelihood, estimate.ln_likelihood)


class ShiftTerm:
    """A toy additional term: ln term = -mu², variance term = 0.5 (recording what it saw)."""

    def __init__(self):
        self.seen = []

    def __call__(self, hyper, variance=True):
        self.seen.append(hyper["mu"].copy())
        self.asked_variance = variance
        return -hyper["mu"] ** 2, np.full(len(hyper["mu"]), 0.5) if variance else None


def test_additional_terms_add_to_ln_likelihood_and_variance_at_valid_walkers_only():
    theta, log_interim = draws(positive=False)
    population = get_population("normal", ["x"])
    hyper = {"mu": np.array([0.3, -0.5, 1.0]), "sigma": np.array([1.0, -1.0, 2.0])}  # walker 1 invalid
    plain = HyperLikelihood(population, theta, log_interim).ln_likelihood_and_variance(hyper)
    term = ShiftTerm()
    likelihood = HyperLikelihood(population, theta, log_interim, terms=[term])
    extended = likelihood.ln_likelihood_and_variance(hyper)
    np.testing.assert_array_equal(term.seen[0], [0.3, 1.0])  # the invalid walker never reaches the term
    np.testing.assert_allclose(extended.ln_likelihood[[0, 2]], plain.ln_likelihood[[0, 2]] - [0.09, 1.0])
    np.testing.assert_allclose(extended.ln_likelihood_variance[[0, 2]], plain.ln_likelihood_variance[[0, 2]] + 0.5)
    assert extended.ln_likelihood[1] == -np.inf
    assert term.asked_variance
    np.testing.assert_allclose(likelihood(hyper)[[0, 2]], extended.ln_likelihood[[0, 2]])  # __call__ too
    assert not term.asked_variance  # a term is told when its variance is not needed
    # The variance cut applies to the total variance, the term's included.
    total = extended.ln_likelihood_variance[0]
    cut = HyperLikelihood(population, theta, log_interim, terms=[ShiftTerm()], max_variance=total - 0.25)
    assert cut.ln_likelihood_and_variance(hyper, variance=False).ln_likelihood[0] == -np.inf
    assert plain.ln_likelihood_variance[0] <= total - 0.25  # negative control: the population term alone passes


def test_the_hyperposterior_goes_through_the_same_estimate():
    from popinfer.distributions import parse_distribution
    from popinfer.reweighting.fit import HyperPosterior

    theta, log_interim = draws(positive=False)
    population = get_population("normal", ["x"])
    likelihood = HyperLikelihood(population, theta, log_interim, terms=[ShiftTerm()], max_variance=0.6)
    priors = {"mu": parse_distribution("normal(0, 1)"), "sigma": parse_distribution("uniform(0.01, 5)")}
    posterior = HyperPosterior(likelihood, ["mu", "sigma"], priors)
    values = np.array([[0.3, 1.0], [0.1, 0.02], [0.2, 7.0]])
    estimate = likelihood.ln_likelihood_and_variance(likelihood.hyper(["mu", "sigma"], values[:2]))
    expected = priors["mu"].logpdf(values[:2, 0]) + priors["sigma"].logpdf(values[:2, 1]) + estimate.ln_likelihood
    got = posterior(values)
    np.testing.assert_allclose(got[:2], expected)
    assert got[1] == -np.inf and got[0] > -np.inf  # σ = 0.02: cut by the variance, the term's 0.5 included
    assert got[2] == -np.inf  # outside the hyperprior


def _reference_terms(theta, log_interim, mu, sigma):
    """Per walker: ln Σ_k w_k / K per object, Σ_n ln Σ_k w_k² terms, and d ln L̂/d(μ, σ), by scipy."""
    x = theta[..., 0][None]  # (1, N, K)
    log_w = stats.norm.logpdf(x, mu[:, None, None], sigma[:, None, None]) - log_interim[None]
    first = logsumexp(log_w, axis=2)
    squares = logsumexp(2.0 * log_w, axis=2)
    w = np.exp(log_w - first[..., None])  # self-normalised
    z = (x - mu[:, None, None]) / sigma[:, None, None]
    d_mu = (w * z / sigma[:, None, None]).sum(axis=2).sum(axis=1)
    d_sigma = (w * (z * z - 1.0) / sigma[:, None, None]).sum(axis=2).sum(axis=1)
    return first, squares, np.column_stack([d_mu, d_sigma])


@pytest.mark.parametrize("interim, expected", [
    (np.log(1 / 200.0), "direct"),  # wide populations: weights within e^±300, no shift needed
    (800.0, "again"),  # every weight below e^-708 unshifted: taken again with the shift
    (-350.0, "shifted"),  # weights beyond e^300: shifted
])
def test_weights_taken_without_their_shift_give_the_same_numbers(interim, expected):
    """Log weights bounded by DIRECT_LIMIT (from each object's feature ranges) skip the shift by
    their peak; ln L̂, ln Σ w² and the gradient equal scipy's logsumexp either way, at walkers that
    take the direct path, the shifted one (a narrow σ), and the path taken again."""
    import popinfer.reweighting.likelihood as module

    theta = RNG.normal(1.0, 1.0, size=(N, K, 1))
    log_interim = interim + RNG.normal(0.0, 0.3, size=(N, K))
    likelihood = HyperLikelihood(get_population("normal", ["x"]), theta, log_interim)
    mu, sigma = np.array([0.9, 1.1, 3.0, 0.95]), np.array([0.8, 1.5, 0.02, 1.1])
    hyper = {"mu": mu, "sigma": sigma}
    eta, _ = likelihood._coefficients(hyper)
    direct = likelihood._direct(0, N, eta)
    if expected == "shifted":
        assert not direct.any()
    else:
        assert direct[:, [0, 1, 3]].all() and not direct[:, 2].any()  # μ far from the draws' centre, σ = 0.02
    first, squares, gradient = _reference_terms(theta, log_interim, mu, sigma)
    if expected == "again":
        assert np.all(first[[0, 1, 3]] < -700)  # the unshifted sums underflow
    estimate = likelihood.ln_likelihood_and_variance(hyper)
    np.testing.assert_allclose(estimate.ln_likelihood, first.sum(axis=1) - N * np.log(K), rtol=1e-12)
    ess = np.exp(2 * first - squares)
    np.testing.assert_allclose(estimate.ess, ess, rtol=1e-9)
    values, gradients = likelihood.ln_likelihood_and_gradients(np.column_stack([mu, sigma]))
    np.testing.assert_allclose(values, first.sum(axis=1) - N * np.log(K), rtol=1e-12)
    np.testing.assert_allclose(gradients, gradient, rtol=1e-9, atol=1e-9 * np.abs(gradient).max())
    assert module.DIRECT_LIMIT == 300.0


def test_without_taking_underflowed_weights_again_the_numbers_are_wrong(monkeypatch):
    """Negative control for the test above: with the floor off, unshifted weights that all
    underflow give ln L̂ = −inf where the shifted ones give a finite value."""
    import popinfer.reweighting.likelihood as module

    monkeypatch.setattr(module, "DIRECT_FLOOR", 0.0)
    theta = RNG.normal(1.0, 1.0, size=(N, K, 1))
    likelihood = HyperLikelihood(get_population("normal", ["x"]), theta, np.full((N, K), 800.0))
    hyper = {"mu": np.array([1.0]), "sigma": np.array([1.0])}
    assert likelihood._direct(0, N, likelihood._coefficients(hyper)[0]).all()
    assert np.isneginf(likelihood.ln_likelihood_and_variance(hyper).ln_likelihood[0])
    assert np.isneginf(likelihood.ln_likelihood_and_gradients(np.array([[1.0, 1.0]]))[0][0])
    exact = reference_log_likelihood(get_population("normal", ["x"]), theta, np.full((N, K), 800.0), hyper)
    assert np.isfinite(exact[0])


def test_sums_of_squares_take_the_same_values_without_numpys_vecdot(monkeypatch):
    """Σ_k w² comes from np.vecdot (numpy ≥ 2) or, on numpy 1.x, from einsum: the same
    ln L̂ variance either way (pyproject allows numpy ≥ 1.24)."""
    theta = RNG.normal(1.0, 1.0, size=(N, K, 1))
    likelihood = HyperLikelihood(get_population("normal", ["x"]), theta, np.full((N, K), -np.log(200.0)))
    hyper = {"mu": np.array([0.9, 1.2]), "sigma": np.array([0.8, 1.4])}
    with_vecdot = likelihood.ln_likelihood_and_variance(hyper)
    monkeypatch.delattr(np, "vecdot", raising=False)
    assert not hasattr(np, "vecdot")
    without = likelihood.ln_likelihood_and_variance(hyper)
    np.testing.assert_allclose(without.ln_likelihood_variance, with_vecdot.ln_likelihood_variance, rtol=1e-12)
    np.testing.assert_allclose(without.ess, with_vecdot.ess, rtol=1e-12)
