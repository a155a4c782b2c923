"""Safe file-system steps for outputs: locked private work directories, locked files
opened without following links, ``fsync``, and the removal of stale leftovers.

A *work directory* is a fresh directory (``mkdtemp``: created exclusively, mode 0700)
beside an output, holding its temporary file until it is published. The directory is
locked (``flock``) for as long as its run lives; the kernel drops the lock when the
process dies, however it dies. So a later run can *prove* that a leftover directory
of this naming is stale (it can take its lock) and remove it, and never touches a
live run's.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import os
import shutil
import stat
import sys
import tempfile
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from ..errors import OutputError, UsageError

WORK_SUFFIX = ".tmp"
_HELD = {}  # work directory -> its open, locked descriptor


def try_lock(fd):
    """Take an exclusive ``flock`` on ``fd`` without waiting; True when taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def fsync_directory(directory):
    """Make a directory's entries (a creation, a rename) durable."""
    fd = os.open(str(directory) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parent(path):
    return tempfile.gettempdir() if str(path) == "-" else (str(Path(path).parent) or ".")


def _work_prefix(path):
    return "popinfer-stdout." if str(path) == "-" else f".{Path(str(path)).name}."


def work_directory(path):
    """A new locked work directory for an output ``path`` (``-``: in the temp dir).

    Stale work directories of the same output left by dead runs are removed first.
    """
    parent, prefix = _parent(path), _work_prefix(path)
    remove_stale(parent, prefix)
    directory = tempfile.mkdtemp(prefix=prefix, suffix=WORK_SUFFIX, dir=parent)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try_lock(fd)  # a fresh private directory: nobody else can hold it
    _HELD[directory] = fd
    return directory


def release(directory):
    """Remove a work directory made by :func:`work_directory` and what it holds."""
    fd = _HELD.pop(directory, None)
    try:
        _empty(directory)
        os.rmdir(directory)
    except FileNotFoundError:
        pass
    finally:
        if fd is not None:
            os.close(fd)


def _empty(directory):
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def remove_stale(parent, prefix):
    """Remove the work directories ``parent/prefix*.tmp`` of dead runs: owned by this
    user, and lockable (a live run holds its lock). Returns the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(WORK_SUFFIX)):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if try_lock(fd) and os.fstat(fd).st_ino == info.st_ino:
                _empty(entry.path)
                os.rmdir(entry.path)
                removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def temporary_path(path):
    """A fresh temporary file name for output ``path``, inside a new locked work
    directory beside it (in the temp dir for ``-``); :func:`publish` or :func:`remove_temporary`
    ends it. The name keeps ``path``'s extension (libraries pick formats by it)."""
    name = "stdout" if str(path) == "-" else Path(str(path)).name
    return os.path.join(work_directory(path), name)


def remove_temporary(temporary):
    """Remove an unpublished temporary file and its work directory (nothing if already gone)."""
    release(os.path.dirname(temporary))


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _data_stdout():
    """The stream a ``-o -`` output goes to: the real stdout, also while :func:`stdout_reserved_for_data`
    points ``sys.stdout`` at stderr."""
    return _DATA_STDOUT[-1] if _DATA_STDOUT else sys.stdout


def stdout_is_terminal():
    """Whether a ``-o -`` output would go to a terminal."""
    try:
        return _data_stdout().isatty()
    except (AttributeError, ValueError):  # no stream, or a closed one: not a terminal
        return False


def publish(temporary, path, overwrite):
    """Move a finished temporary file to ``path`` atomically (``-``: copy to stdout).

    The file is ``fsync``-ed before the rename and the directory after it, so a
    published output survives a power loss. Without ``overwrite`` an existing ``path``
    is never replaced, even one that appeared during the run (a hard link claims the
    name or fails). A symbolic link at ``path`` is replaced, never followed.
    """
    try:
        if str(path) == "-":
            stdout = _data_stdout()
            with open(temporary, "rb") as source:
                shutil.copyfileobj(source, stdout.buffer)
            stdout.buffer.flush()
            return
        _fsync_file(temporary)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise OutputError(f"Output {path} appeared while this run was working; use --overwrite to "
                                  f"replace it.") from None
            except OSError:  # a file system without hard links
                if os.path.lexists(path):
                    raise OutputError(f"Output {path} exists; use --overwrite to replace it.") from None
                os.replace(temporary, path)
        fsync_directory(_parent(path))
    finally:
        remove_temporary(temporary)


def _same_file(output, source):
    """Whether writing ``output`` would replace ``source`` (the same file, a link to it, or the
    same name)."""
    try:
        return os.path.samefile(output, source)
    except OSError:  # one of them does not exist (yet): compare the names they resolve to
        return os.path.realpath(output) == os.path.realpath(source)


def check_output(path, overwrite, inputs=(), binary=True):
    """Fail early, before any work, if ``path`` cannot be written.

    An output that is one of ``inputs`` (or a link to one) is refused whatever
    ``overwrite`` says: replacing it would destroy the input. A symbolic link at
    ``path`` counts as an existing output (it is replaced, never followed). A ``binary``
    output to ``-`` is refused while stdout is a terminal (text, ``binary=False``, is not).
    """
    if str(path) == "-":
        if binary and stdout_is_terminal():
            raise UsageError("-o -: stdout is a terminal, and the output is a binary HDF5 file. Redirect it or pipe "
                             "it (popinfer fit-individuals data.csv -o - --model normal | popinfer fit-population - "
                             "-o pop.h5 ..., or ... -o - > out.h5), or give a file name: -o FILE.", "-o")
        return
    if str(path) == "":
        raise OutputError("The output name is empty: give a file name (-o FILE), or -o - for standard output.")
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and str(source) != "-" and _same_file(path, source):
            raise OutputError(
                f"Output {path} is the input {source}: writing it would destroy the input, so it is refused "
                f"even with --overwrite. Choose another output name."
            )
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Output {path} is a directory; give a file name.")
    if os.path.lexists(path) and not path.is_file() and (not path.is_symlink() or path.exists()):
        # a device, pipe or socket, or a link to one (/dev/stdout): replacing it, as --overwrite would,
        # could replace /dev/null itself (a link to nothing, or to a file, is replaced, never followed)
        raise OutputError(f"Output {path} exists and is not a regular file (a device, pipe or socket); popinfer "
                          f"writes its output files whole and replaces only files. Give a file name, or -o - to "
                          f"write to standard output.")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"Output {path} exists; use --overwrite to replace it.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"Cannot write {path}: directory {parent} does not exist.")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"Cannot write {path}: no write permission in {parent}.")


def recorded_places(recorded, beside):
    """The files, in this order and each once, where a file that another file recorded may be now:
    ``recorded`` as written (absolute, or relative to the working directory), beside ``beside``
    (the recording file) under that relative path, and under its file name there; only those
    that exist (none for ``<stdin>``)."""
    if not recorded or recorded == "<stdin>":
        return []
    directory = os.path.dirname(os.path.abspath(str(beside)))
    candidates = [recorded, os.path.join(directory, recorded), os.path.join(directory, os.path.basename(recorded))]
    found = {}  # absolute path -> the place as named (relative ones stay relative)
    for candidate in candidates:
        if os.path.isfile(candidate):
            found.setdefault(os.path.abspath(candidate), candidate)
    return list(found.values())


def recorded_file(recorded, beside):
    """The first of :func:`recorded_places`, or None when the file is in none of them."""
    return next(iter(recorded_places(recorded, beside)), None)


def file_sha256(path, block=2**20):
    """SHA-256 hex digest of the file at ``path``, read in blocks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()

@contextmanager
def atomic_output(path, overwrite):
    """A temporary file name for ``path`` to write; published to ``path`` when the block
    succeeds, removed when it fails (nothing half-written is left behind)."""
    temporary = temporary_path(path)
    try:
        yield temporary
    except BaseException:
        remove_temporary(temporary)
        raise
    publish(temporary, path, overwrite)


_DATA_STDOUT = []


@contextmanager
def stdout_reserved_for_data(output):
    """While a run writes its output to stdout (``output == "-"``), anything else printed —
    a user model's or population's ``print`` — goes to stderr and cannot corrupt the data
    stream; :func:`publish` still writes the file to the real stdout."""
    if output is None or str(output) != "-":
        yield
        return
    _DATA_STDOUT.append(sys.stdout)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _DATA_STDOUT.pop()


def reserves_stdout(function):
    """Decorator: run ``function`` under :func:`stdout_reserved_for_data` of its ``output``."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        output = signature.bind_partial(*args, **kwargs).arguments.get("output")
        with stdout_reserved_for_data(output):
            return function(*args, **kwargs)

    return wrapper


def open_locked(path, create):
    """Open a regular file read-write without following a link, locked exclusively.

    ``create``: the file must not exist (``O_CREAT|O_EXCL``); otherwise it must.
    Returns a binary file object holding the lock until it is closed.

    Raises
    ------
    OutputError
        The name is a symbolic link or not a regular file, or another run holds the lock.
    FileNotFoundError, FileExistsError
        As ``open`` raises them.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise OutputError(f"{path} is a symbolic link; popinfer never writes through one. Remove it "
                              f"(it is not popinfer's).") from None
        if isinstance(exc, (FileNotFoundError, FileExistsError)):
            raise
        raise OutputError(f"Cannot open {path}: {exc.strerror}.") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(f"{path} is not a regular file; remove it.")
        if not try_lock(fd):
            raise OutputError(f"{path} is being written by another run right now; wait for it to finish, "
                              f"or write to another output.")
        current = os.lstat(path)
        if (current.st_dev, current.st_ino) != (info.st_dev, info.st_ino):  # replaced meanwhile
            raise OutputError(f"{path} was replaced while it was being opened; another run may be writing "
                              f"it. Try again.")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "r+b")
