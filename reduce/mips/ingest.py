"""Spitzer MIPS raw DCE files -> the MIPS store (schemas/mips_raw.yaml -> schemas/mips_store.yaml).

Each DCE goes to the group of its array (mips24, mips70, mips160); the SED-mode
DCEs (AOT_TYPE 'MipsSed', ICD section 3) of the 70 um array go to mips70sed.
The calibration reference files (``cal/`` beside the raw files, or a folder
given with ``cal_dir``) are identified by name, SHA-256 and CALVERS; each
distinct set is listed once in the group attribute ``calibration_sets`` and
every DCE points at its set through the ``calset`` coordinate. The SED mode has
its own six reference files (mips70sed_*.fits): a folder may hold the imaging
files, the SED files or both, and each kind of DCE needs only its own.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..io.fitsio import check_level0, hdu_data, read_at
from ..io.ingest import FileRecord, Rejection, expand_inputs, ingest
from ..schemas import check_keywords, load_schema

STORE_SCHEMA = "mips_store"


def _reffiles():
    """REFTYPE -> (file name pattern, channels that have it), from schemas/mips_cal.yaml."""
    files = load_schema("mips_cal")["files"]
    return {reftype: (spec["pattern"], tuple(spec["channels"])) for reftype, spec in files.items()}


REFFILES = _reffiles()
BANDS = load_schema("mips_cal")["bands"]
SED = load_schema("mips_cal")["sed"]
SED_AOT = "MipsSed"
"""AOT_TYPE of the SED mode: its DCEs use the SED reference files (``SED_REFFILES``)."""
SED_REFFILES = {reftype: spec["pattern"] for reftype, spec in SED["files"].items()}
"""REFTYPE -> file name of the SED-mode reference files (schemas/mips_cal.yaml ``sed``)."""


def _files(chnlnum, mode):
    """[(REFTYPE, file name)] of the reference files of one array (mode 'imaging') or of the SED mode."""
    if mode == "sed":
        return list(SED_REFFILES.items())
    return [(reftype, pattern.format(band=BANDS[chnlnum])) for reftype, (pattern, channels) in REFFILES.items()
            if chnlnum in channels]


@functools.lru_cache(maxsize=64)
def calibration_identity(cal_dir: str, chnlnum: int, _stamp: tuple, mode: str = "imaging") -> dict:
    """{REFTYPE: {name, path, sha256, calvers}} of one array's reference files (mode 'imaging') or of
    the SED-mode files (mode 'sed', CHNLNUM 2); cached by mtime."""
    identity = {}
    for reftype, name in _files(chnlnum, mode):
        path = Path(cal_dir) / name
        if not path.is_file():
            what = SED["label"] if mode == "sed" else f"channel {chnlnum}"
            raise BadInputError(path, f"calibration file missing ({reftype} for {what})")
        buf = path.read_bytes()
        header = check_level0(path, buf)[0].header  # a level-0 file of the ICD: checked as the raw files
        if header.get("REFTYPE") != reftype or header.get("CHNLNUM") != chnlnum:
            raise BadInputError(path, f"calibration file has REFTYPE {header.get('REFTYPE')!r} CHNLNUM "
                                      f"{header.get('CHNLNUM')!r}, expected {reftype!r} {chnlnum}")
        identity[reftype] = {"name": path.name, "path": str(path.resolve()),
                             "sha256": hashlib.sha256(buf).hexdigest(), "calvers": str(header.get("CALVERS", ""))}
    return identity


def _stamp(cal_dir, chnlnum, mode="imaging"):
    stamps = []
    for _, name in _files(chnlnum, mode):
        p = Path(cal_dir) / name
        st = p.stat() if p.exists() else None
        stamps.append((p.name, st.st_mtime_ns if st else None, st.st_size if st else None))
    return tuple(stamps)


class MipsAdapter:
    """Ingest adapter for MIPS raw DCE files (see reduce.io.ingest)."""

    schema_name = STORE_SCHEMA

    def __init__(self, cal_dir=None):
        self.cal_dir = None if cal_dir is None else str(Path(cal_dir).resolve())
        self.raw = load_schema("mips_raw")
        store = load_schema(STORE_SCHEMA)
        # (CHNLNUM, AOT_TYPE or None) -> group spec; None: the array's group for the other AOTs
        self.groups = {(spec["chnlnum"], spec.get("aot_type")): spec for spec in store["groups"] if "chnlnum" in spec}
        self.channels = sorted({chnl for chnl, _ in self.groups})
        self._calsets = {}  # (folder, CHNLNUM, mode) -> calibration identity, for the files of one task

    def find_inputs(self, paths):
        return expand_inputs(paths, "*.fits", exclude_dirs=("cal",))

    # ---- phase A
    def inspect(self, path, *, sha256, hdul):
        path = Path(path)
        header = hdul[0].header
        chnl = header.get("CHNLNUM")
        if chnl not in self.channels:
            raise BadInputError(path, f"HDU PRIMARY: keyword CHNLNUM = {chnl!r}, expected 1, 2 or 3")
        aot = header.get("AOT_TYPE")
        allowed = self.raw["aot_channels"].get(aot)
        if allowed is not None and chnl not in allowed:
            raise BadInputError(path, f"HDU PRIMARY: AOT_TYPE {aot!r} needs CHNLNUM {allowed[0]} (the "
                                      f"{BANDS[allowed[0]]} um array), got {chnl} (unknown AOT_TYPE {aot!r} "
                                      f"for the {BANDS[chnl]} um array)")
        problems = check_keywords(header, self.raw["hdus"][0]["keywords"], "HDU PRIMARY", chnlnum=chnl,
                                  aot=aot if isinstance(aot, str) else "")
        if problems:
            raise BadInputError(path, "; ".join(problems))
        if aot not in self.raw["aot_types"]:
            raise BadInputError(path, f"HDU PRIMARY: unknown AOT_TYPE {aot!r}")
        data = hdu_data(hdul, 0, path)
        self._check_data(path, chnl, header, data)
        where = hdul.location(0)
        spec = self.groups.get((chnl, aot), self.groups[(chnl, None)])
        cal = self._calibration(path, chnl, "sed" if aot == SED_AOT else "imaging")
        group = spec["path"]
        rows = {}
        for name, var in spec["variables"].items():
            if "source" in var and var["dims"] == ["dce"]:
                rows[name] = [header[var["source"]]]
        rows["calset"] = [-1]  # set in finalize, once the store's sets are known
        rows["source_file"] = [path.name]
        key = f"DCE {chnl}/{header['AORKEY']}/{header['EXPID']:04d}/{header['DCENUM']:04d}"
        sort_key = (chnl, header["AORKEY"], header["EXPID"], header["DCENUM"])
        bulk = "raw" if chnl == 1 else "reads"
        return FileRecord(path=str(path), sha256=sha256, size=path.stat().st_size, key=key, sort_key=sort_key,
                          rows={f"{group}/dce": rows}, bulk={f"{group}/dce": [bulk]},
                          extra={"cal": cal, "time": float(header["MJD_OBS"]), "group": group, "where": where})

    def _calibration(self, path, chnl, mode="imaging"):
        """The calibration set of a DCE: identified once per folder, array and mode ('imaging' or
        'sed') in a task (a set that changes later is caught by its SHA-256 when the pipeline loads it)."""
        key = (self.cal_dir or str(path.parent / "cal"), chnl, mode)
        if key not in self._calsets:
            cal_dir = str(Path(key[0]).resolve())
            if not os.path.isdir(cal_dir):
                raise BadInputError(path, f"no calibration folder {cal_dir} (put cal/ beside the raw files "
                                          f"or pass --cal)")
            try:
                self._calsets[key] = calibration_identity(cal_dir, chnl, _stamp(cal_dir, chnl, mode), mode)
            except BadInputError as exc:
                raise BadInputError(path, f"{exc.path}: {exc.reason}") from None
        return self._calsets[key]

    def _check_data(self, path, chnl, header, data):
        arrays = self.raw["arrays"][chnl]
        ny, nx = arrays["ny"], arrays["nx"]
        if data is None:
            raise BadInputError(path, "HDU PRIMARY has no data")
        if chnl == 1:
            want = (arrays["planes"], ny, nx)
            if data.shape != want or data.dtype.kind != "f" or data.dtype.itemsize != 4:
                raise BadInputError(path, f"HDU PRIMARY: data {data.dtype.name} {data.shape}, expected float32 {want}")
            if not np.isfinite(data).all():
                raise BadInputError(path, f"HDU PRIMARY: {int((~np.isfinite(data)).sum())} non-finite values")
            return
        nreads = header["NREADS"]
        if nreads not in self.raw["ge_nreads"]:
            raise BadInputError(path, f"HDU PRIMARY: NREADS = {nreads}, expected one of {self.raw['ge_nreads']}")
        aot = header["AOT_TYPE"]
        if aot in self.raw["aot_nreads"] and nreads not in self.raw["aot_nreads"][aot]:
            raise BadInputError(path, f"HDU PRIMARY: NREADS = {nreads}, expected one of "
                                      f"{self.raw['aot_nreads'][aot]} for AOT_TYPE {aot!r}")
        want = (nreads, ny, nx)
        if data.shape != want or data.dtype.kind not in "iu" or data.dtype.itemsize != 2:
            raise BadInputError(path, f"HDU PRIMARY: data {data.dtype.name} {data.shape}, expected int16 {want}")

    # ---- client side
    def resolve(self, records, state):
        """Reject DCEs whose time runs backwards within an AOR; assign calibration sets."""
        ok, rejections = [], []
        last = {}
        for rec in records:  # already sorted by (chnl, aorkey, expid, dcenum)
            aor = rec.sort_key[:2]
            t = rec.extra["time"]
            if aor in last and t <= last[aor][0]:
                rejections.append(Rejection(rec.path, f"MJD_OBS {t:.8f} is not after that of the previous DCE "
                                                      f"of AOR {aor[1]} ({Path(last[aor][1]).name}): time runs backwards",
                                            rec.sha256))
                continue
            last[aor] = (t, rec.path)
            ok.append(rec)
        group_attrs = {}
        for rec in ok:
            group = rec.extra["group"]
            attrs = group_attrs.setdefault(group, {"calibration_sets": list(
                state.get("group_attrs", {}).get(group, {}).get("calibration_sets", []))})
            sets = attrs["calibration_sets"]
            if rec.extra["cal"] not in sets:
                sets.append(rec.extra["cal"])
            rec.extra["calset"] = sets.index(rec.extra["cal"])
        return ok, rejections, group_attrs

    def finalize(self, record, starts):
        record.rows[f"{record.extra['group']}/dce"]["calset"] = [record.extra["calset"]]

    # ---- phase B
    def read_bulk(self, path, group, name, where):
        dtype = np.float32 if name == "raw" else np.int16
        return read_at(path, where, dtype)[np.newaxis]


def ingest_mips(inputs, store, *, cal_dir=None, **kwargs):
    """Ingest MIPS raw DCE files/folders into ``store`` (see reduce.io.ingest.ingest for options)."""
    return ingest(MipsAdapter(cal_dir), inputs, store, **kwargs)
