"""Built-in model log-likelihoods against straightforward scipy.stats sums."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from popinfer.errors import InputDataError, UsageError
from popinfer.models import get_model
from popinfer.table import table_from_frame

RNG = np.random.default_rng(11)


@pytest.fixture(autouse=True)
def _seeded_per_test():
    """Every test draws from the same fresh stream, whichever tests ran before it."""
    global RNG
    RNG = np.random.default_rng(11)


IDS = ["a", "a", "b", "c", "c", "c"]  # ragged: 2, 1 and 3 rows


def evaluate(model, frame, params):
    table = table_from_frame(frame)
    model = get_model(model, None, table.columns)
    columns = model.load_columns(table)
    return model, model.log_likelihood(params, model.prepare(columns, table.starts))


def per_object(values):
    return np.array([values[:, [i for i, o in enumerate(IDS) if o == obj]].sum(axis=1) for obj in "abc"]).T


def test_normal_known_sigma():
    y, sigma = RNG.normal(size=6) * 3, RNG.uniform(0.5, 2, 6)
    theta = RNG.normal(size=(5, 3))
    _, got = evaluate("normal", pd.DataFrame({"id": IDS, "y": y, "sigma": sigma}), {"theta": theta})
    expected = per_object(stats.norm.logpdf(y, theta[:, [0, 0, 1, 2, 2, 2]], sigma))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_normal_fitted_scatter_and_extreme_values_stay_accurate():
    y = 1e6 + RNG.normal(size=6) * 1e-6
    theta = 1e6 + RNG.normal(size=(5, 3)) * 1e-6
    scatter = RNG.uniform(0.5e-6, 2e-6, size=(5, 3))
    model, got = evaluate("normal", pd.DataFrame({"id": IDS, "y": y}), {"theta": theta, "scatter": scatter})
    assert model.parameters == ("theta", "scatter")
    idx = [0, 0, 1, 2, 2, 2]
    expected = per_object(stats.norm.logpdf(y, theta[:, idx], scatter[:, idx]))
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_binomial():
    n = RNG.integers(1, 50, 6)
    k = RNG.integers(0, n + 1)
    k[0], k[3] = 0, n[3]
    p = RNG.uniform(size=(5, 3))
    p[0] = [0.0, 1.0, 0.5]
    _, got = evaluate("binomial", pd.DataFrame({"id": IDS, "k": k, "n": n}), {"p": p})
    expected = per_object(stats.binom.logpmf(k, n, p[:, [0, 0, 1, 2, 2, 2]]))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_poisson_with_exposure():
    count = RNG.integers(0, 30, 6)
    exposure = RNG.uniform(0.5, 3, 6)
    rate = RNG.uniform(0.1, 10, size=(5, 3))
    _, got = evaluate("poisson", pd.DataFrame({"id": IDS, "count": count, "exposure": exposure}), {"rate": rate})
    expected = per_object(stats.poisson.logpmf(count, rate[:, [0, 0, 1, 2, 2, 2]] * exposure))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_linear():
    x, y, yerr = RNG.normal(size=6), RNG.normal(size=6), RNG.uniform(0.1, 1, 6)
    params = {"slope": RNG.normal(size=(5, 3)), "intercept": RNG.normal(size=(5, 3)),
              "scatter": RNG.uniform(0.1, 1, size=(5, 3))}
    _, got = evaluate("linear", pd.DataFrame({"id": IDS, "x": x, "y": y, "yerr": yerr}), params)
    idx = [0, 0, 1, 2, 2, 2]
    mean = params["slope"][:, idx] * x + params["intercept"][:, idx]
    expected = per_object(stats.norm.logpdf(y, mean, np.sqrt(yerr**2 + params["scatter"][:, idx] ** 2)))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("model, frame, fragment", [
    ("normal", {"y": [1, 2], "sigma": [1, 0]}, "row 2 (object 'b'), column 'sigma'"),
    ("normal", {"y": [1, 2], "sigma": [1, -3]}, "sigma > 0"),
    ("binomial", {"k": [3, 5], "n": [4, 4]}, "row 2 (object 'b'), column 'k'"),
    ("binomial", {"k": [-1, 2], "n": [4, 4]}, "row 1 (object 'a'), column 'k'"),
    ("binomial", {"k": [1, 2], "n": [4, 4.5]}, "column 'n'"),
    ("poisson", {"count": [1, -2]}, "row 2 (object 'b'), column 'count'"),
    ("poisson", {"count": [1, 2], "exposure": [1, 0]}, "column 'exposure'"),
    ("linear", {"x": [1, 2], "y": [1, 2], "yerr": [-1, 1]}, "column 'yerr'"),
])
def test_invalid_values_name_row_object_and_column(model, frame, fragment):
    table = table_from_frame(pd.DataFrame({"id": ["a", "b"], **frame}), source="data.csv")
    with pytest.raises(InputDataError) as info:
        get_model(model, None, table.columns).load_columns(table)
    assert fragment in str(info.value)
    assert "data.csv" in str(info.value)


def test_missing_column_names_the_role_and_the_fix():
    table = table_from_frame(pd.DataFrame({"id": ["a"], "value": [1.0]}), source="data.csv")
    with pytest.raises(InputDataError, match=r"no column 'y'.*--column y=NAME"):
        get_model("normal", None, table.columns).load_columns(table)
    model = get_model("normal", {"y": "value"}, table.columns)
    assert "y" in model.load_columns(table)


def test_unknown_model_and_role_are_usage_errors():
    with pytest.raises(UsageError, match="Unknown model 'nrmal'"):
        get_model("nrmal")
    with pytest.raises(UsageError, match="no column role 'z'"):
        get_model("normal", {"z": "zz"})
