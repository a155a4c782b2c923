"""What every per-object model provides.

A model turns the rows of a batch of objects into whatever it needs (``prepare``)
and evaluates the log-likelihood of all walkers for all objects of the batch in
one vectorised call (``log_likelihood``). Objects are ragged: an object owns
rows ``starts[b]:starts[b + 1]`` of the prepared columns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import InputDataError, UsageError


# Standard errors whose square and inverse square are finite, normal floats.
MIN_SCALE, MAX_SCALE = 1e-150, 1e150


def segment_sum(values, starts):
    """Sum ``values[..., r]`` over each object's rows ``starts[b]:starts[b+1]``."""
    return np.add.reduceat(values, starts[:-1], axis=-1)


class Model(ABC):
    """Base class of the built-in per-object models.

    Subclasses set ``name``, ``roles`` (role -> required?), ``parameters`` and
    ``default_priors``, and implement :meth:`prepare` and :meth:`log_likelihood`.

    Parameters
    ----------
    columns : dict, optional
        Role -> column name overrides (``--column ROLE=NAME``).
    table_columns : list of str, optional
        Columns present in the table, for models whose parameters depend on
        which optional columns exist.
    """

    name = "model"
    roles = {}
    parameters = ()
    default_priors = {}
    # Parameter -> (low, high): the values the likelihood admits. A finite bound of an interim
    # prior strictly inside them is the prior's, not nature's, and stage one warns of objects whose
    # draws pile against it. Parameters left out are not checked: a scale's posterior piling at a
    # loguniform prior's lower bound means no measurable scatter, not a fault.
    supports = {}
    # Capability: a model that evaluates one object per call (a user's function) sets
    # this; it is then handed the ids in ``data["ids"]`` and the valid-walker mask
    # (``log_likelihood(params, data, valid)``), and runs in smaller batches.
    calls_per_object = False

    def __init__(self, columns=None, table_columns=None):
        columns = dict(columns or {})
        unknown = sorted(set(columns) - set(self.roles))
        if unknown:
            raise UsageError(
                f"--column {unknown[0]}=...: model {self.name!r} has no column role "
                f"{unknown[0]!r}; its roles are {', '.join(self.roles)}.",
                "--column",
            )
        self.column_names = {role: columns.get(role, role) for role in self.roles}
        self.present = {
            role
            for role, name in self.column_names.items()
            if table_columns is None or name in table_columns or role in columns
        }

    def describe(self):
        """JSON-able description for provenance."""
        return {"name": self.name, "columns": {r: self.column_names[r] for r in sorted(self.present)}}

    # -- data --------------------------------------------------------------
    def load_columns(self, table):
        """Numeric columns by role, rows sorted by object, validated."""
        columns = {}
        for role, required in self.roles.items():
            name = self.column_names[role]
            if name not in table.columns:
                if required or role in self.present:
                    hint = f" (set it with --column {role}=NAME)" if name == role else ""
                    raise InputDataError(
                        f"{table.source} has no column {name!r}, which model {self.name!r} needs "
                        f"for {role}{hint}. Its columns are {', '.join(map(repr, table.columns))}."
                    )
                continue
            columns[role] = table.numeric_column(name, role)
        self.validate(table, columns)
        return columns

    def validate(self, table, columns):
        """Check value ranges; raise :class:`InputDataError` naming the row."""

    def _require_squarable(self, table, columns, role, noun, allow_zero=False):
        """A standard error whose square (and its reciprocal) is a finite, non-zero float."""
        values = np.abs(columns[role])
        bad = (values > MAX_SCALE) | ((values < MIN_SCALE) & ((values != 0) if allow_zero else True))
        self._require(table, columns, role, self.column_names[role], bad,
                      f"{noun} between {MIN_SCALE:g} and {MAX_SCALE:g} (its square must be a finite, non-zero "
                      f"number; rescale the column's units)")

    @staticmethod
    def _require(table, columns, role, column_name, bad, expected):
        bad = np.asarray(bad)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = table.row_of(i)
            raise InputDataError(
                f"{table.where(row, column_name)}: expected {expected}, found "
                f"{table.frame[column_name].iloc[row].strip()!r}. Fix or remove that row."
            )

    def check_fixed(self, fixed, columns):
        """Reject held values (``--fix``) the likelihood cannot take."""

    # -- likelihood --------------------------------------------------------
    @abstractmethod
    def prepare(self, columns, starts):
        """Per-batch data for objects owning rows ``starts[b]:starts[b+1]``."""

    @abstractmethod
    def log_likelihood(self, params, data):
        """Log-likelihood, shape ``(n_walkers, n_objects)``.

        Parameters
        ----------
        params : dict of str -> ndarray, shape (n_walkers, n_objects)
        data : object returned by :meth:`prepare`
        """
