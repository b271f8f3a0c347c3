"""Exceptions that carry a one-line, user-facing message.

The CLI turns every :class:`UserError` into ``error: <message>`` and exit code 2.
They subclass :class:`ValueError` so plain Python callers can catch them the usual way.
"""

from __future__ import annotations


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
    """A model that torch.fx cannot trace or that compaction does not understand."""
