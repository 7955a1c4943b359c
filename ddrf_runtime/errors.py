"""The error hierarchy: everything a user can cause raises a subclass of DdrfError.

The CLI turns these into one line ``ddrf-run: error: <path>: <message>`` and exit status 2;
anything else is a bug (exit 1).
"""
from __future__ import annotations


class DdrfError(Exception):
    """Base of all expected, user-facing failures. ``path`` names the file at fault, if any."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{self.path}: {msg}" if self.path else msg


class InputError(DdrfError):
    """An input raster (or array) is unreadable, inconsistent or unsuitable."""


class ModelError(DdrfError):
    """A model file is unreadable, lacks our metadata, or disagrees with the inputs."""


class ConfigError(DdrfError):
    """An option or configuration value is out of range or inconsistent."""


class OutputError(DdrfError):
    """The output cannot be written where asked."""


class DeviceError(DdrfError):
    """The requested execution device is not usable."""
