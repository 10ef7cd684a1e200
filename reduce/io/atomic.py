"""Atomic file writes: every product, index, log and commit record of skyreduce goes through here.

A file is written under a temporary name in its own folder (``.<name>.<pid>-<random>.skyreduce-tmp``)
and renamed into place with ``os.replace``: a reader, or a run killed half-way, never sees half a
file. A killed run can leave temporaries behind; ``remove_stale_temporaries`` (called by the runner
before it writes into an output folder) removes them.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

TMP_SUFFIX = ".skyreduce-tmp"


@contextlib.contextmanager
def atomic_path(path, *, fsync: bool = False):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (fsync'ed first if asked)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path, data: bytes, *, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) atomically; fsync'ed by default (commit records, logs)."""
    return atomic_write_bytes(path, text.encode(), fsync=fsync)


def atomic_write_fits(hdul, path, *, fsync: bool = False, **writeto) -> Path:
    """Write an astropy HDUList (or one HDU) atomically with ``writeto(**writeto)``."""
    from astropy.io import fits
    if not isinstance(hdul, fits.HDUList):
        hdul = fits.HDUList([hdul])
    with atomic_path(path, fsync=fsync) as tmp:
        hdul.writeto(tmp, **writeto)
    return Path(path)


def remove_stale_temporaries(folder) -> int:
    """Remove the temporaries a killed run left under ``folder`` (recursively); returns how many."""
    n = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(root, name))
                    n += 1
    return n
