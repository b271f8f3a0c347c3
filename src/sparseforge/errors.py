"""Exceptions that carry a one-line, user-facing message.

The CLI turns every :class:`UserError` into ``error: <message>`` and exit code 2 (``--debug``
shows the traceback). They subclass :class:`ValueError` so plain Python callers can catch them
the usual way.
"""

from __future__ import annotations

import os


class UserError(ValueError):
    """Bad input from the user: wrong name, wrong type, missing or malformed file."""


class ConfigError(UserError):
    """A configuration key or value that does not fit the recipe's config dataclass."""


class DataFormatError(UserError):
    """A data file that is missing, truncated, or not in the expected format."""


class UnknownNameError(UserError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class TraceError(UserError):
    """A model that torch.export cannot capture or that compaction cannot slice."""


class CheckpointError(UserError):
    """A checkpoint or cached stage that cannot be read back (truncated, corrupt, or from another run)."""


class PathError(UserError):
    """A path given by the user that cannot be used (not writable, a file where a folder is needed, ...)."""


def os_error_message(e: OSError, what: str = "") -> str:
    """One line for an :class:`OSError`: ``<what> <path>: <reason>`` (no errno numbers, no traceback)."""
    reason = e.strerror or type(e).__name__
    path = e.filename if e.filename is not None else ""
    if e.filename2 is not None:
        path = f"{path} -> {e.filename2}"
    head = " ".join(x for x in (what, os.fspath(path) if path != "" else "") if x)
    return f"{head}: {reason}" if head else reason


def one_line(e: BaseException) -> str:
    """The first line of ``str(e)`` (or the exception's type name when it has no message)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataFormatError",
    "PathError",
    "TraceError",
    "UnknownNameError",
    "UserError",
    "one_line",
    "os_error_message",
]
