"""Stage one's warnings point at the user's call of fit_individuals, not at popinfer's own files."""

import warnings

import pandas as pd

import popinfer
from popinfer.mcmc import ConvergenceWarning, InterimEdgeWarning


def test_stage_one_warnings_point_at_the_callers_line():
    # y = 5000 ± 1 under the default uniform(-1000, 1000): draws piled at the bound; 100 steps: unconverged
    frame = pd.DataFrame({"id": ["a", "b"], "y": [5000.0, 1.0], "sigma": [1.0, 1.0]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        popinfer.fit_individuals(frame, "normal", n_draws=50, max_steps=100, seed=1, progress=False)
    kinds = {item.category for item in caught}
    assert {ConvergenceWarning, InterimEdgeWarning} <= kinds
    for item in caught:
        if issubclass(item.category, (ConvergenceWarning, InterimEdgeWarning)):
            assert item.filename == __file__, (item.category.__name__, item.filename, item.lineno)
