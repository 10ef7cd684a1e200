"""MIPS SED mode: raw 70 um spectra -> 2-D spectral BCDs -> 1-D spectra."""
