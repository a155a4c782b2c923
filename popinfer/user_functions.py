"""Loading user-supplied functions (``path/to/file.py:function`` or ``package.module:function``):
the one loader that user models (``models.user``) and user populations
(``populations.user``) share, with the check of their declared default priors, the
source's SHA-256, and the pickling that lets worker processes load them again."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

from .distributions import parse_distribution
from .errors import InputDataError, ModelError, UntrustedCodeError, UsageError
from .guard import no_exit
from .io.files import file_sha256, recorded_places


def _names_file(target):
    return target.endswith(".py") or "/" in target or "\\" in target


def code_record(spec):
    """``{"spec", "path", "sha256"}`` of the file a ``file.py:function`` spec names (its absolute path),
    None for ``package.module:function`` (found by import) or a file that is not there: what a
    file recording the spec keeps, so that a later command run from any directory finds the
    same code (:func:`recorded_code`)."""
    target, sep, _ = str(spec).rpartition(":")
    if not sep or not _names_file(target) or not os.path.isfile(target):
        return None
    return {"spec": str(spec), "path": os.path.abspath(target), "sha256": file_sha256(target)}


def recorded_code(spec, record, label, noun):
    """The spec to load the code that the file ``label`` names (``spec``, as given when it was
    written; ``record``, its :func:`code_record` or None in older files). The places looked at, in
    order: the recorded absolute path, ``spec``'s path as written, beside ``label`` (under that
    relative path or its file name); with a recorded SHA-256 the first file there that has it, else
    (older files) the first file there. A module spec is returned as it is. Nothing is imported:
    the caller names the returned file when it asks for trust (:func:`trusted_code`).

    Raises
    ------
    InputDataError
        The file is in none of those places, or none there is the recorded one.
    """
    target, sep, attribute = str(spec).rpartition(":")
    if not sep or not _names_file(target):
        return spec
    record = record if record and record.get("spec") == spec else {}  # a record of this spec only
    recorded = record.get("path")
    found = list(dict.fromkeys(os.path.abspath(path) for path in
                               ([recorded] if recorded and os.path.isfile(recorded) else [])
                               + recorded_places(target, label)))
    if not found:
        looked = recorded or os.path.abspath(target)
        beside = os.path.join(os.path.dirname(os.path.abspath(label)), os.path.basename(target))
        raise InputDataError(f"{label} names the user {noun} {spec!r}, whose file is not at {looked} nor at "
                             f"{beside}. Put {os.path.basename(target)} back at one of them (beside {label} will "
                             f"do) and rerun.")
    digest = record.get("sha256")
    chosen = next((path for path in found if not digest or file_sha256(path) == digest), None)
    if chosen is None:
        raise InputDataError(f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} not the code {label} was "
                             f"made with (SHA-256 {digest[:12]}…). Restore that version of "
                             f"{os.path.basename(target)}, or run the command that made {label} again with this "
                             f"one.")
    return f"{chosen}:{attribute}"


def trusted_code(spec, record, label, noun, trust_code, doing):
    """:func:`recorded_code`, allowed to run only with ``trust_code``: the refusal names the file
    that would run (a file's record could point anywhere), or the spec where none is found."""
    try:
        resolved = recorded_code(spec, record, label, noun)
    except InputDataError:
        if trust_code:
            raise
        resolved = spec  # nothing would run; the trust question comes first, as it always did
    if not trust_code:
        where = resolved.rpartition(":")[0] if resolved != spec else spec
        raise UntrustedCodeError(
            f"{label} names the user {noun} {spec!r} ({where}): {doing} would import and run that code, which "
            f"popinfer does not do for code named in a file. If you trust {where}, pass --trust-code "
            f"(trust_code=True).", "--trust-code")
    return resolved


def load_callable(spec, option):
    """Resolve ``file.py:function`` or ``package.module:function``."""
    target, sep, attribute = spec.rpartition(":")
    if not sep or not target or not attribute:
        raise UsageError(
            f"{option} {spec!r}: expected a built-in name, path/to/file.py:function or "
            f"package.module:function.",
            option,
        )
    if _names_file(target):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"{option} {spec!r}: the file {target!r} does not exist.", option)
        module_name = f"popinfer_user_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            try:
                with redirect_stdout(sys.stderr), no_exit(f"{option} {spec!r} (importing {target!r})"):
                    loader_spec.loader.exec_module(module)  # what a module prints on import is never data
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(f"{option} {spec!r}: importing {target!r} failed: {type(exc).__name__}: {exc}") from exc
            sys.modules[module_name] = module
    else:
        try:
            with redirect_stdout(sys.stderr), no_exit(f"{option} {spec!r} (importing {target!r})"):
                module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"{option} {spec!r}: cannot import module {target!r} ({exc}).", option) from None
    function = getattr(module, attribute, None)
    if function is None or not callable(function):
        raise UsageError(f"{option} {spec!r}: {target!r} defines no function {attribute!r}.", option)
    return function


def source_sha256(function):
    """SHA-256 of the file that defines ``function`` as it is on disk now (None when it has
    none): a resumed run must use the code its checkpoint was made with."""
    try:
        path = inspect.getsourcefile(function)
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except (TypeError, OSError):
        return None


def declared_priors(function, attribute, spec, option, noun):
    """The dict ``function.<attribute>`` of name -> default prior spec, checked.

    Raises
    ------
    UsageError
        If the attribute is missing or empty, or a spec does not parse.
    """
    declared = getattr(function, attribute, None)
    if not isinstance(declared, dict) or not declared:
        raise UsageError(
            f"{option} {spec!r}: the function needs a `{attribute}` attribute, a dict of {noun} name -> "
            f"default prior, e.g. {{'rate': 'loguniform(0.001, 10)'}}.",
            option,
        )
    for name, prior in declared.items():
        parse_distribution(prior, f"{option} {spec} (default prior of {name})")
    return dict(declared)


class ReloadedFunction:
    """Pickles without the user's function and loads it again from ``spec``, so
    worker processes can rebuild user models and populations. Subclasses set ``spec``
    and ``option`` (the option that named the function)."""

    option = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_function"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._function = load_callable(self.spec, self.option)
