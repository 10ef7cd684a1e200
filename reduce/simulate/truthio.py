"""Byte-reproducible truth files (the same seed gives the same bytes)."""
import io
import zipfile

import numpy as np


def zip_array(zf: zipfile.ZipFile, name: str, arr) -> None:
    """Add one .npy member with a fixed timestamp to an open zip (an .npz)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, buf.getvalue())


def write_npz(path, arrays: dict) -> None:
    """np.savez_compressed equivalent whose bytes depend only on the arrays (sorted names)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name in sorted(arrays):
            zip_array(zf, name, arrays[name])
