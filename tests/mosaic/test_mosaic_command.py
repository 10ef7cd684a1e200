"""``skyreduce mosaic``: the level-2 step on BCD FITS files (ours, and the SSC's real IRAC BCDs),
and its bad inputs: each gets one line naming the file and the reason, what can be mosaicked
is, exit 1 when anything was skipped (2 stays for usage and fatal errors)."""
import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from reduce.cli import main
from reduce.mips.ingest import ingest_mips
from reduce.mips.pipeline import reduce_mips
from reduce.mosaic.files import mosaic_files
from reduce.simulate.mips import AorSpec, simulate_mips

AOR = AorSpec(aorkey=23000001, aot_type="MipsPhot", object="CMD", ra=30.0, dec=-10.0, start_mjd=53700.0,
              n_dce=8, exptime_ge=3.0, arrays=(1, 2), pa=10.0)
HD209458 = (330.794875, 18.884306)     # SIMBAD, ICRS J2000 (proper motion 29, -18 mas/yr)


@pytest.fixture(scope="module")
def bcds(tmp_path_factory):
    """Our BCD FITS files of one 24 + 70 um photometry AOR (level 1 only)."""
    root = tmp_path_factory.mktemp("mosaic_cmd")
    simulate_mips(root / "raw", seed=6, specs=[AOR])
    assert ingest_mips([root / "raw"], root / "mips.zarr", report=lambda line: None).exit_code == 0
    assert reduce_mips(root / "mips.zarr", root / "bcd", report=lambda line: None).exit_code == 0
    return root / "bcd"


def _copy(bcds, tmp_path, chnl, n=None):
    folder = tmp_path / f"in{chnl}"
    folder.mkdir(exist_ok=True)
    names = sorted(bcds.glob(f"SPITZER_M{chnl}_*_bcd.fits"))[:n]
    for b in names:
        for suffix in ("_bcd", "_bunc", "_bbmsk"):
            shutil.copy(str(b).replace("_bcd", suffix), folder)
    return folder


def test_mixed_arrays_without_per_aor_mosaic_one_array(bcds, tmp_path, capsys):
    rc = main(["mosaic", str(bcds), "--out", str(tmp_path / "out"), "-q", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    skipped = [line for line in err.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 8 and all("channel 2" in line and "--per-aor" in line for line in skipped)
    assert all(".fits" in line for line in skipped)
    assert len(list((tmp_path / "out").glob("SPITZER_M1_COMBINED_*_maic.fits"))) == 1
    assert not list((tmp_path / "out").glob("SPITZER_M2_*"))


def test_per_aor_mosaics_every_array_and_rerun_skips(bcds, tmp_path):
    lines = []
    s = mosaic_files([bcds], tmp_path / "out", per_aor=True, report=lines.append)
    assert s.exit_code == 0, lines
    for c in (1, 2):
        (path,) = list((tmp_path / "out").glob(f"SPITZER_M{c}_23000001_*_maic.fits"))
        assert fits.getheader(path)["AORKEY"] == 23000001
    again = mosaic_files([bcds], tmp_path / "out", per_aor=True, report=lines.append)
    assert again.ran == 0 and again.skipped == 2


def test_missing_bunc_and_mask_warn_and_estimate(bcds, tmp_path):
    folder = _copy(bcds, tmp_path, 1)
    victim = sorted(folder.glob("*_bcd.fits"))[2]
    (folder / victim.name.replace("_bcd", "_bunc")).unlink()
    (folder / victim.name.replace("_bcd", "_bbmsk")).unlink()
    lines = []
    s = mosaic_files([folder], tmp_path / "out", report=lines.append)
    warns = [line for line in lines if line.startswith("WARNING")]
    assert len(warns) == 2 and all(str(victim) in line for line in warns), lines
    assert s.exit_code == 0 and s.units["done"] == 1                   # a warning, not a skip
    (tbl,) = list((tmp_path / "out").glob("*_mptg.tbl"))
    rows = Table.read(tbl, format="ascii.ipac")
    assert (rows["status"] == "ok").all() and len(rows) == 8


def test_broken_wcs_and_garbage_skipped_rest_mosaicked(bcds, tmp_path):
    folder = _copy(bcds, tmp_path, 1)
    victim = sorted(folder.glob("*_bcd.fits"))[0]
    with fits.open(victim, mode="update") as hd:
        for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
            hd[0].header[k] = 0.0
    (folder / "SPITZER_M1_0_0000_0000_x_bcd.fits").write_text("not a FITS file")
    lines = []
    s = mosaic_files([folder], tmp_path / "out", report=lines.append)
    assert s.exit_code == 1
    assert any(str(victim) in line and "WCS" in line for line in lines), lines
    assert any("x_bcd.fits" in line for line in lines), lines
    (path,) = list((tmp_path / "out").glob("*_maic.fits"))
    assert fits.getheader(path)["NFRAMES"] == 7


def test_single_frame_and_frames_that_do_not_overlap(bcds, tmp_path):
    one = _copy(bcds, tmp_path, 1, n=1)
    s = mosaic_files([one], tmp_path / "one", report=lambda line: None)
    assert s.exit_code == 0 and any("only one usable frame" in n for n in s.notes), s.notes
    assert fits.getheader(next((tmp_path / "one").glob("*_maic.fits")))["NFRAMES"] == 1
    apart = _copy(bcds, tmp_path, 2, n=3)        # move the 70 um frames (5' wide) 12' apart
    for k, b in enumerate(sorted(apart.glob("*_bcd.fits"))):
        with fits.open(b, mode="update") as hd:
            hd[0].header["CRVAL2"] += 0.2 * k
    s = mosaic_files([apart], tmp_path / "apart", report=lambda line: None)
    assert s.exit_code == 0
    alone = [n for n in s.notes if "overlaps no other frame" in n]
    h = fits.getheader(next((tmp_path / "apart").glob("*_maic.fits")))
    assert h["NFRAMES"] >= 2 and len(alone) == h["NFRAMES"], s.notes      # (a stim-flash DCE is no frame)
    assert h["NAXIS2"] * 4.0 / 3600 > 0.2 * (h["NFRAMES"] - 1)           # one grid holds them all


def test_reference_catalogue_unreadable_or_matching_nothing(bcds, tmp_path):
    folder = _copy(bcds, tmp_path, 1)
    bad = tmp_path / "refcat.csv"
    bad.write_text("name,flux\nA,1\n")
    lines = []
    s = mosaic_files([folder], tmp_path / "bad", refcat=bad, report=lines.append)
    assert s.exit_code == 1 and any(str(bad) in line and "SKIPPED" in line for line in lines), lines
    assert fits.getheader(next((tmp_path / "bad").glob("*_maic.fits")))["PTGMODE"] == "relative"
    far = tmp_path / "far.csv"
    Table({"ra": [200.0, 201.0], "dec": [50.0, 51.0]}).write(far, format="ascii.csv")
    s = mosaic_files([folder], tmp_path / "far", refcat=far, report=lambda line: None)
    assert s.exit_code == 0 and any("matched no source" in n for n in s.notes), s.notes


@pytest.mark.slow
def test_real_irac_bcds_hd209458(reference_dir, tmp_path):
    """The 501 real IRAC channel-1 subarray cubes (64 planes each, one pointing): mosaicked as
    IRAC (0.6" pixels); HD 209458 within 1" of its catalogue position; its flux in the mosaic
    equals the mean of the per-frame (cube-coadd) aperture photometry within 1 %; fitsverify
    clean; the per-cube uncertainty estimated from the planes where there is no _bunc."""
    from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
    from photutils.centroids import centroid_2dg
    from reduce.mosaic.bcdfiles import find_bcds, load_frame
    folder = reference_dir / "spitzer" / "irac-hd209458"
    lines = []
    s = mosaic_files([folder], tmp_path / "out", report=lines.append)
    assert s.exit_code == 0 and s.units["done"] == 1
    assert len([line for line in lines if line.startswith("WARNING") and "_bunc" in line]) == 500
    (path,) = list((tmp_path / "out").glob("SPITZER_I1_COMBINED_*_maic.fits"))
    with fits.open(path) as hd:
        img, h = hd[0].data.astype(float), hd[0].header
    w = WCS(h)
    assert h["INSTRUME"] == "IRAC" and h["NFRAMES"] == 501 and h["BUNIT"] == "MJy/sr"
    assert abs(abs(w.pixel_scale_matrix[0, 0]) * 3600 - 0.6) < 1e-9
    yy, xx = np.unravel_index(np.nanargmax(img), img.shape)
    cx, cy = centroid_2dg(img[yy - 8:yy + 9, xx - 8:xx + 9] - np.nanmedian(img))
    ra, dec = w.all_pix2world(xx - 8 + cx, yy - 8 + cy, 0)
    sep = np.hypot((ra - HD209458[0]) * np.cos(np.radians(dec)), dec - HD209458[1]) * 3600
    assert sep < 1.0, sep

    def phot(image, wcs):
        x, y = wcs.all_world2pix(ra, dec, 0)
        scale = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600
        ap = CircularAperture((x, y), r=6.0 / scale)
        an = CircularAnnulus((x, y), 10.0 / scale, 14.0 / scale)
        good = np.isfinite(image)
        sky = np.nanmedian(an.to_mask("center").get_values(np.where(good, image, np.nan)))
        tot = aperture_photometry(np.where(good, image, 0.0) - sky, ap)["aperture_sum"][0]
        return tot * scale ** 2                       # MJy/sr * arcsec^2

    files, _ = find_bcds([folder])
    per_frame = [phot(load_frame(b)[0].image, b.wcs()) for b in files]
    mosaic = phot(img, w)
    assert abs(mosaic / np.mean(per_frame) - 1) < 0.01, (mosaic, np.mean(per_frame), np.std(per_frame))
    if shutil.which("fitsverify"):
        for p in sorted((tmp_path / "out").glob("*.fits")):
            out = subprocess.run(["fitsverify", "-q", str(p)], capture_output=True, text=True).stdout
            assert out.startswith("verification OK"), out


def test_store_and_exported_files_give_the_same_pixels(bcds):
    """The same BCDs read from the store (the runner's level 2) and from their exported FITS
    files (``skyreduce mosaic``): identical good-pixel masks (one set of fatal mask bits,
    bcdfiles.OUR_FATAL_NAMES: noisy pixels and flagged 24 um cosmic rays in, on both paths),
    images and uncertainties."""
    from reduce.mosaic.bcdfiles import find_bcds
    from reduce.mosaic.sources import FileFrames, StoreFrames
    from reduce.runner import read_records

    store = bcds.parent / "mips.zarr"
    for chnl, table in ((1, "bcd24"), (2, "bcd70")):
        rec = read_records(store, "mips_bcd")[f"m{ {1: 24, 2: 70}[chnl]}-{AOR.aorkey}"]
        n = rec["rows"][table]
        from_store = StoreFrames(str(store), chnl, rec["slots"][table][0], n).load(list(range(n)))
        files, _ = find_bcds([bcds])
        files = sorted([b for b in files if b.chnlnum == chnl], key=lambda b: (b.expid, b.dcenum))
        assert len(files) == n
        from_files = FileFrames(tuple(files)).load(list(range(n)))
        for a, b in zip(from_store, from_files):
            np.testing.assert_array_equal(a.good, b.good)
            np.testing.assert_allclose(a.image[a.good], b.image[b.good], rtol=1e-6)
            np.testing.assert_allclose(a.unc[a.good], b.unc[b.good], rtol=1e-6)
        assert any((~f.good).sum() > 0 for f in from_store)
