"""The ``--seed`` of every command: its range, and a fresh one when none is given.

Every random stream of a run is spawned from it with ``numpy.random.SeedSequence``;
it is recorded as a 64-bit signed integer (the ``seed`` root attribute), hence the range.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import UsageError

MAX_SEED = 2**63 - 1


def resolve_seed(seed):
    """``seed`` checked to be an integer in [0, 2**63 − 1]; a fresh random one when None.

    Raises
    ------
    UsageError
        ``seed`` is not an integer or out of range.
    """
    if seed is None:
        return int(np.random.SeedSequence().entropy % (MAX_SEED + 1))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise UsageError(f"--seed {seed!r}: expected an integer from 0 to {MAX_SEED} (2**63 - 1).", "--seed")
    return int(seed)
