"""The half-normal user population of ``halfnormal_population.py``, written with jax.numpy
so that ``--backend jax`` runs it jitted and differentiates it:
f(θ; scale) = 2 N(θ; 0, scale) for θ ≥ 0.

    popinfer fit-population decay.h5 -o rates-jax.h5 --parameter rate --backend jax \
        --population sample_data/halfnormal_population_jax.py:halfnormal --seed 1

The same protocol as a numpy population (``theta``: parameter -> (n_objects, K, 1);
``hyper``: hyperparameter -> (n_walkers,); the result broadcasts to
(n_objects, K, n_walkers)), with jnp in place of np: elementwise operations only,
jnp.where rather than Python if. It runs on ``--backend numpy`` too.
"""

import jax.numpy as jnp


def halfnormal(theta, hyper):
    x = next(iter(theta.values()))
    scale = hyper["scale"]
    density = jnp.log(2.0) - 0.5 * jnp.log(2.0 * jnp.pi) - jnp.log(scale) - 0.5 * (x / scale) ** 2
    return jnp.where(x >= 0, density, -jnp.inf)


# Default hyperpriors (distribution specs), one per hyperparameter.
halfnormal.hyperparameters = {"scale": "loguniform(0.001, 100)"}
