"""Reading an astrometric reference catalogue (e.g. a 2MASS extract) for absolute pointing
refinement: ``read_refcat(path) -> (ra, dec)`` in degrees, ICRS."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.table import Table

from reduce.errors import BadInputError

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


def _is_fits(path: Path) -> bool:
    if path.name.lower().endswith(_FITS_SUFFIXES):
        return True
    with open(path, "rb") as f:
        return f.read(6) == b"SIMPLE"


def read_refcat(path):
    """Positions of a reference catalogue: ``(ra, dec)``, two float64 (n,) arrays in deg.

    ``path``: a CSV file with a header row naming (at least) columns ``ra`` and ``dec``
    (degrees, ICRS), or a FITS binary/ASCII table (first table HDU) with columns ``RA`` and
    ``DEC``; column names are matched case-insensitively and further columns are ignored.
    RA must lie in [0, 360] (360 is wrapped to 0), Dec in [-90, 90].

    Raises ``BadInputError(path, reason)`` for a missing, empty or unreadable file, a table
    without both columns, non-numeric, masked or non-finite values, out-of-range values, or
    a table with no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "reference catalogue not found")
    if path.stat().st_size == 0:
        raise BadInputError(path, "reference catalogue is an empty file")
    try:
        fmt = "fits" if _is_fits(path) else "ascii.csv"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table.read(path, format=fmt)
    except Exception as exc:  # astropy raises many types for unreadable input
        raise BadInputError(path, f"not a readable CSV or FITS table ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    names = {name.lower(): name for name in table.colnames}
    missing = [c for c in ("ra", "dec") if c not in names]
    if missing:
        raise BadInputError(path, f"reference catalogue lacks column(s) {', '.join(missing)} "
                                  f"(has: {', '.join(table.colnames) or 'none'})")
    if len(table) == 0:
        raise BadInputError(path, "reference catalogue has no rows")
    out = []
    for key in ("ra", "dec"):
        col = table[names[key]]
        try:
            values = np.ma.filled(np.ma.asarray(col, dtype=np.float64), np.nan)
        except (TypeError, ValueError):
            raise BadInputError(path, f"column {names[key]} is not numeric") from None
        values = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(values)):
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise BadInputError(path, f"column {names[key]} has {bad} missing or non-finite value(s)")
        out.append(values)
    ra, dec = out
    if np.any((ra < 0) | (ra > 360)):
        raise BadInputError(path, f"RA out of range [0, 360] deg (min {ra.min():.6g}, max {ra.max():.6g})")
    if np.any(np.abs(dec) > 90):
        raise BadInputError(path, f"Dec out of range [-90, 90] deg (min {dec.min():.6g}, max {dec.max():.6g})")
    return np.mod(ra, 360.0), dec
