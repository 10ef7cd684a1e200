"""Stability of a real Spitzer IRAC staring series: SSC subarray BCD cubes -> (time, y, x) store,
per-frame photometry and the pointing, first-frame and intrapixel behaviour of the detector.

Reader (:func:`read_cube_header`, :func:`read_cube`, :func:`open_bcds`, :func:`ingest_irac`,
:func:`open_irac`).  An SSC IRAC subarray BCD (``SPITZER_I<ch>_<AORKEY>_<EXPID>_<DCENUM>_<V>_bcd.fits``)
holds one DCE: a cube of NAXIS3 (64) planes of NAXIS2 x NAXIS1 (32 x 32) pixels in BUNIT
(MJy/sr).  The time of plane k (0-based) is taken from the header exactly as follows:

- ``mjd[k]  = MJD_OBS  + (k + 0.5) * FRAMTIME / 86400``  [MJD, UTC], the middle of plane k;
- ``bmjd[k] = BMJD_OBS + (k + 0.5) * FRAMTIME / 86400``  [BMJD, TDB, Solar-System barycentre];

MJD_OBS / BMJD_OBS: "MJD in UTC at DCE start" / its barycentric version; FRAMTIME: "Time spent
integrating (whole array)", 0.1 s, the interval between consecutive planes.  EXPTIME (0.08 s,
"Effective integration time per pixel") is not a time stamp: it sets the electrons per
MJy/sr (with GAIN and FLUXCONV, :func:`reduce.stability.kernels.photometry.electrons_per_unit`).
FRAMEDLY ("Frame Delay Time" [s]) is the idle time before the cube's first plane: the next
cube starts at ``MJD_OBS + NAXIS3 * FRAMTIME + FRAMEDLY(next)`` (0.02 s in the real series);
it is kept per cube (``framedly``) and checked by the tests, not used for the stamps.

The (time, y, x) dataset: ``flux`` (time, y, x) float32 [BUNIT], chunked one cube per chunk
(NAXIS3, NAXIS2, NAXIS1); per-plane coordinates ``mjd``, ``bmjd`` (float64), ``cube`` (index of the
cube in the series, int32), ``plane`` (0..NAXIS3-1, int16); per-cube variables on dimension
``dce``: ``file``, ``expid``, ``dcenum``, ``mjd_obs``, ``bmjd_obs``, ``framtime``, ``exptime``,
``framedly``, ``gain``, ``fluxconv``, ``ronoise``; attributes ``instrument``, ``chnlnum``,
``aorkey``, ``bunit``, ``object``.  Bad files (unreadable, not IRAC, another channel or cube
shape than the first good file, missing time keywords) give one line each naming the file and
are left out.

Analysis: :func:`frame_photometry` (lazy, dask ``map_blocks`` per cube: 2-D Gaussian centroid,
aperture flux, annulus sky), then on the computed photometry :func:`first_frame_effect`,
:func:`pointing`, :func:`intrapixel`, :func:`light_curve_scatter`; :func:`study` does one
``dask.compute`` and returns a :class:`reduce.stability.study.Study`; :func:`plot_summary`
draws the one-page figure (``docs/irac_stability.png``).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from astropy.io import fits

from reduce.errors import BadInputError, ReduceError
from reduce.stability.kernels import photometry as kphot
from reduce.stability.kernels import timeseries as kts
from reduce.stability.study import Series, Study

APERTURE = 3.0
"""Aperture radius [pixel] (IRAC ch1 PSF FWHM 1.66" = 1.4 pixel: 3 pixels hold ~96% of it)."""
ANNULUS = (10.0, 15.0)
"""Sky annulus radii [pixel] about the star (inside the 32 x 32 subarray for a centred star)."""
BOX_HALF = 3
"""Half size of the 7 x 7 box of the Gaussian centroid fit [pixel]."""
MIN_PERIOD_MIN, MAX_PERIOD_MIN = 5.0, 120.0
"""Period range of the pointing periodogram [minutes] (cut to the series span)."""
DRIFT_DEGREE = 2
"""Order of the polynomial that is the slow pointing drift."""
SKIP_PLANES = (0,)
"""Planes left out of the decorrelation and of the scatter (the first-frame effect)."""
CLIP = 5.0
ANOMALY_SIGMA = 10.0
"""A plane whose mean sky differs from its neighbouring planes' by more than this many sigma
(standard errors over the cubes) and by more than this many times the robust plane-to-plane
spread of that difference is reported as anomalous (the real series: plane 57, i.e. the 58th
frame, whose sky excess the warm-mission literature knows)."""
"""Frames whose decorrelated residual is beyond this many robust sigma are left out."""

_NAME = re.compile(r"SPITZER_I(\d)_(\d+)_(\d+)_(\d+)_\d+_bcd\.fits$")
_FLOATS = ("MJD_OBS", "BMJD_OBS", "FRAMTIME", "EXPTIME", "GAIN", "FLUXCONV")
_PHOT = ("x", "y", "x_err", "y_err", "sx", "sy", "fit_ok", "x_fw", "y_fw", "flux", "flux_err",
         "area", "sky", "sky_err", "sky_sigma", "e_per_unit")
_UNITS = {"x": "pixel", "y": "pixel", "x_err": "pixel", "y_err": "pixel", "sx": "pixel",
          "sy": "pixel", "x_fw": "pixel", "y_fw": "pixel", "area": "pixel",
          "e_per_unit": "electron / (MJy/sr)"}


# ------------------------------------------------------------------------------------ reader
@dataclass(frozen=True)
class IracCube:
    """Header facts of one SSC IRAC BCD cube (no pixel data).  Times: MJD (UTC) / BMJD (TDB)
    of the DCE start; framtime, exptime, framedly [s]; gain [e-/DN]; fluxconv [MJy/sr per
    DN/s]; ronoise [e-]; shape (nplanes, ny, nx)."""

    path: Path
    chnlnum: int
    aorkey: int
    expid: int
    dcenum: int
    shape: tuple
    mjd_obs: float
    bmjd_obs: float
    framtime: float
    exptime: float
    framedly: float
    gain: float
    fluxconv: float
    ronoise: float
    bunit: str
    object: str

    def plane_times(self):
        """(mjd, bmjd): (nplanes,) mid-plane times, ``MJD_OBS + (k + 0.5) FRAMTIME / 86400``."""
        k = (np.arange(self.shape[0]) + 0.5) * self.framtime / 86400.0
        return self.mjd_obs + k, self.bmjd_obs + k


_WANT = frozenset(("BITPIX", "BZERO", "BSCALE", "INSTRUME", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "CHNLNUM", "AORKEY", "EXPID",
                   "DCENUM", "FRAMEDLY", "RONOISE", "BUNIT", "OBJECT") + _FLOATS)


def _why(exc, limit=160):
    """An exception as one short line: 'Type: message' (whitespace collapsed)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _card_value(text):
    """The value of a FITS card's value field (after '= '): str, bool, int or float; None when
    it is none of these (the caller then asks astropy)."""
    text = text.strip()
    if text.startswith("'"):
        m = re.match(r"'((?:[^']|'')*)'", text)
        return m.group(1).replace("''", "'").rstrip() if m else None
    token = text.split("/", 1)[0].strip()
    if token in ("T", "F"):
        return token == "T"
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token.replace("D", "E"))
    except ValueError:
        return None


def _scan_primary(path, max_blocks=200):
    """The cards of :data:`_WANT` from the primary header, read straight from the file's 2880-byte
    blocks (an SSC header has ~1700 cards; astropy parses all of them ~20x slower), or None
    when the header does not end as a FITS header should (the caller then asks astropy)."""
    cards = {}
    with open(path, "rb") as f:
        for _ in range(max_blocks):
            block = f.read(2880)
            if len(block) < 2880:
                return None
            for i in range(0, 2880, 80):
                raw = block[i:i + 80]
                key = raw[:8].decode("ascii", "replace").strip()
                if key == "END":
                    cards["_DATA_OFFSET"] = f.tell()
                    return cards
                if key in _WANT and raw[8:10] == b"= ":
                    value = _card_value(raw[10:].decode("ascii", "replace"))
                    if value is None:
                        return None
                    cards[key] = value
    return None


def read_cube_header(path) -> IracCube:
    """The header facts of one IRAC BCD; BadInputError (naming the file) when it is not a
    readable IRAC image with the time and photometry keywords above."""
    path = Path(path)
    try:
        h = _scan_primary(path)
        if h is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # the one line below says what is wrong
                with fits.open(path, memmap=False) as hdul:
                    h = hdul[0].header
    except Exception as exc:                                     # noqa: BLE001 - any read failure
        raise BadInputError(path, f"not a readable FITS file ({_why(exc)})") from None
    if str(h.get("INSTRUME", "")).strip() != "IRAC":
        raise BadInputError(path, f"INSTRUME is {h.get('INSTRUME')!r}, not 'IRAC'")
    naxis = h.get("NAXIS", 0)
    if naxis not in (2, 3):
        raise BadInputError(path, f"NAXIS = {naxis}: not an image or a subarray cube")
    shape = (h.get("NAXIS3", 1) if naxis == 3 else 1, h.get("NAXIS2", 0), h.get("NAXIS1", 0))
    vals = {}
    for key in _FLOATS:
        try:
            vals[key] = float(h[key])
        except (KeyError, TypeError, ValueError):
            raise BadInputError(path, f"no usable {key} in the header") from None
    if not (vals["FRAMTIME"] > 0 and vals["EXPTIME"] > 0 and vals["GAIN"] > 0 and vals["FLUXCONV"] > 0):
        raise BadInputError(path, "FRAMTIME, EXPTIME, GAIN and FLUXCONV must be positive")

    def num(key, cast=float, default=np.nan):
        try:
            return cast(h[key])
        except (KeyError, TypeError, ValueError):
            return default
    return IracCube(path=path, chnlnum=num("CHNLNUM", int, 0), aorkey=num("AORKEY", int, -1),
                    expid=num("EXPID", int, -1), dcenum=num("DCENUM", int, -1), shape=shape,
                    mjd_obs=vals["MJD_OBS"], bmjd_obs=vals["BMJD_OBS"], framtime=vals["FRAMTIME"],
                    exptime=vals["EXPTIME"], framedly=num("FRAMEDLY"), gain=vals["GAIN"],
                    fluxconv=vals["FLUXCONV"], ronoise=num("RONOISE"),
                    bunit=str(h.get("BUNIT", "")).strip(), object=str(h.get("OBJECT", "")).strip())


def _fast_data(path):
    """float32 pixels of a plain BITPIX = -32 primary array (no BZERO/BSCALE) read with numpy,
    or None for anything else (the caller then asks astropy)."""
    h = _scan_primary(path)
    if (h is None or h.get("BITPIX") != -32 or h.get("BZERO", 0) != 0 or h.get("BSCALE", 1) != 1
            or h.get("NAXIS") not in (2, 3)):
        return None
    shape = tuple(int(h[f"NAXIS{i}"]) for i in range(h["NAXIS"], 0, -1))
    count = int(np.prod(shape))
    data = np.fromfile(path, dtype=">f4", count=count, offset=h["_DATA_OFFSET"])
    if data.size != count:
        raise BadInputError(path, f"pixel data truncated ({data.size} of {count} values in the file)")
    return data.astype(np.float32).reshape(shape)


def read_cube(path, shape=None) -> np.ndarray:
    """The pixel data of one BCD as float32 (nplanes, ny, nx); BadInputError naming the file
    when it cannot be read (truncated too) or has another ``shape`` than expected."""
    try:
        data = _fast_data(path)
        if data is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path, memmap=False) as hdul:
                    data = np.asarray(hdul[0].data, dtype=np.float32)
    except BadInputError:
        raise
    except Exception as exc:                                     # noqa: BLE001
        raise BadInputError(path, f"pixel data unreadable ({_why(exc)})") from None
    if data.ndim == 2:
        data = data[None]
    if shape is not None and data.shape != tuple(shape):
        raise BadInputError(path, f"data shape {data.shape}, expected {tuple(shape)}")
    return data


def _bcd_paths(source):
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            return sorted(p.glob("*_bcd.fits"))
        return [p]
    return [Path(s) for s in source]


def find_cubes(source):
    """(cubes, problems): the IRAC BCD cubes of a folder (``*_bcd.fits``) or list of files,
    in time order (MJD_OBS), and one line per file left out.  The first good file sets the
    channel and the cube shape; a file with another is left out."""
    cubes, problems = [], []
    for path in _bcd_paths(source):
        try:
            cubes.append(read_cube_header(path))
        except BadInputError as exc:
            problems.append(str(exc))
    cubes.sort(key=lambda c: (c.mjd_obs, c.expid, c.dcenum))
    if not cubes:
        return [], problems
    first = cubes[0]
    keep = []
    for c in cubes:
        if c.chnlnum != first.chnlnum or c.shape != first.shape:
            problems.append(f"{c.path}: channel {c.chnlnum}, shape {c.shape}; the series is channel "
                            f"{first.chnlnum}, shape {first.shape}")
        else:
            keep.append(c)
    return keep, problems


def _dataset(cubes, data):
    """The (time, y, x) Dataset of ``cubes`` with pixel array ``data`` (dask, chunked by cube)."""
    nplanes = cubes[0].shape[0]
    times = [c.plane_times() for c in cubes]
    mjd = np.concatenate([t[0] for t in times])
    bmjd = np.concatenate([t[1] for t in times])
    cube_ix = np.repeat(np.arange(len(cubes), dtype=np.int32), nplanes)
    plane = np.tile(np.arange(nplanes, dtype=np.int16), len(cubes))

    def per(attr, dtype=float):
        return np.array([getattr(c, attr) for c in cubes], dtype=dtype)
    ds = xr.Dataset(
        {"flux": (("time", "y", "x"), data, {"units": cubes[0].bunit or "MJy/sr",
                                              "long_name": "surface brightness (SSC BCD)"}),
         "file": ("dce", np.array([c.path.name for c in cubes], dtype=str)),
         "expid": ("dce", per("expid", np.int32)), "dcenum": ("dce", per("dcenum", np.int32)),
         "mjd_obs": ("dce", per("mjd_obs"), {"units": "d", "long_name": "MJD_OBS (UTC, DCE start)"}),
         "bmjd_obs": ("dce", per("bmjd_obs"), {"units": "d", "long_name": "BMJD_OBS (TDB)"}),
         "framtime": ("dce", per("framtime"), {"units": "s"}),
         "exptime": ("dce", per("exptime"), {"units": "s"}),
         "framedly": ("dce", per("framedly"), {"units": "s"}),
         "gain": ("dce", per("gain"), {"units": "electron/DN"}),
         "fluxconv": ("dce", per("fluxconv"), {"units": "(MJy/sr)/(DN/s)"}),
         "ronoise": ("dce", per("ronoise"), {"units": "electron"})},
        coords={"mjd": ("time", mjd, {"units": "d", "long_name": "MJD (UTC), middle of the plane"}),
                "bmjd": ("time", bmjd, {"units": "d", "long_name": "BMJD (TDB), middle of the plane"}),
                "cube": ("time", cube_ix, {"long_name": "index of the cube in the series"}),
                "plane": ("time", plane, {"long_name": "plane within its cube"})},
        attrs={"instrument": "IRAC", "chnlnum": int(cubes[0].chnlnum), "aorkey": int(cubes[0].aorkey),
               "bunit": cubes[0].bunit, "object": cubes[0].object, "nplanes": int(nplanes),
               "time_stamps": "MJD_OBS/BMJD_OBS + (plane + 0.5) * FRAMTIME / 86400"})
    return ds


def open_bcds(source):
    """(dataset, problems): the BCD cubes of ``source`` (folder or files) as a lazy (time, y, x)
    Dataset (one dask chunk per cube, read on compute; headers are read now).  A cube whose
    pixels turn out unreadable at compute time raises BadInputError naming it; use
    :func:`ingest_irac` to find those before an analysis."""
    cubes, problems = find_cubes(source)
    if not cubes:
        raise ReduceError(f"{source}: no usable IRAC BCD cube" + (f" ({problems[0]})" if problems else ""))
    shape = cubes[0].shape
    blocks = [da.from_delayed(dask.delayed(read_cube)(c.path, shape), shape=shape, dtype=np.float32)
              for c in cubes]
    return _dataset(cubes, da.concatenate(blocks, axis=0)), problems


def ingest_irac(source, store):
    """Read the BCD cubes of ``source`` (folder or files) into a new zarr store at ``store``
    (xarray, zarr v3; replaced when it exists), one chunk per cube; returns ``(path, problems)``.
    The pixels are held in memory once (the 501-cube series: 131 MB); a cube that cannot be read
    gives one line naming it and is left out (its time stamps too)."""
    cubes, problems = find_cubes(source)
    good, arrays = [], []
    for c in cubes:
        try:
            arrays.append(read_cube(c.path, cubes[0].shape))
            good.append(c)
        except BadInputError as exc:
            problems.append(str(exc))
    if not good:
        raise ReduceError(f"{source}: no usable IRAC BCD cube" + (f" ({problems[0]})" if problems else ""))
    shape = good[0].shape
    ds = _dataset(good, np.concatenate(arrays, axis=0))
    with warnings.catch_warnings():    # zarr's notes on fixed-length strings and consolidated metadata
        warnings.filterwarnings("ignore", message=r".*(Zarr V3 specification|Consolidated metadata).*")
        ds.to_zarr(store, mode="w", encoding={"flux": {"chunks": shape}}, consolidated=True, zarr_format=3)
    return Path(store), problems


def open_irac(store) -> xr.Dataset:
    """A store written by :func:`ingest_irac`, lazily (dask, one chunk per cube)."""
    store = Path(store)
    if not (store / "zarr.json").is_file():
        raise ReduceError(f"{store}: not a zarr store (no zarr.json)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(Zarr V3 specification|Consolidated metadata).*")
        ds = xr.open_zarr(store, consolidated=True, chunks={})
    if "flux" not in ds or ds.attrs.get("instrument") != "IRAC":
        raise ReduceError(f"{store}: not an IRAC series store (no IRAC 'flux' (time, y, x))")
    return ds


def open_series(path_or_store):
    """(dataset, problems) from a store of :func:`ingest_irac`, a folder of BCDs or a list of BCDs."""
    if isinstance(path_or_store, xr.Dataset):
        return path_or_store, []
    if isinstance(path_or_store, (str, Path)) and (Path(path_or_store) / "zarr.json").is_file():
        return open_irac(path_or_store), []
    return open_bcds(path_or_store)


# ------------------------------------------------------------------------------ photometry
def _phot_block(block, e_per_unit, aperture, annulus, box):
    """Per-frame photometry of one cube block (n, ny, nx) -> (n, len(_PHOT)) float64."""
    img = np.asarray(block, dtype=float)
    n = img.shape[0]
    ref = np.nanmedian(img, axis=0)
    ref = np.where(np.isfinite(ref), ref, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(ref)), ref.shape)
    sky, sky_err, sky_sigma, _ = kphot.background_annulus(img, ix, iy, *annulus)
    xf, yf, _, _ = kphot.centroid_flux_weighted(img, ix, iy, aperture, sky, sky_sigma)
    e = np.asarray(e_per_unit, float).reshape(-1)
    g = kphot.centroid_gaussian(img, np.where(np.isfinite(xf), xf, ix), np.where(np.isfinite(yf), yf, iy),
                                half=box, noise=sky_sigma, e_per_unit=e)
    x = np.where(g["ok"], g["x"], xf)
    y = np.where(g["ok"], g["y"], yf)
    flux, flux_err, area = kphot.aperture_photometry(img, x, y, aperture, sky, sky_err, sky_sigma, e)
    out = np.stack([x, y, g["x_err"], g["y_err"], g["sx"], g["sy"], g["ok"].astype(float), xf, yf,
                    flux, flux_err, area, sky, sky_err, sky_sigma, np.broadcast_to(e, (n,))], axis=1)
    return out


def frame_photometry(ds, *, aperture=APERTURE, annulus=ANNULUS, box=BOX_HALF) -> xr.Dataset:
    """Per-frame photometry of the brightest star, lazily (one dask task per cube).

    For each cube the star is the brightest pixel of its median plane; per frame: the
    annulus sky (clipped mean, ``annulus`` radii about that pixel), the flux-weighted centroid
    (``x_fw``, ``y_fw``) as start, the 2-D Gaussian centroid (``x``, ``y``, errors, widths
    ``sx``, ``sy``; ``fit_ok``), the aperture flux of radius ``aperture`` about the Gaussian
    centroid with its error (sky scatter, sky level and the star's photon noise from GAIN,
    FLUXCONV and EXPTIME).  Pixel positions 0-based (FITS = + 1).  Returns a Dataset over
    ``time`` with the input's coordinates; nothing is computed."""
    data = ds["flux"].data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(int(ds.attrs.get("nplanes", 64)),) + data.shape[1:])
    data = data.rechunk({1: -1, 2: -1})
    e = kphot.electrons_per_unit(ds["gain"].data, ds["fluxconv"].data, ds["exptime"].data)   # (dce,)
    e = e if isinstance(e, da.Array) else da.from_array(np.asarray(e, float))
    nplanes = data.shape[0] // ds.sizes["dce"]                 # equal cubes (find_cubes)
    e_frames = da.repeat(e.astype(float), nplanes, axis=0).rechunk((data.chunks[0],))
    out = da.map_blocks(_phot_block, data, e_frames[:, None, None], aperture, annulus, box,
                        drop_axis=[1, 2], new_axis=1, chunks=(data.chunks[0], (len(_PHOT),)),
                        dtype=float, meta=np.empty((0, 0), float))
    units = ds["flux"].attrs.get("units", "MJy/sr")
    variables = {}
    for i, name in enumerate(_PHOT):
        u = _UNITS.get(name, f"{units} pixel" if name.startswith("flux") else units)
        variables[name] = ("time", out[:, i], {"units": "" if name == "fit_ok" else u})
    return xr.Dataset(variables, coords={k: ds[k].variable for k in ("mjd", "bmjd", "cube", "plane")},
                      attrs={"aperture_px": aperture, "annulus_px": list(annulus), "box_half_px": box})


# ------------------------------------------------------------------------------- analyses
def _np(phot, name):
    data = phot[name].data
    if isinstance(data, da.Array):
        raise ReduceError(f"'{name}' is not computed: pass the computed photometry "
                          "(study() computes it once)")
    return np.asarray(data)


def _cube_matrix(phot, name):
    """(ncubes, nplanes) of a per-frame variable (NaN where a plane is missing)."""
    cube, plane, v = _np(phot, "cube"), _np(phot, "plane"), _np(phot, name).astype(float)
    out = np.full((cube.max() + 1, plane.max() + 1), np.nan)
    out[cube, plane] = v
    return out


def first_frame_effect(phot, *, reference=slice(1, None), first=4) -> xr.Dataset:
    """How each plane of the cubes differs from the rest of its cube, in sky and star flux.

    For plane k: the mean over cubes of (value of plane k - mean of the ``reference`` planes of
    the same cube), with the standard error over cubes and the significance.  Returns a
    Dataset over ``plane``: ``sky_offset`` [MJy/sr] (+ ``_err``, ``sky_significance``),
    ``flux_offset`` [fraction of the cube's flux] (+ ``_err``, ``flux_significance``),
    ``sky_local_significance`` (the sky offset against the running median of its 4 neighbouring
    planes, over its error: a single odd plane stands out, a smooth gradient does not); attrs
    ``first`` (how many first planes the summary quotes), ``anomalous_planes`` (planes > 0 that
    stand out from their neighbours, see ``ANOMALY_SIGMA``)."""
    sky = _cube_matrix(phot, "sky")
    flux = _cube_matrix(phot, "flux")
    rel = flux / np.nanmean(flux[:, reference], axis=1, keepdims=True)
    s = kts.plane_offsets(sky, reference=reference)
    f = kts.plane_offsets(rel, reference=reference)
    units = phot["sky"].attrs.get("units") or "MJy/sr"
    off = s["offset"]
    neighbours = np.array([np.nanmedian(np.r_[off[max(k - 2, 0):k], off[k + 1:k + 3]]) for k in range(off.size)])
    local = (off - neighbours) / s["offset_err"]
    spread = 1.4826 * np.nanmedian(np.abs(off - neighbours))     # plane-to-plane structure
    odd = (np.abs(local) > ANOMALY_SIGMA) & (np.abs(off - neighbours) > ANOMALY_SIGMA * spread)
    anomalous = [int(k) for k in np.flatnonzero(odd) if k > 0]
    return xr.Dataset({"sky_offset": ("plane", s["offset"], {"units": units}),
                       "sky_offset_err": ("plane", s["offset_err"], {"units": units}),
                       "sky_significance": ("plane", s["significance"]),
                       "sky_local_significance": ("plane", local),
                       "flux_offset": ("plane", f["offset"], {"units": "1"}),
                       "flux_offset_err": ("plane", f["offset_err"], {"units": "1"}),
                       "flux_significance": ("plane", f["significance"])},
                      coords={"plane": np.arange(sky.shape[1])},
                      attrs={"first": first, "ncubes": int(sky.shape[0]), "anomalous_planes": anomalous,
                             "reference": f"planes {reference.start}..{(reference.stop or sky.shape[1]) - 1}"})


def _per_cube(phot, name, skip=()):
    m = _cube_matrix(phot, name)
    if skip:
        m[:, list(skip)] = np.nan
    n = np.sum(np.isfinite(m), axis=1)
    with np.errstate(all="ignore"):
        return np.nanmean(m, axis=1), np.nanstd(m, axis=1, ddof=1) / np.sqrt(n)


def pointing(phot, *, min_period=MIN_PERIOD_MIN, max_period=MAX_PERIOD_MIN, degree=DRIFT_DEGREE) -> dict:
    """The pointing: slow drift and, separated from it, the oscillation, per axis (x, y).

    On the per-cube mean centroids (time in minutes from the first plane): a polynomial of
    ``degree`` is the drift; the Lomb-Scargle periodogram of the residuals between
    ``min_period`` and min(``max_period``, span) minutes gives the oscillation's period and its
    false-alarm probability (``fap``: all cubes; ``fap_binned``: 1-minute bins, less sensitive to
    the short-term correlated jitter); then drift + sinusoid are fitted together from that
    period (:func:`reduce.stability.kernels.timeseries.drift_and_oscillation`, the period kept
    within the periodogram's range; ``period_err_min`` is NaN when it ends on a limit: the
    span does not constrain it).  Returns a dict:
    ``t_min`` (ncubes,), ``t0_mjd``, and per axis ``'x'``/``'y'``: ``mean`` [px], ``period_min``,
    ``period_err_min``, ``amplitude_px`` (semi-amplitude), ``amplitude_err_px``, ``fap``,
    ``fap_binned``, ``drift_px_per_h`` (at mid-series) + ``_err``, ``drift_total_px`` (trend end
    minus start), ``jitter_px`` (rms of frames about their cube mean), ``scatter_px`` (rms of the
    cube means about drift + oscillation), ``frame_scatter_px`` (rms of all frames about the
    model), ``centroid_err_px`` (median per-frame fit error), ``values``, ``model``, ``trend``
    (ncubes,), ``frequency``, ``power`` (the periodogram, per minute)."""
    mjd = _np(phot, "mjd")
    t0 = float(np.nanmin(mjd))
    tcube, _ = _per_cube(phot.assign(tmin=("time", (mjd - t0) * 1440.0)), "tmin")
    span = float(np.nanmax(tcube) - np.nanmin(tcube))
    hi = min(max_period, span)
    out = {"t_min": tcube, "t0_mjd": t0, "span_min": span}
    cube = _np(phot, "cube")
    for axis in ("x", "y"):
        v, _ = _per_cube(phot, axis)
        good = np.isfinite(v) & np.isfinite(tcube)
        trend0 = np.polyval(np.polyfit(tcube[good], v[good], degree), tcube)
        pg = kts.periodogram(tcube[good], (v - trend0)[good], min_period=min_period, max_period=hi)
        edges = np.arange(np.nanmin(tcube), np.nanmax(tcube) + 1.0, 1.0)
        idx = np.digitize(tcube, edges)
        tb = np.array([tcube[idx == i].mean() for i in np.unique(idx[good])])
        vb = np.array([(v - trend0)[good & (idx == i)].mean() for i in np.unique(idx[good])])
        pgb = kts.periodogram(tb, vb, min_period=min_period, max_period=hi)
        fit = kts.drift_and_oscillation(tcube, v, period0=pg["period"], degree=degree,
                                        period_bounds=(min_period, hi))
        frames = _np(phot, axis).astype(float)
        jitter = np.nanstd(frames - v[cube])
        model_frames = fit["model"][cube]
        mid = 0.5 * (np.nanmin(tcube) + np.nanmax(tcube)) - fit["t0"]
        poly, cov_diag = fit["poly"], fit["poly_err"]
        slope = sum(i * poly[i] * mid ** (i - 1) for i in range(1, len(poly)))
        slope_err = np.sqrt(sum((i * cov_diag[i] * mid ** (i - 1)) ** 2 for i in range(1, len(poly))))
        trend = fit["trend"]
        out[axis] = {"mean": float(np.nanmean(frames)), "period_min": fit["period"],
                     "period_err_min": fit["period_err"] if not fit["at_bound"] else np.nan,
                     "periodogram_period_min": pg["period"],
                     "periodogram_period_err_min": pg["period_err"], "amplitude_px": fit["amplitude"],
                     "amplitude_err_px": fit["amplitude_err"], "fap": pg["fap"], "fap_binned": pgb["fap"],
                     "power_peak": pg["power_peak"], "drift_px_per_h": float(slope * 60.0),
                     "drift_err_px_per_h": float(slope_err * 60.0),
                     "drift_total_px": float(trend[good][-1] - trend[good][0]),
                     "jitter_px": float(jitter), "scatter_px": fit["rms"], "beta": fit["beta"],
                     "frame_scatter_px": float(np.nanstd(frames - model_frames)),
                     "centroid_err_px": float(np.nanmedian(_np(phot, f"{axis}_err"))),
                     "values": v, "model": fit["model"], "trend": trend,
                     "frequency": pg["frequency"], "power": pg["power"]}
    return out


def intrapixel(phot, *, skip_planes=SKIP_PLANES, clip=CLIP) -> dict:
    """The flux-centroid correlation: fractional flux change per 0.1 pixel in x and in y.

    Frames of the ``skip_planes`` (the first-frame effect), failed fits and, iteratively,
    frames whose residual exceeds ``clip`` robust sigma are left out; the rest are fitted by
    :func:`reduce.stability.kernels.timeseries.decorrelate` (quadratic in the centroid offsets
    plus a linear time term).  Returns that dict plus ``used`` (n,) bool, ``raw`` (n,: flux /
    median), ``corrected_rel`` (n,: decorrelated flux / its median)."""
    flux, x, y = _np(phot, "flux"), _np(phot, "x"), _np(phot, "y")
    err = _np(phot, "flux_err")
    t = (_np(phot, "mjd") - np.nanmin(_np(phot, "mjd"))) * 24.0
    used = (np.isfinite(flux) & (_np(phot, "fit_ok") > 0) & ~np.isin(_np(phot, "plane"), list(skip_planes)))
    for _ in range(5):
        fit = kts.decorrelate(np.where(used, flux, np.nan), x, y, flux_err=err, t=t)
        rel = fit["corrected"] / fit["norm"] - 1 - fit["coef"]["ct"] * (t - np.nanmean(t[used]))
        resid = rel - np.nanmedian(rel[used])
        sig = 1.4826 * np.nanmedian(np.abs(resid[used]))
        new = used & (np.abs(resid) <= clip * sig)
        if np.array_equal(new, used):
            break
        used = new
    corrected = flux / (1 + np.array([fit["coef"][k] for k in ("cx", "cy", "cxx", "cyy", "cxy")])
                        @ np.stack([x - fit["x_mean"], y - fit["y_mean"], (x - fit["x_mean"]) ** 2,
                                    (y - fit["y_mean"]) ** 2, (x - fit["x_mean"]) * (y - fit["y_mean"])]))
    fit["corrected"] = corrected
    fit["used"] = used
    fit["raw"] = flux / np.nanmedian(flux[used])
    fit["corrected_rel"] = corrected / np.nanmedian(corrected[used])
    fit["time_h"] = t
    return fit


def light_curve_scatter(phot, ip, *, bins=(1, 4, 16, 64, 256, 1024)) -> dict:
    """Scatter of the light curve before and after decorrelation, against photon noise.

    On the frames ``ip['used']`` (see :func:`intrapixel`): ``rms_raw`` and ``rms_decorrelated``
    (fractional, per frame; the raw one after removing the same linear time term so that both
    measure the scatter about a line) with their errors ``rms / sqrt(2 (n - 1))``,
    ``photon_noise`` (the star's shot noise, median over frames, fractional),
    ``expected_noise`` (shot noise with the measured sky scatter over the aperture),
    ``ratio`` (decorrelated / raw), ``excess`` (decorrelated / expected), binned rms
    (``bin_frames``, ``binned_raw``, ``binned_decorrelated``, ``binned_white``: the white-noise
    expectation from the decorrelated per-frame rms) and ``beta`` of the decorrelated residuals."""
    used = ip["used"]
    t = ip["time_h"]
    ct = ip["coef"]["ct"]
    tmean = np.nanmean(t[used])
    raw = ip["raw"] - ct * (t - tmean)
    cor = ip["corrected_rel"] - ct * (t - tmean)
    raw_u, cor_u = raw[used], cor[used]
    n = used.sum()
    flux = _np(phot, "flux")[used]
    star, total = kphot.photon_noise(flux, _np(phot, "e_per_unit")[used], area=_np(phot, "area")[used],
                                     sky_sigma=_np(phot, "sky_sigma")[used])
    rms_raw, rms_cor = float(np.std(raw_u)), float(np.std(cor_u))
    sizes, br, _ = kts.binned_rms(raw_u - raw_u.mean(), list(bins))
    _, bc, bw = kts.binned_rms(cor_u - cor_u.mean(), list(bins))
    pn, en = float(np.median(star / flux)), float(np.median(total / flux))
    return {"n_frames": int(n), "rms_raw": rms_raw, "rms_raw_err": rms_raw / np.sqrt(2 * (n - 1)),
            "rms_decorrelated": rms_cor, "rms_decorrelated_err": rms_cor / np.sqrt(2 * (n - 1)),
            "photon_noise": pn, "expected_noise": en, "ratio": rms_cor / rms_raw,
            "excess": rms_cor / en, "bin_frames": sizes, "binned_raw": br, "binned_decorrelated": bc,
            "binned_white": bw, "beta": kts.red_noise_beta(cor_u - cor_u.mean())}


# ----------------------------------------------------------------------------------- study
def _summary_rows(ff, pt, ip, sc, first):
    rows = []

    def add(q, v, e, u, note=""):
        rows.append({"quantity": q, "value": float(v), "error": float(e), "units": u, "note": note})
    for k in range(first):
        add(f"sky_offset_plane{k}", ff.sky_offset[k], ff.sky_offset_err[k], "MJy/sr",
            f"{float(ff.sky_significance[k]):.1f} sigma; vs {ff.attrs['reference']}")
        add(f"flux_offset_plane{k}", ff.flux_offset[k], ff.flux_offset_err[k], "fraction",
            f"{float(ff.flux_significance[k]):.1f} sigma")
    for k in ff.attrs["anomalous_planes"]:
        add(f"sky_offset_plane{k}", ff.sky_offset[k], ff.sky_offset_err[k], "MJy/sr",
            f"anomalous plane: {float(ff.sky_local_significance[k]):.0f} sigma above its neighbours")
        add(f"flux_offset_plane{k}", ff.flux_offset[k], ff.flux_offset_err[k], "fraction",
            f"{float(ff.flux_significance[k]):.1f} sigma")
    for axis in ("x", "y"):
        p = pt[axis]
        add(f"{axis}_mean", p["mean"], p["centroid_err_px"], "pixel", "0-based; error = median per-frame fit error")
        add(f"{axis}_drift_rate", p["drift_px_per_h"], p["drift_err_px_per_h"], "pixel/h", "slope of the drift at mid-series")
        add(f"{axis}_drift_total", p["drift_total_px"], np.nan, "pixel", f"polynomial trend, end minus start, degree {DRIFT_DEGREE}")
        add(f"{axis}_oscillation_period", p["period_min"], p["period_err_min"], "min",
            f"periodogram peak {p['periodogram_period_min']:.1f} +- {p['periodogram_period_err_min']:.1f} min (HWHM)")
        add(f"{axis}_oscillation_amplitude", p["amplitude_px"], p["amplitude_err_px"], "pixel", "sinusoid semi-amplitude")
        add(f"{axis}_oscillation_fap", p["fap"], np.nan, "probability", f"Baluev; 1-minute bins: {p['fap_binned']:.2g}")
        add(f"{axis}_jitter", p["jitter_px"], np.nan, "pixel", "rms of frames about their cube mean")
        add(f"{axis}_scatter", p["scatter_px"], np.nan, "pixel", "rms of cube means about drift + oscillation")
    add("dflux_per_0.1px_x", ip["dfdx"], ip["dfdx_err"], "fraction", "intrapixel gradient at the mean position")
    add("dflux_per_0.1px_y", ip["dfdy"], ip["dfdy_err"], "fraction", "intrapixel gradient at the mean position")
    add("rms_raw", sc["rms_raw"], sc["rms_raw_err"], "fraction", f"per frame, {sc['n_frames']} frames")
    add("rms_decorrelated", sc["rms_decorrelated"], sc["rms_decorrelated_err"], "fraction", "per frame")
    add("photon_noise", sc["photon_noise"], np.nan, "fraction", "star shot noise per frame (GAIN, FLUXCONV, EXPTIME)")
    add("expected_noise", sc["expected_noise"], np.nan, "fraction", "shot noise + measured sky scatter in the aperture")
    add("decorrelated_over_raw", sc["ratio"], np.nan, "1", "")
    add("decorrelated_over_expected", sc["excess"], np.nan, "1", f"beta (red noise) {sc['beta']:.2f}")
    return pd.DataFrame(rows)


def study(path_or_store, *, start=None, stop=None, client=None, aperture=APERTURE, annulus=ANNULUS) -> Study:
    """The whole IRAC staring-series study: one ``dask.compute`` of the per-frame photometry,
    then :func:`first_frame_effect`, :func:`pointing`, :func:`intrapixel`,
    :func:`light_curve_scatter`.

    ``path_or_store``: a store of :func:`ingest_irac`, a folder of ``*_bcd.fits`` or a list of
    BCD files (or an opened Dataset); ``start``/``stop``: MJD (UTC) limits (cubes whose first
    plane lies inside are kept); ``client``: a ``distributed.Client`` (None: dask's default).
    Tables: ``irac_frames`` (per frame), ``irac_cubes`` (per cube, with the pointing model),
    ``irac_planes`` (per-plane first-frame profile), ``irac_periodogram`` (period_min, power_x,
    power_y), ``irac_summary`` (quantity, value, error, units, note).  Series: per-cube x, y,
    raw and decorrelated flux, sky, plane-0 sky offset."""
    ds, problems = open_series(path_or_store)
    phot = frame_photometry(ds, aperture=aperture, annulus=annulus)
    units = {k: phot[k].attrs.get("units", "") for k in phot.data_vars}
    todo = {k: phot[k].data for k in phot.data_vars}
    todo.update({k: phot[k].data for k in ("mjd", "bmjd", "cube", "plane")})
    if "file" in ds:
        todo["file"] = ds["file"].data
    lazy = [k for k, v in todo.items() if isinstance(v, da.Array)]
    values = {k: v for k, v in todo.items() if k not in lazy}
    if client is not None:
        values.update(zip(lazy, client.gather(client.compute([todo[k] for k in lazy]))))
    else:
        values.update(zip(lazy, dask.compute(*[todo[k] for k in lazy])))
    files = np.asarray(values.pop("file", np.array([], str)))
    phot = xr.Dataset({k: ("time", np.asarray(v)) for k, v in values.items()
                       if k not in ("mjd", "bmjd", "cube", "plane")},
                      coords={k: ("time", np.asarray(values[k])) for k in ("mjd", "bmjd", "cube", "plane")},
                      attrs=phot.attrs)
    for k in phot.data_vars:
        phot[k].attrs["units"] = units[k]
    if start is not None or stop is not None:
        first_mjd = pd.Series(phot.mjd.values).groupby(phot.cube.values).transform("min").values
        keep = np.ones(phot.sizes["time"], bool)
        if start is not None:
            keep &= first_mjd >= start
        if stop is not None:
            keep &= first_mjd <= stop
        if not keep.any():
            raise ReduceError(f"no IRAC cube between MJD {start} and {stop}")
        phot = phot.isel(time=keep)
        old = np.unique(phot.cube.values)
        files = files[old] if files.size else files
        phot = phot.assign_coords(cube=("time", np.searchsorted(old, phot.cube.values).astype(np.int32)))
    ff = first_frame_effect(phot)
    pt = pointing(phot)
    ip = intrapixel(phot)
    sc = light_curve_scatter(phot, ip)
    return _assemble(phot, files, ff, pt, ip, sc, problems)


def _assemble(phot, files, ff, pt, ip, sc, problems):
    frames = phot.reset_coords().to_dataframe().reset_index(drop=True)
    frames["flux_decorrelated"] = ip["corrected"]
    frames["used"] = ip["used"]
    frames.insert(0, "cube", frames.pop("cube"))
    frames.insert(1, "plane", frames.pop("plane"))
    ncube = int(frames["cube"].max()) + 1
    sky, sky_e = _per_cube(phot, "sky")
    sky_m = _cube_matrix(phot, "sky")
    flux_m = _cube_matrix(phot, "flux")
    cor_m = np.full_like(flux_m, np.nan)
    cor_m[phot.cube.values, phot.plane.values] = ip["corrected_rel"]
    raw_m = np.full_like(flux_m, np.nan)
    raw_m[phot.cube.values, phot.plane.values] = np.where(ip["used"], ip["raw"], np.nan)
    cor_m[~np.isfinite(raw_m)] = np.nan
    mjd_c, _ = _per_cube(phot, "mjd")
    cubes = pd.DataFrame({
        "cube": np.arange(ncube), "file": files if len(files) == ncube else [""] * ncube,
        "mjd": mjd_c, "t_min": pt["t_min"],
        "x": pt["x"]["values"], "x_model": pt["x"]["model"], "x_trend": pt["x"]["trend"],
        "y": pt["y"]["values"], "y_model": pt["y"]["model"], "y_trend": pt["y"]["trend"],
        "flux_rel": np.nanmean(raw_m, 1), "flux_decorrelated_rel": np.nanmean(cor_m, 1),
        "sky": sky, "sky_err": sky_e,
        "sky_plane0_offset": sky_m[:, 0] - np.nanmean(sky_m[:, 1:], 1),
        "flux_plane0_offset": flux_m[:, 0] / np.nanmean(flux_m[:, 1:], 1) - 1})
    planes = ff.to_dataframe().reset_index()
    period = pd.DataFrame({"period_min": 1.0 / pt["x"]["frequency"], "power_x": pt["x"]["power"],
                           "power_y": np.interp(pt["x"]["frequency"], pt["y"]["frequency"], pt["y"]["power"])})
    binned = pd.DataFrame({"bin_frames": sc["bin_frames"], "rms_raw": sc["binned_raw"],
                           "rms_decorrelated": sc["binned_decorrelated"], "white": sc["binned_white"]})
    summary = _summary_rows(ff, pt, ip, sc, ff.attrs["first"])
    mjd = cubes["mjd"].values

    def series(name, label, units, values):
        return Series(name=name, label=label, units=units, time=mjd, value=np.asarray(values, float), fit=False)
    px, py = pt["x"], pt["y"]
    notes = [
        f"{ncube} cubes, {len(frames)} frames, {pt['span_min']:.1f} min",
        f"first frame: sky {float(ff.sky_offset[0]):+.3f} +- {float(ff.sky_offset_err[0]):.3f} MJy/sr "
        f"({float(ff.sky_significance[0]):.0f} sigma), star flux {100 * float(ff.flux_offset[0]):+.3f} +- "
        f"{100 * float(ff.flux_offset_err[0]):.3f} % ({float(ff.flux_significance[0]):.1f} sigma)",
        *(f"anomalous plane {k}: sky {float(ff.sky_offset[k]):+.3f} +- {float(ff.sky_offset_err[k]):.3f} MJy/sr, "
          f"star flux {100 * float(ff.flux_offset[k]):+.3f} +- {100 * float(ff.flux_offset_err[k]):.3f} %"
          for k in ff.attrs["anomalous_planes"]),
        *(f"pointing {a}: drift {p['drift_px_per_h']:+.3f} +- {p['drift_err_px_per_h']:.3f} px/h "
          f"(total {p['drift_total_px']:+.3f} px); oscillation P = {p['period_min']:.1f} +- "
          f"{p['period_err_min']:.1f} min, amplitude {p['amplitude_px']:.4f} +- {p['amplitude_err_px']:.4f} px, "
          f"FAP {p['fap']:.1e} (1-min bins {p['fap_binned']:.1e})" for a, p in (("x", px), ("y", py))),
        f"intrapixel: dF/F per 0.1 px = {100 * ip['dfdx']:+.3f} +- {100 * ip['dfdx_err']:.3f} % (x), "
        f"{100 * ip['dfdy']:+.3f} +- {100 * ip['dfdy_err']:.3f} % (y)",
        f"scatter per frame: raw {100 * sc['rms_raw']:.3f} %, decorrelated {100 * sc['rms_decorrelated']:.3f} % "
        f"(ratio {sc['ratio']:.2f}); photon noise {100 * sc['photon_noise']:.3f} %, with sky "
        f"{100 * sc['expected_noise']:.3f} %"]
    return Study(instrument="irac",
                 tables={"irac_frames": frames, "irac_cubes": cubes, "irac_planes": planes,
                         "irac_periodogram": period, "irac_binned_rms": binned, "irac_summary": summary},
                 series=[series("irac_x", "centroid x (cube mean)", "pixel", cubes["x"]),
                         series("irac_y", "centroid y (cube mean)", "pixel", cubes["y"]),
                         series("irac_flux_raw", "star flux / median (raw)", "1", cubes["flux_rel"]),
                         series("irac_flux_decorrelated", "star flux / median (decorrelated)", "1",
                                cubes["flux_decorrelated_rel"]),
                         series("irac_sky", "sky (annulus)", "MJy/sr", cubes["sky"]),
                         series("irac_sky_plane0", "sky of plane 0 minus the rest", "MJy/sr",
                                cubes["sky_plane0_offset"])],
                 problems=list(problems), notes=notes,
                 span=(float(np.nanmin(phot.mjd.values)), float(np.nanmax(phot.mjd.values))))


def summary_value(result, quantity):
    """(value, error) of one row of ``result.tables['irac_summary']``."""
    s = result.tables["irac_summary"].set_index("quantity")
    return float(s.loc[quantity, "value"]), float(s.loc[quantity, "error"])


# ------------------------------------------------------------------------------------ plot
def plot_summary(result, path):
    """One-page PNG of a :func:`study` result: pointing (cube means, drift + oscillation model),
    periodogram, raw and decorrelated light curve, per-plane sky (first-frame effect), flux
    against the y centroid, binned rms against bin size.  Returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result.tables
    cubes, planes, pg, br = t["irac_cubes"], t["irac_planes"], t["irac_periodogram"], t["irac_binned_rms"]
    frames = t["irac_frames"]
    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    tm = cubes["t_min"]
    a = ax[0, 0]
    for axis, c in (("x", "C0"), ("y", "C1")):
        off = cubes[axis].mean()
        a.plot(tm, cubes[axis] - off, ".", ms=2, color=c, alpha=0.5, label=f"{axis} - {off:.2f}")
        a.plot(tm, cubes[f"{axis}_model"] - off, "-", color=c, lw=1.5)
        a.plot(tm, cubes[f"{axis}_trend"] - off, "--", color=c, lw=1)
    a.set(xlabel="time since start [min]", ylabel="centroid offset [pixel]",
          title="pointing: drift (dashed) + oscillation (solid)")
    a.legend(fontsize=8)
    a = ax[0, 1]
    a.plot(pg["period_min"], pg["power_x"], label="x")
    a.plot(pg["period_min"], pg["power_y"], label="y")
    s = result.tables["irac_summary"].set_index("quantity")
    for axis in ("x", "y"):
        a.axvline(s.loc[f"{axis}_oscillation_period", "value"], ls=":", color="C0" if axis == "x" else "C1")
    a.set(xlabel="period [min]", ylabel="Lomb-Scargle power", title="periodogram of the detrended centroids")
    a.text(0.02, 0.95, "FAP x {:.1e}, y {:.1e}".format(s.loc["x_oscillation_fap", "value"],
                                                        s.loc["y_oscillation_fap", "value"]),
           transform=a.transAxes, va="top", fontsize=8)
    a.legend(fontsize=8)
    a = ax[0, 2]
    a.plot(tm, cubes["flux_rel"], ".", ms=2, label="raw")
    a.plot(tm, cubes["flux_decorrelated_rel"] - 0.02, ".", ms=2, label="decorrelated - 0.02")
    a.set(xlabel="time since start [min]", ylabel="flux / median (cube means)", title="light curve")
    a.legend(fontsize=8)
    a = ax[1, 0]
    a.errorbar(planes["plane"], planes["sky_offset"], planes["sky_offset_err"], fmt=".", ms=3)
    a.axhline(0, color="k", lw=0.5)
    a.set(xlabel="plane in cube", ylabel="sky - mean of planes 1..63 [MJy/sr]",
          title=f"first-frame effect: plane 0 at {planes['sky_significance'][0]:.0f} sigma")
    summ = result.tables["irac_summary"]
    flagged = [int(q.rsplit("plane", 1)[1]) for q, note in zip(summ["quantity"], summ["note"])
               if q.startswith("sky_offset_plane") and str(note).startswith("anomalous plane")]
    odd = planes.loc[planes["plane"].isin(flagged)]
    for _, row in odd.iterrows():
        a.annotate(f"plane {int(row['plane'])}", (row["plane"], row["sky_offset"]), fontsize=8,
                   xytext=(-40, -4), textcoords="offset points")
    a = ax[1, 1]
    used = frames["used"].astype(bool)
    f = frames.loc[used]
    a.plot(f["y"], f["flux"] / f["flux"].median(), ",", alpha=0.3)
    a.set(xlabel="centroid y [pixel]", ylabel="flux / median (frames)",
          title="intrapixel: {:+.2f} % / 0.1 px (y), {:+.2f} % (x)".format(
              100 * s.loc["dflux_per_0.1px_y", "value"], 100 * s.loc["dflux_per_0.1px_x", "value"]))
    a = ax[1, 2]
    a.loglog(br["bin_frames"], br["rms_raw"], "o-", label="raw")
    a.loglog(br["bin_frames"], br["rms_decorrelated"], "o-", label="decorrelated")
    a.loglog(br["bin_frames"], br["white"], "k--", label="white noise")
    pn = s.loc["photon_noise", "value"]
    a.loglog(br["bin_frames"], pn / np.sqrt(br["bin_frames"]), "k:", label="photon noise")
    a.set(xlabel="frames per bin", ylabel="rms of bin means (fraction)", title="scatter vs bin size")
    a.legend(fontsize=8)
    fig.suptitle(f"Spitzer IRAC ch1 staring series ({len(cubes)} cubes, {len(frames)} frames)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
