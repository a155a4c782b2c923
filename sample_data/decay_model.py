"""A user model for popinfer: exponential decay y(t) = amplitude · exp(-rate · t).

Use it with

    popinfer fit-individuals sample_data/decay.csv -o decay.h5 \
        --model sample_data/decay_model.py:decay --seed 1

The function receives every walker of one object at once: ``params`` maps each
parameter name to an array of shape (n_walkers,), ``data`` maps each column
named in ``decay.columns`` to that object's rows. It returns one log-likelihood
per walker.
"""

import numpy as np


def decay(params, data):
    amplitude = params["amplitude"][:, None]
    rate = params["rate"][:, None]
    model = amplitude * np.exp(-rate * data["t"])
    residual = (data["y"] - model) / data["yerr"]
    return -0.5 * np.sum(residual**2, axis=1) - np.sum(np.log(data["yerr"])) - 0.5 * len(data["t"]) * np.log(2 * np.pi)


# Default interim priors (broad), and the columns the function reads.
decay.parameters = {"amplitude": "loguniform(0.01, 1000)", "rate": "loguniform(0.001, 100)"}
decay.columns = ["t", "y", "yerr"]
