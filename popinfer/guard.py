"""User code may not end the process.

A user model or population that calls ``sys.exit`` or ``os._exit`` would end popinfer
with that status — ``0`` looked like success, with no output and no message. While
user code runs (its import included), both become a :class:`~popinfer.errors.ModelError`
naming the function.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from .errors import ModelError


class _ExitCalled(BaseException):
    """Raised by ``os._exit`` while user code runs (a BaseException, so that user code
    catching Exception cannot swallow it)."""


def _refuse_exit(status):
    raise _ExitCalled(status)


@contextmanager
def no_exit(what):
    """Run user code; ``sys.exit(...)`` or ``os._exit(...)`` inside it raise a ModelError.

    ``what`` names the code in the message (e.g. ``"Model 'file.py:f' on object 'a'"``), or is a
    function of no arguments returning that name when the message is written (for a loop of
    calls that names the one running).
    """
    real_exit = os._exit
    os._exit = _refuse_exit
    try:
        yield
    except SystemExit as exc:
        what = what() if callable(what) else what
        raise ModelError(f"{what} called sys.exit({exc.code!r}). User code must return a value or raise an "
                         f"exception; ending the process would lose the run without a message.") from None
    except _ExitCalled as exc:
        what = what() if callable(what) else what
        raise ModelError(f"{what} called os._exit({exc.args[0]!r}). User code must return a value or raise an "
                         f"exception; ending the process would lose the run without a message.") from None
    finally:
        os._exit = real_exit
