"""Errors every storage backend shares."""

from __future__ import annotations


class BackendUnavailable(Exception):
    """An object store or database cannot be reached or answered with a server error; the request
    may succeed later. Nothing was changed by the failed operation, or the change is invisible."""
