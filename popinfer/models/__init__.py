"""Per-object models of stage one: the built-ins and user-supplied functions."""

from .base import Model
from .binomial import BinomialModel
from .linear import LinearModel
from .normal import NormalModel
from .poisson import PoissonModel
from .user import UserModel, user_model
from ..errors import UsageError

BUILTIN_MODELS = {cls.name: cls for cls in (NormalModel, BinomialModel, PoissonModel, LinearModel)}


def get_model(name, columns=None, table_columns=None):
    """A model instance from a built-in name or ``file.py:function`` / ``module:function``.

    Parameters
    ----------
    name : str
        Built-in name (``normal``, ``binomial``, ``poisson``, ``linear``) or a user spec.
    columns : dict, optional
        Role -> column name overrides.
    table_columns : list of str, optional
        Columns of the data table (optional columns decide some parameters).
    """
    if isinstance(name, Model):
        return name
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name](columns, table_columns)
    if ":" in str(name):
        return UserModel(str(name), columns, table_columns)
    raise UsageError(
        f"Unknown model {name!r}: use one of {', '.join(BUILTIN_MODELS)}, or "
        f"path/to/file.py:function / package.module:function for your own.",
        "--model",
    )


__all__ = ["Model", "get_model", "user_model", "BUILTIN_MODELS", "UserModel"]
