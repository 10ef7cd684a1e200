"""BCD FITS reader of the mosaic (reduce.mosaic.bcdfiles): real SSC IRAC subarray cubes from
../shared/reference, broken copies of them, and our own MIPS BCD export."""
import shutil
import warnings

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS

from reduce.mosaic import bcdfiles as bf
from reduce.mosaic.kernels.frames import Frame

AOR = 41629440
NAME = "SPITZER_I1_41629440_{:04d}_0000_1_{}.fits"


@pytest.fixture(scope="module")
def irac_dir(reference_dir):
    d = reference_dir / "spitzer" / "irac-hd209458"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d


def cube_file(irac_dir, n, kind="bcd"):
    return irac_dir / NAME.format(n, kind)


def one(path):
    bcds, problems = bf.find_bcds([path])
    assert problems == [] and len(bcds) == 1
    return bcds[0]


def write_copy(src, dst, edit=None):
    """A copy of the FITS file ``src`` at ``dst``, with ``edit(data, header)`` applied."""
    with fits.open(src) as hdul:
        data, header = hdul[0].data.copy(), hdul[0].header.copy()
    if edit is not None:
        edit(data, header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # the SSC header's own verify quirks
        fits.PrimaryHDU(data, header).writeto(dst, output_verify="silentfix")
    return dst


# ---------------------------------------------------------------- finding
def test_find_bcds_in_the_real_irac_folder(irac_dir):
    bcds, problems = bf.find_bcds([irac_dir])
    assert problems == []
    assert len(bcds) == 501
    assert ({(b.instrument, b.chnlnum, b.band, b.aorkey) for b in bcds}
            == {("IRAC", 1, "IRAC 3.6um", AOR)})
    assert {(b.nplanes, b.shape, b.bunit) for b in bcds} == {(64, (32, 32), "MJy/sr")}
    assert [b.expid for b in bcds] == list(range(501))
    with_unc = [b.path.name for b in bcds if b.unc_path is not None]
    with_mask = [b.path.name for b in bcds if b.mask_path is not None]
    assert with_unc == with_mask == [NAME.format(0, "bcd")]
    assert bcds[0].unc_path.name == NAME.format(0, "bunc")
    assert bcds[0].mask_path.name == NAME.format(0, "bimsk")
    assert bcds[0].mjd == pytest.approx(55573.2499098)
    mjd = np.array([b.mjd for b in bcds])
    assert np.all(np.diff(mjd) > 0) and (mjd[-1] - mjd[0]) * 24 == pytest.approx(1.0, abs=0.3)
    # the header says |PXSCAL1|, PXSCAL2 = 1.2246, 1.2361 arcsec
    assert bcds[0].pixel_scale_arcsec == pytest.approx(np.sqrt(1.22457 * 1.23611), rel=1e-3)
    assert bf.group_bcds(bcds).keys() == {("IRAC", 1)}
    assert bf.mixed_arrays(bcds) is None


def test_wcs_header_text_gives_the_files_wcs(irac_dir):
    b = one(cube_file(irac_dir, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = WCS(fits.getheader(b.path), naxis=2, relax=True)
    assert direct.sip is not None and b.wcs().sip is not None
    y, x = np.mgrid[-0.5:32:4.0, -0.5:32:4.0]
    np.testing.assert_allclose(np.array(b.wcs().all_pix2world(x, y, 0)),
                               np.array(direct.all_pix2world(x, y, 0)), rtol=0, atol=1e-12)
    # SIP is applied: the distortion moves the corner by > 0.01 pixel
    assert np.hypot(*(np.array(b.wcs().all_pix2world(0, 0, 0))
                      - np.array(b.wcs().wcs_pix2world(0, 0, 0)))) * 3600 > 0.01 * 1.2


def test_problems_name_each_bad_file(irac_dir, reference_dir, tmp_path):
    src = cube_file(irac_dir, 3)
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    good = write_copy(src, sub / "good_bcd.fits")

    def zero_cd(d, h):
        for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
            h[k] = 0.0

    def no_ctype(d, h):
        del h["CTYPE1"], h["CTYPE2"]

    def beyond_pole(d, h):
        h["CRVAL2"] = 95.0

    def wild_sip(d, h):
        h["A_2_0"] = 10.0                                   # no inverse: transform not invertible

    zero = write_copy(src, sub / "zerocd_bcd.fits", zero_cd)
    noct = write_copy(src, tmp_path / "noctype_bcd.fits", no_ctype)
    pole = write_copy(src, tmp_path / "pole_bcd.fits", beyond_pole)
    sip = write_copy(src, tmp_path / "sip_bcd.fits", wild_sip)
    text = tmp_path / "notes_bcd.fits"
    text.write_text("not a FITS file\n" * 50)
    empty = tmp_path / "table_bcd.fits"
    fits.PrimaryHDU().writeto(empty)
    irs = reference_dir / "spitzer" / "irs" / "irs_coadd_img.fits"

    bcds, problems = bf.find_bcds([tmp_path, irs, tmp_path / "nothere", good])
    assert [b.path for b in bcds] == [good]                 # once, though given twice
    text_of = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in problems}
    assert len(problems) == 8, problems
    assert all("\n" not in p for p in problems)
    assert "no usable celestial WCS" in text_of[str(zero)] and "singular" in text_of[str(zero)]
    assert "no usable celestial WCS" in text_of[str(noct)] and "CTYPE" in text_of[str(noct)]
    assert "no usable celestial WCS" in text_of[str(pole)]
    assert "no usable celestial WCS" in text_of[str(sip)]
    assert text_of[str(text)].startswith("unreadable file")
    assert text_of[str(empty)].startswith("no image")
    assert text_of[str(irs)].startswith("unknown instrument")
    assert text_of[str(tmp_path / "nothere")] == "no such file or folder"
    # the headers read by a cluster's workers, 2 files per task: the same BCDs and lines, in order
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as lc, \
            Client(lc) as client:
        assert bf.find_bcds([tmp_path, irs, tmp_path / "nothere", good], client=client, batch=2) == (bcds, problems)
        assert sum(w.state.executed_count for w in lc.workers.values()) > 0     # read there


def test_ssc_cbcd_given_by_name_finds_its_companions(irac_dir, tmp_path):
    base = "SPITZER_I1_41629440_0000_0000_1"
    for src, dst in (("bcd", "cbcd"), ("bunc", "cbunc"), ("bimsk", "bimsk")):
        shutil.copy(irac_dir / f"{base}_{src}.fits", tmp_path / f"{base}_{dst}.fits")
    assert bf.find_bcds([tmp_path]) == ([], [f"{tmp_path}: folder holds no *_bcd.fits files"])
    b = one(tmp_path / f"{base}_cbcd.fits")
    assert (b.unc_path.name, b.mask_path.name) == (f"{base}_cbunc.fits", f"{base}_bimsk.fits")


# ---------------------------------------------------------------- cubes
def test_cube_with_bunc_and_mask(irac_dir):
    b = one(cube_file(irac_dir, 0))
    frame, warns = bf.load_frame(b)
    assert isinstance(frame, Frame) and warns == []
    assert frame.image.shape == frame.unc.shape == frame.good.shape == (32, 32)
    assert frame.image.dtype == frame.unc.dtype == np.float64 and frame.good.dtype == bool
    m = frame.meta
    assert (m["aorkey"], m["chnlnum"], m["nplanes"], m["unc_source"]) == (AOR, 1, 64, "bunc")
    assert m["fatal_bits"] == 32520 and m["mjd"] == pytest.approx(55573.2499098)
    cube = fits.getdata(b.path).astype(np.float64)
    bunc = fits.getdata(b.unc_path).astype(np.float64)
    full = m["n_planes_used"] == 64
    assert full.mean() > 0.9                                # few pixels lose a plane
    # where no plane is rejected the clipped coadd is the plain mean, unc = quadrature sum / n
    np.testing.assert_allclose(frame.image[full], cube.mean(0)[full], rtol=1e-12)
    np.testing.assert_allclose(frame.unc[full], np.sqrt((bunc ** 2).sum(0))[full] / 64, rtol=1e-12)
    # where one is, the rejected value is far from the rest
    y, x = np.nonzero(~full)
    dev = np.abs(cube[:, y, x] - np.median(cube[:, y, x], axis=0)) / mad_std(cube[:, y, x], axis=0)
    assert np.all(dev.max(axis=0) > bf.CLIP_SIGMA)
    assert frame.good.all()                                 # the real mask has no bit set


def test_planted_outliers_are_rejected(irac_dir, tmp_path):
    src = cube_file(irac_dir, 7)
    ref, _ = bf.load_frame(one(src))
    sky = (slice(2, 10), slice(2, 10))                      # far from the star (at ~(15, 15))

    def plant(d, h):
        d[17, 4, 25] += 1e4                                 # a cosmic ray in one plane
        d[40][sky] += 200.0                                 # a whole plane jumps (~20 sigma)

    frame, _ = bf.load_frame(one(write_copy(src, tmp_path / "planted_bcd.fits", plant)))
    cube = fits.getdata(src).astype(np.float64)
    plain = cube.mean(0)
    assert plain[4, 25] + 1e4 / 64 - ref.image[4, 25] > 100           # a plain mean would move
    assert abs(frame.image[4, 25] - ref.image[4, 25]) < ref.unc[4, 25]  # the clipped one does not
    assert frame.meta["n_planes_used"][4, 25] == ref.meta["n_planes_used"][4, 25] - 1
    moved = np.abs(frame.image[sky] - ref.image[sky]) / ref.unc[sky]
    assert np.all(moved < 1.0)
    lost = ref.meta["n_planes_used"][sky] - frame.meta["n_planes_used"][sky]
    assert np.all(lost <= 1) and lost.mean() > 0.95         # (a few had lost plane 40 before)


def test_estimated_unc_matches_the_scatter(irac_dir, tmp_path):
    """Coadds of the even and of the odd planes differ as their estimated uncertainties say."""
    src = cube_file(irac_dir, 11)
    with fits.open(src) as hdul:
        data, header = hdul[0].data, hdul[0].header
        halves = []
        for k in (0, 1):
            p = tmp_path / f"half{k}_bcd.fits"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fits.PrimaryHDU(data[k::2], header).writeto(p, output_verify="silentfix")
            halves.append(bf.load_frame(one(p))[0])
    a, b = halves
    assert a.meta["unc_source"] == b.meta["unc_source"] == "estimated"
    good = a.good & b.good
    chi = (a.image - b.image)[good] / np.hypot(a.unc, b.unc)[good]
    assert good.sum() > 1000
    assert 0.85 < mad_std(chi) < 1.2
    assert abs(np.median(chi)) < 0.2


def test_estimated_unc_close_to_the_pipelines(irac_dir, tmp_path):
    """The same cube without its _bunc: the plane scatter gives 0.7-1.1 x the SSC's unc."""
    src = cube_file(irac_dir, 0)
    with_bunc, _ = bf.load_frame(one(src))
    copy = shutil.copy(src, tmp_path / "alone_bcd.fits")
    alone, warns = bf.load_frame(one(copy))
    assert alone.meta["unc_source"] == "estimated"
    ratio = np.median(alone.unc / with_bunc.unc)
    assert 0.7 < ratio < 1.1
    np.testing.assert_allclose(alone.image, with_bunc.image, rtol=1e-12)  # same planes rejected


def test_missing_companions_give_warning_lines(irac_dir):
    b = one(cube_file(irac_dir, 5))
    assert b.unc_path is None and b.mask_path is None
    frame, warns = bf.load_frame(b)
    assert len(warns) == 2
    assert all(w.startswith(str(b.path) + ": ") for w in warns)
    assert "_bunc" in warns[0] and "estimated" in warns[0]
    assert "_bimsk" in warns[1]
    assert frame.meta["unc_source"] == "estimated"
    assert np.all(np.isfinite(frame.unc[frame.good])) and np.all(frame.unc[frame.good] > 0)


# ---------------------------------------------------------------- 2-D IRAC frames
def test_full_frame_irac_mask_bits_and_units(irac_dir, tmp_path):
    """One plane written as a 2-D BCD with its _bimsk plane: SSC fatal bits, estimated unc,
    a DN/s copy converted with FLUXCONV, an unknown unit refused."""
    src, msrc = cube_file(irac_dir, 0), cube_file(irac_dir, 0, "bimsk")
    base = tmp_path / "SPITZER_I1_1_0000_0000_1"

    with fits.open(src) as hdul:
        img, hdr = hdul[0].data[9].copy(), hdul[0].header.copy()
    hdr.remove("NAXIS3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.PrimaryHDU(img, hdr).writeto(f"{base}_bcd.fits", output_verify="silentfix")
        mask = np.zeros((32, 32), np.int16)
        mask[3, 4] = 1 << 9                                 # radhit: fatal
        mask[5, 6] = 1 << 4                                 # saturation corrected: kept
        mask[7, 8] = 1 << 14                                # bad or missing: fatal
        mh = fits.getheader(msrc)
        mh.remove("NAXIS3")
        fits.PrimaryHDU(mask, mh).writeto(f"{base}_bimsk.fits", output_verify="silentfix")
    b = one(tmp_path)
    assert (b.nplanes, b.unc_path, b.mask_path.name) == (1, None, f"{base.name}_bimsk.fits")
    frame, warns = bf.load_frame(b)
    assert len(warns) == 1 and "_bunc" in warns[0]
    assert not frame.good[3, 4] and not frame.good[7, 8] and frame.good[5, 6]
    assert frame.good.sum() == 32 * 32 - 2
    np.testing.assert_array_equal(frame.image, img.astype(np.float64))
    # one value over the frame: the pixel-to-pixel noise, above the read-noise floor
    sigma = frame.unc[0, 0]
    assert np.all(frame.unc == sigma)
    floor = hdr["RONOISE"] / hdr["GAIN"] / hdr["EXPTIME"] * hdr["FLUXCONV"]
    assert floor == pytest.approx(7.154, abs=1e-3) and sigma >= floor
    plane_scatter = np.median(fits.getdata(src).std(axis=0))   # per-pixel scatter over time
    assert 0.7 < sigma / plane_scatter < 1.4

    dn = tmp_path / "dn"
    dn.mkdir()
    hdr2 = hdr.copy()
    hdr2["BUNIT"] = "DN/s"
    hdr3 = hdr.copy()
    hdr3["BUNIT"] = "furlongs"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.PrimaryHDU(img / hdr["FLUXCONV"], hdr2).writeto(dn / "a_bcd.fits",
                                                              output_verify="silentfix")
        fits.PrimaryHDU(img, hdr3).writeto(dn / "b_bcd.fits", output_verify="silentfix")
    fa, _ = bf.load_frame(one(dn / "a_bcd.fits"))
    np.testing.assert_allclose(fa.image, img, rtol=1e-6)
    with pytest.raises(ValueError, match=r"b_bcd\.fits: BUNIT 'furlongs'"):
        bf.load_frame(one(dn / "b_bcd.fits"))


# ---------------------------------------------------------------- our own MIPS export
@pytest.fixture(scope="module")
def our_export(tmp_path_factory):
    """Two DCEs of 24 um and of 70 um written by reduce.mips.bcd_export, with known mask bits."""
    from reduce.mips import bcd_export as bx
    from reduce.mips.calib import load_calibration
    from reduce.simulate.mips_cal import write_calibration

    root = tmp_path_factory.mktemp("mipscal")
    write_calibration(root)
    out = tmp_path_factory.mktemp("ours")
    rng = np.random.default_rng(5)
    bits = {"dead": 1, "hot": 2, "noisy": 4, "no_flat": 8, "saturated": 16, "cosmic_ray": 32,
            "invalid": 64, "too_few_reads": 128, "no_good_segment": 256, "no_responsivity": 512,
            "stim": 1024}                                       # schemas/mips_bcd.yaml
    made = {}
    for chnl in (1, 2):
        cal = load_calibration(root / "cal", chnl)
        ny, nx = cal.shape
        n = 2
        img = rng.normal(20.0, 0.5, (n, ny, nx)).astype(np.float32)
        unc = np.full((n, ny, nx), 0.5, np.float32)
        mask = np.zeros((n, ny, nx), np.uint16)
        for k, v in enumerate(bits.values()):                 # bit k at pixel (1, k)
            mask[:, 1, k] = v
        img[:, 1, 6] = unc[:, 1, 6] = np.nan                   # 'invalid' pixels are NaN
        coords = {
            "aorkey": ("dce", np.full(n, 4242, np.int64)),
            "expid": ("dce", np.arange(n, dtype=np.int32)),
            "dcenum": ("dce", np.zeros(n, np.int32)),
            "time": ("dce", 53500.0 + np.arange(n) * 1e-4),
            "exptime": ("dce", np.full(n, 2.62, np.float32)),
            "ra_ref": ("dce", np.array([83.82, 83.83])),
            "dec_ref": ("dce", np.array([-5.39, -5.38])),
            "pa_ref": ("dce", np.array([71.0, 71.5])), "status": ("dce", np.array(["ok"] * n))}
        ds = xr.Dataset({"bcd": (("dce", "y", "x"), img), "unc": (("dce", "y", "x"), unc),
                         "mask": (("dce", "y", "x"), mask)}, coords=coords,
                        attrs={"chnlnum": chnl, "fluxconv": float(cal.fluxconv)})
        paths = bx.write_bcd_files(ds, out, calibration=cal, version="9", mask_bits=bits)
        made[chnl] = (ds, paths)
    return out, made, bits


def test_our_export_reads_back(our_export):
    out, made, bits = our_export
    bcds, problems = bf.find_bcds([out])
    assert problems == [] and len(bcds) == 4                # _bsdr, _bunc, _bbmsk are not BCDs
    assert [b.band for b in bcds] == ["MIPS 24um"] * 2 + ["MIPS 70um"] * 2
    for b in bcds:
        assert b.unc_path.name == b.path.name.replace("_bcd", "_bunc")
        assert b.mask_path.name == b.path.name.replace("_bcd", "_bbmsk")
        ds, _ = made[b.chnlnum]
        k = b.expid
        frame, warns = bf.load_frame(b)
        assert warns == [] and frame.meta["unc_source"] == "bunc" and frame.meta["aorkey"] == 4242
        assert frame.meta["mjd"] == pytest.approx(float(ds.time[k]), abs=1e-9)
        np.testing.assert_array_equal(frame.image, ds.bcd.values[k].astype(np.float64))
        np.testing.assert_array_equal(frame.unc, ds.unc.values[k].astype(np.float64))
        # the WCS is the header's: pixel -> sky agrees to 1e-10 deg over the frame
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            direct = WCS(fits.getheader(b.path), relax=True)
        assert frame.wcs.sip is not None
        y, x = np.mgrid[0:b.shape[0]:7, 0:b.shape[1]:7]
        np.testing.assert_allclose(np.array(frame.wcs.all_pix2world(x, y, 0)),
                                   np.array(direct.all_pix2world(x, y, 0)), rtol=0, atol=1e-10)
        scale = {1: 2.55, 2: 9.85}[b.chnlnum]
        assert b.pixel_scale_arcsec == pytest.approx(scale, rel=0.02)
        # mask bits mapped: bit k sits at (1, k)
        fatal = {"dead", "hot", "no_flat", "invalid", "too_few_reads", "stim"}
        for col, name in enumerate(bits):
            assert frame.good[1, col] == (name not in fatal), (b.band, name)
        assert frame.good.sum() == frame.good.size - len(fatal)
        assert frame.meta["fatal_bits"] == sum(bits[n] for n in fatal)


def test_grouping_and_mixed_arrays(our_export, irac_dir):
    out, _, _ = our_export
    ours, _ = bf.find_bcds([out])
    irac, _ = bf.find_bcds([cube_file(irac_dir, n) for n in (4, 3)])
    allb = ours + irac
    reason = bf.mixed_arrays(allb)
    assert reason is not None and "\n" not in reason
    assert "3 arrays" in reason
    for text in ("MIPS 24um (2 BCDs)", "MIPS 70um (2 BCDs)", "IRAC 3.6um (2 BCDs)", "--per-aor"):
        assert text in reason
    groups = bf.group_bcds(allb)
    assert list(groups) == [("IRAC", 1), ("MIPS", 1), ("MIPS", 2)]
    assert [b.expid for b in groups[("IRAC", 1)]] == [3, 4]          # in exposure order
    per = bf.group_bcds(allb, per_aor=True)
    assert list(per) == [("IRAC", 1, AOR), ("MIPS", 1, 4242), ("MIPS", 2, 4242)]
    assert bf.mixed_arrays(ours[:2]) is None
