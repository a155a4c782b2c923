"""A user population for popinfer: a half-normal density of a positive parameter,
f(θ; scale) = 2 N(θ; 0, scale) for θ ≥ 0.

    popinfer fit-population decay.h5 -o rates.h5 --parameter rate \
        --population sample_data/halfnormal_population.py:halfnormal --seed 1

``theta`` maps each described parameter to an array of shape (n_objects, K, 1);
``hyper`` maps each hyperparameter to an array of shape (n_walkers,). The result
broadcasts to (n_objects, K, n_walkers): ln f, normalised over θ, -inf outside
the support.
"""

import numpy as np


def halfnormal(theta, hyper):
    x = next(iter(theta.values()))
    scale = hyper["scale"]
    density = np.log(2.0) - 0.5 * np.log(2.0 * np.pi) - np.log(scale) - 0.5 * (x / scale) ** 2
    return np.where(x >= 0, density, -np.inf)


# Default hyperpriors (distribution specs), one per hyperparameter.
halfnormal.hyperparameters = {"scale": "loguniform(0.001, 100)"}
