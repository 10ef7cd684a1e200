"""``skyreduce mosaic``: the level-2 step on BCD FITS files (ours or the SSC's, MIPS or IRAC).

The files are found and grouped on the client from their headers (``bcdfiles``; with a cluster
its workers read the headers); the
mosaics run on the runner (``pipeline.FileMosaic``) with a work store ``OUTDIR/work`` that keeps
the per-frame state (offsets, rejected pixels, status), the mosaic images and the units'
records, so a rerun skips the mosaics already done. Products in OUTDIR: per array
``SPITZER_{M|I}{C}_COMBINED_{VER}_maic.fits`` (and ``_munc``, ``_mcov``, ``_mptg.tbl``), or per AOR and
array with ``per_aor`` ``SPITZER_{M|I}{C}_{AORKEY}_{VER}_maic.fits`` and so on; for MIPS 70 and 160 um
also the filtered ``_fmaic``/``_fmunc``/``_fmcov`` and one ``<input base>_fbcd.fits`` per frame.
"""
from __future__ import annotations

from pathlib import Path

from ..runner import run
from ..runner.core import RunSummary
from .bcdfiles import find_bcds, group_bcds, mixed_arrays
from .pipeline import FileMosaic, MosaicParams


def mosaic_files(paths, out, *, refcat=None, per_aor=False, pixel_scale=None, client=None, progress=False,
                 report=print, redo=False, redo_failed=False, params: MosaicParams | None = None) -> RunSummary:
    """Mosaic the BCDs found under ``paths`` into ``out``; a RunSummary (exit 1 when any file was
    skipped or any mosaic failed)."""
    out = Path(out)
    bcds, problems = find_bcds([Path(p) for p in paths], client=client)
    for line in problems:
        report(line)
    for b in bcds:
        if b.unc_path is None:
            report(f"WARNING {b.path}: no _bunc file: its uncertainty is estimated from the frame itself")
        if b.mask_path is None:
            report(f"WARNING {b.path}: no mask file: only NaN pixels are left out")
    params = params or MosaicParams(pixel_scale=pixel_scale)
    refcat, bad = usable_refcat(refcat)
    if bad:
        report(bad)
        problems = list(problems) + [bad]
    params = params.with_refcat(refcat)
    if not per_aor and mixed_arrays(bcds):
        bcds, skipped = _majority_array(bcds)
        for line in skipped:
            report(line)
        problems = list(problems) + skipped
    groups = []
    for gkey, files in sorted(group_bcds(bcds, per_aor=per_aor).items(), key=lambda kv: str(kv[0])):
        instrument, chnl = gkey[0], int(gkey[1])
        aor = int(gkey[2]) if per_aor else None
        key = f"{instrument.lower()}{chnl}-{aor if aor is not None else 'all'}"
        groups.append((key, instrument, chnl, aor, tuple(files)))
    summary = run(FileMosaic(tuple(groups), params), out / "work", out, client=client, progress=progress,
                  report=report, redo=redo, redo_failed=redo_failed)
    summary.problems = list(problems) + list(summary.problems)
    return summary


def _majority_array(bcds):
    """Without --per-aor one mosaic is one array: keep the array most BCDs belong to, skip the
    others with one line each."""
    from collections import Counter
    counts = Counter((b.instrument, int(b.chnlnum)) for b in bcds)
    keep, n = counts.most_common(1)[0]
    skipped = [f"SKIPPED {b.path}: {b.instrument} channel {b.chnlnum}, not the {keep[0]} channel {keep[1]} of the "
               f"other {n} BCDs (one mosaic is one array; give --per-aor to mosaic every array)"
               for b in bcds if (b.instrument, int(b.chnlnum)) != keep]
    return [b for b in bcds if (b.instrument, int(b.chnlnum)) == keep], skipped


def usable_refcat(path):
    """(path, None) when the reference catalogue reads, else (None, one line naming it and why:
    the mosaics then refine their pointing relative to their frames)."""
    if path is None:
        return None, None
    from ..errors import BadInputError
    from .kernels.refcat import read_refcat
    try:
        read_refcat(path)
    except BadInputError as exc:
        return None, f"SKIPPED reference catalogue {exc}; pointing refined relative to the frames only"
    return path, None
