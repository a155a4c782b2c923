"""Samples files from posterior draws made elsewhere (``popinfer import-samples``).

The input is a long table, one row per draw: an object id column, one column
per parameter, and either a ``log_prior`` column (the log density of the joint
interim prior each draw was made under) or a declared interim prior per
parameter (``--prior NAME=DIST``). CSV/TSV by extension, ``-`` for CSV on stdin,
or an HDF5 file whose group (``--hdf5-group``, default the root) holds one 1-D
dataset per column.

Unequal draw counts: by default every object keeps all its draws, K_n of them
(a ragged samples file: ``/objects/n_draws``, the tail padded with NaN). With
``--samples K`` every object keeps exactly K: objects with more are subsampled
without replacement (seeded by ``--seed``, original order kept); an object with
fewer than K is an error naming it.

With a ``log_prior`` column the interim prior cannot be split per parameter: the
joint value is stored in the first parameter's column of ``/log_interim_prior``
(zeros in the others) and the file is marked ``joint_interim_prior``, so stage two
must describe all of its parameters. Quantities other fitters do not report are
stored as unknown: ``/log_likelihood`` and the chain diagnostics are NaN (steps 0).
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd

from .distributions import parse_priors
from .errors import InputDataError, UsageError
from .io.hdf5 import check_output, check_self_contained
from .io.samples import Samples, write_samples
from .seeds import resolve_seed
from .table import read_table, table_from_frame


def _read_hdf5_table(path, group, id_column):
    """The table of ``group`` in the HDF5 file ``path``: one 1-D dataset per column, the id column
    ``id_column``, or the first dataset where the group records the order its datasets were
    created in (without that record HDF5 lists them by name, which is no column order)."""
    where = f"{path} (group {group or '/'})"
    try:
        with h5py.File(path, "r") as handle:
            check_self_contained(handle, str(path))
            node = handle[group] if group else handle["/"]
            if not isinstance(node, h5py.Group):
                raise UsageError(f"--hdf5-group {group}: in {path} it is a dataset, not a group of datasets (one per "
                                 f"column); give the group that holds them.", "--hdf5-group")
            columns = {name: node[name][()] for name in node if isinstance(node[name], h5py.Dataset)}
            ordered = bool(node.id.get_create_plist().get_link_creation_order())
    except (OSError, KeyError) as exc:
        raise InputDataError(f"Cannot read a table from {where}: {exc}.") from None
    lengths = {name: np.shape(values) for name, values in columns.items()}
    if not columns or len({shape for shape in lengths.values()}) != 1 or len(next(iter(lengths.values()))) != 1:
        raise InputDataError(f"{where} must hold 1-D datasets of equal length, one per "
                             f"column; found {lengths or 'none'}.")
    if id_column is None and not ordered:
        raise UsageError(f"{where} does not record the order of its datasets (HDF5 lists them by name), so it has "
                         f"no first column to take as the object ids: give --id-column, one of "
                         f"{', '.join(map(repr, columns))}.", "--id-column")
    decoded = {name: _text(values, where, name) if values.dtype.kind in "SO" else values
               for name, values in columns.items()}
    return table_from_frame(pd.DataFrame(decoded), id_column, source=str(path))


def _text(values, where, name):
    """A dataset of strings or bytes as text, each value decoded as UTF-8."""
    text = []
    for row, value in enumerate(values):
        try:
            text.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError as exc:
            raise InputDataError(f"{where}: dataset {name!r} row {row + 1} is not UTF-8 text ({exc.reason}); "
                                 f"store ids and names as UTF-8 strings.") from None
    return np.array(text)


def import_samples(data, output=None, *, id_column=None, parameters=None, priors=None, log_prior_column=None,
                   n_draws=None, seed=0, hdf5_group=None, overwrite=False, command=""):
    """Build a samples file from posterior draws produced by another fitter.

    Parameters
    ----------
    data : str, Path or pandas.DataFrame
        Long table of draws (CSV/TSV, ``-``, or HDF5 with one dataset per column).
    output : str, optional
        Samples file to write (``-``: stdout).
    id_column : str, optional
        Object id column (default: the first).
    parameters : list of str, optional
        Parameter columns (default: every column but the id and ``log_prior``).
    priors : list of "NAME=DIST" or dict, optional
        The interim prior of each parameter, if the table has no ``log_prior`` column.
    log_prior_column : str, optional
        Column holding ln p0 of each draw (default ``log_prior`` if present).
    n_draws : int, optional
        K draws kept per object (default: every draw, each object its own count K_n).
    seed : int
        Seeds the subsampling of objects with more than K draws.

    Returns
    -------
    Samples
    """
    seed = resolve_seed(seed)
    if n_draws is not None and (isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer))
                                or n_draws < 1):
        raise UsageError(f"--samples must be a positive whole number, got {n_draws!r}.", "--samples")
    parameters = list(parameters) if parameters is not None else None
    repeated = sorted({p for p in parameters or [] if parameters.count(p) > 1})
    if repeated:
        raise UsageError(f"--parameter {repeated[0]} is given more than once; name each parameter once.",
                         "--parameter")
    hdf5 = not isinstance(data, pd.DataFrame) and str(data).lower().endswith((".h5", ".hdf5"))
    if hdf5_group is not None and not hdf5:
        raise UsageError(f"--hdf5-group {hdf5_group}: {data if isinstance(data, (str, os.PathLike)) else 'the table'} "
                         f"is not an HDF5 file (.h5, .hdf5); the option is for those only.", "--hdf5-group")
    if output is not None:
        check_output(output, overwrite, inputs=[data])
    if isinstance(data, pd.DataFrame):
        table = table_from_frame(data, id_column)
    elif hdf5:
        table = _read_hdf5_table(data, hdf5_group, id_column)
    else:
        table = read_table(data, id_column)
    columns = [c for c in table.columns if c != table.id_column]
    for option, name in [("--parameter", p) for p in parameters or []] + [("--log-prior-column", log_prior_column)]:
        if name is not None and name == table.id_column:
            raise UsageError(f"{option} {name!r} is {table.source}'s object id column; name a column of draws.",
                             option)
    if log_prior_column is None and "log_prior" in columns:
        log_prior_column = "log_prior"
    if log_prior_column is not None and log_prior_column not in columns:
        raise UsageError(f"--log-prior-column {log_prior_column!r} is not a column of {table.source}; its columns are "
                         f"{', '.join(map(repr, table.columns))}.", "--log-prior-column")
    if parameters:
        missing = [p for p in parameters if p not in columns]
        if missing:
            raise UsageError(f"--parameter {missing[0]}: {table.source} has no column {missing[0]!r}; its columns "
                             f"are {', '.join(map(repr, table.columns))}.", "--parameter")
    else:
        parameters = [c for c in columns if c != log_prior_column]
    if not parameters:
        raise UsageError(f"{table.source} has no parameter columns besides the id and the log prior.", "--parameter")
    declared = parse_priors(priors, parameters, {}, "--prior", f"the table {table.source}", "parameter column")
    if log_prior_column is None and set(declared) != set(parameters):
        missing = [p for p in parameters if p not in declared]
        raise UsageError(
            f"The interim prior of {', '.join(missing)} is unknown: give --prior NAME=DIST for every parameter, "
            f"or a log_prior column (--log-prior-column) with ln p0 of each draw.", "--prior")
    if log_prior_column is not None and declared:
        raise UsageError("Give either a log_prior column or --prior, not both.", "--prior")

    values = np.stack([table.numeric_column(p) for p in parameters], axis=-1)  # rows sorted by object
    counts = np.diff(table.starts)
    draw_counts = None
    if n_draws is None:  # every object keeps all its draws: a ragged file when the counts differ
        n_draws = int(counts.max())
        draw_counts = counts.astype(np.int64) if (counts < n_draws).any() else None
    short = np.flatnonzero(counts < n_draws) if draw_counts is None else np.zeros(0, int)
    if short.size:
        listed = ", ".join(f"{table.ids[i]!r} ({counts[i]})" for i in short[:10])
        raise InputDataError(f"{table.source}: {short.size} object(s) have fewer than --samples {n_draws} draws: "
                             f"{listed}. Lower --samples, leave it out (every object keeps its own count), or "
                             f"drop those objects.")
    rng = np.random.default_rng(seed)
    kept = np.minimum(counts, n_draws)
    keep = [table.starts[n] + (np.arange(counts[n]) if counts[n] <= n_draws else
                               np.sort(rng.choice(counts[n], n_draws, replace=False)))
            for n in range(table.n_objects)]
    rows = np.concatenate(keep)
    # object n's draws at [n, :K_n]; the rest is padding (NaN)
    slot = np.concatenate([n * n_draws + np.arange(kept[n]) for n in range(table.n_objects)])
    draws = np.full((table.n_objects * n_draws, len(parameters)), np.nan)
    draws[slot] = values[rows]
    draws = draws.reshape(table.n_objects, n_draws, len(parameters))
    log_interim = np.zeros((table.n_objects * n_draws, len(parameters)))
    log_interim[np.setdiff1d(np.arange(len(log_interim)), slot)] = np.nan
    log_interim = log_interim.reshape(draws.shape)
    padding = np.isnan(draws[:, :, 0])
    if log_prior_column is not None:
        column = np.full(table.n_objects * n_draws, np.nan)
        column[slot] = table.numeric_column(log_prior_column)[rows]
        log_interim[:, :, 0] = column.reshape(table.n_objects, n_draws)
        interim = {"joint": f"column {log_prior_column!r} of the input"}
    else:
        for d, name in enumerate(parameters):
            log_interim[:, :, d] = np.where(padding, np.nan, declared[name].logpdf(draws[:, :, d]))
        outside = ~(np.isfinite(log_interim) | padding[:, :, None]).all(axis=(1, 2))
        if outside.any():
            n = int(np.flatnonzero(outside)[0])
            d = int(np.flatnonzero(~(np.isfinite(log_interim[n]) | padding[n][:, None]).all(axis=0))[0])
            raise InputDataError(
                f"{table.source}: object {table.ids[n]!r} has draws of {parameters[d]} outside the support of its "
                f"declared interim prior {declared[parameters[d]].spec}; the draws cannot come from that prior.")
        interim = {name: declared[name].spec for name in parameters}
    nan = np.full(table.n_objects, np.nan)
    samples = Samples(
        ids=list(table.ids), parameters=list(parameters), samples=draws, log_interim_prior=log_interim,
        log_likelihood=np.full((table.n_objects, n_draws), np.nan), draw_counts=draw_counts,
        diagnostics={"acceptance_fraction": nan, "autocorr_time": np.full((table.n_objects, len(parameters)), np.nan),
                     "n_steps": np.zeros(table.n_objects, dtype=np.int64),
                     "converged": np.ones(table.n_objects, dtype=bool), "effective_draws": nan},
        model="imported", interim_prior=interim,
        settings={"imported": True, "joint_interim_prior": log_prior_column is not None, "samples": n_draws,
                  "draws_per_object": {"min": int(counts.min()), "max": int(counts.max())},
                  "subsampling_seed": seed, "data": {"source": table.source, "sha256": table.sha256}},
        seed=seed, command=command)
    if output is not None:
        write_samples(samples, output, overwrite=overwrite)
    return samples
