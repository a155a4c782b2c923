"""Regenerate decay.csv: 20 simulated sources, each observed at 8 times.

True values: ln amplitude ~ Normal(ln 10, 0.3), ln rate ~ Normal(ln 0.5, 0.4);
y = amplitude · exp(-rate · t) + Normal(0, yerr) with yerr = 0.5. The truth is
kept in decay_truth.csv so tests can score the fits against it.
"""

import numpy as np
import pandas as pd

rng = np.random.default_rng(20261121)
rows, truth = [], []
for source in range(20):
    amplitude = float(np.exp(rng.normal(np.log(10.0), 0.3)))
    rate = float(np.exp(rng.normal(np.log(0.5), 0.4)))
    truth.append({"source": f"S{source:02d}", "amplitude": amplitude, "rate": rate})
    for t in np.linspace(0.0, 6.0, 8):
        y = amplitude * np.exp(-rate * t) + rng.normal(0.0, 0.5)
        rows.append({"source": f"S{source:02d}", "t": round(float(t), 4), "y": round(float(y), 4), "yerr": 0.5})
pd.DataFrame(rows).to_csv("decay.csv", index=False)
pd.DataFrame(truth).to_csv("decay_truth.csv", index=False, float_format="%.6f")
