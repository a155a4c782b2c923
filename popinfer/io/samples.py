"""Samples files (``popinfer_format = "samples"``): stage one's output.

Layout (CONTRACT §4)::

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
    /diagnostics/effective_draws         (N,) f8   n_steps·W/(2τ): effectively independent
                                                   positions in the kept half (an addition)

A run in progress writes a *checkpoint* with the same datasets preallocated and
an attribute ``batches_committed`` that is bumped only after a batch's rows are
written and flushed (the commit marker, as emcee's HDF backend bumps
``iteration`` last). The finished file is written afresh from the checkpoint,
so a resumed run gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import os
import shlex
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..blocks import object_blocks
from ..errors import FileFormatError, OutputError
from .hdf5 import (check_shapes, close_quietly, discard, file_bytes, first_nonfinite_row, open_popinfer_file, publish, read_json_attr, read_string_list,
                   reserve_space, root_attributes, strings, temporary_path, write_root_attributes)

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

    @property
    def n_objects(self):
        return self.samples.shape[0]

    @property
    def n_draws(self):
        return self.samples.shape[1]

    def object_index(self, object_id):
        return self.ids.index(str(object_id))

    def draws(self, parameter):
        """Draws of one parameter, shape (N, K)."""
        return self.samples[:, :, self.parameters.index(parameter)]


def _root_extra(model, parameters, interim_prior, settings):
    return {"model": model, "parameters": list(parameters), "interim_prior": dict(interim_prior),
            "settings": dict(settings)}


def create_layout(handle, n_objects, n_draws, parameters, ids):
    """Create the datasets of a samples file (filled later or at once)."""
    n_dim = len(parameters)
    handle.create_group("objects").create_dataset("id", data=strings(ids))
    samples = handle.create_dataset("samples", shape=(n_objects, n_draws, n_dim), dtype="f8")
    samples.attrs["parameters"] = strings(parameters)
    handle.create_dataset("log_interim_prior", shape=(n_objects, n_draws, n_dim), dtype="f8")
    handle.create_dataset("log_likelihood", shape=(n_objects, n_draws), dtype="f8")
    group = handle.create_group("diagnostics")
    for name, (dtype, extra) in DIAGNOSTICS.items():
        group.create_dataset(name, shape=(n_objects,) + ((n_dim,) if extra else ()), dtype=dtype)


def layout_bytes(n_objects, n_draws, n_dim):
    """Estimated size of a samples file (or checkpoint) of this shape."""
    return file_bytes(8 * n_objects * (n_draws * (2 * n_dim + 1) + 2 * n_dim + 4), n_objects)


def write_rows(handle, start, result):
    """Write one batch's arrays at rows ``start:start+B``."""
    stop = start + result["samples"].shape[0]
    handle["samples"][start:stop] = result["samples"]
    handle["log_interim_prior"][start:stop] = result["log_interim_prior"]
    handle["log_likelihood"][start:stop] = result["log_likelihood"]
    for name in DIAGNOSTICS:
        handle["diagnostics"][name][start:stop] = result[name]


def write_samples(samples, path, overwrite=False, extra_attrs=None):
    """Write a :class:`Samples` to ``path`` atomically (``-``: stdout).

    ``extra_attrs`` are further root attributes (a shard's identity).
    """
    reserve_space(path, layout_bytes(samples.n_objects, samples.n_draws, len(samples.parameters)))
    temporary, handle = temporary_path(path), None
    try:
        with h5py.File(temporary, "w") as handle:
            write_root_attributes(
                handle, "samples", samples.command, samples.seed,
                _root_extra(samples.model, samples.parameters, samples.interim_prior, samples.settings))
            for key, value in (extra_attrs or {}).items():
                handle.attrs[key] = value
            create_layout(handle, samples.n_objects, samples.n_draws, samples.parameters, samples.ids)
            write_rows(handle, 0, {"samples": samples.samples, "log_interim_prior": samples.log_interim_prior,
                                   "log_likelihood": samples.log_likelihood, **samples.diagnostics})
        publish(temporary, path, overwrite)
    except BaseException:
        discard(handle, temporary)
        raise


def check_finite_draws(draws, ids, label, offset=0):
    """Refuse NaN or ±inf draws, naming the first object that has one.

    ``draws`` holds objects ``offset, offset + 1, ...`` along axis 0; ``ids`` all ids.

    Raises
    ------
    FileFormatError
    """
    row = first_nonfinite_row(draws)
    if row is not None:
        values = np.asarray(draws[row]).reshape(-1)
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
        check_finite_draws(draws, header.ids, label)
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


def read_header(handle, label):
    """The :class:`SamplesHeader` of an open, checked samples file."""
    try:
        samples = handle["samples"]
        if samples.ndim != 3:
            raise FileFormatError(f"{label} is a damaged samples file: /samples has shape {samples.shape}, expected "
                                  f"(objects, draws, parameters). Regenerate it.")
        n_objects, n_draws, n_dim = samples.shape
        ids = list(handle["objects/id"].asstr()[()])
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
        return SamplesHeader(
            ids=ids, parameters=parameters,
            n_objects=int(n_objects), n_draws=int(n_draws), model=str(handle.attrs["model"]),
            interim_prior=read_json_attr(handle, "interim_prior", label, "samples"),
            settings=read_json_attr(handle, "settings", label, "samples"),
            seed=int(handle.attrs["seed"]))
    except (KeyError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{label} is a damaged samples file: {exc}. Regenerate it.") from None


def read_columns(handle, columns, label):
    """θ of some parameters and their summed interim log density, read by blocks of objects.

    Only these columns are kept (the file's other parameters, ``log_likelihood``
    and the diagnostics are never read), so memory is the draws needed and one block.

    Returns
    -------
    theta : ndarray, shape (N, K, P)
    log_interim_prior : ndarray, shape (N, K)
        Σ over the P columns of ln p0 (the interim prior is a product of 1-D priors).
    """
    try:
        samples, priors = handle["samples"], handle["log_interim_prior"]
        n_objects, n_draws, n_dim = samples.shape
        if priors.shape != samples.shape:
            raise ValueError(f"log_interim_prior has shape {priors.shape}, samples {samples.shape}")
        theta = np.empty((n_objects, n_draws, len(columns)))
        log_interim = np.empty((n_objects, n_draws))
        for lo, hi in object_blocks(n_objects, n_draws * n_dim):
            theta[lo:hi] = samples[lo:hi][:, :, columns]
            if first_nonfinite_row(theta[lo:hi]) is not None:
                check_finite_draws(theta[lo:hi], list(handle["objects/id"].asstr()[()]), label, offset=lo)
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

    def create(self, n_objects, n_draws, parameters, ids, n_batches, root):
        reserve_space(self.path, layout_bytes(n_objects, n_draws, len(parameters)))
        try:
            self.handle = h5py.File(self.path, "w")
        except OSError as exc:
            raise OutputError(f"Cannot create the checkpoint {self.path}: {exc}. Is another run writing it?") from None
        try:
            write_root_attributes(self.handle, "samples-checkpoint", root["command"], root["seed"], root["extra"])
            self.handle.attrs["fingerprint"] = self.fingerprint
            self.handle.attrs["n_batches"] = np.int64(n_batches)
            create_layout(self.handle, n_objects, n_draws, parameters, ids)
            self.handle.attrs["batches_committed"] = np.int64(0)
            self.handle.flush()
        except BaseException:  # a checkpoint that never started holds nothing: leave nothing behind
            discard(self.handle, self.path)
            self.handle = None
            raise

    def open_existing(self):
        """Reopen for resuming; returns the number of committed batches."""
        try:
            self.handle = h5py.File(self.path, "r+")
        except OSError as exc:
            raise OutputError(
                f"Cannot reopen the checkpoint {self.path} to resume ({exc}). It is damaged or another "
                f"run is using it; run without --resume and with --overwrite to start over."
            ) from None
        found = self.handle.attrs.get("fingerprint")
        if found != self.fingerprint:
            self.close()
            raise OutputError(
                f"The checkpoint {self.path} belongs to a run with other data, model, priors, settings or "
                f"seed, so --resume cannot continue it. Repeat the original command with --resume, or "
                f"start over with --overwrite."
            )
        return int(self.handle.attrs["batches_committed"])

    def commit(self, batch_index, start, result):
        """Write a batch, flush, then bump the commit marker and flush again."""
        write_rows(self.handle, start, result)
        self.handle.flush()
        self.handle.attrs["batches_committed"] = np.int64(batch_index + 1)
        self.handle.flush()

    def read(self):
        return samples_from_handle(self.handle, self.path)

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def close_after_failure(self):
        """Close after a failure (a full disk fails the final flush too): the batches
        committed before it are kept, as the commit marker is bumped only after a flush."""
        close_quietly(self.handle)
        self.handle = None


def _with_output(command, output):
    """The recorded command with its ``--output`` replaced by ``output``: what an
    unsharded run writing there would have recorded."""
    words = shlex.split(command) if command else []
    if output is not None and "--output" in words[:-1]:
        words[words.index("--output") + 1] = str(output)
        return shlex.join(words)
    return command


def merge_shards(paths, output=None, overwrite=False):
    """Join the shard files of one ``--shard I/N`` run into the file an unsharded run writes.

    Raises
    ------
    FileFormatError
        A file is not a shard, or the shards differ in data, model, priors,
        settings or seed, or a shard is missing or given twice.
    """
    shards = []
    for path in paths:
        with open_popinfer_file(path, "samples") as handle:
            if "shard" not in handle.attrs:
                raise FileFormatError(f"{path} is a whole samples file, not a shard (no shard attribute).")
            index, count = (int(v) for v in str(handle.attrs["shard"]).split("/"))
            shards.append((index, count, str(handle.attrs["fingerprint"]), int(handle.attrs["n_objects_total"]),
                           samples_from_handle(handle, str(path)), str(path)))
    if not shards:
        raise FileFormatError("No shard files given.")
    first = shards[0]
    for _, _, _, _, content, path in shards[1:]:
        if content.parameters != first[4].parameters or content.n_draws != first[4].n_draws:
            raise FileFormatError(
                f"{path} holds {content.n_draws} draws of {', '.join(content.parameters)} per object but {first[5]} "
                f"holds {first[4].n_draws} of {', '.join(first[4].parameters)}: the shards do not belong together "
                f"(one is damaged or from another run). Refit the odd shard.")
    for index, count, fingerprint, _, _, path in shards[1:]:
        if count != first[1]:
            raise FileFormatError(f"{path} is shard {index}/{count} but {first[5]} is one of {first[1]}; they come "
                                  f"from different runs.")
        if fingerprint != first[2]:
            raise FileFormatError(f"{path} and {first[5]} come from runs with different data, model, priors, "
                                  f"settings or seed; they cannot be merged.")
    seen = {}
    for index, _, _, _, _, path in shards:
        if index in seen:
            raise FileFormatError(f"Shard {index}/{first[1]} is given twice: {seen[index]} and {path}.")
        seen[index] = path
    missing = sorted(set(range(1, first[1] + 1)) - set(seen))
    if missing:
        raise FileFormatError(f"Shard(s) {', '.join(f'{i}/{first[1]}' for i in missing)} are missing; merge needs "
                              f"all {first[1]}.")
    ordered = [shard[4] for shard in sorted(shards, key=lambda s: s[0])]
    merged = Samples(
        ids=[i for s in ordered for i in s.ids], parameters=ordered[0].parameters,
        samples=np.concatenate([s.samples for s in ordered]),
        log_interim_prior=np.concatenate([s.log_interim_prior for s in ordered]),
        log_likelihood=np.concatenate([s.log_likelihood for s in ordered]),
        diagnostics={k: np.concatenate([s.diagnostics[k] for s in ordered]) for k in DIAGNOSTICS},
        model=ordered[0].model, interim_prior=ordered[0].interim_prior, settings=ordered[0].settings,
        seed=ordered[0].seed, command=_with_output(ordered[0].command, output))
    if merged.n_objects != first[3]:
        raise FileFormatError(f"The shards hold {merged.n_objects} objects, but the run had {first[3]}.")
    if output is not None:
        write_samples(merged, output, overwrite=overwrite)
    return merged
