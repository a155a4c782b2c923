"""Regenerate the small simulated tables the README's examples use.

- lines.csv: 12 objects, each a straight line observed at 8 x values;
  slope ~ Normal(1.5, 0.3), intercept ~ Normal(2, 1), intrinsic scatter 0.3, yerr 0.5.
- masses.csv: 40 stars whose masses follow a power law p(m) ∝ m^-2.3 on [1, 100],
  each measured once with a 10 % standard error (y, sigma).
- stan_draws.csv: posterior draws made elsewhere (as a Stan fit would give them), 300
  per star for 10 stars: the eccentricity `ecc` of each under a uniform(0, 1) prior,
  Beta(1 + 20 e, 1 + 20 (1 - e)) for a true e ~ Beta(2, 5).

Run from this directory: python make_examples.py
"""

import numpy as np
import pandas as pd

rng = np.random.default_rng(20261122)

rows = []
for line in range(12):
    slope, intercept = rng.normal(1.5, 0.3), rng.normal(2.0, 1.0)
    for x in np.linspace(0.0, 10.0, 8):
        y = slope * x + intercept + rng.normal(0.0, np.hypot(0.3, 0.5))
        rows.append({"line": f"L{line:02d}", "x": round(float(x), 4), "y": round(float(y), 4), "yerr": 0.5})
pd.DataFrame(rows).to_csv("lines.csv", index=False)

alpha, low, high = -2.3, 1.0, 100.0
u = rng.uniform(size=40)
masses = (low ** (alpha + 1) + u * (high ** (alpha + 1) - low ** (alpha + 1))) ** (1 / (alpha + 1))
sigma = 0.1 * masses
pd.DataFrame({"star": [f"M{i:02d}" for i in range(40)], "y": np.round(masses + rng.normal(0, sigma), 4),
              "sigma": np.round(sigma, 4)}).to_csv("masses.csv", index=False)

rows = []
for star in range(10):
    e = rng.beta(2.0, 5.0)
    draws = rng.beta(1 + 20 * e, 1 + 20 * (1 - e), size=300)
    rows.append(pd.DataFrame({"star": f"K-{star + 1:03d}", "ecc": np.round(draws, 6)}))
pd.concat(rows).to_csv("stan_draws.csv", index=False)
