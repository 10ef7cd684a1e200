"""SWAS stability-study benchmark (issue 10, part 6): ``skyreduce trend swas`` beside reading the
same store variables, in one run, and the client's memory at two mission lengths.

    python benchmarks/bench_trend.py [--out bench-output/trend] [--days 30] [--half 15]
                                     [--workers 2] [--repeat 2]

* simulates ``--days`` mission days (plan_swas, 12 segments a day; kept and reused, as in
  bench_swas_pipeline) and ingests them;
* read (the peer): every chunk of aos490, aos550 and the per-scan metadata read and decoded (a
  trivial reduction), on the same cluster;
* study: ``reduce.stability.swas.study`` (one dask.compute over the store), and the whole command
  (study + writing the CSV tables, zarr group, plots, index.html), both on an ingested-only store
  (the study pairs, flags and fits the COMBs itself) and again after ``reduce swas`` (level-1
  pairs, flags and dispersions taken from the store); ratio = read time / study time (goal >= 0.5);
* client memory: the peak of Python allocations in this process (tracemalloc) during ``study`` on a
  cluster whose scheduler and ``--workers`` workers run in other processes (``dask scheduler`` /
  ``dask worker``), over the first ``--half`` days and over all ``--days``, in batches of
  ``--batch-days``: what the client holds grows by the result tables only.
All times are the best of ``--repeat``, on a LocalCluster of single-threaded worker processes.
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_swas_pipeline import prepare, time_read  # noqa: E402


def _best(fn, repeat):
    out = None
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def time_study(store, client, repeat, out=None):
    """(best seconds of study, best seconds of study + write_study, Study)."""
    from reduce.stability.study import write_study
    from reduce.stability.swas import study

    t_study, res = _best(lambda: study(store, client=client), repeat)
    t_all = None
    if out is not None:
        t_all, _ = _best(lambda: write_study(study(store, client=client), out), repeat)
    return t_study, t_all, res


def client_peak(store, client, stop=None, batch_days=None):
    """Peak Python allocations [MB] of this process while ``study`` runs on the cluster (whose
    scheduler must run in another process: a LocalCluster's scheduler lives in the client's
    process and keeps the history of every graph it ran)."""
    from reduce.stability.swas import study

    tracemalloc.start()
    tracemalloc.reset_peak()
    res = study(store, client=client, stop=stop, **({} if batch_days is None else {"batch_days": batch_days}))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6, len(res.tables["swas_segments"])


def external_cluster(folder, workers):
    """A scheduler and ``workers`` single-threaded workers in their own processes (``dask
    scheduler`` / ``dask worker``): (Client, [processes])."""
    import subprocess

    from distributed import Client

    dask_cli = str(Path(sys.executable).with_name("dask"))
    sfile = Path(folder) / "scheduler.json"
    sfile.unlink(missing_ok=True)
    procs = [subprocess.Popen([dask_cli, "scheduler", "--scheduler-file", str(sfile), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    while not sfile.exists():
        time.sleep(0.2)
    procs.append(subprocess.Popen([dask_cli, "worker", "--scheduler-file", str(sfile), "--nworkers", str(workers),
                                   "--nthreads", "1", "--no-dashboard"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    client = Client(scheduler_file=str(sfile))
    client.wait_for_workers(workers)
    return client, procs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench-output/trend"))
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--half", type=int, default=15, help="shorter mission length for the memory figure [days]")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch-days", type=int, default=None, help="study batch for the memory figure "
                    "(default: reduce.stability.swas.BATCH_DAYS)")
    args = ap.parse_args(argv)

    import cluster
    from reduce.simulate.orbit import MISSION_EPOCH_MJD
    from reduce.swas.pipeline import reduce_swas

    t0 = time.perf_counter()
    store = prepare(args.out, args.days)
    print(f"data: {args.days} mission days in {store} (prepared in {time.perf_counter() - t0:.1f} s)")
    with cluster.connect(n_workers=args.workers, threads_per_worker=1, dashboard=False) as client:
        client.run(lambda: __import__("reduce.stability.swas"))   # warm imports on the workers
        t_read, n = time_read(store, client, args.repeat)
        s_only, w_only, res = time_study(store, client, args.repeat, args.out / "trend-ingested")
        t_l1, _ = _best(lambda: reduce_swas(store, args.out / "level1", client=client, redo=True,
                                            report=lambda line: None), 1)
        s_l1, w_l1, res_l1 = time_study(store, client, args.repeat, args.out / "trend-level1")
        t_read2, _ = time_read(store, client, args.repeat)
    t_read = min(t_read, t_read2)
    client, procs = external_cluster(args.out, args.workers)
    try:
        client.run(lambda: __import__("reduce.stability.swas"))
        client_peak(store, client, stop=MISSION_EPOCH_MJD + 2, batch_days=args.batch_days)   # warm-up
        mem = [client_peak(store, client, stop=MISSION_EPOCH_MJD + args.half, batch_days=args.batch_days),
               client_peak(store, client, batch_days=args.batch_days)]
    finally:
        client.close()
        for proc in procs[::-1]:
            proc.terminate()
            proc.wait()
    nseg = len(res.tables["swas_segments"])
    print(f"scans: {n}, segments in the study: {nseg}; LocalCluster of {args.workers} single-threaded workers")
    print(f"  read store variables (peer)          : {t_read:7.2f} s")
    print(f"  study, ingested store                : {s_only:7.2f} s   read/study = {t_read / s_only:.2f}")
    print(f"  trend command, ingested store        : {w_only:7.2f} s   read/trend = {t_read / w_only:.2f}")
    print(f"  level 1 (reduce swas) for comparison : {t_l1:7.2f} s   read/level1 = {t_read / t_l1:.2f}")
    print(f"  study, store with level-1 results    : {s_l1:7.2f} s   read/study = {t_read / s_l1:.2f}")
    print(f"  trend command, with level-1 results  : {w_l1:7.2f} s   read/trend = {t_read / w_l1:.2f}")
    print([n for n in res_l1.notes if "level-1" in n])
    (m1, r1), (m2, r2) = mem
    print(f"client peak (tracemalloc; scheduler and workers in other processes) during study (batches of "
          f"{args.batch_days or 'BATCH_DAYS'} days): {m1:.1f} MB over {args.half} days ({r1} segments), "
          f"{m2:.1f} MB over {args.days} days ({r2} segments): {1e3 * (m2 - m1) / max(r2 - r1, 1):.1f} kB "
          f"per added segment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
