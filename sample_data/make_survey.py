"""Regenerate survey.csv and survey_injections.csv: a magnitude-limited survey and its injections.

Sources have a brightness θ (in log units) drawn from the population
Normal(μ = 0, τ = 1); each is measured once with known noise σ = 0.5,
y = θ + Normal(0, 0.5), and *detected only if y > −0.3*. 100 sources exist; the
detected ones (about 60 %, the bright end) are kept in survey.csv (source, y,
sigma). A fit to them alone overestimates μ and underestimates τ.

The survey's selection is measured by injections: M_total = 40000 synthetic
sources drawn from p_draw = Normal(0, 2), put through the same measurement and
threshold; the detected ones are kept in survey_injections.csv (one column,
theta). Fit with

    popinfer fit-population survey.h5 -o pop.h5 --population normal \
        --selection sample_data/survey_injections.csv --injections-total 40000 \
        --draw-prior "theta=normal(0, 2)"
"""

from pathlib import Path

import numpy as np
import pandas as pd

MU, TAU, NOISE, THRESHOLD = 0.0, 1.0, 0.5, -0.8
N_SOURCES, N_INJECTIONS, DRAW_MU, DRAW_SIGMA = 150, 60000, 0.0, 1.5
HERE = Path(__file__).resolve().parent

rng = np.random.default_rng(20261122)
theta = rng.normal(MU, TAU, N_SOURCES)
y = theta + rng.normal(0.0, NOISE, N_SOURCES)
detected = np.flatnonzero(y > THRESHOLD)
pd.DataFrame({"source": [f"S{i:03d}" for i in detected], "y": np.round(y[detected], 4), "sigma": NOISE}).to_csv(
    HERE / "survey.csv", index=False)

injected = np.round(rng.normal(DRAW_MU, DRAW_SIGMA, N_INJECTIONS), 5)
found = injected + rng.normal(0.0, NOISE, N_INJECTIONS) > THRESHOLD
pd.DataFrame({"theta": injected[found]}).to_csv(HERE / "survey_injections.csv", index=False)
print(f"{detected.size} of {N_SOURCES} sources and {found.sum()} of {N_INJECTIONS} injections detected")
