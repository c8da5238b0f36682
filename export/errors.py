"""ExportError, in a module of its own so that every export step (export.run, export.preprocessing) can raise it."""

from __future__ import annotations


class ExportError(Exception):
    """The run cannot be exported as asked; the message names the file and the fix."""
