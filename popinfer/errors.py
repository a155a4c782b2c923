"""Domain exceptions.

The library raises these; only ``cli.py`` turns them into exit statuses:
:class:`UsageError` is a usage error (exit 2), every other
:class:`PopinferError` a runtime failure (exit 1).
"""


class PopinferError(Exception):
    """A failure the user can act on; the message says what and how."""


class UsageError(PopinferError, ValueError):
    """Bad command-line or API arguments (a spec, a name, an option value).

    Parameters
    ----------
    message : str
        What is wrong and how to fix it.
    option : str, optional
        The option the bad value came from (e.g. ``"--prior"``), for the CLI.
    """

    def __init__(self, message, option=None):
        super().__init__(message)
        self.option = option


class InputDataError(PopinferError):
    """The data table is unreadable or a cell is invalid for the model."""


class FileFormatError(PopinferError):
    """An HDF5 file is not a popinfer file of the expected kind or version."""


class ModelError(PopinferError):
    """A model (built-in or user-supplied) misbehaved on some object."""


class OutputError(PopinferError):
    """The output cannot be written (exists, missing directory, locked)."""


class UntrustedCodeError(UsageError):
    """A file names code (a user population or model) that would run only if trusted."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; raised (like Ctrl-C's KeyboardInterrupt) so that cleanup runs."""


class GradientUnavailableError(UsageError):
    """A gradient-based sampler was asked for where d ln L̂/dα is not available (a population
    or a likelihood term without gradients)."""
