"""The SWAS level-1 products read by real clients: IRAF itself (irafcl, noao.onedspec.wspectext, hselect)
and specutils, on the synthetic level-1 set of test_export.py (lines at a known LSRK velocity, USB and
LSB bands, a two-position map, 'total' coadds)."""

import os
import subprocess
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from conftest import require_tool
from test_export import LINE_V, N_CHAN, REDUCTION_TIME, _peak_pixel, _row, make_level1, parse_name

from reduce.swas.export import frequency_axis, velocity_axis, write_products
from reduce.swas.physics import C_KMS

pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def level1():
    return make_level1()


@pytest.fixture(scope="module")
def products(level1, tmp_path_factory):
    out = tmp_path_factory.mktemp("clients_out")
    return out, write_products(level1, out, reduction_time=REDUCTION_TIME)


def run_iraf(lines, workdir, timeout=120):
    """Run CL commands non-interactively (`irafcl -f script.cl`, stdin closed) in ``workdir``.

    HOME points into ``workdir`` (IRAF keeps its uparm there), USER is set (IRAF needs it). IRAF
    ignores SIGTERM after some errors, so the timeout kills it (subprocess.run sends SIGKILL).
    """
    exe = require_tool("irafcl")
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    script = workdir / "script.cl"
    script.write_text("\n".join(["noao", "onedspec", *lines, "logout", ""]))
    env = dict(os.environ, HOME=str(home), USER=os.environ.get("USER") or "skyreduce", TMPDIR=str(workdir))
    res = subprocess.run([exe, "-f", script.name], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=timeout)
    return res.stdout + res.stderr


def test_iraf_wspectext_reads_axis_and_values(products, level1, tmp_path):
    """IRAF's own wspectext gives, for every IRAF-flavoured product, our LSRK frequency axis and our Ta*."""
    out, paths = products
    iraf = [p for p in paths if p.parent.name == "iraf"]
    assert len(iraf) >= 10
    lines = []
    for k, path in enumerate(iraf):
        assert '"' not in str(path)
        lines.append(f'wspectext ("{path}", "spec{k:03d}.txt", header=no, wformat="%.17g")')
        lines.append(f'hselect ("{path}", "TELESCOP,OBJECT,OBSTIME,AZIMUTH,NAXIS1", yes, >> "keys.txt")')
    log = run_iraf(lines, tmp_path)
    keys = (tmp_path / "keys.txt").read_text().splitlines() if (tmp_path / "keys.txt").exists() else []
    assert len(keys) == len(iraf), f"IRAF did not read every product:\n{log}"
    for k, path in enumerate(iraf):
        text = tmp_path / f"spec{k:03d}.txt"
        assert text.exists(), f"wspectext wrote nothing for {path.name}:\n{log}"
        table = np.loadtxt(text)
        assert table.shape == (N_CHAN, 2), path.name
        meta, ta = _row(level1, *parse_name(path))
        ours_f = frequency_axis(meta, N_CHAN)
        # the axis: IRAF's world coordinates are our frequencies (to 1e-12 relative, 1e-6 of a channel)
        np.testing.assert_allclose(table[:, 0], ours_f, rtol=1e-12, atol=0)
        assert np.max(np.abs(table[:, 0] - ours_f)) < 1e-6 * abs(meta["cdelt_freq"])
        # the values: IRAF prints 7 significant digits; channels without data read as 0
        np.testing.assert_allclose(table[:, 1], np.nan_to_num(ta, nan=0.0), rtol=1e-6, atol=0)
        # and the line sits where it was injected, in IRAF's own coordinates
        peak = _peak_pixel(table[:, 1])
        f_peak = np.interp(peak, np.arange(N_CHAN), table[:, 0])
        f_line = meta["restfreq"] * (1 - LINE_V / C_KMS)
        assert abs(f_peak - f_line) < 0.05 * abs(meta["cdelt_freq"]), path.name
        # IRAF parses our header strings and numbers as written
        tel, obj, obstime, azimuth, naxis1 = keys[k].split("\t")
        h = fits.getheader(path)
        assert tel.strip('"') == h["TELESCOP"] and obj.strip('"') == h["OBJECT"]
        assert float(obstime) == h["OBSTIME"] and float(azimuth) == pytest.approx(h["AZIMUTH"], rel=1e-9)
        assert int(naxis1) == N_CHAN


def test_iraf_reads_the_real_onedspec_file(reference_dir, tmp_path):
    """The same IRAF call on the real IRAF file gives its W0/WPC axis (the harness itself is sound)."""
    log = run_iraf([f'wspectext ("{reference_dir / "iraf" / "hr2421.fit"}", "hr.txt", header=no, wformat="%.17g")'],
                   tmp_path)
    table = np.loadtxt(tmp_path / "hr.txt")
    h = fits.getheader(reference_dir / "iraf" / "hr2421.fit")
    assert table.shape == (h["NAXIS1"], 2), log
    np.testing.assert_allclose(table[:, 0], h["W0"] + h["WPC"] * np.arange(h["NAXIS1"]), rtol=1e-9)


def _read(path, **kwargs):
    from specutils import Spectrum

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Spectrum.read(path, **kwargs)


def test_specutils_reads_iraf_flavour(products, level1):
    """specutils (auto-identified format) gets our LSRK frequency axis, RESTFREQ, and the line at 8 km/s."""
    out, paths = products
    for path in [p for p in paths if p.parent.name == "iraf"]:
        spec = _read(path)
        meta, ta = _row(level1, *parse_name(path))
        assert spec.flux.unit == u.K and spec.flux.shape == (N_CHAN,)
        freq = spec.spectral_axis.to_value(u.Hz)
        np.testing.assert_allclose(freq, frequency_axis(meta, N_CHAN), rtol=1e-15, atol=1e-3)
        assert spec.rest_value.to_value(u.Hz) == meta["restfreq"]
        vel = spec.spectral_axis.to_value(u.km / u.s, doppler_convention="radio", doppler_rest=spec.rest_value)
        np.testing.assert_allclose(vel, velocity_axis(meta, N_CHAN), rtol=0, atol=1e-9)
        peak = _peak_pixel(spec.flux.value)
        assert np.interp(peak, np.arange(N_CHAN), vel) == pytest.approx(LINE_V, abs=0.05 * abs(meta["cdelt_vel"]))
        f_line = meta["restfreq"] * (1 - LINE_V / C_KMS)
        assert np.interp(peak, np.arange(N_CHAN), freq) == pytest.approx(f_line, abs=0.05 * abs(meta["cdelt_freq"]))


def test_specutils_reads_class_flavour(products, level1):
    """specutils (wcs1d-fits) gets the CLASS offset-frequency axis; with RESTFREQ and VELO-LSR, as CLASS
    does, that is our LSRK velocity and frequency, and the line is at 8 km/s."""
    out, paths = products
    for path in [p for p in paths if p.parent.name == "class"]:
        spec = _read(path, format="wcs1d-fits")
        meta, ta = _row(level1, *parse_name(path))
        h = fits.getheader(path)
        assert spec.flux.shape == (1, 1, 1, N_CHAN) and spec.flux.unit == u.K
        offset = spec.spectral_axis.to_value(u.Hz)
        ref = int(np.floor(h["CRPIX1"])) - 1
        assert abs(offset[ref]) < abs(h["CDELT1"])  # CRVAL1 = 0 at CRPIX1: an offset axis
        rest = spec.rest_value.to(u.Hz)
        assert rest.value == h["RESTFREQ"] == meta["restfreq"]
        # CLASS: frequency RESTFREQ + offset is the rest frequency of a source at VELO-LSR
        v_rel = (rest + offset * u.Hz).to_value(u.km / u.s, equivalencies=u.doppler_radio(rest))
        vel = h["VELO-LSR"] / 1000.0 + v_rel
        np.testing.assert_allclose(vel, velocity_axis(meta, N_CHAN), rtol=0, atol=1e-9)
        freq = h["RESTFREQ"] * (1 - h["VELO-LSR"] / 1000.0 / C_KMS) + offset
        np.testing.assert_allclose(freq, frequency_axis(meta, N_CHAN), rtol=1e-14, atol=1.0)
        flux = spec.flux.value.reshape(-1)
        np.testing.assert_array_equal(flux, ta)
        peak = _peak_pixel(flux)
        assert np.interp(peak, np.arange(N_CHAN), vel) == pytest.approx(LINE_V, abs=0.05 * abs(meta["cdelt_vel"]))
        f_line = meta["restfreq"] * (1 - LINE_V / C_KMS)
        assert np.interp(peak, np.arange(N_CHAN), freq) == pytest.approx(f_line, abs=0.05 * abs(meta["cdelt_freq"]))
