"""User-supplied per-object models: ``path/to/file.py:function`` or ``module:function``.

The protocol (documented in README, "User models"):

    def decay(params, data):
        '''params: dict name -> array (n_walkers,); data: dict column -> array (rows,)'''
        model = params["amplitude"][:, None] * np.exp(-params["rate"][:, None] * data["t"])
        return -0.5 * np.sum(((data["y"] - model) / data["yerr"]) ** 2, axis=1)

    decay.parameters = {"amplitude": "loguniform(0.01, 100)", "rate": "loguniform(0.001, 10)"}
    decay.columns = ["t", "y", "yerr"]

``popinfer.user_model(parameters=..., columns=...)`` sets the same attributes as a
decorator. The function is called once per object with all walkers at once and
must return a finite (or -inf) log-likelihood per walker.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError, UsageError
from ..guard import no_exit
from ..user_functions import ReloadedFunction, declared_priors, load_callable, source_sha256
from .base import Model


def user_model(parameters, columns):
    """Decorator declaring a function as a popinfer per-object model.

    Parameters
    ----------
    parameters : dict of str -> str
        Parameter names and their default interim priors (distribution specs).
    columns : list of str
        Data columns the function reads; each arrives as a float array.
    """

    def mark(function):
        function.parameters = dict(parameters)
        function.columns = list(columns)
        return function

    return mark


class UserModel(ReloadedFunction, Model):
    """A per-object model from a user's function (see module docstring)."""

    option = "--model"
    calls_per_object = True

    def __init__(self, spec, columns=None, table_columns=None):
        self.spec = spec
        self._function = load_callable(spec, self.option)
        declared = declared_priors(self._function, "parameters", spec, self.option, "parameter")
        used = getattr(self._function, "columns", None)
        if not used or isinstance(used, str):
            raise UsageError(
                f"--model {spec!r}: the function needs a `columns` attribute listing the data "
                f"columns it reads, e.g. ['t', 'y', 'yerr'].",
                "--model",
            )
        self.name = spec
        self.source_sha256 = source_sha256(self._function)
        self.roles = {str(c): True for c in used}
        self.parameters = tuple(declared)
        self.default_priors = dict(declared)
        super().__init__(columns, table_columns)

    def describe(self):
        """As every model's, plus the SHA-256 of the file defining the function (so that
        a checkpoint's fingerprint changes with the code)."""
        return {**super().describe(), "source_sha256": self.source_sha256}

    def prepare(self, columns, starts):
        """Each object's rows as the dict its call receives (built once per batch, not once per call)."""
        objects = [{self.column_names[role]: values[starts[b]:starts[b + 1]] for role, values in columns.items()}
                   for b in range(len(starts) - 1)]
        return {"ids": None, "objects": objects}

    def log_likelihood(self, params, data, valid=None):
        """Call the user's function once per object with its valid walkers."""
        names = list(params)
        # (B, P, W): each object's walkers of each parameter contiguous, sliced per call
        by_object = np.ascontiguousarray(np.stack([params[name] for name in names]).transpose(2, 0, 1))
        n_objects, _, n_walkers = by_object.shape
        out = np.full((n_objects, n_walkers), -np.inf)
        every = np.ones(n_objects, bool) if valid is None else valid.all(axis=0)
        ids = data.get("ids")
        current = [None]
        with no_exit(lambda: f"Model {self.spec!r} on object {current[0]!r}"):
            for b, object_data in enumerate(data["objects"]):
                object_id = current[0] = ids[b] if ids is not None else b
                if every[b]:
                    walkers, n_valid = slice(None), n_walkers
                else:
                    walkers = valid[:, b]
                    n_valid = int(walkers.sum())
                    if not n_valid:
                        continue
                values = by_object[b] if every[b] else by_object[b][:, walkers]
                object_params = dict(zip(names, values))
                try:
                    result = self._function(object_params, dict(object_data))  # a dict of its own to change
                except Exception as exc:
                    raise ModelError(
                        f"Model {self.spec!r} raised {type(exc).__name__} on object {object_id!r}: {exc}"
                    ) from exc
                result = np.asarray(result, dtype=float)
                if result.shape != (n_valid,):
                    raise ModelError(
                        f"Model {self.spec!r} returned shape {result.shape} on object {object_id!r}; "
                        f"expected ({n_valid},): one log-likelihood per walker."
                    )
                out[b, walkers] = result
        return out.T
