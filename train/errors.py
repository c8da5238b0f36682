"""DataError, in a module of its own: train.data raises it, and train.download (which train.data calls for
cats_vs_dogs) subclasses it, so neither file has to import the other to share it."""

from __future__ import annotations


class DataError(Exception):
    """The dataset cannot be used as given; the message names the folder and the fix."""
