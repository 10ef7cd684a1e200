"""The one atomic-write helper: a failed or killed write never leaves half a file in place."""
import os
import signal
import subprocess
import sys

import pytest
from conftest import HalfThenDiskFull

from reduce.io import atomic


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "product.fits"
    atomic.atomic_write_bytes(target, b"old")

    monkeypatch.setattr(atomic, "open", HalfThenDiskFull, raising=False)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["product.fits"]


def test_killed_writer_leaves_old_file_and_a_temporary_that_the_runner_removes(tmp_path):
    target = tmp_path / "sub" / "log.txt"
    target.parent.mkdir()
    atomic.atomic_write_text(target, "old\n")
    code = ("import os, signal, sys\n"
            "from reduce.io import atomic\n"
            "with atomic.atomic_path(sys.argv[1]) as tmp:\n"
            "    open(tmp, 'w').write('half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code, str(target)])
    assert r.returncode == -signal.SIGKILL
    left = [p for p in target.parent.iterdir() if p != target]
    assert len(left) == 1 and left[0].name.startswith(".log.txt.") and left[0].name.endswith(atomic.TMP_SUFFIX)
    assert target.read_text() == "old\n"
    (tmp_path / ".not-ours.tmp").write_text("kept")
    assert atomic.remove_stale_temporaries(tmp_path) == 1
    assert sorted(os.listdir(target.parent)) == ["log.txt"] and (tmp_path / ".not-ours.tmp").exists()


def test_fits_and_text_round_trip(tmp_path):
    from astropy.io import fits
    import numpy as np
    atomic.atomic_write_fits(fits.PrimaryHDU(np.arange(4, dtype=np.int16)), tmp_path / "a.fits", checksum=True)
    with fits.open(tmp_path / "a.fits", checksum=True) as h:
        assert h[0].data.tolist() == [0, 1, 2, 3]
    atomic.atomic_write_text(tmp_path / "b.txt", "héllo")
    assert (tmp_path / "b.txt").read_text() == "héllo"
