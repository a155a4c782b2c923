"""User models used by the tests."""

import numpy as np


def bimodal(params, data):
    """y measures θ² with noise s: a posterior with two modes at ±sqrt(y)."""
    theta = params["theta"][:, None]
    return -0.5 * np.sum(((data["y"] - theta**2) / data["s"]) ** 2, axis=1)


bimodal.parameters = {"theta": "uniform(-5, 5)"}
bimodal.columns = ["y", "s"]


def raises(params, data):
    raise RuntimeError("boom")


raises.parameters = {"theta": "uniform(-5, 5)"}
raises.columns = ["y"]


def returns_nan(params, data):
    return np.where(params["theta"] > 0, np.nan, -params["theta"] ** 2)


returns_nan.parameters = {"theta": "uniform(-5, 5)"}
returns_nan.columns = ["y"]


def wrong_shape(params, data):
    return np.zeros(3)


wrong_shape.parameters = {"theta": "uniform(-5, 5)"}
wrong_shape.columns = ["y"]


def no_parameters(params, data):
    return np.zeros(len(params["theta"]))


no_parameters.columns = ["y"]
