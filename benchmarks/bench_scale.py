"""Scale on paper (issue 8, part 5): plan a whole mission and build every unit's graph, computing nothing.

    python benchmarks/bench_scale.py [--days 2000] [--dces 100000] [--workers 8] [--batch-scans N]
                                     [--sample K] [--only swas|mips] [--keep] [--out bench-output/scale]

Writes two synthetic stores that pass the store schemas (created and committed by
``reduce.io.store.StoreWriter``, the writer of ``skyreduce ingest``), with realistic metadata
and the big arrays left unwritten (zarr fill values, no chunk files):

SWAS: ``--days`` days at full duty, 72 segments of 600 two-second scans a day (43,200 scans a
  day; 2,000 days: 86.4 million scans, 501 GB of AOS counts never written). The per-segment
  table is complete (objects, modes, LO frequencies, first_scan/nscans, times, file names,
  SHA-256). Per scan, what planning reads is written (time, scan, segment_id, scantype, mode,
  inttime, dlam, dbet, roll, scvel, thot, taos, cont, quality: 76 bytes a scan, 6.6 GB before
  compression for 2,000 days; 238 MB on disk here, as the days repeat 12 templates); ``ra``,
  ``dec``, ``scpos`` (40 bytes a scan, 3.5 GB) and the AOS counts (5,800 bytes a scan) are left
  as fill: neither planning nor graph building reads them. The metadata are 12 segments
  simulated by ``reduce.simulate.swas`` (one per entry of its day template, 600 scans each) and
  read by ingest's phase A (``reduce.io.ingest.inspect_group`` with the SWAS adapter), repeated
  through the days with their times shifted (the template rotated by one segment a day).
MIPS: ``--dces`` DCEs over the three arrays in AORs of realistic size (photometry 14-150 DCEs
  per array, scan maps 100-1,200), per-DCE metadata of ``reduce.simulate.mips`` (commanded
  pointing, times, SCLK, stim flashes, EXPID/DCENUM), one calibration set (simulated files);
  the raw planes and ramps (10 GB for 100,000 DCEs) are left as fill.

Then, in a process of its own standing for the client (its peak RSS is its own): plan the
units as ``reduce.runner.run`` does (``pipeline.units``), size them (``size_unit``, a worker
task each in the runner) and build each unit's lazy graph with the function its task calls
before it computes (``pipeline.build_unit``), a window of units at a time (the runner's window
for ``--workers``), each graph optimised as ``dask.compute`` does before it runs it; nothing is
computed. Figures, against the goals of the issue: tasks submitted by the client (sizing and
unit tasks), tasks inside the unit graphs (run by the sync scheduler inside the unit's task,
never seen by the distributed scheduler), their total (goal < 1 million for the mission), the
most tasks in flight (window of unit tasks + the largest sum of their graphs' tasks), graph
bytes (pickled optimised graphs; they are built on the workers and never sent) and submitted
bytes (the pickled unit tasks), how often each zarr chunk is decoded (the big arrays; the
per-scan/per-DCE metadata), time (wall and CPU) to plan, size and build (goal < 60 s), and the
client's RSS after planning and its peak (goal < 2 GB). ``--sample K`` builds every K-th unit
only and scales the sums to every unit (marked "~"). Results also go to
OUT/scale-<store>[-batchN][-sampleK].json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCANS_PER_SEGMENT = 600
SEGMENTS_PER_DAY = 72            # 72 x 600 two-second scans = 43,200 scans = 86,400 s: full duty
SCANS_PER_DAY = SCANS_PER_SEGMENT * SEGMENTS_PER_DAY
SCAN_S = 2.0
# per-scan variables that planning reads (reduce.swas.pipeline.META_VARS + time); the rest is fill
SWAS_WRITTEN = ("time", "scan", "segment_id", "scantype", "mode", "inttime", "dlam", "dbet", "roll", "scvel",
                "thot", "taos", "cont", "quality")
GOALS = {"tasks": 1_000_000, "seconds": 60.0, "client_mb": 2048.0}


# ---------------------------------------------------------------- SWAS store
def swas_templates(cache: Path) -> dict:
    """12 simulated segments (one per day-template entry, 600 scans) as ingest reads them:
    {"rows": {var: (12, 600, ...)}, "segments": [segment-table row of each]} (cached in ``cache``)."""
    npz, meta = cache / "swas-templates.npz", cache / "swas-templates.json"
    if npz.exists() and meta.exists():
        with np.load(npz) as z:
            return {"rows": {k: z[k] for k in z.files}, "segments": json.loads(meta.read_text())}
    from reduce.io.ingest import inspect_group
    from reduce.simulate.swas import file_name, simulate_segment
    from reduce.simulate.swas_plan import DAY_TEMPLATE, make_spec
    from reduce.swas.ingest import SwasAdapter

    adapter = SwasAdapter()
    rows, segments = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (obj, mode, _, shift, gap) in enumerate(DAY_TEMPLATE):
            spec = make_spec(1, k + 1, obj, mode, SCANS_PER_SEGMENT, lo_shift_kms=shift, ground_gap=gap,
                             start_s=0.0)
            hdul, _ = simulate_segment(spec, seed=k)
            path = Path(tmp) / file_name(1, k + 1)
            hdul.writeto(path)
            rec, = inspect_group(adapter, [path], set())         # what ingest would store (phase A)
            if not hasattr(rec, "rows"):
                raise RuntimeError(f"the simulated template {path.name} was not ingestible: {rec}")
            for name in SWAS_WRITTEN:
                rows.setdefault(name, []).append(np.asarray(rec.rows["time"][name]))
            segments.append({k2: v[0].item() if hasattr(v[0], "item") else v[0]
                             for k2, v in rec.rows["segment"].items()})
    rows = {k: np.stack(v) for k, v in rows.items()}
    rows["time"] = rows["time"] - rows["time"][:, :1]           # days since the segment's first scan
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(npz, **rows)
    meta.write_text(json.dumps(segments))
    return {"rows": rows, "segments": segments}


def _swas_block(tpl, a, b, variables):
    """Per-scan rows [a, b) of the synthetic mission (day d, slot k uses template (k + d) % 12)."""
    from reduce.simulate.orbit import MISSION_EPOCH_MJD
    r = np.arange(a, b, dtype=np.int64)
    day, off = r // SCANS_PER_DAY, r % SCANS_PER_DAY
    slot, i = off // SCANS_PER_SEGMENT, off % SCANS_PER_SEGMENT
    j = (slot + day) % len(tpl["segments"])
    out = {}
    for name in SWAS_WRITTEN:
        if name == "time":
            start = MISSION_EPOCH_MJD + day + slot * (SCANS_PER_SEGMENT * SCAN_S / 86400.0)
            out[name] = start + tpl["rows"]["time"][j, i]
        elif name == "segment_id":
            out[name] = ((day + 1) * 1000 + slot + 1).astype(np.int32)
        else:
            out[name] = tpl["rows"][name][j, i]
    from reduce.io.store import to_numpy_dtype
    return {k: to_numpy_dtype(v, variables[k]["dtype"]) for k, v in out.items()}


def _swas_segments(tpl, days, variables):
    """The per-segment table of the synthetic mission (every column of the schema)."""
    from astropy.time import Time

    from reduce.io.store import to_numpy_dtype
    from reduce.simulate.orbit import MISSION_EPOCH_MJD
    from reduce.simulate.swas import file_name
    n = days * SEGMENTS_PER_DAY
    s = np.arange(n, dtype=np.int64)
    day, slot = s // SEGMENTS_PER_DAY, s % SEGMENTS_PER_DAY
    j = (slot + day) % len(tpl["segments"])
    col = lambda key: np.array([t[key] for t in tpl["segments"]])[j]  # noqa: E731
    t0 = MISSION_EPOCH_MJD + day + slot * (SCANS_PER_SEGMENT * SCAN_S / 86400.0) + tpl["rows"]["time"][j, 0]
    names = [file_name(int(d) + 1, int(k) + 1) for d, k in zip(day, slot)]
    out = {"segment": (day + 1) * 1000 + slot + 1, "missday": day + 1, "segment_number": slot + 1,
           "obsmode": col("obsmode"), "object": col("object"), "target_ra": col("target_ra"),
           "target_dec": col("target_dec"), "vsource": col("vsource"), "lofreq1": col("lofreq1"),
           "lofreq2": col("lofreq2"), "date_obs": Time(t0, format="mjd", scale="utc").isot,
           "first_scan": s * SCANS_PER_SEGMENT, "nscans": np.full(n, SCANS_PER_SEGMENT),
           "source_file": np.array(names),
           "sha256": np.array([hashlib.sha256(f"synthetic {x}".encode()).hexdigest() for x in names])}
    return {k: to_numpy_dtype(v, variables[k]["dtype"]) for k, v in out.items()}


def write_swas_store(path: Path, days: int, cache: Path) -> dict:
    """The synthetic SWAS store (see the module docstring); returns what was written."""
    from reduce.io.store import StoreWriter
    from reduce.schemas import group_spec, load_schema

    tpl = swas_templates(cache)
    variables = group_spec(load_schema("swas_store"), "")["variables"]
    n_time, n_seg = days * SCANS_PER_DAY, days * SEGMENTS_PER_DAY
    block = variables["time"]["chunks"][0]
    with StoreWriter(path, "swas_store") as w:
        w.resize({"time": n_time, "segment": n_seg})
        w.write_many([("", k, 0, v) for k, v in _swas_segments(tpl, days, variables).items()])
        for a in range(0, n_time, block):
            w.write_many([("", k, a, v) for k, v in _swas_block(tpl, a, min(a + block, n_time), variables).items()])
        w.commit(lengths={"time": n_time, "segment": n_seg}, ledger=[], quarantine=[])
    return {"scans": n_time, "segments": n_seg, "aos_bytes_unwritten": n_time * 2 * 725 * 4,
            "per_scan_bytes_written_raw": n_time * sum(_itemsize(variables[k]) for k in SWAS_WRITTEN)}


def _itemsize(var):
    shape = var["chunks"][1:]
    return int(np.dtype(var["dtype"]).itemsize * int(np.prod(shape or [1])))


# ---------------------------------------------------------------- MIPS store
def mips_aors(dces: int, seed: int = 0):
    """AorSpecs (three arrays each) of about ``dces`` DCEs in all: 60 % photometry (14-150 DCEs per
    array), 40 % scan maps (100-1,200 DCEs per array, 2-12 legs), one after the other in time."""
    from reduce.simulate.mips import AorSpec, dce_duration
    rng = np.random.default_rng(seed)
    specs, total, mjd = [], 0, 53300.0
    while total < dces:
        phot = rng.random() < 0.6
        n = int(rng.integers(14, 151) if phot else rng.integers(100, 1201))
        n = min(n, -(-(dces - total) // 3))
        spec = AorSpec(aorkey=10_000_000 + 1000 * len(specs) + int(rng.integers(0, 1000)),
                       aot_type="MipsPhot" if phot else "MipsScan", object=f"FIELD-{len(specs) + 1}",
                       ra=float(rng.uniform(0, 360)), dec=float(rng.uniform(-70, 70)), start_mjd=mjd, n_dce=n,
                       exptime_ge=float(rng.choice([3.0, 4.0, 10.0])), pa=float(rng.uniform(0, 360)),
                       n_legs=int(rng.integers(2, 13)), overhead=1.0 if phot else 0.3)
        specs.append(spec)
        total += 3 * n
        mjd += (3 if phot else 1) * n * dce_duration(spec) / 86400.0 + 0.01
    return specs


def _mips_rows(specs, chnl, seed=0):
    """Per-DCE coordinates of one array, as the MIPS ingest adapter stores them from the headers."""
    from reduce.simulate.mips import _plan, nreads_ge, nsamp_si, raw_name
    from reduce.simulate.mips_cal import ARRAYS, READTIME_GE, SAMPTIME_SI
    rng = np.random.default_rng([seed, chnl])
    cols = {}
    for aor in specs:
        p = _plan(aor, chnl, seed)
        n = aor.n_dce
        nreads = nsamp_si(aor) if chnl == 1 else nreads_ge(aor)
        samp = SAMPTIME_SI if chnl == 1 else READTIME_GE
        err = ARRAYS[chnl].pointing_sigma / 3600.0 / np.sqrt(2)
        index = np.arange(n)
        part = {"aorkey": np.full(n, aor.aorkey), "expid": p["expid"], "dcenum": p["dcenum"],
                "dceid": aor.aorkey * 100_000 + (chnl - 1) * 20_000 + index,
                "aot_type": np.full(n, aor.aot_type), "object": np.full(n, aor.object),
                "progid": np.full(n, aor.progid), "exptime": np.full(n, nreads * samp),
                "samptime": np.full(n, samp), "nreads": np.full(n, nreads), "time": p["mjd"], "sclk": p["sclk"],
                "ra_rqst": p["ra"], "dec_rqst": p["dec"], "ra_ref": p["ra"] + rng.normal(0, err, n),
                "dec_ref": p["dec"] + rng.normal(0, err, n), "pa_ref": np.full(n, aor.pa),
                "calvers": np.full(n, "sim-1"), "calset": np.zeros(n, np.int16),
                "source_file": np.array([raw_name(aor, chnl, e, d) for e, d in zip(p["expid"], p["dcenum"])])}
        if chnl > 1:
            part["stimflsh"] = p["stim"].astype(np.int8)
        for k, v in part.items():
            cols.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in cols.items()}


def write_mips_store(path: Path, dces: int, cache: Path) -> dict:
    """The synthetic MIPS store (see the module docstring); returns what was written."""
    from reduce.io.store import StoreWriter, to_numpy_dtype
    from reduce.mips.bcd import RAW_GROUPS
    from reduce.mips.ingest import _stamp, calibration_identity
    from reduce.schemas import group_spec, load_schema
    from reduce.simulate.mips_cal import write_calibration

    write_calibration(cache / "mips", seed=0)
    caldir = str((cache / "mips" / "cal").resolve())
    specs = mips_aors(dces)
    schema = load_schema("mips_store")
    items, lengths, attrs, unwritten = [], {}, {}, 0
    for chnl, group in RAW_GROUPS.items():
        variables = group_spec(schema, group)["variables"]
        rows = _mips_rows(specs, chnl)
        lengths[f"{group}/dce"] = n = len(rows["aorkey"])
        items += [(group, k, 0, to_numpy_dtype(v, variables[k]["dtype"])) for k, v in rows.items()]
        attrs[group] = {"calibration_sets": [calibration_identity(caldir, chnl, _stamp(caldir, chnl))]}
        big = variables["raw" if chnl == 1 else "reads"]
        unwritten += n * _itemsize(big)
    with StoreWriter(path, "mips_store") as w:
        w.resize(lengths)
        w.write_many(items)
        w.commit(lengths=lengths, ledger=[], quarantine=[], group_attrs=attrs)
    return {"aors": len(specs), "dces": sum(lengths.values()), "per_array": lengths,
            "raw_bytes_unwritten": unwritten}


# ---------------------------------------------------------------- measuring (the client's process)
def optimised_graph(collections) -> dict:
    """The graph ``dask.compute(*collections)`` runs: optimised (culled, fused) as compute does it."""
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr, unpack_collections
    colls, _ = unpack_collections(*collections)
    return dict(FinalizeCompute(collections_to_expr(colls, True)).optimize().__dask_graph__())


def _pipeline(instrument, batch_scans=None):
    if instrument == "swas":
        from reduce.swas.pipeline import Params, SwasLevel1
        return SwasLevel1(Params(batch_scans=batch_scans) if batch_scans else Params())
    from reduce.mips.pipeline import MipsBcd
    return MipsBcd()


def chunk_reads(instrument, store, units) -> dict:
    """How often each zarr chunk is decoded when every unit reads its rows once (a chunk is decoded
    whole for any row of it): {"big": (chunk reads, chunks), "metadata": (...)} for the big arrays
    (AOS counts; raw planes and ramps) and the per-scan / per-DCE coordinates."""
    from reduce.io.store import Store
    from reduce.schemas import group_spec, load_schema
    schema = load_schema(f"{instrument}_store")
    state = Store(store).read_state()["lengths"]
    out = {"big": [0, 0], "metadata": [0, 0]}
    groups = [("", "aos490", "time", "time")] if instrument == "swas" else [
        (g, "raw" if c == 1 else "reads", "aorkey", f"{g}/dce") for c, g in ((1, "mips24"), (2, "mips70"),
                                                                            (3, "mips160"))]
    for k, (group, big, meta, dim) in enumerate(groups):
        variables = group_spec(schema, group)["variables"]
        n = state.get(dim, 0)
        mine = [u for u in units if instrument == "swas" or u.info["chnlnum"] == k + 1]
        for kind, name in (("big", big), ("metadata", meta)):
            c = variables[name]["chunks"][0]
            out[kind][1] += -(-n // c)
            for u in mine:
                spans = [u.info["rows"]] if instrument == "swas" else u.info["rows"]
                out[kind][0] += len({i for a, b in spans for i in range(a // c, (b - 1) // c + 1)})
    return {k: tuple(v) for k, v in out.items()}


def _rss_mb():
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def measure(instrument, store, *, workers=8, batch_scans=None, sizing=True, sample=1, report=None) -> dict:
    """Plan as ``reduce.runner.run`` does, then size and build (never compute) the units' graphs with
    the functions their tasks call, a window of units at a time (every ``sample``-th unit only when
    ``sample`` > 1: the sums are then scaled to every unit); see the module docstring for the figures."""
    import inspect

    import cloudpickle
    import dask

    from reduce.runner.core import run, window_size

    pipeline = _pipeline(instrument, batch_scans)
    per_worker = inspect.signature(run).parameters["window_per_worker"].default
    window = window_size(workers, per_worker)  # the runner's units in flight for this many workers
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    units = pipeline.units(str(store), None)
    t_plan = time.perf_counter() - t0
    rss_plan = _rss_mb()
    need_sizing = sum(u.sizes is None for u in units)   # run() sizes these first, one task each
    submitted = [len(pickle.dumps((pipeline, str(store), "OUT", u, {}, "TOKEN"))) for u in units]
    todo = units[::sample]
    tasks, nbytes, build_s, size_s = [], [], [], []
    t_graph, rss_peak, cpu = 0.0, rss_plan, {"size": 0.0, "build": 0.0}
    with dask.config.set(scheduler="sync"):          # as the unit task computes
        for i in range(0, len(todo), window):
            built = []
            for u in todo[i:i + window]:
                t0, c0 = time.perf_counter(), time.process_time()
                if sizing and u.sizes is None:
                    pipeline.size_unit(str(store), u)
                    size_s.append(time.perf_counter() - t0)
                    cpu["size"] += time.process_time() - c0
                    t0, c0 = time.perf_counter(), time.process_time()
                built.append(pipeline.build_unit(str(store), u))
                build_s.append(time.perf_counter() - t0)
                cpu["build"] += time.process_time() - c0
            t0 = time.perf_counter()
            graphs = [optimised_graph(c) for c in built]
            t_graph += time.perf_counter() - t0
            tasks += [len(g) for g in graphs]
            nbytes += [len(cloudpickle.dumps(g)) for g in graphs]
            rss_peak = max(rss_peak, _rss_mb())
            del built, graphs
            if report and ((i // window) % 50 == 0 or i + window >= len(todo)):
                report(f"  {instrument}: {len(tasks)}/{len(todo)} units built, {sum(tasks)} tasks, "
                       f"{sum(build_s):.0f} s, RSS {_rss_mb():.0f} MB")
    scale = len(units) / max(len(todo), 1)           # 1 unless sampled
    if sample == 1:                                  # the most tasks in any window of consecutive units
        in_flight = max((sum(tasks[i:i + window]) for i in range(max(len(tasks) - window + 1, 1))), default=0)
    else:                                            # estimate: the fullest sampled window, scaled
        in_flight = max((sum(tasks[i:i + window]) * window / len(tasks[i:i + window])
                         for i in range(0, len(tasks), window)), default=0)
    client_tasks = need_sizing + len(units)
    graph_tasks = round(sum(tasks) * scale)
    reads = chunk_reads(instrument, store, units)
    return {
        "instrument": instrument, "store": str(store), "workers": workers, "window": window, "sample": sample,
        "units_built": len(todo), "batch_scans": getattr(getattr(pipeline, "params", None), "batch_scans", None),
        "units": len(units), "sizing_tasks": need_sizing, "unit_tasks": len(units),
        "client_tasks": client_tasks, "graph_tasks": graph_tasks, "total_tasks": client_tasks + graph_tasks,
        "tasks_per_unit_mean": sum(tasks) / max(len(tasks), 1), "tasks_per_unit_max": max(tasks, default=0),
        "tasks_per_unit": tasks, "in_flight_tasks": min(window, len(units)) + round(in_flight),
        "graph_bytes_sum": round(sum(nbytes) * scale), "graph_bytes_max": max(nbytes, default=0),
        "submitted_bytes_sum": sum(submitted), "submitted_bytes_max": max(submitted, default=0),
        "plan_s": t_plan, "sizing_s": sum(size_s) * scale, "build_s": sum(build_s) * scale,
        "sizing_cpu_s": cpu["size"] * scale, "build_cpu_s": cpu["build"] * scale,
        "optimise_s": t_graph * scale, "build_unit_s_mean": sum(build_s) / max(len(build_s), 1),
        "build_unit_s_max": max(build_s, default=0.0), "size_unit_s_mean": sum(size_s) / max(len(size_s), 1),
        "big_chunk_reads": reads["big"], "metadata_chunk_reads": reads["metadata"],
        "rss_start_mb": rss0, "rss_after_plan_mb": rss_plan, "rss_peak_sampled_mb": rss_peak,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


# ---------------------------------------------------------------- report
def _fmt_bytes(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0


def table(results: list[dict], sizes: dict) -> str:
    """Figures of each measured instrument against the goals of the issue ("~": scaled from a sample)."""
    def ok(value, goal):
        return "met" if value < goal else "MISSED"

    def est(r):
        return "~" if r["sample"] > 1 else ""

    rows = [("", *[f"{r['instrument']} ({sizes[r['instrument']]})" for r in results], "goal")]
    add = lambda name, f, goal="": rows.append((name, *[f(r) for r in results], goal))  # noqa: E731
    add("units (window in flight)", lambda r: f"{r['units']:,} ({r['window']})")
    add("units built", lambda r: f"{r['units_built']:,}" + (f" (every {r['sample']}th)" if r["sample"] > 1 else ""))
    add("client tasks: sizing + unit", lambda r: f"{r['sizing_tasks']:,} + {r['unit_tasks']:,}")
    add("tasks in unit graphs", lambda r: f"{est(r)}{r['graph_tasks']:,}")
    add("  per unit: mean / max", lambda r: f"{r['tasks_per_unit_mean']:.1f} / {r['tasks_per_unit_max']}")
    add("total tasks", lambda r: f"{est(r)}{r['total_tasks']:,} {ok(r['total_tasks'], GOALS['tasks'])}",
        f"< {GOALS['tasks']:,}")
    add("most tasks in flight", lambda r: f"{est(r)}{r['in_flight_tasks']:,}")
    add("graph bytes: sum / max",
        lambda r: f"{est(r)}{_fmt_bytes(r['graph_bytes_sum'])} / {_fmt_bytes(r['graph_bytes_max'])}")
    add("submitted bytes: sum / max",
        lambda r: f"{_fmt_bytes(r['submitted_bytes_sum'])} / {_fmt_bytes(r['submitted_bytes_max'])}")
    add("chunk decodes per chunk: big arrays",
        lambda r: f"{r['big_chunk_reads'][0] / max(r['big_chunk_reads'][1], 1):.2f} "
                  f"({r['big_chunk_reads'][0]:,} / {r['big_chunk_reads'][1]:,})")
    add("  per-scan / per-DCE metadata",
        lambda r: f"{r['metadata_chunk_reads'][0] / max(r['metadata_chunk_reads'][1], 1):.1f} "
                  f"({r['metadata_chunk_reads'][0]:,} / {r['metadata_chunk_reads'][1]:,})")
    add("plan (client)", lambda r: f"{r['plan_s']:.1f} s")
    add("size every unit (worker tasks)",
        lambda r: f"{est(r)}{r['sizing_s']:.0f} s, CPU {r['sizing_cpu_s']:.0f} s "
                  f"({1e3 * r['size_unit_s_mean']:.0f} ms/unit)")
    add("build every unit (in unit tasks)",
        lambda r: f"{est(r)}{r['build_s']:.0f} s, CPU {r['build_cpu_s']:.0f} s ({1e3 * r['build_unit_s_mean']:.0f} "
                  f"ms/unit, max {1e3 * r['build_unit_s_max']:.0f})")
    add("plan + size + build, 1 process",
        lambda r: f"{est(r)}{_total_s(r):.0f} s {ok(_total_s(r), GOALS['seconds'])} (CPU "
                  f"{r['plan_s'] + r['sizing_cpu_s'] + r['build_cpu_s']:.0f} s)", f"< {GOALS['seconds']:.0f} s")
    add("  the same on the workers",
        lambda r: f"{est(r)}{r['plan_s'] + (r['sizing_s'] + r['build_s']) / r['workers']:.0f} s "
                  f"({r['workers']} workers)")
    add("client RSS: after plan / peak", lambda r: f"{r['rss_after_plan_mb']:.0f} / {r['rss_peak_mb']:.0f} MB "
                                                   f"{ok(r['rss_peak_mb'], GOALS['client_mb'])}",
        f"< {GOALS['client_mb']:.0f} MB")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _total_s(r):
    return r["plan_s"] + r["sizing_s"] + r["build_s"]


def _child(instrument, store, args) -> dict:
    """``measure`` in a process of its own (its peak RSS is the client's alone)."""
    cmd = [sys.executable, __file__, "--measure", instrument, str(store), "--workers", str(args.workers)]
    if args.batch_scans:
        cmd += ["--batch-scans", str(args.batch_scans)]
    if args.no_sizing:
        cmd.append("--no-sizing")
    if args.sample > 1:
        cmd += ["--sample", str(args.sample)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"measuring {instrument} failed (exit {r.returncode})")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=2000, help="SWAS mission days at full duty (default 2000)")
    ap.add_argument("--dces", type=int, default=100_000, help="MIPS DCEs over the three arrays (default 100000)")
    ap.add_argument("--workers", type=int, default=8, help="workers whose window of units is built at a time")
    ap.add_argument("--batch-scans", type=int, default=None,
                    help="SWAS Params.batch_scans (scans per unit; default: the pipeline's)")
    ap.add_argument("--sample", type=int, default=1, metavar="K",
                    help="build every K-th unit only and scale the sums to every unit (quick look; default 1)")
    ap.add_argument("--only", choices=("swas", "mips"))
    ap.add_argument("--no-sizing", action="store_true", help="do not time size_unit of every SWAS unit")
    ap.add_argument("--out", type=Path, default=Path("bench-output/scale"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic stores (reused when present)")
    ap.add_argument("--measure", nargs=2, metavar=("INSTRUMENT", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        res = measure(args.measure[0], Path(args.measure[1]), workers=args.workers, batch_scans=args.batch_scans,
                      sizing=not args.no_sizing, sample=args.sample,
                      report=lambda line: print(line, file=sys.stderr, flush=True))
        print(json.dumps(res))
        return res
    args.out.mkdir(parents=True, exist_ok=True)
    results, sizes = [], {}
    for instrument in ("swas", "mips"):
        if args.only and instrument != args.only:
            continue
        if instrument == "swas":
            store, sizes["swas"] = args.out / f"swas-{args.days}d.zarr", f"{args.days:,} days"
            write = lambda: write_swas_store(store, args.days, args.out)  # noqa: E731
        else:
            store, sizes["mips"] = args.out / f"mips-{args.dces}.zarr", f"{args.dces:,} DCEs"
            write = lambda: write_mips_store(store, args.dces, args.out)  # noqa: E731
        if not (store / ".skyreduce" / "state.json").exists():
            shutil.rmtree(store, ignore_errors=True)
            t0 = time.perf_counter()
            written = write()
            print(f"{instrument}: wrote {store} in {time.perf_counter() - t0:.0f} s: {written}; "
                  f"{_du(store) / 1e6:.0f} MB on disk", flush=True)
        res = _child(instrument, store, args)
        res["store_bytes_on_disk"] = _du(store)
        results.append(res)
        tag = store.name[:-5] + (f"-batch{args.batch_scans}" if instrument == "swas" and args.batch_scans else "") \
            + (f"-sample{args.sample}" if args.sample > 1 else "")
        (args.out / f"scale-{tag}.json").write_text(json.dumps(res, indent=1))
        if not args.keep:
            shutil.rmtree(store)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(table(results, sizes))
    return results


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
