"""Regenerate survey.csv and survey_injections.csv: a magnitude-limited survey and its injections.

Sources have a brightness θ (in log units) drawn from the population
Normal(μ = 0, τ = 1); each is measured once with known noise σ = 0.5,
y = θ + Normal(0, 0.5), and *detected only if y > 0.5*. 600 sources exist; the
detected ones (about a third, the bright end) are kept in survey.csv
(source, y, sigma). A fit to them alone overestimates μ and underestimates τ.

The survey's selection is measured by injections: M_total = 10000 synthetic
sources drawn from p_draw = Normal(0, 2), put through the same measurement and
threshold; the detected ones are kept in survey_injections.csv (theta, and
log_draw_prior = ln p_draw(theta)). Fit with

    popinfer fit-population survey.h5 -o pop.h5 --population normal \
        --selection sample_data/survey_injections.csv --injections-total 10000
"""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

MU, TAU, NOISE, THRESHOLD = 0.0, 1.0, 0.5, 0.5
N_SOURCES, N_INJECTIONS, DRAW_MU, DRAW_SIGMA = 600, 10000, 0.0, 2.0
HERE = Path(__file__).resolve().parent

rng = np.random.default_rng(20261122)
theta = rng.normal(MU, TAU, N_SOURCES)
y = theta + rng.normal(0.0, NOISE, N_SOURCES)
detected = np.flatnonzero(y > THRESHOLD)
pd.DataFrame({"source": [f"S{i:03d}" for i in detected], "y": np.round(y[detected], 4), "sigma": NOISE}).to_csv(
    HERE / "survey.csv", index=False)

injected = np.round(rng.normal(DRAW_MU, DRAW_SIGMA, N_INJECTIONS), 6)
found = injected + rng.normal(0.0, NOISE, N_INJECTIONS) > THRESHOLD
pd.DataFrame({"theta": injected[found],
              "log_draw_prior": stats.norm.logpdf(injected[found], DRAW_MU, DRAW_SIGMA)}).to_csv(
    HERE / "survey_injections.csv", index=False, float_format="%.10g")
print(f"{detected.size} of {N_SOURCES} sources and {found.sum()} of {N_INJECTIONS} injections detected")
