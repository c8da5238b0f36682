"""edge's own error: a frame source it cannot use (the others come from contracts.errors)."""

from __future__ import annotations

from contracts.errors import EdgeError


class SourceError(EdgeError):
    """A frame source that does not exist or cannot be read (a live camera that drops out is not one)."""
