"""Shared HDF5 plumbing: root attributes, format checks, atomic output, stdin/stdout."""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import io
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..errors import FileFormatError, OutputError, PopinferError
from .files import (atomic_output, check_output, file_sha256, publish, release, remove_temporary,  # noqa: F401 (re-exported)
                    reserves_stdout, stdout_reserved_for_data, temporary_path, work_directory)

FORMAT_VERSION = 1
STRING = h5py.string_dtype("utf-8")


def created_timestamp():
    """ISO 8601 creation time; ``SOURCE_DATE_EPOCH`` fixes it (reproducible files)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch
              else _dt.datetime.now(_dt.timezone.utc))
    return moment.replace(microsecond=0).isoformat()


def write_root_attributes(handle, kind, command, seed, extra):
    """The root attributes every popinfer file has, then ``extra`` (JSON for dicts)."""
    handle.attrs["popinfer_format"] = kind
    handle.attrs["format_version"] = np.int64(FORMAT_VERSION)
    handle.attrs["popinfer_version"] = __version__
    handle.attrs["created"] = created_timestamp()
    handle.attrs["command"] = command or ""
    handle.attrs["seed"] = np.int64(seed)
    for key, value in extra.items():
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        elif isinstance(value, (list, tuple)):
            value = np.array([str(v) for v in value], dtype=STRING)
        handle.attrs[key] = value


def root_attributes(handle):
    """All root attributes as Python values (scalars unwrapped)."""
    return {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in handle.attrs.items()}


def strings(values):
    """A variable-length UTF-8 string array for h5py."""
    return np.array([str(v) for v in values], dtype=STRING)


def read_json_attr(handle, key, label=None, kind="popinfer"):
    """A JSON-object root attribute as a dict ({} when absent).

    Raises
    ------
    FileFormatError
        The attribute is not JSON, or not a JSON object (when ``label`` names the file).
    """
    if key not in handle.attrs:
        return {}
    value = json.loads(handle.attrs[key])
    if label is not None and not isinstance(value, dict):
        raise FileFormatError(f"{label} is a damaged {kind} file: the attribute {key!r} is {type(value).__name__} "
                              f"JSON, expected a JSON object. Regenerate it.")
    return value


def check_shapes(label, kind, shapes):
    """Check dataset shapes against the layout.

    ``shapes`` maps a dataset name to ``(found shape, expected shape)``; the expected
    shape's entries are integers. Every axis of the layout must be at least 1 long.

    Raises
    ------
    FileFormatError
        Naming the file, the dataset, the shape found and the shape expected.
    """
    for name, (found, expected) in shapes.items():
        found = tuple(int(n) for n in found)
        if found != tuple(expected):
            raise FileFormatError(f"{label} is a damaged {kind} file: {name} has shape {found}, expected "
                                  f"{tuple(expected)}. Regenerate it.")
        if 0 in found:
            raise FileFormatError(f"{label} is a damaged {kind} file: {name} has shape {found}, with an empty "
                                  f"axis (no objects, draws or parameters). Regenerate it.")


def _holds(dtype):
    """What a dataset of ``dtype`` holds, in words."""
    if dtype.kind == "c":
        return f"complex numbers ({dtype})"
    if dtype.kind in "SU" or h5py.check_string_dtype(dtype) is not None:
        return "strings"
    return f"values of type {dtype}"


def check_dataset_types(handle, label, kind, expected):
    """Check that each dataset of the layout is a dataset holding what it should.

    ``expected`` maps a path to ``"numbers"`` (real: bool, integer or floating point) or
    ``"strings"`` (text or bytes); a path the file lacks is skipped (the reader reports
    it if it needs it).

    Raises
    ------
    FileFormatError
        Naming the file, the dataset and what it is instead.
    """
    for name, holds in expected.items():
        item = handle.get(name)
        if item is None:
            continue
        if not isinstance(item, h5py.Dataset):
            what = "a group" if isinstance(item, h5py.Group) else "a named datatype"
            raise FileFormatError(f"{label} is a damaged {kind} file: /{name} is {what}, not a dataset of "
                                  f"{holds}. Regenerate it.")
        if holds == "strings":
            fits = h5py.check_string_dtype(item.dtype) is not None
        else:
            fits = item.dtype.kind in "biuf"
        if not fits:
            wanted = "real numbers" if holds == "numbers" else holds
            raise FileFormatError(f"{label} is a damaged {kind} file: /{name} holds {_holds(item.dtype)}, not "
                                  f"{wanted}. Regenerate it.")


def attribute_value(handle, key):
    """Root attribute ``key`` as a Python value (None when absent): a scalar unwrapped, as in
    :func:`root_attributes`, and fixed-length bytes decoded as text."""
    if key not in handle.attrs:
        return None
    value = handle.attrs[key]
    if hasattr(value, "item") and np.ndim(value) == 0:
        value = value.item()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def format_kind(handle):
    """The ``popinfer_format`` root attribute as text (None when absent); written as a
    variable-length string, read as well from fixed-length bytes."""
    found = attribute_value(handle, "popinfer_format")
    return None if found is None else str(found)


def first_nonfinite_row(values):
    """Index of the first row (axis 0) of ``values`` holding NaN or ±inf, or None."""
    bad = ~np.isfinite(values).reshape(len(values), -1).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def read_string_list(value):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)]


@contextmanager
def open_popinfer_file(path, kind=None):
    """Open a popinfer HDF5 file for reading (``-`` reads stdin) and check it.

    ``path`` may also be a binary file object (``io.BytesIO``, a spooled
    temporary file) holding the file; it is labelled ``<stdin>``.

    Raises
    ------
    FileFormatError
        If the file is missing, not HDF5, not a popinfer file, of another kind
        than ``kind``, or of a newer format version.
    """
    if hasattr(path, "read"):
        label, source = "<stdin>", path
    elif str(path) == "-":
        label, source = "<stdin>", io.BytesIO(sys.stdin.buffer.read())
    else:
        label = str(path)
        if not Path(path).exists():
            raise FileFormatError(f"{label} does not exist.")
        source = str(path)
    try:
        handle = h5py.File(source, "r")
    except OSError as exc:
        raise FileFormatError(
            f"{label} is not a readable HDF5 file ({exc}). It may be truncated or corrupted; "
            f"regenerate it."
        ) from None
    try:
        found = format_kind(handle)
        if found is None:
            raise FileFormatError(f"{label} is an HDF5 file but not one written by popinfer (no popinfer_format attribute).")
        version = int(handle.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise FileFormatError(
                f"{label} has format_version {version}, newer than this popinfer ({__version__}) reads "
                f"(up to {FORMAT_VERSION}). Upgrade popinfer."
            )
        if kind is not None and found != kind:
            raise FileFormatError(f"{label} is a popinfer {found} file; expected a {kind} file.")
        check_self_contained(handle, label)
    except PopinferError:
        handle.close()
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:  # how h5py reports damaged content
        handle.close()
        raise FileFormatError(f"{label} is damaged or incomplete ({exc}). Regenerate it.") from None
    try:
        yield handle
    except (OSError, KeyError, ValueError, TypeError) as exc:
        # In the body only what h5py raised while reading is damaged content; any other
        # exception (a bug in the caller's code) propagates as it is.
        if not _raised_by_h5py(exc):
            raise
        raise FileFormatError(f"{label} is damaged or incomplete ({exc}). Regenerate it.") from None
    finally:
        handle.close()


def _raised_by_h5py(exc):
    """Whether the innermost frame of ``exc``'s traceback is h5py's code."""
    traceback = exc.__traceback__
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return "h5py" in Path(traceback.tb_frame.f_code.co_filename).parts


# zlib cannot expand data more than about 1032-fold; a dataset that claims more
# than this over what it stores is a decompression bomb or unwritten (fill values).
MAX_EXPANSION = 1100
SMALL_DATASET_BYTES = 2**20


def memory_bytes():
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_self_contained(handle, label):
    """Refuse an HDF5 file that reaches outside itself or declares more than it holds.

    External links, datasets with external storage and virtual datasets would let
    a crafted file make popinfer read (and print) any local file; a dataset whose
    declared size is far beyond what it stores, or beyond the machine's memory, would
    make a reader allocate it. Every link and dataset is checked before anything is read.

    Raises
    ------
    FileFormatError
        Naming the file and the offending link or dataset.
    """
    problems = []
    limit = memory_bytes()

    def visit(name, link):
        if isinstance(link, h5py.ExternalLink):
            problems.append(f"/{name} is an external link to {link.filename}:{link.path}")
            return
        if not isinstance(link, h5py.HardLink):
            return  # a soft link names a path inside this file, checked where it lives
        item = handle.get(name)
        if not isinstance(item, h5py.Dataset):
            return
        if item.is_virtual:
            problems.append(f"/{name} is a virtual dataset (it maps other files)")
        elif item.external:
            problems.append(f"/{name} keeps its data in external file(s) "
                            f"{', '.join(str(entry[0]) for entry in item.external)}")
        else:
            declared = int(item.size) * item.dtype.itemsize
            stored = item.id.get_storage_size()
            if declared > limit:
                problems.append(f"/{name} declares shape {item.shape} ({declared / 2**30:.3g} GiB), more than "
                                f"this machine's memory ({limit / 2**30:.3g} GiB)")
            elif declared > MAX_EXPANSION * stored + SMALL_DATASET_BYTES:
                problems.append(f"/{name} declares shape {item.shape} ({declared / 2**20:.3g} MiB) but stores "
                                f"only {stored} bytes")

    handle.visititems_links(visit)
    if problems:
        raise FileFormatError(
            f"{label} is refused: {'; '.join(problems[:5])}. popinfer reads only self-contained files whose "
            f"datasets hold the data they declare; regenerate the file, or rewrite it without links to other "
            f"files (e.g. h5repack).")


@contextmanager
def spooled_input(path, block=2**20):
    """(file, SHA-256 hex digest) of ``path``, hashed in blocks (bounded memory).

    ``-`` copies stdin into an anonymous temporary file (HDF5 needs to seek), hashing it
    on the way; a path is hashed and then opened by name.
    """
    if str(path) == "-":
        digest = hashlib.sha256()
        with tempfile.TemporaryFile() as spool:
            while chunk := sys.stdin.buffer.read(block):
                digest.update(chunk)
                spool.write(chunk)
            spool.seek(0)
            yield spool, digest.hexdigest()
        return
    if not Path(path).is_file():
        yield path, ""  # opening it reports what is wrong
        return
    yield path, file_sha256(path, block)


def mapped(dataset, path):
    """A read-only memory map of ``dataset`` in the file at ``path``, or None when it
    cannot be mapped (chunked or filtered storage, never written, empty).

    Pages are read on touch and belong to the page cache: a large array costs no
    private memory until used.
    """
    if (dataset.id.get_create_plist().get_layout() != h5py.h5d.CONTIGUOUS or 0 in dataset.shape
            or dataset.dtype.hasobject):
        return None
    offset = dataset.id.get_offset()
    if offset is None:
        return None
    return np.memmap(path, dtype=dataset.dtype, mode="r", offset=offset, shape=dataset.shape)


# A write that ran out of room: a full disk, a quota, a file size limit.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def no_space_left(exc):
    """Whether ``exc`` reports a write that ran out of room, as the OS raises it or as
    HDF5 reports it (a RuntimeError or OSError whose text carries ``errno = N``)."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return True
    return isinstance(exc, (OSError, RuntimeError)) and any(f"errno = {code}," in str(exc) for code in NO_SPACE)


def file_bytes(data_bytes, n_objects):
    """A generous estimate of an HDF5 file holding ``data_bytes`` of arrays and ``n_objects``
    ids: the arrays, 5 % and 2 MiB for metadata and small datasets, 256 bytes per id."""
    return int(1.05 * data_bytes) + 2 * 2**20 + 256 * n_objects


def reserve_space(path, n_bytes):
    """Fail cleanly, before HDF5 writes anything, if ``n_bytes`` cannot be stored where
    the temporary file for ``path`` goes.

    HDF5 does not recover from a write that runs out of room (its caches cannot be
    flushed, and closing the file may crash the process), so the room is claimed
    first: a ballast file of that size is allocated and removed. It lives in a locked
    work directory, so a run killed meanwhile leaves nothing the next run keeps.

    Raises
    ------
    OutputError
        A full disk, a quota or a file size limit.
    """
    directory = tempfile.gettempdir() if str(path) == "-" else (str(Path(path).parent) or ".")
    scratch = work_directory(path)
    handle = os.open(os.path.join(scratch, "space"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(handle, 0, max(1, int(n_bytes)))
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            return  # a file system that cannot allocate ahead: the writes themselves will tell
        where = "stdout" if str(path) == "-" else str(path)
        raise OutputError(
            f"Cannot write {where}: it needs about {n_bytes / 2**20:.1f} MiB in {directory}, and the disk, a quota "
            f"or a file size limit does not allow that ({exc.strerror}). Nothing was written; free some space, or "
            f"write elsewhere, and rerun.") from None
    finally:
        os.close(handle)
        release(scratch)


def close_quietly(handle):
    """Close an h5py file that is being discarded or kept as it stands after a failure.

    Closing flushes HDF5's caches, which fails again on a full disk; that failure is
    already being reported, and the file's commit markers never count unflushed work.
    """
    if handle is not None and handle.id.valid:
        try:
            handle.close()
        except (OSError, RuntimeError):
            pass


def discard(handle, temporary):
    """Close ``handle`` (quietly) and remove the temporary file (and its work directory):
    nothing half-written is left."""
    close_quietly(handle)
    remove_temporary(temporary)
