"""MIPS BCD FITS export: the hand-written FITS writer against astropy.io.fits, in one run.

Issue 7, point 3: ``reduce/mips/bcd_export.py`` serialises the FITS cards, padding and
DATASUM itself; that is kept only while astropy.io.fits would cost more than 20 % of the
MIPS export at mission scale.  On a simulated MIPS store (simulate -> ingest ->
``reduce_mips``, kept in --workdir and reused) this times, per array:

(a) the export as the pipeline does it today, one AOR at a time: the AOR's rows of the BCD
    group read from the store, then ``write_bcd_files`` once per calibration set (like
    ``reduce.mips.pipeline._export``): building the headers, writing bcd/bunc/bbmsk(/bsdr);
(b) the same export with each file written by astropy.io.fits: the same HDUs (``bcd_export.Hdu``:
    the same card images, as astropy ``Header`` objects, the same data arrays) as
    ``PrimaryHDU``/``ImageHDU`` in an ``HDUList``, ``writeto(tmp, checksum=True)``, then
    ``os.replace`` like today.  ``Header.fromstring`` is the cheapest way into astropy (a
    Header built card by card from (keyword, value, comment) costs more), so (b) is a lower
    bound of what an astropy writer costs.

and prints files/s and ms per DCE and per file for both, astropy's share of the export
(b - a) / b, the time spent in astropy.io.fits (Header, HDUs, writeto) as a fraction of (b),
the time of the hand-written serialisation + write in (a), and the decision of the rule.
Mission scale: the rate per file is what matters; the default (2 AORs x 200 DCEs x 3 arrays
= 1200 DCEs, 4000 files) is far past the fixed costs.  One core (dask synchronous scheduler).

Usage: python benchmarks/bench_bcd_export.py [--n-dce 200] [--aors 2] [--workdir DIR]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import dask  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

THRESHOLD = 0.20
"""Issue 7.3: keep the hand-written writer only if astropy costs more than this share."""


class Clock:
    """Accumulated seconds of the wrapped calls."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def add(self, t0):
        self.seconds += time.perf_counter() - t0
        self.calls += 1


def hand_writer(bx, clock):
    """Today's ``_write_file`` (hand-written bytes, atomic write), timed."""
    def write(hdus, path):
        t0 = time.perf_counter()
        try:
            return bx._atomic_write(bx.file_bytes(hdus), path)
        finally:
            clock.add(t0)
    return write


def astropy_writer(bx, clock):
    """``_write_file`` done with astropy.io.fits: the same HDUs, writeto(checksum=True) to a
    temporary name in the same folder, then os.replace (the time inside astropy is clocked)."""
    def write(hdus, path):
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            t0 = time.perf_counter()
            out = []
            for h in hdus:
                header = fits.Header.fromstring("".join(bx.with_datasum(h.cards, 0)))
                out.append(fits.PrimaryHDU(h.data, header) if h.primary
                           else fits.ImageHDU(h.data, header, name=h.extname))
            fits.HDUList(out).writeto(tmp, checksum=True)
            clock.add(t0)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path
    return write


def export_array(store, chnl, plan, out, write_files, limit=None):
    """One array's export, one AOR at a time as the pipeline's export of a unit does it: the
    unit's rows of the BCD group read from the store, its 'ok' DCEs (the first ``limit``), one
    ``write_bcd_files`` call per calibration set (like ``reduce.mips.pipeline._export``)."""
    from reduce import __version__
    from reduce.mips.pipeline import open_bcd

    group = open_bcd(store, chnl)
    aorkeys = group.aorkey.values
    files = []
    for aor in np.unique(aorkeys):
        done = group.isel(dce=np.flatnonzero(aorkeys == aor)).load()
        status = done.status.values.astype(object).astype(str)
        calset = done.calset.values.astype(int)
        for k, cs in enumerate(plan.cal.sets):
            sel = np.flatnonzero((status == "ok") & (calset == k))[:limit]
            if cs is None or not sel.size:
                continue
            part = done.isel(dce=sel)
            part.attrs = dict(done.attrs, fluxconv=float(cs.fluxconv),
                              calibration=json.dumps(plan.cal.identities[k], sort_keys=True))
            files += list(write_files(part, out, calibration=cs, version=__version__))
    return files


def setup(work, n_dce, aors):
    from reduce.mips.ingest import ingest_mips
    from reduce.mips.pipeline import reduce_mips
    from reduce.simulate.mips import AorSpec, simulate_mips

    raw, store = work / "raw", work / "mips.zarr"
    marker = work / "setup.json"
    want = {"n_dce": n_dce, "aors": aors}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return store
    shutil.rmtree(raw, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    specs = [AorSpec(aorkey=41000001 + i, aot_type="MipsScan" if i % 2 else "MipsPhot",
                     object=f"BENCH-{i + 1}", ra=30.0 + i, dec=5.0, start_mjd=53800.0 + 0.2 * i,
                     n_dce=n_dce, overhead=0.3) for i in range(aors)]
    simulate_mips(raw, seed=9, specs=specs)
    ingest_mips([raw], store, report=lambda line: None)
    with dask.config.set(scheduler="synchronous"):               # (its own export is not timed)
        reduce_mips(store, work / "pipeline-out", report=lambda line: None)
    marker.write_text(json.dumps(want))
    return store


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-dce", type=int, default=200, help="DCEs per array and AOR")
    ap.add_argument("--aors", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from reduce.mips import bcd_export as bx
    from reduce.mips.calib import BAND
    from reduce.mips.pipeline import plan_bcd

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_bcd_export_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = setup(work, args.n_dce, args.aors)
    print(f"setup (simulate + ingest + reduce, reused when present) {time.perf_counter() - t0:.1f} s"
          f" in {work}")
    plans = {c: plan_bcd(store, c) for c in (1, 2, 3)}                 # not part of the export
    original = bx._write_file
    rows, totals = [], {"a": [0.0, 0, 0, 0.0], "b": [0.0, 0, 0, 0.0]}  # seconds, DCEs, files, inner
    try:
        with dask.config.set(scheduler="synchronous"):
            warm = work / "warm"                                         # warm-up (imports)
            for c in (1, 2, 3):
                for make in (hand_writer, astropy_writer):
                    bx._write_file = make(bx, Clock())
                    export_array(store, c, plans[c], warm, bx.write_bcd_files, limit=4)
            shutil.rmtree(warm, ignore_errors=True)
            for c in (1, 2, 3):
                for case, make in (("a", hand_writer), ("b", astropy_writer)):
                    out = work / f"out_{case}"
                    shutil.rmtree(out, ignore_errors=True)
                    clock = Clock()
                    bx._write_file = make(bx, clock)
                    t0 = time.perf_counter()
                    files = export_array(store, c, plans[c], out, bx.write_bcd_files)
                    dt = time.perf_counter() - t0
                    ndce = len({p.name.rsplit("_", 1)[0] for p in files})
                    rows.append((c, case, dt, ndce, len(files), clock.seconds))
                    tot = totals[case]
                    tot[0] += dt
                    tot[1] += ndce
                    tot[2] += len(files)
                    tot[3] += clock.seconds
    finally:
        bx._write_file = original

    # the astropy-written files are valid and hold the same data (a spot check)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for p in sorted((work / "out_b").glob("*.fits"))[:8]:
            with fits.open(p, checksum=True) as b, fits.open(work / "out_a" / p.name) as a:
                for ha, hb in zip(a, b, strict=True):
                    assert (ha.data is None and hb.data is None) or (
                        ha.data.tobytes() == hb.data.tobytes()), p.name

    def line(label, sec, ndce, nfile):
        return (f"{label:<36}{sec:8.2f} s  {sec / ndce * 1e3:7.2f} ms/DCE  {sec / nfile * 1e3:7.3f} ms/file"
                f"  {nfile / sec:8.0f} files/s")

    print(f"MIPS BCD export from the store, one core ({args.aors} AORs x {args.n_dce} DCEs per array)")
    for c, case, dt, ndce, nfile, inner in rows:
        what = "hand-written (today)" if case == "a" else "astropy.io.fits"
        extra = (f"  [serialise + write {inner / dt:5.1%}]" if case == "a"
                 else f"  [astropy.io.fits {inner / dt:5.1%}]")
        print(line(f"  {BAND[c]:>3} um ({case}) {what}", dt, ndce, nfile) + extra)
    (ta, da, fa, ia), (tb, db, fb, ib) = totals["a"], totals["b"]
    print(f"all arrays: {da} DCEs, {fa} files")
    print(line("  (a) hand-written (today)", ta, da, fa)
          + f"  [serialise + write {ia:.2f} s = {ia / ta:.1%}]")
    print(line("  (b) astropy.io.fits", tb, db, fb)
          + f"  [astropy.io.fits {ib:.2f} s = {ib / tb:.1%}]")
    share = (tb - ta) / tb
    print(f"astropy's share of the export (b - a) / b: {share:.1%}")
    print(f"astropy.io.fits time / (b):                {ib / tb:.1%}")
    print(f"rate (a) / rate (b):                       {(fa / ta) / (fb / tb):.2f} x")
    keep = share > THRESHOLD
    print(f"rule (issue 7.3, threshold {THRESHOLD:.0%}): "
          + ("astropy costs more than the threshold: keep the hand-written writer" if keep
             else "astropy costs no more than the threshold: write with astropy.io.fits"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
