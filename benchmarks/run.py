"""Ingest benchmark: throughput against reading the same raw bytes, and 1 -> 2 worker scaling.

    python benchmarks/run.py [--out bench-output] [--swas-days 8] [--mips-aors 8] [--repeat 2]

For each instrument, in one run:
  * simulate a data set (kept in OUT/raw, reused when present);
  * time ``cat FILES > /dev/null`` (page cache warm, the best of --repeat), and ``cp FILES DIR``
    (reading and writing the same bytes once: the floor for anything that stores them);
  * time ``ingest`` into a new store on a LocalCluster of 1 worker, then of 2 workers
    (1 thread each, the best of --repeat; cluster start-up not counted);
and print MB/s of raw FITS, the ratios ingest(2 workers)/cat and /cp, and the 2-worker speed-up.
Goals (foundation issue): ingest >= 50 % of the raw read rate; 2 workers >= 1.7x one.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path


def _files(raw: Path):
    return sorted(p for p in raw.rglob("*.fits") if "cal" not in p.relative_to(raw).parts[:-1])


def time_cat(files, repeat):
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def time_cp(files, out, repeat):
    """Copying the same files to a new folder: reading them and writing them once."""
    best = float("inf")
    for i in range(repeat):
        dest = out / f"cp-{i}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        t0 = time.perf_counter()
        subprocess.run(["cp", *map(str, files), str(dest)], check=True)
        best = min(best, time.perf_counter() - t0)
        shutil.rmtree(dest)
    return best


def time_ingest(instrument, raw, out, workers, repeat):
    import cluster
    from reduce.mips.ingest import ingest_mips
    from reduce.swas.ingest import ingest_swas

    fn = ingest_swas if instrument == "swas" else ingest_mips
    best = float("inf")
    with cluster.connect(n_workers=workers, threads_per_worker=1, dashboard=False) as client:
        for i in range(repeat):
            store = out / f"{instrument}-{workers}w-{i}.zarr"
            shutil.rmtree(store, ignore_errors=True)
            client.run(lambda: None)  # workers up
            t0 = time.perf_counter()
            summary = fn([raw], store, client=client, report=print)
            best = min(best, time.perf_counter() - t0)
            assert summary.exit_code == 0 and summary.ingested
            shutil.rmtree(store, ignore_errors=True)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument("--swas-days", type=int, default=8)
    parser.add_argument("--mips-aors", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import cluster
    from reduce.simulate.mips import simulate_mips
    from reduce.simulate.swas import simulate_swas

    results = {}
    for instrument in ("swas", "mips"):
        raw = args.out / "raw" / f"{instrument}-{args.swas_days if instrument == 'swas' else args.mips_aors}"
        if not raw.exists():
            with cluster.connect(dashboard=False) as client:
                if instrument == "swas":
                    simulate_swas(raw, days=args.swas_days, seed=0, client=client)
                else:
                    simulate_mips(raw, aors=args.mips_aors, seed=0, client=client)
        files = _files(raw)
        nbytes = sum(f.stat().st_size for f in files)
        t_cat = time_cat(files, args.repeat)
        t_cp = time_cp(files, args.out, args.repeat)
        t1 = time_ingest(instrument, raw, args.out, 1, args.repeat)
        t2 = time_ingest(instrument, raw, args.out, 2, args.repeat)
        mb = nbytes / 1e6
        results[instrument] = {
            "files": len(files), "raw_MB": round(mb, 1),
            "cat_MBps": round(mb / t_cat, 1), "cp_MBps": round(mb / t_cp, 1), "ingest_1w_MBps": round(mb / t1, 1),
            "ingest_2w_MBps": round(mb / t2, 1), "ratio_2w_to_cat": round(t_cat / t2, 3), "ratio_2w_to_cp": round(t_cp / t2, 3),
            "speedup_2w": round(t1 / t2, 2),
        }
    print(f"{'instrument':10} {'files':>6} {'raw MB':>8} {'cat MB/s':>9} {'cp MB/s':>8} {'1w MB/s':>8} "
          f"{'2w MB/s':>8} {'2w/cat':>7} {'2w/cp':>6} {'speed-up':>8}")
    for name, r in results.items():
        print(f"{name:10} {r['files']:6d} {r['raw_MB']:8.1f} {r['cat_MBps']:9.1f} {r['cp_MBps']:8.1f} "
              f"{r['ingest_1w_MBps']:8.1f} {r['ingest_2w_MBps']:8.1f} {r['ratio_2w_to_cat']:7.3f} "
              f"{r['ratio_2w_to_cp']:6.3f} {r['speedup_2w']:8.2f}")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
