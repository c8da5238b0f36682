"""The errors edge reports as one line and exit code 2: a model, manifest, backend or source it cannot use.

edge.manifest.ManifestError (and its ChecksumError) belong to the same family; the CLI catches both.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Something the user must fix before edge can run; the message names the input and the fix."""


class BackendError(EdgeError):
    """An unknown backend, a runtime that is not installed, or a model the runtime cannot open."""


class SourceError(EdgeError):
    """A frame source that does not exist or cannot be read (a live camera that drops out is not one)."""
