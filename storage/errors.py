"""Every exception storage raises: drivers and the metadata store alike."""

from __future__ import annotations


class NotFound(Exception):
    """The key does not exist."""


class Busy(Exception):
    """Another writer (of any process) holds the object."""


class BackendUnavailable(Exception):
    """An object store or database cannot be reached or answered with a server error; the request
    may succeed later. Nothing was changed by the failed operation, or the change is invisible."""


class MissingReferences(Exception):
    """A manifest refers to blobs or manifests the repository lacks (or has with another size)."""

    def __init__(self, missing: list[str], wrong_size: list[str]):
        super().__init__(f"missing {missing}, wrong size {wrong_size}")
        self.missing, self.wrong_size = missing, wrong_size


class BlobCollecting(Exception):
    """The garbage collector is deleting this blob's bytes; try again once it is done."""
