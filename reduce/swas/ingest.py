"""SWAS level-0.5 segment files -> the SWAS store (schemas/swas_lh.yaml -> schemas/swas_store.yaml)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..io.fitsio import hdu_data, read_at
from ..io.ingest import FileRecord, expand_inputs, ingest
from ..schemas import flag_codes, group_spec, load_schema, validate_level0

STORE_SCHEMA = "swas_store"


class SwasAdapter:
    """Ingest adapter for SWAS LH files (see reduce.io.ingest)."""

    schema_name = STORE_SCHEMA

    def __init__(self):
        self.lh = load_schema("swas_lh")
        store = load_schema(STORE_SCHEMA)
        self.scantype_codes = flag_codes(store, "", "scantype")
        self.mode_codes = flag_codes(store, "", "mode")
        self.variables = group_spec(store, "")["variables"]
        self.hk_variables = group_spec(store, "hk")["variables"]

    def find_inputs(self, paths):
        return expand_inputs(paths, "*.fits")

    # ---- phase A
    def inspect(self, path, *, sha256, hdul):
        path = Path(path)
        validate_level0(hdul, self.lh, path)
        h0 = hdul[0].header
        mode = h0["OBSMODE"].strip()
        if mode not in self.mode_codes:
            raise BadInputError(path, f"HDU PRIMARY: unknown OBSMODE {mode!r} "
                                      f"(known: {', '.join(self.mode_codes)})")
        nscans = h0["NSCANS"]
        scans = hdu_data(hdul, "SCANS", path)
        if len(scans) != nscans:
            raise BadInputError(path, f"HDU SCANS has {len(scans)} rows, NSCANS says {nscans}")
        rows = self._scan_rows(path, scans, mode)
        for name in ("AOS490", "AOS550"):
            data = hdu_data(hdul, name, path)
            bad = ~np.isfinite(data)
            if bad.any():
                row, chan = np.argwhere(bad)[0]
                raise BadInputError(path, f"HDU {name}: {int(bad.sum())} non-finite values "
                                          f"(first at scan row {row}, channel {chan})")
        hk = self._hk_rows(path, hdu_data(hdul, "HK", path))
        where = {name.lower(): hdul.location(name) for name in ("AOS490", "AOS550")}
        day, seg = int(h0["MISSDAY"]), int(h0["SEGMENT"])
        segment_id = day * 1000 + seg
        rows["segment_id"] = np.full(nscans, segment_id, np.int32)
        hk["segment_id"] = np.full(len(hk["hk_time"]), segment_id, np.int32)
        segment = {
            "segment": [segment_id], "missday": [day], "segment_number": [seg], "obsmode": [mode],
            "object": [str(h0["OBJECT"])], "target_ra": [h0["RA"]], "target_dec": [h0["DEC"]],
            "vsource": [h0["VSOURCE"]], "lofreq1": [h0["LOFREQ1"]], "lofreq2": [h0["LOFREQ2"]],
            "date_obs": [str(h0["DATE-OBS"])], "first_scan": [0], "nscans": [nscans],
            "source_file": [path.name], "sha256": [sha256],
        }
        return FileRecord(path=str(path), sha256=sha256, size=path.stat().st_size,
                          key=f"segment {day:04d}/{seg:03d}", sort_key=(day, seg),
                          rows={"time": rows, "segment": segment, "hk/hk_time": hk},
                          bulk={"time": ["aos490", "aos550"]}, extra={"where": where})

    def _scan_rows(self, path, scans, mode):
        def col(name):
            return np.asarray(scans[name])

        time = col("TIME").astype(np.float64)
        numeric = ("TIME", "INTTIME", "RA", "DEC", "DLAM", "DBET", "ROLL", "SCPOS", "SCVEL", "THOT", "TAOS", "CONT")
        for name in numeric:
            bad = ~np.isfinite(col(name))
            if bad.any():
                row = np.argwhere(bad)[0][0]
                raise BadInputError(path, f"HDU SCANS: column {name} has {int(bad.sum())} non-finite values "
                                          f"(first in row {row})")
        step = np.diff(time)
        if (step < 0).any():
            i = int(np.argmax(step < 0)) + 1
            raise BadInputError(path, f"HDU SCANS: TIME runs backwards at row {i} "
                                      f"({time[i - 1]:.8f} -> {time[i]:.8f} MJD)")
        scan = col("SCAN").astype(np.int64)
        dup_time = np.flatnonzero(step == 0)
        uniq, counts = np.unique(scan, return_counts=True)
        if dup_time.size or (counts > 1).any():
            what = (f"SCAN {uniq[counts > 1][0]} appears {counts[counts > 1][0]} times" if (counts > 1).any()
                    else f"rows {dup_time[0]} and {dup_time[0] + 1} have the same TIME")
            raise BadInputError(path, f"HDU SCANS: duplicated scans ({what})")
        types = np.char.strip(np.char.upper(col("SCANTYPE").astype(str)))
        unknown = sorted(set(types) - set(self.scantype_codes))
        if unknown:
            raise BadInputError(path, f"HDU SCANS: unknown SCANTYPE {unknown[0]!r} "
                                      f"(known: {', '.join(self.scantype_codes)})")
        rows = {}
        for name, var in self.variables.items():
            if var["dims"][0] == "time" and "source" in var and name not in ("aos490", "aos550"):
                rows[name] = col(var["source"])
        rows["scantype"] = np.array([self.scantype_codes[t] for t in types], np.int8)
        rows["mode"] = np.full(len(scans), self.mode_codes[mode], np.int8)
        return rows

    def _hk_rows(self, path, hk):
        """Housekeeping rows (group hk, along its own dimension hk_time) from the HK HDU."""
        rows = {}
        for name, var in self.hk_variables.items():
            if "source" in var:
                values = np.asarray(hk[var["source"]])
                if not np.isfinite(values).all():
                    raise BadInputError(path, f"HDU HK: column {var['source']} has non-finite values")
                rows[name] = values
        return rows

    # ---- client side
    def resolve(self, records, state):
        return records, [], {}

    def finalize(self, record, starts):
        record.rows["segment"]["first_scan"] = [starts["time"]]

    # ---- phase B
    def read_bulk(self, path, group, name, where):
        return read_at(path, where[name], np.float32)


def ingest_swas(inputs, store, **kwargs):
    """Ingest SWAS LH files/folders into ``store`` (see reduce.io.ingest.ingest for options)."""
    return ingest(SwasAdapter(), inputs, store, **kwargs)
