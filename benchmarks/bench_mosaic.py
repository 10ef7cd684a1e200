"""Level-2 mosaic benchmark (issue 9): ours against reproject and Montage on the same 24 um BCDs.

    python benchmarks/bench_mosaic.py [--dces 1000] [--out bench-output/mosaic] [--offset-rms 0.5]
                                      [--exact-subset 100] [--memory-sizes 250] [--peers ...]
                                      [--replicas 10] [--reuse]

In one run, on one simulated 24 um scan map (``--dces`` DCEs in 8 legs; simulated, ingested and
reduced to BCD FITS once, kept in OUT/d<N> and reused):

* peers, each in a child process of its own (wall time of the child; peak RSS from ``wait4`` of
  the child, and for Montage the largest peak of the Montage programs it ran):
  - ``ours``: ``reduce.mosaic.files.mosaic_files([bcd_dir], out)`` (no client: one process, the
    unit computed with dask's synchronous scheduler): pointing refinement, background matching,
    outliers, drizzle;
  - ``ours-cluster``: the same as ``skyreduce mosaic`` runs it, on a LocalCluster of one
    single-threaded worker process per CPU (the unit's tasks spread over the workers by
    ``reduce.runner.compute_graph``); peak memory is the sum of the peaks of the client and of
    every worker process;
  - ``ours-store``: ``reduce.mosaic.pipeline.reduce_mips_level2(store, out, redo=True)``, the same
    from the store's BCD tables;
  - ``reproject``: ``reproject.mosaicking.reproject_and_coadd(..., reproject_interp,
    match_background=True, combine_function='mean')``;
  - ``reproject-exact``: the same with ``reproject_exact``, on the first ``--exact-subset`` frames
    only (too slow for the whole map), with ``reproject`` (interp) on the same subset for the ratio;
  - ``montage``: the Debian package's programs, ``mImgtbl``, ``mProjExec`` (which picks
    ``mProjectPP``, the plane-to-plane Mopex algorithm, for TAN in and out: it reads the SIP
    A/B/AP/BP distortion of the BCDs), ``mImgtbl``, ``mOverlaps``, ``mDiffExec``, ``mFitExec -l``,
    ``mBgModel -l`` (levels only, as ours: the frames differ by constants), ``mBgExec``,
    ``mAdd -a mean``, in a temporary folder.
  The peers get the BCDs as the SSC users give them to these tools: our masks applied (pixels with
  a fatal mask bit, or a non-finite image or uncertainty, set to NaN; ``reduce.mosaic.bcdfiles.
  load_frame``, the same pixels ours leaves out), in MJy/sr, with the BCD headers (WCS with SIP).
  All five make their mosaic on the grid of ours (its ``_maic`` header: TAN, north up, 2.45").
* twice: on the BCDs as they are (24 um BCDs have no leg or frame offsets) and with a known random
  additive offset per frame (``--offset-rms`` MJy/sr rms, exactly zero mean; written into copies of
  the BCDs for ours, into the masked copies for the peers);
* flux against truth (``reduce.simulate.mips_sky.truth_image`` on the mosaic's grid): median and
  robust rms (1.4826 MAD) of mosaic - truth over pixels covered by >= 3 frames (ours' ``_mcov``);
  aperture photometry (radius 18", annulus 24-36", annulus median subtracted) of the bright
  isolated truth sources, the same apertures on the truth image: mean and rms of the ratio; the
  per-frame residual level (median of mosaic - truth within 40" of each frame's centre): its
  robust rms about the mean of its leg ("steps") and the rms of the 8 leg means ("seams");
* memory of ours at the sizes ``--memory-sizes`` (the first K BCDs in time, the same tile size) and
  at N; reproject at the smallest size and at N; with ``--replicas K`` also ``ours-cluster`` on K
  copies of the map side by side in declination (K x N BCDs, e.g. 10,000: ``replicate``), whose
  memory against that at N shows what grows with the number of BCDs.

Results: a table on stdout and OUT/mosaic-<N>.json. The machine's load average is printed: the
times are worth their ratios within the run, not their absolute values.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

AORKEY = 40000001
MONTAGE = ("mImgtbl", "mProjExec", "mOverlaps", "mDiffExec", "mFitExec", "mBgModel", "mBgExec", "mAdd")
PHOT_R, ANN_IN, ANN_OUT = 18.0, 24.0, 36.0      # arcsec
LEVEL_R = 40.0                                   # arcsec: per-frame residual level within this of the centre
MIN_COVER = 3


# ---------------------------------------------------------------- data
def prepare(n: int, root: Path, report=print) -> dict:
    """Simulate, ingest and reduce to BCDs a 24 um scan map of ``n`` DCEs in ``root`` (kept; reused)."""
    done = root / "prepared.json"
    if done.exists():
        return json.loads(done.read_text())
    from reduce.mips.ingest import ingest_mips
    from reduce.mips.pipeline import reduce_mips
    from reduce.simulate.mips import AorSpec, simulate_mips
    shutil.rmtree(root, ignore_errors=True)
    spec = AorSpec(aorkey=AORKEY, aot_type="MipsScan", object="BENCH", ra=150.0, dec=2.0, start_mjd=53600.0,
                   n_dce=n, n_legs=8, arrays=(1,), pa=0.0, overhead=0.3)
    quiet = lambda *a, **k: None  # noqa: E731
    t0 = time.perf_counter()
    sim = simulate_mips(root / "raw", specs=[spec], seed=1)
    t1 = time.perf_counter()
    s = ingest_mips([root / "raw"], root / "mips.zarr", report=quiet)
    assert s.exit_code == 0, "ingest failed"
    t2 = time.perf_counter()
    s = reduce_mips(root / "mips.zarr", root / "bcd", report=quiet)
    assert s.exit_code == 0, "BCD reduction failed"
    t3 = time.perf_counter()
    info = {"dces": n, "raw_bytes": sim["bytes"], "truth": str(root / "raw" / "mips_truth.json"),
            "store": str(root / "mips.zarr"), "bcd": str(root / "bcd"),
            "simulate_s": t1 - t0, "ingest_s": t2 - t1, "bcd_s": t3 - t2}
    done.write_text(json.dumps(info, indent=1))
    report(f"prepared {n} DCEs in {root}: simulate {t1 - t0:.0f} s, ingest {t2 - t1:.0f} s, BCDs {t3 - t2:.0f} s")
    return info


def bcd_list(bcd_dir: Path):
    """The 24 um BCDs in time order (BcdFile)."""
    from reduce.mosaic.bcdfiles import find_bcds
    bcds, problems = find_bcds([bcd_dir])
    assert not problems, problems
    return sorted(bcds, key=lambda b: (b.mjd or 0.0, str(b.path)))


def frame_offsets(bcds, rms: float, seed: int = 2):
    import numpy as np
    rng = np.random.default_rng(seed)
    off = rng.normal(0.0, rms, len(bcds))
    return off - off.mean()


def write_inputs(bcds, root: Path, offsets=None):
    """Copies of the BCDs for the runs: ``root/ours`` (the BCD files, plus ``offsets`` in the image,
    companions linked) and ``root/masked`` (MJy/sr, NaN where ours leaves a pixel out, plus
    ``offsets``: for reproject and Montage). Reused when complete."""
    import numpy as np
    from astropy.io import fits

    from reduce.mosaic.bcdfiles import load_frame, to_mjy_per_sr
    mark = root / "done"
    if mark.exists():
        return root / "ours", root / "masked"
    shutil.rmtree(root, ignore_errors=True)
    (root / "ours").mkdir(parents=True)
    (root / "masked").mkdir()
    for i, b in enumerate(bcds):
        off = 0.0 if offsets is None else float(offsets[i])
        if offsets is None:
            os.symlink(b.path.resolve(), root / "ours" / b.path.name)
        else:
            with fits.open(b.path) as hdul:
                scale = to_mjy_per_sr(hdul[0].header.get("BUNIT", b.bunit), hdul[0].header)
                hdul[0].data = (hdul[0].data + off / scale).astype(hdul[0].data.dtype)
                hdul.writeto(root / "ours" / b.path.name)
        for comp in (b.unc_path, b.mask_path):
            if comp is not None:
                os.symlink(Path(comp).resolve(), root / "ours" / Path(comp).name)
        frame, _ = load_frame(b)
        img = np.where(frame.good, frame.image + off, np.nan).astype(np.float32)
        with fits.open(b.path) as hdul:
            h = hdul[0].header.copy()
        h["BUNIT"] = "MJy/sr"
        fits.PrimaryHDU(img, h).writeto(root / "masked" / b.path.name)
    mark.write_text("ok")
    return root / "ours", root / "masked"


def replicate(bcds, k: int, dest: Path) -> Path:
    """``k`` copies of the scan map side by side in declination (each moved by the map's extent in
    declination plus 0.05 deg, so that the copies do not overlap): ``k * len(bcds)`` BCD files in
    ``dest`` (copy j: AORKEY + j, CRVAL2 + j * step; companions linked under the new names). The
    same frames per output tile as one map, ``k`` times the frames, pairs and tiles."""
    import numpy as np
    from astropy.io import fits
    if (dest / "done").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    decs = np.array([b.wcs().wcs.crval[1] for b in bcds])
    step = float(decs.max() - decs.min()) + 0.15
    for j in range(k):
        for b in bcds:
            new = lambda name: name.replace(f"_{AORKEY}_", f"_{AORKEY + j}_")  # noqa: E731
            with fits.open(b.path) as hdul:
                h = hdul[0].header
                h["CRVAL2"] = h["CRVAL2"] + j * step
                h["AORKEY"] = AORKEY + j
                for key in ("DEC_REF", "DEC_RQST", "DEC_SLT"):
                    if key in h:
                        h[key] = h[key] + j * step
                hdul.writeto(dest / new(b.path.name))
            for comp in (b.unc_path, b.mask_path):
                if comp is not None:
                    os.symlink(Path(comp).resolve(), dest / new(Path(comp).name))
    (dest / "done").write_text("ok")
    return dest


def subset_dir(src: Path, bcds, k: int, dest: Path, masked=False) -> Path:
    """A folder of links to the first ``k`` BCDs (and companions) of ``src``."""
    if (dest / "done").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for b in bcds[:k]:
        names = [b.path.name] if masked else [b.path.name] + [Path(c).name for c in (b.unc_path, b.mask_path) if c]
        for nm in names:
            os.symlink((src / nm).resolve(), dest / nm)
    (dest / "done").write_text("ok")
    return dest


# ---------------------------------------------------------------- the peers (each in a child process)
def peer_ours(inp, out, **_):
    from reduce.mosaic.files import mosaic_files
    s = mosaic_files([inp], out, redo=True, report=lambda *a, **k: None)
    assert s.exit_code == 0, f"ours failed: {s.problems}"
    maic, = Path(out).glob("*_maic.fits")
    return {"image": str(maic), "coverage": str(maic).replace("_maic", "_mcov")}


def peer_ours_cluster(inp, out, **_):
    """``mosaic_files`` as ``skyreduce mosaic`` runs it: a LocalCluster of one single-threaded worker
    process per CPU; the unit's graph spreads over the workers (``reduce.runner.compute_graph``).
    Peak memory: the sum of the peaks (VmHWM) of this process and of every worker."""
    from cluster import connect      # skyreduce's cluster defaults (the workers' environment)
    from reduce.mosaic.files import mosaic_files
    with connect(n_workers=os.cpu_count(), threads_per_worker=1, dashboard=False) as client:
        s = mosaic_files([inp], out, redo=True, report=lambda *a, **k: None, client=client)
        assert s.exit_code == 0, f"ours (cluster) failed: {s.problems}"
        workers = client.run(_vm_hwm_mb)
    maic, = Path(out).glob("*_maic.fits")
    return {"image": str(maic), "coverage": str(maic).replace("_maic", "_mcov"),
            "workers_maxrss_mb": sorted(workers.values()), "sum_processes": True}


def peer_ours_store(inp, out, **_):
    from reduce.mosaic.pipeline import reduce_mips_level2
    s = reduce_mips_level2(inp, out, redo=True, report=lambda *a, **k: None)
    assert s.exit_code == 0, f"ours (store) failed: {s.problems}"
    maic, = Path(out).glob("*_maic.fits")
    return {"image": str(maic), "coverage": str(maic).replace("_maic", "_mcov")}


def peer_reproject(inp, out, header=None, exact=False, **_):
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS
    from reproject import reproject_exact, reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    hdr = fits.Header.fromtextfile(header)
    wcs_out, shape = WCS(hdr), (hdr["NAXIS2"], hdr["NAXIS1"])
    data = []
    for p in sorted(Path(inp).glob("*_bcd.fits")):
        with fits.open(p) as hdul:
            data.append((hdul[0].data.astype(np.float64), WCS(hdul[0].header)))
    img, fp = reproject_and_coadd(data, wcs_out, shape_out=shape,
                                  reproject_function=reproject_exact if exact else reproject_interp,
                                  combine_function="mean", match_background=True)
    img = np.where(fp > 0, img, np.nan)
    Path(out).mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(img.astype(np.float32), wcs_out.to_header()).writeto(Path(out) / "mosaic.fits", overwrite=True)
    fits.PrimaryHDU(fp.astype(np.float32), wcs_out.to_header()).writeto(Path(out) / "footprint.fits", overwrite=True)
    return {"image": str(Path(out) / "mosaic.fits"), "coverage": str(Path(out) / "footprint.fits")}


def peer_montage(inp, out, header=None, **_):
    """The Montage programs one after the other in ``out``; seconds per program in the result."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    for d in ("proj", "diff", "corr"):
        (out / d).mkdir(parents=True)
    shutil.copy(header, out / "template.hdr")
    steps = [("mImgtbl", [str(inp), "raw.tbl"]),
             ("mProjExec", ["-p", str(inp), "raw.tbl", "template.hdr", "proj", "stats.tbl"]),
             ("mImgtbl", ["proj", "proj.tbl"]),
             ("mOverlaps", ["proj.tbl", "diffs.tbl"]),
             ("mDiffExec", ["-p", "proj", "diffs.tbl", "template.hdr", "diff"]),
             ("mFitExec", ["-l", "diffs.tbl", "fits.tbl", "diff"]),
             ("mBgModel", ["-l", "proj.tbl", "fits.tbl", "corrections.tbl"]),
             ("mBgExec", ["-p", "proj", "proj.tbl", "corrections.tbl", "corr"]),
             ("mAdd", ["-e", "-a", "mean", "-p", "corr", "proj.tbl", "template.hdr", "mosaic.fits"])]
    times, msgs = {}, {}
    for name, args in steps:
        t0 = time.perf_counter()
        r = subprocess.run([name, *args], cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        key = name if name not in times else name + "2"
        times[key] = time.perf_counter() - t0
        msgs[key] = r.stdout.strip()[-300:]
        if r.returncode != 0 or 'stat="ERROR"' in r.stdout:
            raise RuntimeError(f"{name} failed: {r.stdout.strip()[-500:]}")
    import re
    ndiff = int(re.search(r"count=(\d+)", msgs["mOverlaps"]).group(1))
    return {"image": str(out / "mosaic.fits"), "coverage": str(out / "mosaic_area.fits"), "step_s": times,
            "messages": msgs, "overlaps": ndiff}


PEERS = {"ours": peer_ours, "ours-cluster": peer_ours_cluster, "ours-store": peer_ours_store, "reproject": peer_reproject,
         "reproject-exact": lambda *a, **k: peer_reproject(*a, exact=True, **k), "montage": peer_montage}


def child_main(args):
    """--child NAME INPUT OUT RESULT [--header H]: one peer; its result JSON written to RESULT."""
    name, inp, out, result = args.child
    t0 = time.perf_counter()
    res = PEERS[name](inp, out, header=args.header)
    res["wall_s"] = time.perf_counter() - t0
    import resource
    res["self_maxrss_mb"] = _vm_hwm_mb() + sum(res.get("workers_maxrss_mb", []))
    res["children_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    Path(result).write_text(json.dumps(res))


def _vm_hwm_mb():
    """This process's peak RSS since its exec (VmHWM; ru_maxrss of a child also counts the parent's
    pages it was forked with)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


CODE = None        # the snapshot of the package the children import (``snapshot_code``)
REUSE = False      # reuse a peer's result from an earlier run of the same folder (``--reuse``)


def snapshot_code(dest: Path) -> Path:
    """Copy the ``reduce`` package (and ``schemas/``) as they are now into ``dest``: every child
    imports that copy, so edits to the work tree during a long run change nothing measured."""
    repo = Path(__file__).resolve().parents[1]
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(repo / "reduce", dest / "reduce", ignore=shutil.ignore_patterns("__pycache__"))
    if (repo / "schemas").is_dir():
        shutil.copytree(repo / "schemas", dest / "schemas")
    return dest


def run_peer(name, inp, out, header=None, log=None, report=print) -> dict:
    """``name`` in a child process: its result, wall time (child's own clock and the parent's) and peak
    RSS (the child's, from wait4; Montage: the largest of the programs it ran)."""
    out = Path(out)
    result = Path(str(out) + ".result.json")
    if REUSE and result.exists():
        res = json.loads(result.read_text())
        if Path(res["image"]).exists():
            res.update(peer=name, reused=True, process_wall_s=None, cpu_s=None,
                       peak_rss_mb=res["children_maxrss_mb"] if name == "montage" else res["self_maxrss_mb"])
            report(f"  {name}: {res['wall_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB (reused from {result})")
            return res
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", name, str(Path(inp).resolve()), str(out.resolve()),
           str(result.resolve())]
    if header:
        cmd += ["--header", str(Path(header).resolve())]
    logf = open(log or str(out) + ".log", "w")
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if CODE:
        env["PYTHONPATH"] = os.pathsep.join([str(CODE), *filter(None, [os.environ.get("PYTHONPATH")])])
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    logf.close()
    if p.returncode != 0 or not result.exists():
        tail = Path(logf.name).read_text()[-800:]
        report(f"  {name}: FAILED (exit {p.returncode}): {tail}")
        return {"peer": name, "failed": True, "error": tail}
    res = json.loads(result.read_text())
    # Montage: the largest peak of its programs (forked from a small child that imports the standard
    # library only); the others: the child's own peak
    res.update(peer=name, process_wall_s=wall, cpu_s=ru.ru_utime + ru.ru_stime,
               peak_rss_mb=res["children_maxrss_mb"] if name == "montage" else res["self_maxrss_mb"])
    report(f"  {name}: {res['wall_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB (load {os.getloadavg()[0]:.1f})")
    return res


def write_template(maic: Path, dest: Path):
    """The mosaic grid of ours as a FITS header template (Montage's .hdr, read by reproject too)."""
    from astropy.io import fits
    from astropy.wcs import WCS
    h = fits.getheader(maic)
    w = WCS(h).celestial
    t = fits.Header()
    t["SIMPLE"], t["BITPIX"], t["NAXIS"] = True, -64, 2
    t["NAXIS1"], t["NAXIS2"] = h["NAXIS1"], h["NAXIS2"]
    wh = w.to_header()
    if "PC1_1" in wh:       # CDELT + PC -> CD (wcstools in Montage reads either; CD is the plainest)
        import numpy as np
        cd = w.wcs.get_pc() * w.wcs.cdelt[:, None]
        for k in [k for k in list(wh) if k.startswith(("PC", "CDELT"))]:
            del wh[k]
        for i in range(2):
            for j in range(2):
                wh[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
        np.testing.assert_allclose(WCS(wh).wcs.cd if WCS(wh).wcs.has_cd() else cd, cd)
    for k in ("CTYPE1", "CTYPE2", "EQUINOX", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
              "CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        if k in wh:
            t[k] = wh[k]
    t["EQUINOX"] = 2000.0
    dest.write_text("\n".join(c.image.rstrip() for c in t.cards) + "\nEND\n")
    return dest


# ---------------------------------------------------------------- accuracy
def on_grid(img, header, shape, ref_header):
    """``img`` (whose WCS is ``header``) on the reference grid of ``shape``: the same WCS but for
    CRPIX, shifted by whole pixels (mAdd without -e trims the template to the data)."""
    import numpy as np
    if img.shape == tuple(shape):
        return img
    dx = int(round(ref_header["CRPIX1"] - header["CRPIX1"]))
    dy = int(round(ref_header["CRPIX2"] - header["CRPIX2"]))
    out = np.full(shape, np.nan)
    ys, xs = slice(max(dy, 0), min(dy + img.shape[0], shape[0])), slice(max(dx, 0), min(dx + img.shape[1], shape[1]))
    out[ys, xs] = img[ys.start - dy:ys.stop - dy, xs.start - dx:xs.stop - dx]
    return out


class Truth:
    """Truth images on mosaic grids (cached per grid) and the bright isolated sources."""

    def __init__(self, truth_json):
        from reduce.simulate.mips_sky import sky_of
        self.truth = json.loads(Path(truth_json).read_text())
        self.sky = sky_of(self.truth)
        self._cache = {}

    def image(self, wcs, shape):
        from reduce.simulate.mips_sky import truth_image
        key = (wcs.to_header_string(), tuple(shape))
        if key not in self._cache:
            self._cache[key] = truth_image(self.sky, 24, wcs, shape)
        return self._cache[key]

    def bright_isolated(self, n_max=200, min_jy=0.005):
        """Sources of >= ``min_jy`` (the brightest ``n_max``) with no other source of > 5 % of their
        flux within 48"."""
        import numpy as np
        s = self.sky.sources
        ra, dec, f = np.asarray(s["ra"]), np.asarray(s["dec"]), np.asarray(s["flux24"])
        order = np.argsort(-f)
        keep = []
        cosd = np.cos(np.radians(dec))
        for i in order[f[order] >= min_jy]:
            d = np.hypot((ra - ra[i]) * cosd[i], dec - dec[i]) * 3600.0
            near = (d < 48.0) & (d > 0) & (f > 0.05 * f[i])
            if not near.any():
                keep.append(i)
            if len(keep) >= n_max:
                break
        return ra[keep], dec[keep], f[keep]


def _robust(x):
    import numpy as np
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not x.size:
        return float("nan"), float("nan")
    med = float(np.median(x))
    return med, float(1.4826 * np.median(np.abs(x - med)))


def accuracy(image_path, cov, truth: Truth, frames, min_cover=MIN_COVER, ref_header=None) -> dict:
    """Flux figures of one mosaic (see the module docstring). ``cov``: coverage (frames) on its grid;
    ``frames``: (ra, dec, leg) of every frame's centre."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales
    from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
    from photutils.aperture import ApertureStats

    with fits.open(image_path) as hdul:
        img, h = hdul[0].data.astype(np.float64), hdul[0].header
    if img.ndim > 2:
        img = img.reshape(img.shape[-2:])
    if ref_header is not None and img.shape != cov.shape:
        img, h = on_grid(img, h, cov.shape, ref_header), ref_header
    wcs = WCS(h).celestial
    tru = truth.image(wcs, img.shape)
    good = np.isfinite(img) & (cov >= min_cover)
    resid = img - tru
    med, rms = _robust(resid[good])
    pix = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)

    # aperture photometry: the same apertures on the mosaic and on the truth image
    ra, dec, flux = truth.bright_isolated()
    x, y = wcs.all_world2pix(ra, dec, 0)
    ny, nx = img.shape
    r_out = ANN_OUT / pix
    inside = (x > r_out + 1) & (y > r_out + 1) & (x < nx - r_out - 2) & (y < ny - r_out - 2)
    ratios = []
    if inside.any():
        pos = np.column_stack([x[inside], y[inside]])
        ap, an = CircularAperture(pos, PHOT_R / pix), CircularAnnulus(pos, ANN_IN / pix, ANN_OUT / pix)
        cov_ok = ApertureStats(cov.astype(float), an).min >= min_cover
        cov_ok &= ApertureStats(cov.astype(float), ap).min >= min_cover

        def phot(a):
            a = np.where(np.isfinite(a), a, np.nan)
            bkg = ApertureStats(a, an).median
            t = aperture_photometry(np.nan_to_num(a), ap)["aperture_sum"].value
            nbad = aperture_photometry((~np.isfinite(a)).astype(float), ap)["aperture_sum"].value
            return np.where(nbad > 0, np.nan, t - bkg * ap.area)
        r = phot(img) / phot(tru)
        ratios = r[cov_ok & np.isfinite(r)]
    # per-frame residual levels, legs
    fx, fy = wcs.all_world2pix(frames["ra"], frames["dec"], 0)
    rad = LEVEL_R / pix
    levels = np.full(len(fx), np.nan)
    R = int(np.ceil(rad))
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1]
    disk = (xx ** 2 + yy ** 2) <= rad ** 2
    for i, (cx, cy) in enumerate(zip(np.rint(fx).astype(int), np.rint(fy).astype(int))):
        if cy - R < 0 or cx - R < 0 or cy + R >= ny or cx + R >= nx:
            continue
        cut = resid[cy - R:cy + R + 1, cx - R:cx + R + 1][disk]
        ok = good[cy - R:cy + R + 1, cx - R:cx + R + 1][disk]
        if ok.sum() > 0.5 * disk.sum():
            levels[i] = np.median(cut[ok])
    legs = np.asarray(frames["leg"])
    leg_means = np.array([np.nanmean(levels[legs == g]) for g in np.unique(legs)])
    steps = levels - leg_means[np.searchsorted(np.unique(legs), legs)]
    return {"pixels": int(good.sum()), "resid_median": med, "resid_rms": rms,
            "phot_n": int(len(ratios)), "phot_ratio_mean": float(np.mean(ratios)) if len(ratios) else float("nan"),
            "phot_ratio_rms": float(np.std(ratios)) if len(ratios) else float("nan"),
            "frame_levels_rms": _robust(levels)[1], "step_rms": _robust(steps)[1],
            "seam_rms": float(np.nanstd(leg_means)), "frames_measured": int(np.isfinite(levels).sum())}


def offset_leftover(off_path, asis_path, cov, frames, min_cover=MIN_COVER, ref_header=None) -> dict:
    """What the per-frame offsets left in a mosaic: (mosaic with offsets) - (mosaic without) over
    pixels covered by >= ``min_cover`` frames: rms, largest |difference|, and the rms of its per-frame
    medians (within 40" of each frame's centre). Zero for a peer that removes them exactly."""
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales
    a, h = fits.getdata(off_path, header=True)
    b, hb = fits.getdata(asis_path, header=True)
    if ref_header is not None:
        a, b = on_grid(a, h, cov.shape, ref_header), on_grid(b, hb, cov.shape, ref_header)
        h = ref_header
    if a.shape != b.shape or a.shape != cov.shape:
        return {"error": "grids differ"}
    d = a.astype(np.float64) - b.astype(np.float64)
    good = np.isfinite(d) & (cov >= min_cover)
    wcs = WCS(h).celestial
    pix = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
    fx, fy = wcs.all_world2pix(frames["ra"], frames["dec"], 0)
    R = int(np.ceil(LEVEL_R / pix))
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1]
    disk = (xx ** 2 + yy ** 2) <= (LEVEL_R / pix) ** 2
    lv = []
    for cx, cy in zip(np.rint(fx).astype(int), np.rint(fy).astype(int)):
        if R <= cy < d.shape[0] - R and R <= cx < d.shape[1] - R:
            cut, ok = d[cy - R:cy + R + 1, cx - R:cx + R + 1][disk], good[cy - R:cy + R + 1, cx - R:cx + R + 1][disk]
            if ok.sum() > 0.5 * disk.sum():
                lv.append(np.median(cut[ok]))
    return {"diff_rms": float(np.sqrt(np.mean(d[good] ** 2))), "diff_max": float(np.max(np.abs(d[good]))),
            "diff_median": float(np.median(d[good])), "frame_level_rms": float(np.std(lv)) if lv else float("nan")}


def coverage_of(res, ref_cov):
    """Coverage (frames) on the peer's grid: ours' _mcov; the reference grid's for the others."""
    import numpy as np
    from astropy.io import fits
    if res["peer"].startswith("ours"):
        return fits.getdata(res["coverage"]).astype(np.float64)
    return ref_cov


def frame_centres(bcds):
    import numpy as np
    ra, dec, leg = [], [], []
    for b in bcds:
        w = b.wcs()
        ny, nx = b.shape
        r, d = w.all_pix2world([(nx - 1) / 2.0], [(ny - 1) / 2.0], 0)
        ra.append(float(r[0]))
        dec.append(float(d[0]))
        leg.append(int(b.expid or 0))
    return {"ra": np.array(ra), "dec": np.array(dec), "leg": np.array(leg)}


# ---------------------------------------------------------------- main
def table(rows, cols) -> str:
    widths = [max(len(str(r[i])) for r in [cols] + rows) for i in range(len(cols))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [cols] + rows)


def _f(x, fmt):
    try:
        return format(x, fmt) if x == x else "-"
    except (TypeError, ValueError):
        return "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dces", type=int, default=1000, help="24 um DCEs of the scan map (default 1000)")
    ap.add_argument("--out", type=Path, default=Path("bench-output/mosaic"))
    ap.add_argument("--offset-rms", type=float, default=0.5, help="per-frame offsets added, MJy/sr rms (0: none)")
    ap.add_argument("--exact-subset", type=int, default=100, help="frames for reproject_exact (0: skip)")
    ap.add_argument("--memory-sizes", default="250", help="smaller sizes (BCDs) for ours' memory scaling")
    ap.add_argument("--peers", default="ours,ours-cluster,ours-store,reproject,montage",
                    help="peers of the full runs (comma-separated; default ours,ours-cluster,ours-store,reproject,"
                         "montage)")
    ap.add_argument("--offset-peers", default="ours,reproject,montage",
                    help="peers of the run with offsets (ours always; default ours,reproject,montage)")
    ap.add_argument("--replicas", type=int, default=0,
                    help="also ours on REPLICAS copies of the map side by side (e.g. 10: 10,000 BCDs from 1,000), "
                         "for memory at that size (0: skip)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the peers' results already in OUT/runs-N (same inputs and code assumed)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--header", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)

    global CODE, REUSE
    REUSE = args.reuse
    CODE = snapshot_code(args.out / "code").resolve()    # the package measured: the work tree as it is now
    sys.path.insert(0, str(CODE))
    import numpy as np
    from astropy.io import fits

    report = lambda line: print(line, flush=True)  # noqa: E731
    peers = [p for p in args.peers.split(",") if p]
    if "montage" in peers and not all(shutil.which(m) for m in MONTAGE):
        report("Montage not found (apt-get install montage): skipped")
        peers.remove("montage")
    root = args.out / f"d{args.dces}"
    runs = args.out / f"runs-{args.dces}"
    info = prepare(args.dces, root, report)
    bcds = bcd_list(Path(info["bcd"]))
    report(f"{len(bcds)} BCDs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    truth = Truth(info["truth"])
    frames = frame_centres(bcds)
    results = {"dces": args.dces, "bcds": len(bcds), "prepare": info, "offset_rms": args.offset_rms,
               "cpus": os.cpu_count(), "load_start": os.getloadavg(), "code": str(CODE), "runs": {}, "memory": {}}
    path = args.out / f"mosaic-{args.dces}.json"

    def dump():
        results["load_end"] = os.getloadavg()
        path.write_text(json.dumps(results, indent=1,
                                   default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))

    def measure(res, ref_cov, sub_cov=None):
        for name, r in res.items():
            if r.get("failed") or "accuracy" in r:
                continue
            cov = sub_cov if "-sub" in name else coverage_of(r, ref_cov)
            try:
                r["accuracy"] = accuracy(r["image"], cov, truth, frames,
                                         ref_header=fits.getheader(res["ours"]["image"]))
            except Exception as exc:  # noqa: BLE001 - a peer's odd output is reported, not fatal
                r["accuracy"] = {"error": repr(exc)}
                report(f"  accuracy of {name} failed: {exc!r}")

    # 1. the BCDs as they are: every peer on the grid of ours
    t0 = time.perf_counter()
    ours_in, masked = write_inputs(bcds, root / "inputs-asis")
    report(f"[as is] inputs ready ({time.perf_counter() - t0:.0f} s)")
    res = results["runs"]["as is"] = {}
    res["ours"] = run_peer("ours", ours_in, runs / "asis" / "ours", report=report)
    if res["ours"].get("failed"):
        dump()
        raise SystemExit("ours failed: nothing to compare with")
    header = write_template(Path(res["ours"]["image"]), runs / "asis" / "template.hdr")
    ref_cov = fits.getdata(res["ours"]["coverage"]).astype(np.float64)
    for name in peers:
        if name == "ours-cluster":
            res[name] = run_peer(name, ours_in, runs / "asis" / name, report=report)
        elif name == "ours-store":
            res[name] = run_peer(name, info["store"], runs / "asis" / name, report=report)
        elif name != "ours":
            res[name] = run_peer(name, masked, runs / "asis" / name, header=header, report=report)
    measure(res, ref_cov)
    dump()
    # 2. reproject_exact on a subset, beside interp and ours on the same frames
    if args.exact_subset:
        k = args.exact_subset
        sub_o = subset_dir(ours_in, bcds, k, root / f"sub{k}-ours")
        sub_m = subset_dir(masked, bcds, k, root / f"sub{k}-masked", masked=True)
        r = res[f"ours-sub{k}"] = run_peer("ours", sub_o, runs / "asis" / f"ours-sub{k}", report=report)
        if not r.get("failed"):
            hdr = write_template(Path(r["image"]), runs / "asis" / f"template-sub{k}.hdr")
            res[f"reproject-sub{k}"] = run_peer("reproject", sub_m, runs / "asis" / f"reproject-sub{k}", header=hdr,
                                                report=report)
            res[f"reproject-exact-sub{k}"] = run_peer("reproject-exact", sub_m, runs / "asis" / f"exact-sub{k}",
                                                      header=hdr, report=report)
            measure(res, ref_cov, fits.getdata(r["coverage"]).astype(np.float64))
        dump()
    # 3. memory of ours at smaller sizes (the first K BCDs in time; the same tile size), reproject at the smallest
    from reduce.mosaic.pipeline import MosaicParams, plan
    from reduce.mosaic.sources import FileFrames
    sizes = sorted({int(s) for s in args.memory_sizes.split(",") if s and int(s) < len(bcds)} | {len(bcds)})
    for k in sizes:
        pl = plan(FileFrames(tuple(bcds[:k])), "MIPS", 1, MosaicParams())
        per_tile = [len(m) for m in pl.members]
        if k == len(bcds):
            r, rr = res["ours"], res.get("reproject")
        else:
            r = run_peer("ours", subset_dir(ours_in, bcds, k, root / f"sub{k}-ours"), runs / "memory" / f"ours-{k}",
                         report=report)
            rr = None
            if k == sizes[0] and "reproject" in peers and not r.get("failed"):
                hdr = write_template(Path(r["image"]), runs / "memory" / f"template-{k}.hdr")
                rr = run_peer("reproject", subset_dir(masked, bcds, k, root / f"sub{k}-masked", masked=True),
                              runs / "memory" / f"reproject-{k}", header=hdr, report=report)
        results["memory"][k] = {"ours_mb": r.get("peak_rss_mb"), "ours_s": r.get("wall_s"),
                                "reproject_mb": (rr or {}).get("peak_rss_mb"), "reproject_s": (rr or {}).get("wall_s"),
                                "grid": list(pl.grid.shape), "tiles": len(pl.bounds),
                                "frames_per_tile_max": max(per_tile), "frames_per_tile_mean": float(np.mean(per_tile))}
        dump()
    # 3b. memory at REPLICAS x N BCDs (copies of the map side by side): ours on the cluster
    if args.replicas > 1:
        k = args.replicas
        t0 = time.perf_counter()
        rep = replicate(bcds, k, root / f"rep{k}")
        report(f"[replicas] {k} x {len(bcds)} BCDs ready ({time.perf_counter() - t0:.0f} s)")
        from reduce.mosaic.bcdfiles import find_bcds
        rb, _ = find_bcds([rep])
        pl = plan(FileFrames(tuple(rb)), "MIPS", 1, MosaicParams())
        per_tile = [len(m) for m in pl.members]
        r = run_peer("ours-cluster", rep, runs / "memory" / f"ours-cluster-{k * len(bcds)}", report=report)
        results["memory"][f"cluster-{k * len(bcds)}"] = {
            "ours_mb": r.get("peak_rss_mb"), "ours_s": r.get("wall_s"), "workers_mb": r.get("workers_maxrss_mb"),
            "grid": list(pl.grid.shape), "tiles": len(pl.bounds), "frames_per_tile_max": max(per_tile),
            "frames_per_tile_mean": float(np.mean(per_tile)), "pairs": int(len(pl.pairs))}
        r1 = res.get("ours-cluster", {})
        if not r1.get("failed") and r1:
            results["memory"][f"cluster-{len(bcds)}"] = {"ours_mb": r1.get("peak_rss_mb"), "ours_s": r1.get("wall_s"),
                                                         "workers_mb": r1.get("workers_maxrss_mb")}
        dump()
    # 4. a known additive offset per frame: ours on copies of the BCDs, the peers on the masked copies
    if args.offset_rms > 0:
        t0 = time.perf_counter()
        o_in, o_masked = write_inputs(bcds, root / "inputs-offsets", frame_offsets(bcds, args.offset_rms))
        report(f"[offsets] inputs ready ({time.perf_counter() - t0:.0f} s)")
        off = results["runs"]["offsets"] = {}
        off["ours"] = run_peer("ours", o_in, runs / "offsets" / "ours", report=report)
        for name in [p for p in args.offset_peers.split(",") if p in peers and p not in ("ours", "ours-store")]:
            off[name] = run_peer(name, o_masked, runs / "offsets" / name, header=header, report=report)
            dump()
        measure(off, ref_cov)
        results["offset_leftover"] = {
            n: offset_leftover(off[n]["image"], res[n]["image"], ref_cov, frames,
                               ref_header=fits.getheader(res["ours"]["image"]))
            for n in off if n in res and not off[n].get("failed") and not res[n].get("failed")}
        dump()
    report_table(results, args, report)
    report(f"figures in {path}")
    return results


def report_table(results, args, report=print):
    mem = results["memory"]
    report(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (times: ratios within this run)")
    cols = ("set", "peer", "wall s", "x ours", "peak MB", "pix", "resid med", "resid rms", "phot ratio (n)",
            "frame lvl rms", "step rms", "seam rms")
    rows = []
    for label, res in results["runs"].items():
        base = res["ours"].get("wall_s")
        for name, r in res.items():
            if r.get("failed"):
                rows.append((label, name, "FAILED", "", "", "", "", "", "", "", "", ""))
                continue
            a = r.get("accuracy", {})
            ref = res.get(f"ours-sub{args.exact_subset}", {}).get("wall_s") if "-sub" in name else base
            rows.append((label, name, _f(r["wall_s"], ".1f"), _f(r["wall_s"] / ref, ".2f") if ref else "-",
                         _f(r["peak_rss_mb"], ".0f"), a.get("pixels", "-"), _f(a.get("resid_median"), "+.4f"),
                         _f(a.get("resid_rms"), ".4f"),
                         f"{_f(a.get('phot_ratio_mean'), '.4f')} +- {_f(a.get('phot_ratio_rms'), '.4f')} "
                         f"({a.get('phot_n', '-')})",
                         _f(a.get("frame_levels_rms"), ".4f"), _f(a.get("step_rms"), ".4f"),
                         _f(a.get("seam_rms"), ".4f")))
    report(table(rows, cols))
    m = results["runs"]["as is"].get("montage", {})
    if m.get("step_s"):
        report("Montage steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in m["step_s"].items())
               + f"; {m.get('overlaps')} overlaps")
    for n, v in results.get("offset_leftover", {}).items():
        report(f"offsets ({args.offset_rms} MJy/sr rms per frame) left in {n}: " + (
            v["error"] if "error" in v else f"rms {v['diff_rms']:.2e}, max {v['diff_max']:.2e}, median "
            f"{v['diff_median']:+.2e}, per-frame rms {v['frame_level_rms']:.2e} MJy/sr"))
    report("memory: " + "; ".join(f"{k} BCDs (at most {v.get('frames_per_tile_max', '-')} frames on a tile): ours "
                                  f"{_f(v['ours_mb'], '.0f')} MB in {_f(v['ours_s'], '.0f')} s"
                                  + (f" (workers {', '.join(_f(w, '.0f') for w in v['workers_mb'])} MB)"
                                     if v.get("workers_mb") else "")
                                  + (f", reproject {_f(v['reproject_mb'], '.0f')} MB" if v.get("reproject_mb") else "")
                                  for k, v in mem.items()))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
