"""Per-array numbers of the mosaics (MIPS and IRAC) and the products' file names."""


# Output pixel scale (arcsec) by default: the SSC's MIPS mosaics; IRAC: the SSC's 0.6".
PIXEL_SCALE = {("MIPS", 1): 2.45, ("MIPS", 2): 4.0, ("MIPS", 3): 8.0,
               ("IRAC", 1): 0.6, ("IRAC", 2): 0.6, ("IRAC", 3): 0.6, ("IRAC", 4): 0.6}
# PSF FWHM (arcsec) and 1-sigma radial pointing error of the spacecraft pointing (arcsec; ICD 2).
FWHM = {("MIPS", 1): 6.0, ("MIPS", 2): 18.0, ("MIPS", 3): 40.0,
        ("IRAC", 1): 1.66, ("IRAC", 2): 1.72, ("IRAC", 3): 1.88, ("IRAC", 4): 1.98}
POINTING_SIGMA = {("MIPS", 1): 1.4, ("MIPS", 2): 1.7, ("MIPS", 3): 3.9,
                  ("IRAC", 1): 1.0, ("IRAC", 2): 1.0, ("IRAC", 3): 1.0, ("IRAC", 4): 1.0}
BAND_LABEL = {("MIPS", 1): "24 um", ("MIPS", 2): "70 um", ("MIPS", 3): "160 um",
              ("IRAC", 1): "3.6 um", ("IRAC", 2): "4.5 um", ("IRAC", 3): "5.8 um", ("IRAC", 4): "8.0 um"}


def product_base(instrument, chnlnum, aorkey, version) -> str:
    """'SPITZER_M{C}_{AORKEY}_{VER}' (IRAC: 'SPITZER_I{C}_...'); aorkey None: 'COMBINED'."""
    from ..mips.bcd_export import version_tag
    letter = "M" if instrument == "MIPS" else "I"
    return f"SPITZER_{letter}{int(chnlnum)}_{'COMBINED' if aorkey is None else int(aorkey)}_{version_tag(version)}"
