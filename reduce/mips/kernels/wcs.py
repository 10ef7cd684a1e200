"""Celestial WCS (TAN-SIP) of a MIPS DCE from the distortion file and the pointing: the header
cards the BCD export writes (``wcs_header``; ``astropy.wcs.WCS(wcs_header(...), relax=True)``
is the same transformation as an object).

ICD §2: PA_REF is the position angle of the array's +y axis, east of north,
east to the left, so CD = [[-s1 cos PA, s2 sin PA], [s1 sin PA, s2 cos PA]] / 3600
with s1, s2 = PXSCAL1, PXSCAL2 (arcsec/pixel); CRPIX1/2 is the array centre that
RA_REF/DEC_REF give; SIP A/B (and AP/BP if present) come from the DISTORT header.
"""
from __future__ import annotations

import logging
import re

import numpy as np
from astropy.io import fits

log = logging.getLogger(__name__)

_SIP = re.compile(r"^(A|B|AP|BP)_(\d+)_(\d+)$")


def cd_matrix(pxscal1, pxscal2, pa_deg):
    """CD matrix (deg/pixel, 2x2) of ICD §2 for pixel scales in arcsec and PA in deg."""
    pa = np.deg2rad(pa_deg)
    c, s = np.cos(pa), np.sin(pa)
    s1, s2 = abs(float(pxscal1)), abs(float(pxscal2))
    return np.array([[-s1 * c, s2 * s], [s1 * s, s2 * c]]) / 3600.0


def sip_cards(distortion):
    """The SIP cards (A/B/AP/BP _ORDER and _i_j) of a DISTORT header, as [(key, value)]."""
    cards = []
    for prefix in ("A", "B", "AP", "BP"):
        order = f"{prefix}_ORDER"
        if order not in distortion:
            continue
        cards.append((order, int(distortion[order])))
        for key in distortion:
            m = _SIP.match(key)
            if m and m.group(1) == prefix:
                cards.append((key, float(distortion[key])))
    return cards


def wcs_header(distortion, ra_ref, dec_ref, pa_ref, *, radesys="ICRS"):
    """FITS cards (astropy Header) of the DCE's TAN-SIP WCS, ready for a BCD header.

    ``distortion``: the DISTORT header (PXSCAL1/2, CRPIX1/2, SIP); pointing in
    deg.  Also writes PA (deg, of +y E of N), PXSCAL1/2 and the pointing as
    RA_REF/DEC_REF/PA_REF.
    """
    for key in ("PXSCAL1", "PXSCAL2", "CRPIX1", "CRPIX2"):
        if key not in distortion:
            raise KeyError(f"distortion header lacks {key}")
    cd = cd_matrix(distortion["PXSCAL1"], distortion["PXSCAL2"], pa_ref)
    has_sip = "A_ORDER" in distortion or "B_ORDER" in distortion
    suffix = "-SIP" if has_sip else ""
    h = fits.Header()
    h["WCSAXES"] = (2, "number of WCS axes")
    h["CTYPE1"] = ("RA---TAN" + suffix, "gnomonic projection with SIP distortion")
    h["CTYPE2"] = ("DEC--TAN" + suffix, "gnomonic projection with SIP distortion")
    h["CRPIX1"] = (float(distortion["CRPIX1"]), "reference pixel along x (1-based)")
    h["CRPIX2"] = (float(distortion["CRPIX2"]), "reference pixel along y (1-based)")
    h["CRVAL1"] = (float(ra_ref), "[deg] RA at CRPIX1, CRPIX2")
    h["CRVAL2"] = (float(dec_ref), "[deg] Dec at CRPIX1, CRPIX2")
    h["CUNIT1"] = ("deg", "unit of CRVAL1, CD1_j")
    h["CUNIT2"] = ("deg", "unit of CRVAL2, CD2_j")
    for i in range(2):
        for j in range(2):
            h[f"CD{i + 1}_{j + 1}"] = (float(cd[i, j]), "[deg/pixel] CD matrix element")
    h["RADESYS"] = (radesys, "celestial reference system")
    if radesys == "FK5":
        h["EQUINOX"] = 2000.0
    h["PXSCAL1"] = (float(distortion["PXSCAL1"]), "[arcsec/pixel] scale along x")
    h["PXSCAL2"] = (float(distortion["PXSCAL2"]), "[arcsec/pixel] scale along y")
    h["PA"] = (float(pa_ref), "[deg] position angle of +y axis, E of N")
    h["RA_REF"] = (float(ra_ref), "[deg] reconstructed RA of the array centre")
    h["DEC_REF"] = (float(dec_ref), "[deg] reconstructed Dec of the array centre")
    h["PA_REF"] = (float(pa_ref), "[deg] position angle of +y, E of N")
    for key, value in sip_cards(distortion):
        h[key] = (value, "SIP distortion")
    return h
