"""The checkpoint of a ``refine`` run writing to a file: the directory ``OUTPUT.partial``
beside its output.

It holds ``run.json`` (the run's fingerprint and seed) and, per round and draw-count
group, the refit's samples file once it is finished (``KEY.h5``) or the stage-one
checkpoint of the refit in progress (``KEY.h5.partial``, committed batch by batch by
``fit_individuals``). ``KEY`` is a digest of everything that decides the refit (round,
K_n', the objects, their seed stream, batches and the mixture prior's fingerprint), so a
finished refit is only ever taken for the same refit. A resumed run must match the
fingerprint (the inputs' SHA-256, seed and settings); a run without ``--resume`` refuses
a leftover directory unless ``--overwrite`` discards it. The directory is made at the
first refit, so a run that refits nothing leaves none, and removed once the output is
written. ``run.json`` is written once, atomically (``atomic_output``);
concurrent refits of one output are kept apart by each stage-one checkpoint's lock.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

from ..errors import OutputError
from .files import atomic_output, fsync_directory

RUN_FILE = "run.json"


class RefineCheckpoint:
    """``OUTPUT.partial`` of one refine run (see the module docstring).

    Parameters
    ----------
    output : str
        The refined samples file (or shard) the run writes.
    fingerprint : str
        Digest of the inputs, seed and settings; a resume must match it.
    seed : int
    """

    def __init__(self, output, fingerprint, seed):
        self.path = f"{output}.partial"
        self.fingerprint, self.seed = fingerprint, int(seed)

    @staticmethod
    def recorded_seed(output):
        """The seed an interrupted run on ``output`` recorded (None when there is none):
        a run started without ``--seed`` resumes with the seed it drew."""
        try:
            return int(_read_run(f"{output}.partial")["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start(self, resume, overwrite):
        """Check a leftover directory before any work: continue it (``resume``, same
        fingerprint), discard it (``overwrite``), or refuse."""
        if not os.path.lexists(self.path):
            return self
        info = os.lstat(self.path)
        if not stat.S_ISDIR(info.st_mode):
            raise OutputError(f"{self.path} is in the way of refine's checkpoint and is not one (not a directory); "
                              f"remove it, or write to another output.")
        if resume:
            try:
                recorded = _read_run(self.path)
            except (OSError, ValueError) as exc:
                raise OutputError(f"The checkpoint {self.path} is damaged ({exc}); start over with --overwrite "
                                  f"(without --resume).") from None
            if recorded.get("fingerprint") != self.fingerprint:
                raise OutputError(f"The checkpoint {self.path} belongs to a refine with other input files, seed or "
                                  f"settings, so --resume cannot continue it. Repeat the original command with "
                                  f"--resume, or start over with --overwrite.")
            return self
        if not overwrite:
            raise OutputError(f"{self.path} holds an interrupted refine's work. Add --resume to continue it, or "
                              f"--overwrite to discard it and start over.")
        shutil.rmtree(self.path)
        return self

    def refit(self, key, fit, read):
        """The samples of refit ``key``: read from its finished file, or ``fit(path)``
        (which checkpoints beside ``path`` and publishes it)."""
        path = os.path.join(self.path, f"{key}.h5")
        if os.path.isfile(path) and not os.path.islink(path):
            return read(path)
        self._make()
        try:
            return fit(path)
        except BaseException:
            self._drop_if_empty()
            raise

    def finish(self):
        """The output is written: remove the directory and everything in it."""
        if os.path.isdir(self.path) and not os.path.islink(self.path):
            shutil.rmtree(self.path)

    def _make(self):
        if os.path.isdir(self.path):
            return
        os.mkdir(self.path, 0o700)
        with (atomic_output(os.path.join(self.path, RUN_FILE), overwrite=True) as temporary,
              open(temporary, "w", encoding="utf-8") as handle):
            json.dump({"fingerprint": self.fingerprint, "seed": self.seed}, handle)
        fsync_directory(os.path.dirname(os.path.abspath(self.path)))

    def _drop_if_empty(self):
        """After a failed refit: a directory holding no work (no finished refit, no committed
        batch) is removed, so nothing half-done is left to resume."""
        try:
            names = set(os.listdir(self.path))
        except OSError:
            return
        if names <= {RUN_FILE}:
            shutil.rmtree(self.path, ignore_errors=True)


def _read_run(directory):
    with open(os.path.join(directory, RUN_FILE), encoding="utf-8") as handle:
        value = json.load(handle)
    if not isinstance(value, dict):
        raise ValueError(f"{RUN_FILE} is not a JSON object")
    return value


__all__ = ["RefineCheckpoint"]
