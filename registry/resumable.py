"""A SHA-256 whose running state can be saved and resumed in another process.

Chunks of one upload may reach different processes; each saves the hash state after its chunk (in
the metadata store, with the chunk) and the next one resumes from it, so that no byte is hashed twice. The
state is OpenSSL's `SHA256_CTX` (libcrypto, the library `hashlib` uses), driven through ctypes;
ctypes releases the GIL while it hashes. Where libcrypto lacks those functions, `Sha256.available`
is False and callers hash with `hashlib` (no resuming).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_CTX_SIZE = 112  # struct SHA256state_st: h[8], Nl, Nh, data[16], num, md_len (32-bit each)


def _load() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        functions = lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final
    except (OSError, AttributeError):
        return None
    for function in functions:
        function.restype = ctypes.c_int
    lib.SHA256_Init.argtypes = [ctypes.c_void_p]
    lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.SHA256_Final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


_lib = _load()


class Sha256:
    """hashlib-like SHA-256 with `state()` / `Sha256(state)`. Not for concurrent use."""

    available = _lib is not None

    def __init__(self, state: bytes | None = None):
        if _lib is None:
            raise RuntimeError("libcrypto's SHA256 functions are not available")
        self._lib = _lib
        if state is None:
            self._ctx = ctypes.create_string_buffer(_CTX_SIZE)
            self._lib.SHA256_Init(self._ctx)
        elif len(state) == _CTX_SIZE:
            self._ctx = ctypes.create_string_buffer(state, _CTX_SIZE)
        else:
            raise ValueError("not a SHA-256 state")

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash `data`: bytes, or a writable buffer (bytearray, mmap, a memoryview of one)."""
        if isinstance(data, bytes):
            self._lib.SHA256_Update(self._ctx, data, len(data))
        else:
            view = memoryview(data)
            self._lib.SHA256_Update(self._ctx, (ctypes.c_char * view.nbytes).from_buffer(view), view.nbytes)

    def state(self) -> bytes:
        """The running state; `Sha256(state)` continues from it."""
        return self._ctx.raw

    def hexdigest(self) -> str:
        """The digest of everything so far (the running state stays usable)."""
        ctx = ctypes.create_string_buffer(self._ctx.raw, _CTX_SIZE)
        out = ctypes.create_string_buffer(32)
        self._lib.SHA256_Final(out, ctx)
        return out.raw.hex()
