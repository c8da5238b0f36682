"""The errors a user must fix, reported as one line and exit code 2: a model, manifest or runner that cannot be used.

contracts.manifest.ManifestError (and its ChecksumError) belong to the same family; the CLIs catch both.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Something the user must fix before edge can run; the message names the input and the fix."""


class BackendError(EdgeError):
    """An unknown backend, a runtime that is not installed, or a model the runtime cannot open."""
