"""Content checksums of arrays: what a checkpoint's fingerprint and an upstream row's checksum are made of."""

from __future__ import annotations

import hashlib

import numpy as np


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-1 (40 hex digits) over the dtypes, shapes and bytes of the arrays, in order."""
    digest = hashlib.sha1()
    for a in arrays:
        a = np.asarray(a)
        if a.dtype == object:
            digest.update(f"object{a.shape}".encode())
            digest.update(repr(a.tolist()).encode())
            continue
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(memoryview(a).cast("B") if a.size else b"")
    return digest.hexdigest()
