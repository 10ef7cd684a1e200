"""MIPS SED mode on the runner (ICD section 3): raw 70 um spectra -> rectified 2-D spectral BCDs
(``SedBcd``, level 1) -> one point-source spectrum per AOR (``SedSpectrum``, level 2).

``SedBcd``: one unit per SED AOR of the store group ``mips70sed``; its plan is the Ge plan of
``reduce.mips.pipeline.plan_bcd`` with the SED calibration sets (``reduce.sed.calib.SedCalTable``),
its graph the Ge ramp steps followed by the SED steps (``reduce.sed.steps.bcd_pipeline``); the
BCDs go to the store group ``bcd70sed`` (schemas/mips_sed_bcd.yaml) and are exported per DCE
(``_bcd``, ``_bunc``, ``_bbmsk``: 27 rows x 16 columns, MJy/sr).

``SedSpectrum``: one unit per done ``SedBcd`` unit: ON, OFF and ON - OFF coadds with the dithers
aligned along the slit and outliers rejected across frames (``steps.coadd``), the source column
found from the data and a 5-column extraction with APCORR (``steps.extract``); the spectrum goes
to the store group ``sed_spectra`` (schemas/mips_sed.yaml) and to ``_sed.tbl``, ``_sed.fits``
and ``_sedcoadd.fits``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import __version__
from ..io.store import open_committed
from ..mips.bcd import PIPELINE_VERSION
from ..mips.kernels.ramps import GeParams
from ..mips.pipeline import BcdParams, _reason_block, aor_units, dce_rows, plan_bcd, reports_of
from ..runner import Pipeline, TableSpec, Unit, UnitResult, hash_strings, open_table, read_records, read_slot, run
from ..runner.tables import _quiet_zarr
from ..schemas import load_schema, validate_group
from . import steps
from .calib import SED_RAW_GROUP, SedCalTable
from .steps.rectify import NCOLS, NROWS, sed_mask_bits

BCD_TABLE = TableSpec("bcd70sed", "mips_sed_bcd", "bcd70sed")
SPEC_TABLE = TableSpec("sed_spectra", "mips_sed", "sed_spectra")
STR = np.dtypes.StringDType()


@dataclass(frozen=True)
class SedParams:
    """Parameters of the SED pipeline (the Ge ramp steps' and the level-2 coadd/extraction's)."""

    ge: GeParams = GeParams()
    dce_chunk: int | None = None    # DCEs per task (None: the store's chunks)
    nsigma: float = 4.0             # outlier threshold across frames (robust sigmas)
    min_depth: int = 3              # fewest frames at a pixel for the cross-frame test
    width: int = 5                  # extraction aperture, columns (the SSC's 5)
    source_rows: tuple = (1, 20)    # rows [a, b) summed to find the source column (the SSC's rows 2-20)
    max_saturated: float = 0.5      # a DCE whose calibrated window saturates beyond this fraction is skipped


# ---------------------------------------------------------------- level 1
def plan_sed(source, *, params: SedParams = SedParams()):
    """The Ge plan (reduce.mips.pipeline.Plan) of SED DCEs: per-DCE metadata (eager, small), the
    SED calibration sets checked, plan-time skips. ``source``: the raw group Dataset (or a cut of it)."""
    return plan_bcd(source, 2, params=BcdParams(ge=params.ge, dce_chunk=params.dce_chunk), cal_table=SedCalTable)


def assemble_sed(plan, params: SedParams = SedParams()):
    """The lazy SED BCD Dataset (schemas/mips_sed_bcd.yaml; nothing computed) and the plan-time
    DceReports."""
    out = steps.bcd_pipeline(plan.ds, plan, plan.cal, params.ge)
    codes = out.dce_code.data.rechunk(-1)
    status = da.map_blocks(_status_block, codes, out.nsat.data.rechunk(-1), aorkeys=plan.aorkeys, status=plan.status,
                           limit=params.max_saturated, dtype=STR)
    keep = ["bcd", "unc", "mask", "responsivity", "responsivity_unc", "ncr", "nsat"]
    out = out[keep].assign_coords(status=("dce", status))
    spec = BCD_TABLE.spec
    out = out.drop_vars([c for c in out.coords if c not in spec["variables"]])
    for name in list(out.variables):
        var = spec["variables"].get(name, {})
        out[name].attrs = {k: var[k] for k in ("units", "long_name") if k in var}
    out.attrs = {"chnlnum": 2, "band_um": 70, "mode": "sed", "pipeline_version": PIPELINE_VERSION,
                 "history": list(out.attrs.get("history", [])), "mask_bits": json.dumps(sed_mask_bits()),
                 "calibration_sets": json.dumps([{"files": ident, "usable": not reason, "reason": reason}
                                                 for ident, reason in zip(plan.cal.identities, plan.cal.reasons)],
                                                sort_keys=True),
                 "responsivity_method": params.ge.resp_method, "store": plan.source}
    return out, reports_of(2, plan.status, plan.ds, array="SED")


def _status_block(codes, nsat, *, aorkeys, status, limit):
    """Per-DCE status: the Ge reasons (reduce.mips.pipeline) and, first, a saturated window."""
    out = np.asarray(_reason_block(codes, aorkeys=aorkeys, status=status)).astype(object)
    npix = NROWS * NCOLS
    for i in np.flatnonzero(np.asarray(nsat) > limit * npix):
        why = (f"{int(nsat[i])} of the {npix} pixels of the calibrated window saturated (reads at the A/D limit "
               "dropped): no spectrum")
        out[i] = why if out[i] == "ok" else f"{why}; {out[i]}"
    return out.astype(STR)


def build_sed_bcd(source, *, params: SedParams = SedParams()):
    """(lazy SED BCD Dataset, [DceReport] of DCEs skipped at plan time) of a raw ``mips70sed`` Dataset."""
    return assemble_sed(plan_sed(source, params=params), params)


@dataclass(frozen=True)
class SedBcd(Pipeline):
    """MIPS SED raw -> rectified SED BCDs: a unit is one SED AOR; its BCDs go to the store group
    bcd70sed and its SSC-style FITS files to OUT."""

    params: SedParams = SedParams()
    name = "mips_sed_bcd"
    store_schema = "mips_store"

    def tables(self):
        return [BCD_TABLE]

    def table_attrs(self, store):
        try:
            sets = open_committed(store, SED_RAW_GROUP).attrs.get("calibration_sets", [])
        except Exception:  # noqa: BLE001 - a store without SED DCEs
            sets = []
        return {BCD_TABLE.name: {"chnlnum": 2, "band_um": 70, "mode": "sed", "pipeline_version": PIPELINE_VERSION,
                                 "mask_bits": json.dumps(sed_mask_bits()),
                                 "calibration_sets": json.dumps(sets, sort_keys=True), "store_schema": "mips_sed_bcd"}}

    def units(self, store, client=None):
        try:
            ds = open_committed(store, SED_RAW_GROUP)
        except Exception:  # noqa: BLE001 - a store without SED DCEs
            return []
        if ds.sizes["dce"] == 0:
            return []
        return [Unit(f"sed-{aor}", f"MIPS SED AOR {aor}", h, {"aorkey": aor, "rows": rows},
                     sizes={BCD_TABLE.name: n}) for aor, rows, n, h in aor_units(ds, client)]

    def _build(self, store, unit):
        idx = np.concatenate([np.arange(a, b) for a, b in unit.info["rows"]])
        plan = plan_sed(open_committed(store, SED_RAW_GROUP).isel(dce=idx), params=self.params)
        plan.source = str(store)
        return plan, assemble_sed(plan, self.params)[0]

    def build_unit(self, store, unit):
        return [self._build(store, unit)[1]]

    def compute_unit(self, store, unit):
        plan, bcd = self._build(store, unit)
        done = bcd.compute()
        rows = dce_rows(done)
        status = rows["status"]
        reps = reports_of(2, status, done, array="SED")
        ok = int((status == "ok").sum())
        counts = {"SED DCEs": int(status.size), "SED BCDs": ok, "SED skipped": len(reps)}
        return UnitResult(rows={BCD_TABLE.name: rows}, counts=counts,
                          problems=[r.line() for r in reps],
                          context={"attrs": dict(done.attrs), "plan": plan})

    def export_unit(self, store, out, unit, result, slots):
        from .export import write_sed_bcd
        n = sum(b - a for a, b in unit.info["rows"])
        done = read_slot(store, BCD_TABLE, slots[BCD_TABLE.name][0], n)
        plan = result.context["plan"]
        history = list(result.context["attrs"].get("history", []))
        status = done.status.values.astype(object).astype(str)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files = 0
        for i in np.flatnonzero(status == "ok"):
            cs = plan.cal.sets[int(done.calset.values[i])]
            files += len(write_sed_bcd(out, meta=dce_meta(done, i), bcd=done.bcd.values[i], unc=done.unc.values[i],
                                       mask=done.mask.values[i], wave=cs.wave_values(), mask_bits=sed_mask_bits(),
                                       calibration_cards=cs.provenance_cards(), history=history,
                                       version=__version__))
        return files, []

    def describe(self, summary):
        c = summary.counts
        if "SED DCEs" not in c:
            return []
        return [f"  SED: {c['SED DCEs']} DCEs, {c['SED BCDs']} BCDs, {c['SED skipped']} skipped"]


def dce_meta(done, i) -> dict:
    """Header values of DCE ``i`` of a loaded SED BCD table slot."""
    v = lambda name: done[name].values[i]  # noqa: E731
    return {"aorkey": int(v("aorkey")), "expid": int(v("expid")), "dcenum": int(v("dcenum")),
            "dceid": int(v("dceid")), "mjd": float(v("time")), "exptime": float(v("exptime")),
            "object": str(v("object")), "progid": int(v("progid")), "choppos": str(v("choppos")),
            "chopthrw": float(v("chopthrw")), "pa_slit": float(v("pa_slit")), "ra_slit": float(v("ra_ref")),
            "dec_slit": float(v("dec_ref")), "ra_rqst": float(v("ra_rqst")), "dec_rqst": float(v("dec_rqst")),
            "stimflsh": int(v("stimflsh")), "responsivity": float(v("responsivity")),
            "responsivity_unc": float(v("responsivity_unc")), "source_file": str(v("source_file")),
            "aot_type": str(v("aot_type"))}


def open_sed_bcd(store) -> xr.Dataset:
    """The SED BCDs kept in the store (written rows only, in unit order), lazy, validated."""
    ds = open_table(store, BCD_TABLE)
    validate_group(ds, load_schema(BCD_TABLE.schema), BCD_TABLE.path, check_chunks=False)
    return ds


def open_sed_spectra(store) -> xr.Dataset:
    """The SED spectra kept in the store (one row per rectified row of every AOR), lazy."""
    return open_table(store, SPEC_TABLE)


# ---------------------------------------------------------------- level 2
@dataclass
class SpectrumPlan:
    """What the level-2 graph of one SED AOR needs (small, numpy)."""

    aorkey: int
    on: np.ndarray              # indices (in the unit's BCD rows) of the ON frames used
    off: np.ndarray             # the OFF frame subtracted from each ON frame
    shift: np.ndarray           # integer column shift of each ON frame (dither alignment)
    off_only: np.ndarray        # OFF frames (for the OFF coadd), with their shifts in ``off_shift``
    off_shift: np.ndarray
    cal: object                 # the SedCalibrationSet of the AOR (its main set)
    reasons: list = field(default_factory=list)   # why there is no spectrum (empty: there is one)
    meta: dict = field(default_factory=dict)


def _along_slit(ra, dec, ra0, dec0, pa_deg):
    """Offset (arcsec) of (ra, dec) from (ra0, dec0) along the direction PA (deg E of N)."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u
    c0 = SkyCoord(ra0 * u.deg, dec0 * u.deg)
    c = SkyCoord(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)
    sep = c0.separation(c).arcsec
    pa = c0.position_angle(c).deg
    return sep * np.cos(np.radians(pa - pa_deg))


def plan_spectrum(meta: dict, cal, aorkey) -> SpectrumPlan:
    """Pair every usable ON frame with its OFF and align the dithers (numpy per-DCE ``meta``:
    status, stimflsh, choppos, time, expid, ra_ref, dec_ref, pa_slit of one AOR's BCD rows)."""
    from .kernels.coadd import align_offsets, pair_off
    ok = (meta["status"] == "ok") & (meta["stimflsh"] == 0)
    on = np.flatnonzero(ok & (meta["choppos"] == "ON"))
    off = np.flatnonzero(ok & (meta["choppos"] == "OFF"))
    reasons = []
    n_on = int(((meta["choppos"] == "ON") & (meta["stimflsh"] == 0)).sum())
    if n_on == 0:
        reasons.append("no ON DCE")
    elif on.size == 0:
        why = sorted({str(s) for s in meta["status"][(meta["choppos"] == "ON") & (meta["stimflsh"] == 0)]})
        reasons.append(f"no usable ON DCE (every ON DCE skipped: {'; '.join(why)[:300]})")
    if not (meta["choppos"] == "OFF").any():
        reasons.append("no OFF DCE: the background cannot be removed (ON - OFF)")
    elif off.size == 0:
        reasons.append("no usable OFF DCE (every OFF DCE skipped)")
    if cal is None:
        reasons.append("no usable calibration set")
    if reasons:
        e = np.zeros(0, np.int64)
        return SpectrumPlan(aorkey, e, e, e, e, e, cal, reasons)
    pair = pair_off(on, off, meta["time"], meta["expid"])
    ref = on[0]
    pa = float(meta["pa_slit"][ref])
    frames = np.concatenate([on, off])
    # u: the along-slit offset of one sky point (the first ON frame's slit centre) from each
    # frame's slit centre (ICD 3: it sits in column CENTCOL + u / PXSCALE of that frame)
    u = -_along_slit(meta["ra_ref"][frames], meta["dec_ref"][frames], meta["ra_ref"][ref], meta["dec_ref"][ref], pa)
    shift = align_offsets(u, cal.pxscale)
    return SpectrumPlan(aorkey, on, pair, shift[:on.size], off, shift[on.size:], cal)


def _apcorr_rows(cal, nrows):
    """APCORR (float64 [nrows]) of rectified rows 0..nrows-1 from the WAVE file's table."""
    out = np.full(nrows, np.nan)
    rows = np.asarray(cal.apcorr_row).astype(int)
    keep = (rows >= 0) & (rows < nrows)
    out[rows[keep]] = np.asarray(cal.apcorr, np.float64)[keep]
    return out


@dataclass(frozen=True)
class SedSpectrum(Pipeline):
    """MIPS SED level 2: one unit per done SedBcd unit (an SED AOR) -> its spectrum and coadds."""

    params: SedParams = SedParams()
    name = "mips_sed"
    store_schema = "mips_store"

    def tables(self):
        return [SPEC_TABLE]

    def units(self, store, client=None):
        units = []
        for key, rec in sorted(read_records(store, SedBcd.name).items()):
            if rec.get("status") != "done" or not int(rec["rows"].get(BCD_TABLE.name, 0)):
                continue
            aor = int(key.split("-")[1])
            h = hash_strings([rec["input_hash"], rec["params_hash"]])
            units.append(Unit(key, f"MIPS SED AOR {aor} spectrum", h,
                              {"aorkey": aor, "start": int(rec["slots"][BCD_TABLE.name][0]),
                               "count": int(rec["rows"][BCD_TABLE.name])}, sizes={SPEC_TABLE.name: 27}))
        return units

    def _rows(self, store, unit):
        with _quiet_zarr():
            ds = xr.open_zarr(store, group=BCD_TABLE.path, consolidated=False, chunks={})
        a = unit.info["start"]
        return ds.isel(dce=slice(a, a + unit.info["count"]))

    def _plan(self, store, unit, ds):
        names = ("status", "stimflsh", "choppos", "time", "expid", "ra_ref", "dec_ref", "pa_slit", "calset",
                 "aorkey", "object", "progid", "dceid")
        values = dask.compute(*[ds[n].data for n in names])
        meta = {n: (np.asarray(v).astype(object).astype(str) if np.asarray(v).dtype.kind in "OUT" else np.asarray(v))
                for n, v in zip(names, values)}
        sets = json.loads(ds.attrs.get("calibration_sets", "[]")) if isinstance(
            ds.attrs.get("calibration_sets"), str) else ds.attrs.get("calibration_sets", [])
        table = SedCalTable.load(sets, 2)
        used = meta["calset"][meta["status"] == "ok"]
        counts = {int(k): int(c) for k, c in zip(*np.unique(used, return_counts=True))}
        main = table.main(counts)
        cal = None if main is None else table.sets[main]
        plan = plan_spectrum(meta, cal, unit.info["aorkey"])
        plan.meta = meta
        return plan

    def plan(self, store, unit):
        """(the AOR's bcd70sed rows, lazy; its SpectrumPlan: the one eager load, per-DCE metadata)."""
        ds = self._rows(store, unit)
        return ds, self._plan(store, unit, ds)

    def graph(self, ds, plan):
        """(lazy coadd Dataset, lazy spectrum Dataset) of one AOR; (None, None) when it has no spectrum."""
        if plan.reasons:
            return None, None
        p = self.params
        coadd = steps.coadd_aor(ds, plan, nsigma=p.nsigma, min_depth=p.min_depth)
        nrow = ds.sizes["row"]
        spec = steps.extract_spectrum(coadd, wavelength=plan.cal.wave0 + plan.cal.disp * np.arange(nrow),
                                      apcorr=_apcorr_rows(plan.cal, nrow), omega_sr=plan.cal.omega_sr,
                                      width=p.width, source_rows=p.source_rows, nsigma=p.nsigma,
                                      min_depth=p.min_depth)
        return coadd, spec

    def build(self, store, unit):
        """(SpectrumPlan, lazy coadd Dataset, lazy spectrum Dataset) of one AOR (None when no spectrum)."""
        ds, plan = self.plan(store, unit)
        return (plan,) + self.graph(ds, plan)

    def build_unit(self, store, unit):
        _, coadd, spec = self.build(store, unit)
        return [] if spec is None else [coadd, spec]

    def compute_unit(self, store, unit):
        plan, coadd, spec = self.build(store, unit)
        aor = unit.info["aorkey"]
        if spec is None:
            reason = f"SED AOR {aor}: no spectrum: {'; '.join(plan.reasons)}"
            return UnitResult(status="excluded", reason=reason, problems=[reason], counts={"SED spectra": 0})
        coadd, spec = dask.compute(coadd, spec)
        n = spec.sizes["row"]
        rows = {"aorkey": np.full(n, aor, np.int64), "row": spec.row.values.astype(np.int16),
                "column": np.full(n, float(spec.column), np.float32),
                "wavelength": spec.wavelength.values, "flux_density": spec.flux_density.values,
                "error": spec.error.values, "apcorr": spec.apcorr.values}
        notes = []
        if not np.isfinite(spec.flux_density.values).all():
            bad = np.flatnonzero(~np.isfinite(spec.flux_density.values))
            notes.append(f"SED AOR {aor}: rows {bad.tolist()} have no flux (a masked pixel in the aperture)")
        return UnitResult(rows={SPEC_TABLE.name: rows}, counts={"SED spectra": 1,
                                                               "SED pixels rejected": int(coadd.rejected)},
                          notes=notes, context={"plan": plan, "coadd": coadd, "spec": spec})

    def export_unit(self, store, out, unit, result, slots):
        from .export import write_sed_coadd, write_sed_spectrum
        plan, coadd, spec = (result.context[k] for k in ("plan", "coadd", "spec"))
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        i0 = int(plan.on[0])
        cards = [("AORKEY", int(plan.aorkey), "observation request key"),
                 ("OBJECT", str(plan.meta["object"][i0]), "target"),
                 ("CHNLNUM", 2, "70 um array, SED mode"), ("AOT_TYPE", "MipsSed", "observation template"),
                 ("NON", int(plan.on.size), "ON DCEs coadded"), ("NOFF", int(np.unique(plan.off).size),
                                                                 "OFF DCEs subtracted"),
                 ("SRCCOL", float(spec.column), "source column in the ON-OFF coadd (0-based)"),
                 ("SRCCOLER", float(spec.column_err), "1-sigma error of SRCCOL"),
                 ("APWIDTH", int(self.params.width), "extraction aperture (columns)"),
                 ("ERRSCALE", round(float(spec.error_scale), 4), "error x frame scatter / errors (>= 1)"),
                 ("OUTNSIG", float(self.params.nsigma), "cross-frame outlier threshold (sigma)"),
                 ("NREJECT", int(coadd.rejected), "pixels rejected across frames"),
                 ("PIPEVERS", PIPELINE_VERSION, "pipeline version")] + list(plan.cal.provenance_cards())
        files = write_sed_spectrum(out, aorkey=plan.aorkey, version=__version__, row=spec.row.values,
                                   wavelength=spec.wavelength.values, flux_density=spec.flux_density.values,
                                   error=spec.error.values, apcorr=spec.apcorr.values, header_cards=cards)
        files = list(files) + [write_sed_coadd(out, aorkey=plan.aorkey, version=__version__, diff=coadd.onoff.values,
                                               diff_unc=coadd.onoff_unc.values, depth=coadd.depth.values,
                                               on=coadd.on.values, off=coadd.off.values,
                                               source_column=float(spec.column), wave=plan.cal.wave_values(),
                                               header_cards=cards)]
        return len(files), []

    def describe(self, summary):
        c = summary.counts
        if "SED spectra" not in c:
            return []
        return [f"  SED: {c['SED spectra']} AOR spectra"]


def reduce_sed(store, out, *, level=2, client=None, progress=False, report=print, params: SedParams = SedParams(),
               wait: float = 0.0, redo=False, redo_failed=False):
    """SED BCDs of every SED AOR of a MIPS store, then (level 2) their spectra: [RunSummary, ...].

    An empty list when the store has no SED DCEs."""
    try:
        if open_committed(store, SED_RAW_GROUP).sizes["dce"] == 0:
            return []
    except Exception:  # noqa: BLE001 - a store without SED DCEs
        return []
    kw = dict(client=client, progress=progress, report=report, redo=redo, redo_failed=redo_failed, wait=wait)
    out_ = [run(SedBcd(params), store, out, **kw)]
    if level == 2:
        out_.append(run(SedSpectrum(params), store, out, **kw))
    return out_


__all__ = ["SedParams", "SedBcd", "SedSpectrum", "plan_sed", "assemble_sed", "build_sed_bcd", "plan_spectrum",
           "open_sed_bcd", "open_sed_spectra", "reduce_sed"]
