"""Samples files (``popinfer_format = "samples"``): stage one's output.

Layout (README, "HDF5 layout")::

    attrs: popinfer_format, format_version, popinfer_version, created, command, seed,
           model, parameters, interim_prior (JSON), settings (JSON)
    /objects/id                          (N,) str
    /samples                             (N, K, D) f8, attr parameters
    /log_interim_prior                   (N, K, D) f8
    /log_likelihood                      (N, K) f8
    /diagnostics/acceptance_fraction     (N,) f8
    /diagnostics/autocorr_time           (N, D) f8
    /diagnostics/n_steps                 (N,) i8
    /diagnostics/converged               (N,) bool
    /diagnostics/effective_draws         (N,) f8   effectively independent draws among the
                                                   K stored (an addition; older files
                                                   recorded the kept half's n_steps·W/(2τ))
    /objects/n_draws                     (N,) i8   K_n ≤ K, the object's own draw count (an addition,
                                                   only in files where some K_n < K); draws k ≥ K_n
                                                   are padding, stored as NaN; without it K_n = K
    /objects/joint_interim_prior         (N, D) bool  columns whose interim density is one joint,
                                                   non-factorised density, stored in the first such
                                                   column of /log_interim_prior (0 in the others)
                                                   (an addition; without it: every column factorised,
                                                   or all joint if settings.joint_interim_prior)

A run in progress writes a *checkpoint* with the same datasets preallocated and
an attribute ``batches_committed`` that is bumped only after a batch's rows are
written and flushed (the commit marker, as emcee's HDF backend bumps
``iteration`` last). The finished file is written afresh from the checkpoint,
so a resumed run gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Optional

import h5py
import numpy as np

from ..blocks import object_blocks
from ..errors import FileFormatError, InputDataError, OutputError, UsageError
from .files import fsync_directory, open_locked
from .hdf5 import (STRING, attribute_value, check_dataset_types, check_self_contained, check_shapes, close_quietly,
                   discard, file_bytes, first_nonfinite_row, mapped, open_popinfer_file, publish, read_json_attr,
                   read_string_list, reserve_space, root_attributes, strings, temporary_path, write_root_attributes)

DIAGNOSTICS = {
    "acceptance_fraction": ("f8", ()),
    "autocorr_time": ("f8", ("D",)),
    "n_steps": ("i8", ()),
    "converged": ("bool", ()),
    "effective_draws": ("f8", ()),
}


@dataclass
class Samples:
    """Stage-one draws of every object, with provenance and diagnostics.

    Attributes
    ----------
    ids : list of str
        Object ids (N).
    parameters : list of str
        Sampled parameter names (D).
    samples : ndarray, shape (N, K, D)
        θ_nk, draws under the interim prior.
    log_interim_prior : ndarray, shape (N, K, D)
        ln p0 of each parameter at each draw.
    log_likelihood : ndarray, shape (N, K)
    diagnostics : dict of str -> ndarray
    model : str
    interim_prior : dict of str -> str
        Parameter -> distribution spec.
    settings : dict
    seed : int
    command : str
    attrs : dict
        Every root attribute as read (``created``, ``popinfer_version``, ...).
    draw_counts : ndarray of int, shape (N,), or None
        K_n, each object's own number of draws (None: all K). Draws k ≥ K_n are
        padding: NaN in ``samples``, ``log_interim_prior`` and ``log_likelihood``.
    joint_interim : ndarray of bool, shape (N, D), or None
        Columns whose interim density is one joint density, held in the first such
        column of ``log_interim_prior`` (zeros in the others); None: factorised.
    """

    ids: list
    parameters: list
    samples: np.ndarray
    log_interim_prior: np.ndarray
    log_likelihood: np.ndarray
    diagnostics: dict
    model: str
    interim_prior: dict
    settings: dict
    seed: int
    command: str = ""
    attrs: dict = field(default_factory=dict)
    draw_counts: Optional[np.ndarray] = None
    joint_interim: Optional[np.ndarray] = None

    @property
    def n_objects(self):
        return self.samples.shape[0]

    @property
    def n_draws(self):
        """K, the largest number of draws of any object (the second axis of ``samples``)."""
        return self.samples.shape[1]

    @property
    def object_draw_counts(self):
        """K_n of every object, (N,) int64 (all K when the file is not ragged)."""
        return counts_or_full(self.draw_counts, self.samples.shape[0], self.samples.shape[1])

    def object_index(self, object_id):
        return self.ids.index(str(object_id))

    def draws(self, parameter):
        """Draws of one parameter, shape (N, K)."""
        return self.samples[:, :, self.parameters.index(parameter)]


def _root_extra(model, parameters, interim_prior, settings):
    return {"model": model, "parameters": list(parameters), "interim_prior": dict(interim_prior),
            "settings": dict(settings)}


ID_BLOCK = 2**16  # ids written this many at a time: memory independent of N
DRAW_COUNTS = "objects/n_draws"
POSITIONS = "objects/position"
JOINT_INTERIM = "objects/joint_interim_prior"


def counts_or_full(draw_counts, n_objects, n_draws):
    """K_n of every object: ``draw_counts`` as int64, or K for all when it is None."""
    if draw_counts is None:
        return np.full(n_objects, n_draws, dtype=np.int64)
    return np.asarray(draw_counts, dtype=np.int64)


def padding_mask(draw_counts, n_draws):
    """(N, K) bool: True at the padded draws k ≥ K_n."""
    return np.arange(n_draws)[None, :] >= np.asarray(draw_counts)[:, None]


def is_ragged(draw_counts, n_draws):
    return draw_counts is not None and bool(np.any(np.asarray(draw_counts) < n_draws))


def create_layout(handle, n_objects, n_draws, parameters, ids, ragged=False, joint=False):
    """Create the datasets of a samples file (filled later or at once).

    ``ids`` is any sequence sliceable by blocks (a list, or an h5py dataset of strings).
    ``ragged`` adds ``/objects/n_draws``, ``joint`` ``/objects/joint_interim_prior``.
    """
    n_dim = len(parameters)
    id_dataset = handle.create_group("objects").create_dataset("id", shape=(n_objects,), dtype=STRING)
    for lo in range(0, n_objects, ID_BLOCK):
        block = ids[lo:lo + ID_BLOCK]
        id_dataset[lo:lo + len(block)] = strings(v.decode() if isinstance(v, bytes) else v for v in block)
    samples = handle.create_dataset("samples", shape=(n_objects, n_draws, n_dim), dtype="f8")
    samples.attrs["parameters"] = strings(parameters)
    handle.create_dataset("log_interim_prior", shape=(n_objects, n_draws, n_dim), dtype="f8")
    handle.create_dataset("log_likelihood", shape=(n_objects, n_draws), dtype="f8")
    group = handle.create_group("diagnostics")
    for name, (dtype, extra) in DIAGNOSTICS.items():
        group.create_dataset(name, shape=(n_objects,) + ((n_dim,) if extra else ()), dtype=dtype)
    if ragged:
        handle.create_dataset(DRAW_COUNTS, shape=(n_objects,), dtype="i8")
    if joint:
        handle.create_dataset(JOINT_INTERIM, shape=(n_objects, n_dim), dtype="bool")


def layout_bytes(n_objects, n_draws, n_dim):
    """Estimated size of a samples file (or checkpoint) of this shape."""
    return file_bytes(8 * n_objects * (n_draws * (2 * n_dim + 1) + 2 * n_dim + 4), n_objects)


def _row_datasets(handle):
    """(key, dataset) of every per-object dataset but the ids, in a fixed order (the
    optional draw counts and joint-interim flags last, where the file has them)."""
    return [("samples", handle["samples"]), ("log_interim_prior", handle["log_interim_prior"]),
            ("log_likelihood", handle["log_likelihood"])] + [(name, handle["diagnostics"][name])
                                                             for name in DIAGNOSTICS] + [
        (key, handle[path]) for key, path in (("draw_counts", DRAW_COUNTS), ("joint_interim", JOINT_INTERIM))
        if path in handle]


def _optional_rows(key, result, dataset):
    """A row block of an optional dataset, its default when ``result`` lacks it (or holds None)."""
    rows = result["samples"].shape[0]
    if key == "draw_counts":
        return np.full(rows, result["samples"].shape[1], dtype=np.int64)
    return np.zeros((rows,) + dataset.shape[1:], dtype=bool)


def write_rows(handle, start, result):
    """Write one batch's arrays at rows ``start:start+B``; returns the SHA-256 hex digest
    of what was written (the arrays in the file's types)."""
    stop = start + result["samples"].shape[0]
    digest = hashlib.sha256()
    for key, dataset in _row_datasets(handle):
        value = result.get(key)
        if value is None:
            value = _optional_rows(key, result, dataset)
        values = np.ascontiguousarray(value, dtype=dataset.dtype)
        dataset[start:stop] = values
        digest.update(memoryview(values).cast("B"))  # no copy
    return digest.hexdigest()


def masked(array, draw_counts):
    """A copy of ``array`` (N, K, ...) with the padded draws k ≥ K_n set to NaN (or
    ``array`` itself when nothing is padded)."""
    if draw_counts is None:
        return array
    pad = padding_mask(draw_counts, array.shape[1])
    if not pad.any():
        return array
    out = np.array(array, dtype=float)
    out[pad] = np.nan
    return out


def read_rows(handle, start, stop):
    """Rows ``start:stop`` of every per-object dataset, and their SHA-256 hex digest."""
    rows, digest = {}, hashlib.sha256()
    for key, dataset in _row_datasets(handle):
        rows[key] = np.ascontiguousarray(dataset[start:stop])
        digest.update(memoryview(rows[key]).cast("B"))
    return rows, digest.hexdigest()


def _new_file(path, samples, extra_attrs, ids, n_draws, ragged=False, joint=False):
    """An open h5py file at ``path`` with the root attributes and datasets of ``samples``."""
    handle = h5py.File(path, "w")
    write_root_attributes(handle, "samples", samples.command, samples.seed,
                          _root_extra(samples.model, samples.parameters, samples.interim_prior, samples.settings))
    for key, value in (extra_attrs or {}).items():
        handle.attrs[key] = value
    create_layout(handle, len(ids), n_draws, samples.parameters, ids, ragged, joint)
    return handle


def write_samples(samples, path, overwrite=False, extra_attrs=None, positions=None):
    """Write a :class:`Samples` to ``path`` atomically (``-``: stdout).

    ``extra_attrs`` are further root attributes (a shard's identity); ``positions`` (N,)
    int, in a shard file, where each of its objects goes in the file
    :func:`merge_shards` writes (``/objects/position``: a ``refine --shard`` shard's
    objects are not one slice of them).
    """
    check_unique_ids(samples.ids, f"The samples for {path}")
    reserve_space(path, layout_bytes(samples.n_objects, samples.n_draws, len(samples.parameters)))
    temporary, handle = temporary_path(path), None
    ragged = is_ragged(samples.draw_counts, samples.n_draws)
    counts = samples.draw_counts if ragged else None
    joint = samples.joint_interim is not None and bool(np.any(samples.joint_interim))
    try:
        with _new_file(temporary, samples, extra_attrs, samples.ids, samples.n_draws, ragged, joint) as handle:
            if positions is not None:
                handle.create_dataset(POSITIONS, data=np.asarray(positions, dtype=np.int64))
            write_rows(handle, 0, {"samples": masked(samples.samples, counts),
                                   "log_interim_prior": masked(samples.log_interim_prior, counts),
                                   "log_likelihood": masked(samples.log_likelihood, counts), **samples.diagnostics,
                                   "draw_counts": counts, "joint_interim": samples.joint_interim if joint else None})
        publish(temporary, path, overwrite)
    except BaseException:
        discard(handle, temporary)
        raise


def repeated_id(ids):
    """The first object id that ``ids`` holds twice (by the row of its second appearance) and the
    rows (0-based) that hold it, or None when every id is distinct."""
    if len(ids) < 2:
        return None
    _, first, inverse = np.unique(np.asarray(ids, dtype=str), return_index=True, return_inverse=True)
    again = np.flatnonzero(first[inverse] != np.arange(len(ids)))
    if not again.size:
        return None
    row = int(again[0])
    return ids[row], np.flatnonzero(inverse == inverse[row])


def _rows_text(rows):
    """Rows (0-based) as text, counting from 1: "2 and 6", "1, 4, 9 and 2 more"."""
    shown = [str(int(r) + 1) for r in rows[:5]]
    rest = [f"{len(rows) - 5} more"] if len(rows) > 5 else []
    words = shown + rest
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else words[0]


def check_unique_ids(ids, label):
    """Refuse samples to write whose object ids repeat (stage two would count the object twice)."""
    repeated = repeated_id(ids)
    if repeated is not None:
        raise InputDataError(f"{label}: the object id {repeated[0]!r} is given to several objects (rows "
                             f"{_rows_text(repeated[1])}, counting from 1); each object needs its own id, so "
                             f"nothing was written. Rename or join those objects.")


def check_finite_draws(draws, ids, label, offset=0, draw_counts=None):
    """Refuse NaN or ±inf draws, naming the first object that has one.

    ``draws`` holds objects ``offset, offset + 1, ...`` along axis 0; ``ids`` all ids;
    ``draw_counts`` (K_n of those objects) exempts the padded draws k ≥ K_n.

    Raises
    ------
    FileFormatError
    """
    row = first_nonfinite_row(draws)
    if row is not None and draw_counts is not None:
        pad = padding_mask(draw_counts, draws.shape[1])
        bad = ~(np.isfinite(draws).reshape(draws.shape[:2] + (-1,)).all(axis=2) | pad).any(axis=1)
        row = int(np.argmax(bad)) if bad.any() else None
    if row is not None:
        values = np.asarray(draws[row][:None if draw_counts is None else int(draw_counts[row])]).reshape(-1)
        bad = values[~np.isfinite(values)][0]
        raise FileFormatError(
            f"{label}: object {ids[offset + row]!r} has a non-finite draw ({bad}) in /samples. Draws must be "
            f"finite numbers; the file is damaged or was written by hand. Regenerate it, or fix or drop that "
            f"object's draws.")


def samples_from_handle(handle, label):
    """Read a samples file's content from an open, checked h5py handle."""
    header = read_header(handle, label)
    try:
        draws = handle["samples"][()]
        check_finite_draws(draws, header.ids, label, draw_counts=header.draw_counts)
        return Samples(
            ids=header.ids,
            parameters=header.parameters,
            samples=draws,
            log_interim_prior=handle["log_interim_prior"][()],
            log_likelihood=handle["log_likelihood"][()],
            diagnostics={name: handle["diagnostics"][name][()] for name in DIAGNOSTICS},
            model=header.model,
            interim_prior=header.interim_prior,
            settings=header.settings,
            seed=header.seed,
            command=str(handle.attrs.get("command", "")),
            attrs=root_attributes(handle),
            draw_counts=header.draw_counts,
            joint_interim=header.joint_interim,
        )
    except (KeyError, OSError, ValueError) as exc:
        raise FileFormatError(f"{label} is a damaged samples file: {exc}. Regenerate it.") from None


@dataclass
class SamplesHeader:
    """A samples file's provenance and shape, without its draws (see :func:`read_columns`)."""

    ids: list
    parameters: list
    n_objects: int
    n_draws: int
    model: str
    interim_prior: dict
    settings: dict
    seed: int
    draw_counts: Optional[np.ndarray] = None
    joint_interim: Optional[np.ndarray] = None

    @property
    def object_draw_counts(self):
        return counts_or_full(self.draw_counts, self.n_objects, self.n_draws)


# What each dataset of the layout holds (checked before any is read).
DATASET_TYPES = {"samples": "numbers", "log_interim_prior": "numbers", "log_likelihood": "numbers",
                 "objects/id": "strings", DRAW_COUNTS: "numbers", JOINT_INTERIM: "numbers", POSITIONS: "numbers",
                 **{f"diagnostics/{name}": "numbers" for name in DIAGNOSTICS}}


def _read_draw_counts(handle, label, n_objects, n_draws):
    """``/objects/n_draws`` checked (1 ≤ K_n ≤ K), or None when the file has none."""
    if DRAW_COUNTS not in handle:
        return None
    counts = handle[DRAW_COUNTS][()]
    if counts.shape != (n_objects,) or counts.dtype.kind not in "iu":
        raise FileFormatError(f"{label} is a damaged samples file: /{DRAW_COUNTS} has shape {counts.shape} and type "
                              f"{counts.dtype}, expected ({n_objects},) integers. Regenerate it.")
    bad = np.flatnonzero((counts < 1) | (counts > n_draws))
    if bad.size:
        raise FileFormatError(f"{label} is a damaged samples file: /{DRAW_COUNTS} gives object "
                              f"{int(bad[0])} {int(counts[bad[0]])} draws, expected 1 to K = {n_draws}. "
                              f"Regenerate it.")
    return counts.astype(np.int64)


def _read_joint_interim(handle, label, settings, n_objects, n_dim):
    """(N, D) bool of the joint interim columns, or None when every column is factorised."""
    if JOINT_INTERIM in handle:
        joint = handle[JOINT_INTERIM][()]
        if joint.shape != (n_objects, n_dim):
            raise FileFormatError(f"{label} is a damaged samples file: /{JOINT_INTERIM} has shape {joint.shape}, "
                                  f"expected {(n_objects, n_dim)}. Regenerate it.")
        return joint.astype(bool)
    if settings.get("joint_interim_prior"):  # import-samples with a log_prior column: all columns, every object
        return np.ones((n_objects, n_dim), dtype=bool)
    return None


def read_header(handle, label):
    """The :class:`SamplesHeader` of an open, checked samples file."""
    check_dataset_types(handle, label, "samples", DATASET_TYPES)
    try:
        samples = handle["samples"]
        if samples.ndim != 3:
            raise FileFormatError(f"{label} is a damaged samples file: /samples has shape {samples.shape}, expected "
                                  f"(objects, draws, parameters). Regenerate it.")
        n_objects, n_draws, n_dim = samples.shape
        ids = list(handle["objects/id"].asstr()[()])
        repeated = repeated_id(ids)
        if repeated is not None:
            raise FileFormatError(
                f"{label} holds the object id {repeated[0]!r} more than once (rows {_rows_text(repeated[1])} of "
                f"/objects/id, counting from 1): stage two would count that object twice. Give each object its "
                f"own id and regenerate the file (merge refuses overlapping shards).")
        parameters = read_string_list(samples.attrs["parameters"])
        diagnostics = handle.get("diagnostics", {})
        check_shapes(label, "samples", {
            "/samples": (samples.shape, samples.shape),
            "/objects/id": ((len(ids),), (n_objects,)),
            "the parameters attribute of /samples": ((len(parameters),), (n_dim,)),
            "/log_interim_prior": (handle["log_interim_prior"].shape, samples.shape),
            "/log_likelihood": (handle["log_likelihood"].shape, (n_objects, n_draws)),
            **{f"/diagnostics/{name}": (diagnostics[name].shape, (n_objects,) + ((n_dim,) if extra else ()))
               for name, (_, extra) in DIAGNOSTICS.items() if name in diagnostics},
        })
        settings = read_json_attr(handle, "settings", label, "samples")
        return SamplesHeader(
            ids=ids, parameters=parameters,
            n_objects=int(n_objects), n_draws=int(n_draws), model=str(handle.attrs["model"]),
            interim_prior=read_json_attr(handle, "interim_prior", label, "samples"),
            settings=settings,
            seed=int(handle.attrs["seed"]),
            draw_counts=_read_draw_counts(handle, label, n_objects, n_draws),
            joint_interim=_read_joint_interim(handle, label, settings, n_objects, n_dim))
    except (KeyError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{label} is a damaged samples file: {exc}. Regenerate it.") from None


def read_columns(handle, columns, label):
    """θ of some parameters and their summed interim log density, read by blocks of objects.

    Only these columns are kept (the file's other parameters, ``log_likelihood``
    and the diagnostics are never read), so memory is the draws needed and one block.

    Returns
    -------
    theta : ndarray, shape (N, K, P)
        NaN at the padded draws k ≥ K_n of a ragged file.
    log_interim_prior : ndarray, shape (N, K)
        Σ over the P columns of ln p0 (the interim prior is a product of 1-D priors, or
        a joint density held in the first of its columns).
    """
    try:
        samples, priors = handle["samples"], handle["log_interim_prior"]
        n_objects, n_draws, n_dim = samples.shape
        if priors.shape != samples.shape:
            raise ValueError(f"log_interim_prior has shape {priors.shape}, samples {samples.shape}")
        counts = _read_draw_counts(handle, label, n_objects, n_draws)
        theta = np.empty((n_objects, n_draws, len(columns)))
        log_interim = np.empty((n_objects, n_draws))
        for lo, hi in object_blocks(n_objects, n_draws * n_dim):
            theta[lo:hi] = samples[lo:hi][:, :, columns]
            if first_nonfinite_row(theta[lo:hi]) is not None:
                check_finite_draws(theta[lo:hi], list(handle["objects/id"].asstr()[()]), label, offset=lo,
                                   draw_counts=None if counts is None else counts[lo:hi])
            np.sum(priors[lo:hi][:, :, columns], axis=-1, out=log_interim[lo:hi])
    except (KeyError, OSError, ValueError) as exc:
        raise FileFormatError(f"{label} is a damaged samples file: {exc}. Regenerate it.") from None
    return theta, log_interim


def read_samples(path):
    """Read a samples file (``-`` reads stdin) into a :class:`Samples`.

    Raises
    ------
    FileFormatError
        Not a popinfer samples file, a newer format version, or damaged.
    """
    with open_popinfer_file(path, "samples") as handle:
        label = "<stdin>" if str(path) == "-" or isinstance(path, io.BytesIO) else str(path)
        return samples_from_handle(handle, label)


class Checkpoint:
    """The working file of a stage-one run, committed batch by batch.

    The file is opened without following a symbolic link (created with
    ``O_CREAT|O_EXCL``) and locked (``flock``) *before* anything in it is read or
    truncated, so a second run on the same output fails without touching it. Each
    committed batch has a SHA-256 of its rows; the rows and digest are written,
    flushed and ``fsync``-ed before the commit counter ``batches_committed`` is bumped
    (and ``fsync``-ed again). A resumed run verifies every committed batch, and the
    finished file is copied from the checkpoint batch by batch, verifying each again,
    so memory does not grow with N and damaged work is never published.

    Parameters
    ----------
    path : str
        Checkpoint file name.
    fingerprint : str
        Digest of everything that decides the results (data, model, priors,
        settings, seed); a resume must match it.
    """

    def __init__(self, path, fingerprint):
        self.path = str(path)
        self.fingerprint = fingerprint
        self.handle = None
        self.file = None

    @staticmethod
    def recorded_seed(path):
        """The seed recorded in the checkpoint at ``path`` (None when there is none, or it
        cannot be read): a run started without ``--seed`` resumes with the seed it drew."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as file:
            try:
                with h5py.File(file, "r") as handle:
                    return int(handle.attrs["seed"])
            except (OSError, KeyError, ValueError, TypeError):
                return None

    def start(self, resume, overwrite, ids, n_draws, parameters, bounds, root):
        """Continue the checkpoint (``resume`` and it exists) or create it afresh.

        ``bounds`` are the first rows of the batches and the end, ``root`` the root
        attributes (``command``, ``seed``, ``extra``). Returns the number of batches
        already committed.

        Raises
        ------
        OutputError
            Another run holds the checkpoint; it exists and neither ``resume`` nor
            ``overwrite`` is given; it is a symbolic link; it belongs to another run
            or fails verification.
        """
        try:
            self.file = open_locked(self.path, create=False)
        except FileNotFoundError:
            self.file = None
        if self.file is not None:
            if resume:
                return self._reopen(ids, n_draws, parameters, bounds)
            if not overwrite:
                self.close()
                raise OutputError(f"{self.path} holds an interrupted run's work. Add --resume to continue it, or "
                                  f"--overwrite to discard it and start over.")
            self.file.truncate(0)  # locked and verified to be a regular file: ours to discard
        else:
            try:
                self.file = open_locked(self.path, create=True)
            except FileExistsError:
                raise OutputError(f"{self.path} was created by another run just now; wait for it to finish, or "
                                  f"write to another output.") from None
        try:
            reserve_space(self.path, layout_bytes(len(ids), n_draws, len(parameters)))
            fsync_directory(os.path.dirname(self.path))
            self.handle = h5py.File(self.file, "w")
            write_root_attributes(self.handle, "samples-checkpoint", root["command"], root["seed"], root["extra"])
            self.handle.attrs["fingerprint"] = self.fingerprint
            self.handle.attrs["n_batches"] = np.int64(len(bounds) - 1)
            create_layout(self.handle, len(ids), n_draws, parameters, ids)
            group = self.handle.create_group("checkpoint")
            group.create_dataset("batch_start", data=np.asarray(bounds, dtype=np.int64))
            group.create_dataset("batch_sha256", shape=(len(bounds) - 1,), dtype="S64")
            self.handle.attrs["batches_committed"] = np.int64(0)
            self._sync()
        except BaseException:  # a checkpoint that never started holds nothing: leave nothing behind
            self.remove()
            raise
        return 0

    def _damaged(self, what):
        self.close()
        return OutputError(f"The checkpoint {self.path} is damaged: {what}. Its work cannot be trusted; start "
                           f"over with --overwrite (without --resume).")

    def _reopen(self, ids, n_draws, parameters, bounds):
        try:
            self.handle = h5py.File(self.file, "r+")
            check_self_contained(self.handle, self.path)
        except FileFormatError as exc:
            self.close()
            raise OutputError(str(exc)) from None
        except OSError as exc:
            raise self._damaged(f"it is not a readable HDF5 file ({exc})") from None
        if self.handle.attrs.get("fingerprint") != self.fingerprint:
            self.close()
            raise OutputError(
                f"The checkpoint {self.path} belongs to a run with other data, model, priors, settings or "
                f"seed, so --resume cannot continue it. Repeat the original command with --resume, or "
                f"start over with --overwrite."
            )
        try:
            expected = {"samples": (len(ids), n_draws, len(parameters)), "log_likelihood": (len(ids), n_draws),
                        "objects/id": (len(ids),), "checkpoint/batch_start": (len(bounds),),
                        "checkpoint/batch_sha256": (len(bounds) - 1,)}
            for name, shape in expected.items():
                if self.handle[name].shape != shape:
                    raise self._damaged(f"/{name} has shape {self.handle[name].shape}, this run needs {shape}")
            if not np.array_equal(self.handle["checkpoint/batch_start"][()], bounds):
                raise self._damaged("its batches are not this run's")
            for lo in range(0, len(ids), ID_BLOCK):
                if list(self.handle["objects/id"].asstr()[lo:lo + ID_BLOCK]) != list(ids[lo:lo + ID_BLOCK]):
                    raise self._damaged(f"its object ids (from row {lo}) are not this run's")
            committed = int(self.handle.attrs["batches_committed"])
            if not 0 <= committed <= len(bounds) - 1:
                raise self._damaged(f"batches_committed = {committed} of {len(bounds) - 1} batches")
            for index in range(committed):
                self._verified_rows(index)
        except KeyError as exc:
            raise self._damaged(f"it lacks {exc}") from None
        return committed

    def _verified_rows(self, index):
        """Batch ``index``'s rows, checked against the digest committed with them."""
        lo, hi = (int(v) for v in self.handle["checkpoint/batch_start"][index:index + 2])
        rows, digest = read_rows(self.handle, lo, hi)
        if self.handle["checkpoint/batch_sha256"][index].decode() != digest:
            raise self._damaged(f"batch {index + 1} (rows {lo + 1}-{hi}) does not match the checksum it was "
                                f"committed with (changed or never fully written)")
        return lo, rows

    def _sync(self):
        self.handle.flush()
        self.file.flush()
        os.fsync(self.file.fileno())

    def commit(self, batch_index, start, result):
        """Write a batch and its digest, make them durable, then bump the commit marker."""
        digest = write_rows(self.handle, start, result)
        self.handle["checkpoint/batch_sha256"][batch_index] = digest.encode()
        self._sync()
        self.handle.attrs["batches_committed"] = np.int64(batch_index + 1)
        self._sync()

    def committed(self):
        """The number of committed batches (0 when the checkpoint is not open)."""
        return int(self.handle.attrs["batches_committed"]) if self.handle is not None else 0

    def publish(self, path, overwrite, header, extra_attrs=None):
        """Write the finished file to ``path`` (``-``: stdout) from the verified checkpoint,
        batch by batch, and remove the checkpoint.

        ``header`` is a :class:`Samples` whose provenance fields (model, parameters,
        interim_prior, settings, seed, command) are recorded, with ``joint_interim``
        (N, D) when the interim prior is joint; its other arrays are unused.
        Returns a :class:`Samples` whose arrays are read-only memory maps of the file.
        """
        n_batches = int(self.handle.attrs["n_batches"])
        if self.committed() != n_batches:
            raise self._damaged(f"only {self.committed()} of {n_batches} batches are committed")
        n_objects, n_draws, n_dim = self.handle["samples"].shape
        reserve_space(path, layout_bytes(n_objects, n_draws, n_dim))
        temporary = temporary_path(path)
        try:
            ids = self.handle["objects/id"]
            joint = header.joint_interim if header.joint_interim is not None and header.joint_interim.any() else None
            with _new_file(temporary, header, extra_attrs, ids, self.handle["samples"].shape[1],
                           joint=joint is not None) as handle:
                for index in range(n_batches):
                    lo, rows = self._verified_rows(index)
                    if joint is not None:
                        rows["joint_interim"] = joint[lo:lo + rows["samples"].shape[0]]
                    write_rows(handle, lo, rows)
            result = _mapped_samples(temporary, header)
            publish(temporary, path, overwrite)
        except BaseException:
            discard(None, temporary)
            raise
        self.remove()
        return result

    def remove(self):
        """Delete the checkpoint (while still holding its lock), then close it."""
        if self.file is not None:
            os.unlink(self.path)
        self.close()

    def close(self):
        """Close, quietly: after a failure (a full disk fails the final flush too) the
        batches committed before it are kept, as the marker moves only after a flush."""
        close_quietly(self.handle)
        self.handle = None
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None


def _mapped_samples(path, header):
    """A :class:`Samples` of the finished file at ``path``: arrays as read-only memory maps."""
    with h5py.File(path, "r") as handle:
        def array(dataset):
            view = mapped(dataset, path)
            return dataset[()] if view is None else view

        n_objects, n_draws, n_dim = handle["samples"].shape
        return Samples(
            ids=list(handle["objects/id"].asstr()[()]), parameters=list(header.parameters),
            samples=array(handle["samples"]), log_interim_prior=array(handle["log_interim_prior"]),
            log_likelihood=array(handle["log_likelihood"]),
            diagnostics={name: array(handle["diagnostics"][name]) for name in DIAGNOSTICS},
            model=header.model, interim_prior=header.interim_prior, settings=header.settings, seed=header.seed,
            command=header.command, attrs=root_attributes(handle),
            draw_counts=_read_draw_counts(handle, path, n_objects, n_draws),
            joint_interim=_read_joint_interim(handle, path, header.settings, n_objects, n_dim))


def _with_output(command, output):
    """The recorded command with its ``--output`` replaced by ``output``: what an
    unsharded run writing there would have recorded."""
    words = shlex.split(command) if command else []
    if output is not None and "--output" in words[:-1]:
        words[words.index("--output") + 1] = str(output)
        return shlex.join(words)
    return command


def _places(positions, ordered, n_objects):
    """Where each shard's objects go in the merged file: one slice after the other, or (shards
    of ``refine --shard``) their ``/objects/position``, which must cover every object once."""
    if all(p is None for p in positions):
        offsets = np.cumsum([0] + [shard[4].n_objects for shard in ordered])
        return [np.arange(lo, hi) for lo, hi in zip(offsets[:-1], offsets[1:])]
    for place, shard in zip(positions, ordered):
        if place is None or place.shape != (shard[4].n_objects,):
            raise FileFormatError(f"{shard[5]} has no /{POSITIONS} for each of its objects, unlike the other shards: "
                                  f"the shards do not belong together (one is damaged or from another run).")
    every = np.concatenate(positions)
    if not np.array_equal(np.sort(every), np.arange(n_objects)):
        raise FileFormatError(f"The shards' /{POSITIONS} do not place each of the run's {n_objects} objects once: "
                              f"a shard is damaged. Redo the odd shard.")
    return positions


def _write_rows_at(handle, places, rows):
    """``rows`` at the file rows ``places``, one run of consecutive places at a time."""
    breaks = np.flatnonzero(np.diff(places) != 1) + 1
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(places)]):
        write_rows(handle, int(places[lo]), {key: value[lo:hi] for key, value in rows.items()})


def _shard_identity(handle, path):
    """(I, N, fingerprint, objects in the whole run) of a shard file, its attributes checked.

    Raises
    ------
    FileFormatError
        Naming the file and the attribute that is missing or malformed.
    """
    def attribute(key):
        if key not in handle.attrs:
            raise FileFormatError(f"{path} is a damaged shard: it has no {key!r} attribute. Redo that shard.")
        return attribute_value(handle, key)

    def damaged(key, value, expected):
        return FileFormatError(f"{path} is a damaged shard: its {key!r} attribute is {value!r}, expected "
                               f"{expected}. Redo that shard.")

    shard, fingerprint, total = attribute("shard"), attribute("fingerprint"), attribute("n_objects_total")
    if not (isinstance(shard, str) and re.fullmatch(r"[0-9]+/[0-9]+", shard)):
        raise damaged("shard", shard, "I/N (shard I of N)")
    index, count = (int(v) for v in shard.split("/"))
    if not 1 <= index <= count:
        raise damaged("shard", shard, "I/N with 1 <= I <= N")
    if not isinstance(fingerprint, str):
        raise damaged("fingerprint", fingerprint, "text")
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise damaged("n_objects_total", total, "a whole number of objects, at least 1")
    return index, count, fingerprint, total


def merge_shards(paths, output=None, overwrite=False):
    """Join the shard files of one ``--shard I/N`` run into the file an unsharded run writes.

    With ``output`` the shards are copied into it by blocks of objects (memory does not
    grow with N) and the result's arrays are read-only memory maps of the file.

    Raises
    ------
    FileFormatError
        A file is not a shard, or the shards differ in data, model, priors,
        settings or seed, or a shard is missing or given twice.
    """
    paths = list(paths)
    if any(str(path) == "-" for path in paths):
        raise UsageError("merge reads each shard twice (to check, then to copy), which standard input cannot be: "
                         "give the shards as files, not -.")
    shards, positions = [], []
    for path in paths:
        with open_popinfer_file(path, "samples") as handle:
            if "shard" not in handle.attrs:
                raise FileFormatError(f"{path} is a whole samples file, not a shard (no shard attribute).")
            index, count, fingerprint, total = _shard_identity(handle, path)
            shards.append((index, count, fingerprint, total,
                           read_header(handle, str(path)), str(path), str(handle.attrs.get("command", ""))))
            positions.append(handle[POSITIONS][()].astype(np.int64) if POSITIONS in handle else None)
    if not shards:
        raise FileFormatError("No shard files given.")
    first = shards[0]
    for _, _, _, _, content, path, _ in shards[1:]:
        if content.parameters != first[4].parameters or content.n_draws != first[4].n_draws:
            raise FileFormatError(
                f"{path} holds {content.n_draws} draws of {', '.join(content.parameters)} per object but {first[5]} "
                f"holds {first[4].n_draws} of {', '.join(first[4].parameters)}: the shards do not belong together "
                f"(one is damaged or from another run). Refit the odd shard.")
    for index, count, fingerprint, _, _, path, _ in shards[1:]:
        if count != first[1]:
            raise FileFormatError(f"{path} is shard {index}/{count} but {first[5]} is one of {first[1]}; they come "
                                  f"from different runs.")
        if fingerprint != first[2]:
            raise FileFormatError(f"{path} and {first[5]} come from runs with different data, model, priors, "
                                  f"settings or seed; they cannot be merged.")
    seen = {}
    for index, _, _, _, _, path, _ in shards:
        if index in seen:
            raise FileFormatError(f"Shard {index}/{first[1]} is given twice: {seen[index]} and {path}.")
        seen[index] = path
    missing = sorted(set(range(1, first[1] + 1)) - set(seen))
    if missing:
        raise FileFormatError(f"Shard(s) {', '.join(f'{i}/{first[1]}' for i in missing)} are missing; merge needs "
                              f"all {first[1]}.")
    order = sorted(range(len(shards)), key=lambda k: shards[k][0])
    ordered = [shards[k] for k in order]
    n_objects = sum(shard[4].n_objects for shard in ordered)
    if n_objects != first[3]:
        raise FileFormatError(f"The shards hold {n_objects} objects, but the run had {first[3]}.")
    places = _places([positions[k] for k in order], ordered, n_objects)
    top = ordered[0][4]
    ids = [None] * n_objects
    for shard, place in zip(ordered, places):
        for k, object_id in enumerate(shard[4].ids):
            ids[place[k]] = object_id
    repeated = repeated_id(ids)
    if repeated is not None:
        holding = [shard[5] for shard in ordered if repeated[0] in shard[4].ids]
        raise FileFormatError(f"The object id {repeated[0]!r} is in more than one shard ({', '.join(holding)}): "
                              f"the shards overlap, so merging them would hold that object twice. Merge the "
                              f"shards of one --shard I/N run, each once.")
    header = Samples(ids=ids, parameters=top.parameters, samples=None,
                     log_interim_prior=None, log_likelihood=None, diagnostics={}, model=top.model,
                     interim_prior=top.interim_prior, settings=top.settings, seed=top.seed,
                     command=_with_output(ordered[0][6], output))
    if output is None:
        parts = []
        for shard in ordered:
            with open_popinfer_file(shard[5], "samples") as handle:
                parts.append(samples_from_handle(handle, shard[5]))
        where = np.argsort(np.concatenate(places), kind="stable")  # merged row r is concatenated row where[r]

        def joined(arrays):
            return np.concatenate(arrays)[where]

        header.samples, header.log_interim_prior, header.log_likelihood = (
            joined([getattr(part, key) for part in parts])
            for key in ("samples", "log_interim_prior", "log_likelihood"))
        header.diagnostics = {k: joined([part.diagnostics[k] for part in parts]) for k in DIAGNOSTICS}
        if any(part.draw_counts is not None for part in parts):
            header.draw_counts = joined([part.object_draw_counts for part in parts])
        if any(part.joint_interim is not None for part in parts):
            header.joint_interim = joined([
                part.joint_interim if part.joint_interim is not None else np.zeros(part.samples.shape[::2], bool)
                for part in parts])
        return header
    reserve_space(output, layout_bytes(n_objects, top.n_draws, len(top.parameters)))
    temporary, handle = temporary_path(output), None
    try:
        ragged = any(shard[4].draw_counts is not None for shard in ordered)
        joint = any(shard[4].joint_interim is not None for shard in ordered)
        with _new_file(temporary, header, None, header.ids, top.n_draws, ragged, joint) as handle:
            for shard, place in zip(ordered, places):
                label, size = shard[5], shard[4].n_objects
                with open_popinfer_file(label, "samples") as source:
                    for lo, hi in object_blocks(size, top.n_draws * len(top.parameters)):
                        rows, _ = read_rows(source, lo, hi)
                        check_finite_draws(rows["samples"], shard[4].ids, label, offset=lo,
                                           draw_counts=rows.get("draw_counts"))
                        if joint and "joint_interim" not in rows and shard[4].joint_interim is not None:
                            rows["joint_interim"] = shard[4].joint_interim[lo:hi]
                        _write_rows_at(handle, place[lo:hi], rows)
        result = _mapped_samples(temporary, header)
        publish(temporary, output, overwrite)
    except BaseException:
        discard(handle, temporary)
        raise
    return result
