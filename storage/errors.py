"""Every exception storage raises: drivers and the metadata store alike."""

from __future__ import annotations


class StorageError(Exception):
    """What every exception of this module is."""


class NotFound(StorageError):
    """The key does not exist."""


class BackendUnavailable(StorageError):
    """An object store or database cannot be reached or answered with a server error; the request
    may succeed later. Nothing was changed by the failed operation, or the change is invisible."""


class WriteConflict(BackendUnavailable):
    """A write transaction kept conflicting with concurrent ones (PostgreSQL's serialization failures)
    through every retry; nothing was changed, and a smaller or later one may succeed."""


class MissingReferences(StorageError):
    """A manifest refers to blobs or manifests the repository lacks (or has with another size)."""

    def __init__(self, missing: list[str], wrong_size: list[str]):
        super().__init__(f"missing {missing}, wrong size {wrong_size}")
        self.missing, self.wrong_size = missing, wrong_size


class BlobCollecting(StorageError):
    """The garbage collector is deleting this blob's bytes; try again once it is done."""
