"""Small files the registry owns (keys, the htpasswd file): written whole, private, atomically."""

from __future__ import annotations

import os
import tempfile


def write_private_file(path: str, data: bytes) -> None:
    """Replace `path` with `data` (mode 0600) so readers see the old or the new file, never a part."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)  # a new data directory is private
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
