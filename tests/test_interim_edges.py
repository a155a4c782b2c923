"""Stage one warns of objects whose posterior an interim prior's bound cuts off, where the
likelihood has no such bound (``Model.supports``); a bound the likelihood has too (a binomial's
p = 0) is nature's, and an object near it is not flagged."""

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

import popinfer
from conftest import write_csv
from popinfer.cli import main
from popinfer import InterimEdgeWarning
from popinfer.individuals.fit import EDGE_SHARE, EDGE_WIDTH, _edge_shares

FAST = dict(n_draws=400, seed=1, progress=False)


def _fit(frame, model="normal", **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        popinfer.fit_individuals(frame, model, **{**FAST, **options})
    return [w for w in caught if issubclass(w.category, InterimEdgeWarning)]


def test_edge_shares_of_exact_draws_separate_a_cut_posterior_from_a_near_one():
    """A normal posterior 3 sd from the bound puts at most 2·EDGE_WIDTH·φ(3) ≈ 0.09 % of its draws
    within EDGE_WIDTH sd of it (K = 4000: about 3.5 draws, Poisson; 40 = 1 % is beyond 10⁻²⁰); one
    cut at the bound (a half-normal) P(X ≤ 0.1 sd) = 2Φ(0.1·√(1 − 2/π)) − 1 ≈ 4.8 % (192 ± 14)."""
    rng = np.random.default_rng(7)
    near = rng.normal(1000.0 - 3.0, 1.0, size=(50, 4000))
    cut = 1000.0 - np.abs(rng.normal(0.0, 1.0, size=(50, 4000)))
    assert (_edge_shares(near, [1000.0, -1000.0], False) < EDGE_SHARE).all()
    shares = _edge_shares(cut, [1000.0], False)[0]
    expected = 2 * stats.norm.cdf(EDGE_WIDTH * np.sqrt(1 - 2 / np.pi)) - 1
    assert (shares >= EDGE_SHARE).all()
    assert abs(shares.mean() - expected) < 5 * np.sqrt(expected * (1 - expected) / 4000 / 50)


def test_edge_shares_leave_out_the_padding_of_ragged_objects():
    draws = np.full((2, 10), np.nan)
    draws[0, :4] = [1000.0, 999.0, 998.0, 997.0]
    draws[1, :] = np.linspace(0, 1, 10)
    shares = _edge_shares(draws, [1000.0], True)[0]
    assert shares[0] == pytest.approx(0.25) and shares[1] == 0.0


def test_an_object_beyond_the_default_interim_prior_is_named():
    frame = pd.DataFrame({"id": ["A", "B", "C"], "y": [900.0, 8.0, 5000.0], "sigma": [1.0, 10.0, 1.0]})
    caught = _fit(frame)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "1 object(s)" in message and "'C' (theta at 1000" in message and "'A'" not in message
    assert "--prior" in message
    assert "If the bound is physical" in message and "truncnormal" in message


def test_a_wide_enough_interim_prior_is_not_flagged():
    """The negative control: the same data under a prior that covers them."""
    frame = pd.DataFrame({"id": ["A", "B", "C"], "y": [900.0, 8.0, 5000.0], "sigma": [1.0, 10.0, 1.0]})
    assert _fit(frame, priors=["theta=uniform(-10000, 10000)"]) == []


def test_a_binomial_rate_at_zero_is_natures_bound_not_the_priors():
    frame = pd.DataFrame({"id": ["a", "b"], "k": [0, 3], "n": [40, 20]})
    assert _fit(frame, "binomial") == []


def test_a_poisson_rate_is_checked_at_the_upper_bound_only():
    frame = pd.DataFrame({"id": ["zero", "huge"], "count": [0, 10**6]})
    caught = _fit(frame, "poisson")
    assert len(caught) == 1 and "'huge' (rate at 10000" in str(caught[0].message)
    assert "'zero'" not in str(caught[0].message)


def test_strict_exits_3_on_the_warning_and_the_file_is_written(in_tmp):
    write_csv("far.csv", "school,y,sigma\nA,900,1\nB,8,10\nC,5000,1\n")
    result = CliRunner().invoke(main, ["fit-individuals", "far.csv", "-o", "far.h5", "--model", "normal",
                                       "--samples", "400", "--seed", "1", "--quiet", "--strict"])
    assert result.exit_code == 3, result.output
    assert "'C' (theta at 1000" in result.stderr and "Traceback" not in result.stderr
    assert os.path.exists("far.h5")
