"""Reading the injections that measure a survey's selection (``fit-population --selection``).

An injection set is a table of the *detected* injections, one row per injection:
a column per parameter the population describes, plus either a ``log_draw_prior``
column (ln p_draw of each row, the joint density the injections were drawn from)
or a declared draw prior per parameter (``--draw-prior NAME=DIST``), and M_total,
the number of injections drawn in all, detected or not (``--injections-total``, or
an ``injections_total`` attribute of an HDF5 group, or a constant
``injections_total`` column). CSV/TSV/Parquet by extension, or an HDF5 file whose
group (``--injections-group``, default the root) holds one 1-D dataset per column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .distributions import parse_priors
from .errors import InputDataError, UsageError
from .io.files import file_sha256

LOG_DRAW_PRIOR = "log_draw_prior"
TOTAL = "injections_total"
# Attribute names of M_total in an HDF5 group: ours, and the LVK injection files' name.
TOTAL_ATTRIBUTES = (TOTAL, "total_generated")


@dataclass
class Injections:
    """The detected injections of a selection function.

    Attributes
    ----------
    source : str
        The file (and HDF5 group), for messages and provenance.
    sha256 : str
        Digest of the file's bytes.
    parameters : list of str
        The P parameters, the columns of ``theta``.
    theta : ndarray, shape (M, P)
        θ_j of the M detected injections.
    log_draw_prior : ndarray, shape (M,)
        ln p_draw(θ_j).
    n_total : int
        M_total ≥ M, the injections drawn in all (detected or not).
    draw_prior : dict
        Provenance: ``{NAME: DIST}`` or ``{"joint": "column 'log_draw_prior'"}``.
    """

    source: str
    sha256: str
    parameters: list
    theta: np.ndarray
    log_draw_prior: np.ndarray
    n_total: int
    draw_prior: dict

    @property
    def n_detected(self):
        return self.theta.shape[0]

    def provenance(self):
        return {"path": self.source, "sha256": self.sha256, "injections_total": self.n_total,
                "detected": self.n_detected, "draw_prior": dict(self.draw_prior)}


def _read_frame(path, group):
    """(pandas DataFrame, attributes dict, label) of the injection table at ``path``."""
    import pandas as pd

    lower = path.lower()
    label = path if not group else f"{path} (group {group})"
    if lower.endswith((".h5", ".hdf5")):
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                node = handle[group] if group else handle
                if not isinstance(node, h5py.Group):
                    raise InputDataError(f"{label}: {group} is a dataset; name the group holding one dataset per "
                                         f"column with --injections-group.")
                columns = {name: node[name][()] for name in node if isinstance(node[name], h5py.Dataset)}
                attributes = {name: node.attrs[name] for name in node.attrs}
        except KeyError:
            raise InputDataError(f"{path} has no group {group!r}; give the group holding the injections with "
                                 f"--injections-group.") from None
        except OSError as exc:
            raise InputDataError(f"Cannot read injections from {label}: {exc}. Is it an HDF5 file?") from None
        shapes = {name: np.shape(values) for name, values in columns.items()}
        if not columns or len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
            raise InputDataError(f"{label} must hold 1-D datasets of equal length, one per column; found "
                                 f"{shapes or 'none'}.")
        return pd.DataFrame(columns), attributes, label
    if group:
        raise UsageError(f"--injections-group applies to HDF5 files only; {path} is read as a table.",
                         "--injections-group")
    try:
        if lower.endswith(".parquet"):
            try:
                frame = pd.read_parquet(path)
            except ImportError:
                raise UsageError(f"Reading {path} needs pyarrow: pip install 'popinfer[export]', or give the "
                                 f"injections as CSV.", "--selection") from None
        else:
            separator = "\t" if lower.endswith((".tsv", ".tab")) else ","
            frame = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise InputDataError(f"Injections file {path!r} does not exist.") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise InputDataError(f"Injections file {path!r} cannot be read: {exc.strerror}.") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
        raise InputDataError(f"{path} is not a readable injection table ({exc}); expected a CSV/TSV/Parquet table "
                             f"with a header and one row per detected injection.") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, {}, label


def _numeric(frame, column, label):
    """The column as float64; an error names the first row that is not a finite number."""
    import pandas as pd

    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        cell = raw.iloc[row]
        found = "an empty cell" if isinstance(cell, str) and not cell.strip() else _plain(cell)
        raise InputDataError(f"{label}, row {row + 1}, column {column!r}: expected a finite number, found {found} "
                             f"({int(bad.sum())} such row(s)). Fix or remove those injections.")
    return values


def _plain(value):
    """A value of a file or an option as a person writes it: ``-5``, ``60000.5``, ``'abc'``, not
    numpy's repr (``np.float64(60000.5)``)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def _whole(value):
    """``value`` as a positive whole number, or None (text, a fraction, NaN, a bool, ≤ 0)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() and number >= 1 else None


def _file_total(frame, attributes, label):
    """(M_total, where) from the file's attribute or constant column, checked; (None, None) if it has neither."""
    for name in TOTAL_ATTRIBUTES:
        if name in attributes:
            found, where = np.asarray(attributes[name]).ravel(), f"attribute {name!r}"
            if found.size != 1:
                listed = ", ".join(_plain(v) for v in found[:5]) + (", ..." if found.size > 5 else "")
                raise InputDataError(f"{label}, {where}: M_total must be one whole number; found "
                                     f"{f'{found.size} values ({listed})' if found.size else 'none'}. Fix the file.")
            break
    else:
        if TOTAL not in frame.columns:
            return None, None
        found, where = np.unique(_numeric(frame, TOTAL, label)), f"column {TOTAL!r}"
        if found.size != 1:
            raise InputDataError(f"{label}, {where}: M_total must be the same on every row; found "
                                 f"{found.size} different values.")
    total = _whole(found[0])
    if total is None:
        raise InputDataError(f"{label}, {where}: M_total, the number of injections drawn in all, must be a "
                             f"positive whole number; found {_plain(found[0])}. Fix the file.")
    return total, where


def _total(frame, attributes, given, n_detected, label):
    """M_total from ``--injections-total``, an attribute, or a constant column."""
    option = "--injections-total"
    found, where = _file_total(frame, attributes, label)
    if given is not None:
        total = _whole(given)
        if total is None:
            raise UsageError(f"{option} must be a positive whole number (the injections drawn in all), got "
                             f"{_plain(given)}.", option)
        if found is not None and found != total:
            raise UsageError(f"{option} {total} disagrees with the {where} of {label} ({found}); give the same "
                             f"number, or leave {option} out to use the file's.", option)
    elif found is None:
        raise UsageError(f"The number of injections drawn in all (detected or not) is unknown: give "
                         f"{option} M, or an {TOTAL!r} attribute or column in {label}.", option)
    else:
        total = found
    if total < n_detected:
        counts = "M_total counts every injection drawn, detected or not."
        if given is not None:
            raise UsageError(f"{option}: M_total = {total} is smaller than the {n_detected} detected injections in "
                             f"{label}; {counts}", option)
        raise InputDataError(f"{label}, {where}: M_total = {total} is smaller than the {n_detected} detected "
                             f"injections the file holds; {counts}")
    return total


def read_injections(path, parameters, draw_priors=None, n_total=None, group=None):
    """Read and check a table of detected injections.

    Parameters
    ----------
    path : str or Path
        CSV/TSV/Parquet table, or an HDF5 file (``group`` in it, default the root).
    parameters : list of str
        The parameters the population describes (``--parameter``); each must be a column.
    draw_priors : list of "NAME=DIST" or dict, optional
        p_draw per parameter, instead of a ``log_draw_prior`` column.
    n_total : int, optional
        M_total (``--injections-total``); else the file's attribute or column.
    group : str, optional
        HDF5 group holding one dataset per column.

    Returns
    -------
    Injections
    """
    path = str(path)
    frame, attributes, label = _read_frame(path, group)
    if frame.shape[0] == 0:
        raise InputDataError(f"{label} has no injections (no rows): the selection cannot be estimated from none.")
    missing = [p for p in parameters if p not in frame.columns]
    if missing:
        raise InputDataError(f"{label} has no column {missing[0]!r} for --parameter {missing[0]}: its columns are "
                             f"{', '.join(map(repr, frame.columns))}. The injections need one column per parameter "
                             f"the population describes, named as in the samples file.")
    declared = parse_priors(draw_priors, parameters, {}, "--draw-prior", "the population (--parameter)",
                            "parameter")
    has_column = LOG_DRAW_PRIOR in frame.columns
    if has_column and declared:
        raise UsageError(f"{label} has a {LOG_DRAW_PRIOR!r} column and --draw-prior was given too: give one.",
                         "--draw-prior")
    if not has_column and set(declared) != set(parameters):
        absent = [p for p in parameters if p not in declared]
        raise UsageError(f"The draw prior of the injections in {label} is unknown for {', '.join(absent)}: add a "
                         f"{LOG_DRAW_PRIOR!r} column (ln p_draw of each row) or give --draw-prior NAME=DIST for "
                         f"every parameter.", "--draw-prior")
    theta = np.stack([_numeric(frame, p, label) for p in parameters], axis=-1)
    if has_column:
        log_draw_prior = _numeric(frame, LOG_DRAW_PRIOR, label)
        draw_prior = {"joint": f"column {LOG_DRAW_PRIOR!r}"}
    else:
        log_draw_prior = np.zeros(theta.shape[0])
        for i, name in enumerate(parameters):
            log_draw_prior += declared[name].logpdf(theta[:, i])
        draw_prior = {name: declared[name].spec for name in parameters}
        outside = np.flatnonzero(~np.isfinite(log_draw_prior))
        if outside.size:
            row = int(outside[0])
            raise InputDataError(f"{label}, row {row + 1}: the injection lies outside the support of the declared "
                                 f"draw prior ({', '.join(f'{k}={v}' for k, v in draw_prior.items())}); "
                                 f"{outside.size} row(s) do. They cannot have been drawn from it: check --draw-prior.")
    total = _total(frame, attributes, n_total, theta.shape[0], label)
    return Injections(source=label, sha256=file_sha256(path), parameters=list(parameters), theta=theta,
                      log_draw_prior=log_draw_prior, n_total=total, draw_prior=draw_prior)

