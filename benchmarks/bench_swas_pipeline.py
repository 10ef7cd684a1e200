"""SWAS pipeline benchmark: scans per second per core of the whole level-0.5 -> level-1
pipeline, beside the rate of merely reading the same store variables, in one run.

    python benchmarks/bench_swas_pipeline.py [--out bench-output/swas-pipeline] [--days 3]
                                             [--workers 2] [--repeat 2] [--export]

* simulates ``--days`` mission days (plan_swas, 12 segments a day; kept in OUT/raw and
  reused) and ingests them into OUT/swas.zarr (reused);
* read: computes a trivial reduction of every store variable the pipeline reads
  (aos490, aos550 and the per-scan metadata), so every chunk is read and decoded;
* steps: compute_level1 over the whole store (plan + steps 1-5, in memory, one core);
* runner: reduce_swas --redo, the whole job (sizing, steps, store tables written by the
  workers, FITS export, records, log), on one core in process and on a LocalCluster of
  ``--workers`` single-threaded workers (start-up not counted);
  each the best of ``--repeat``; prints scans/s/core and the ratios to the read rate.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prepare(out: Path, days: int, seed: int = 0):
    from reduce.simulate.swas import simulate_swas
    from reduce.swas.ingest import ingest_swas

    raw = out / "raw"
    store = out / "swas.zarr"
    marker = out / "prepared.json"
    want = {"days": days, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == want and store.exists():
        return store
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    simulate_swas(raw, days=days, seed=seed)
    ingest_swas([raw], store)
    marker.write_text(json.dumps(want))
    return store


def time_read(store, client, repeat):
    import dask

    from reduce.io.store import Store
    from reduce.swas.pipeline import META_VARS

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        ds = Store(store).open_group()
        work = [ds["aos490"].data.sum(axis=1), ds["aos550"].data.sum(axis=1)] + [ds[v].data for v in META_VARS]
        dask.compute(*work, scheduler=client.get if client is not None else "sync")
        best = min(best, time.perf_counter() - t0)
    return best, int(ds.sizes["time"])


def time_steps(store, repeat):
    import dask

    from reduce.swas.pipeline import compute_level1

    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        with dask.config.set(scheduler="sync"):
            res = compute_level1(store)
        best = min(best, time.perf_counter() - t0)
    return best, res


def time_runner(store, out, client, repeat):
    from reduce.swas.pipeline import reduce_swas

    best, summary = float("inf"), None
    for i in range(repeat):
        t0 = time.perf_counter()
        summary = reduce_swas(store, out / f"products-{'cluster' if client else 'serial'}", client=client,
                              redo=True, report=lambda line: None)
        best = min(best, time.perf_counter() - t0)
    return best, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench-output/swas-pipeline"))
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)

    import cluster

    t0 = time.perf_counter()
    store = prepare(args.out, args.days)
    print(f"data: {args.days} mission days in {store} (prepared in {time.perf_counter() - t0:.1f} s)")
    with cluster.connect(n_workers=args.workers, threads_per_worker=1, dashboard=False) as client:
        client.run(lambda: __import__("reduce.swas.pipeline"))  # warm imports on the workers
        t_read, n = time_read(store, client, args.repeat)
        t_run, summary = time_runner(store, args.out, client, args.repeat)
    # one core in this process (dask's synchronous scheduler): no cluster overheads
    s_read, _ = time_read(store, None, args.repeat)
    s_steps, (level1, _, reports) = time_steps(store, args.repeat)
    s_run, _ = time_runner(store, args.out, None, args.repeat)
    cores = args.workers
    ok = sum(r.status == "ok" for r in reports)
    print(f"scans: {n}, segments reduced {ok}/{len(reports)}, coadds {level1.sizes['coadd']}, "
          f"units {sum(summary.units.values())}, product files {summary.files}")
    print("one core, synchronous scheduler:")
    print(f"  read store variables       : {s_read:7.2f} s  {n / s_read:9.0f} scans/s/core")
    print(f"  steps 1-5 (compute_level1) : {s_steps:7.2f} s  {n / s_steps:9.0f} scans/s/core  "
          f"{100 * s_read / s_steps:5.1f} % of read")
    print(f"  runner (store + FITS + log): {s_run:7.2f} s  {n / s_run:9.0f} scans/s/core  "
          f"{100 * s_read / s_run:5.1f} % of read")
    print(f"LocalCluster, {cores} single-threaded workers:")
    print(f"  read store variables       : {t_read:7.2f} s  {n / t_read / cores:9.0f} scans/s/core")
    print(f"  runner (store + FITS + log): {t_run:7.2f} s  {n / t_run / cores:9.0f} scans/s/core  "
          f"{100 * t_read / t_run:5.1f} % of read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
