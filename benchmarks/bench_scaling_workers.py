"""Throughput of the SWAS level-1 reduction with 1 and 2 workers (issue 8, part 5).

    python benchmarks/bench_scaling_workers.py [--days 30] [--workers 1 2] [--out bench-output/memory]

Simulates and ingests ``--days`` SWAS days (cached under --out, shared with
bench_runner_memory.py), then for each worker count starts a LocalCluster (worker processes of
one thread, scheduler in a process of its own: bench_runner_memory.local_cluster) and reduces the
whole store from this process, the client (``reduce_swas(..., redo=True)``), while a thread
samples with psutil, every 0.2 s, the RSS of this process and of every worker process. Reports
per worker count: wall time of the run, scans/s and scans/s per worker, the peak RSS of the
largest worker (sampled, and the workers' own ru_maxrss) and of the client, and the machine's
1-minute load average before and after the run (with the CPUs), then the speed-up of the
largest count over 1 worker (goal: >= 1.7x for 2 workers, on a quiet machine: the load average
before the first run says whether something else was running; later loads count the benchmark's
own workers). Measured here (2 CPUs, load 1.06 before, 30 days, 216,656 scans, 63 units): 1
worker 281 s (770 scans/s), 2 workers 148 s (731 scans/s each): 1.90x; worker peak 425 MB,
client peak 248 MB.
Results also go to OUT/scaling-<days>d.json.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

from bench_runner_memory import local_cluster, prepare


class RssSampler:
    """Peak RSS (MB) of this process and of the given processes, sampled in a thread."""

    def __init__(self, pids, every=0.2):
        import psutil
        self.me = psutil.Process()
        self.others = [psutil.Process(p) for p in pids]
        self.every = every
        self.client_mb = self.worker_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        import psutil
        self.client_mb = max(self.client_mb, self.me.memory_info().rss / 2**20)
        for p in self.others:
            try:
                self.worker_mb = max(self.worker_mb, p.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                pass

    def _run(self):
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def run_once(store: Path, out: Path, root: Path, workers: int) -> dict:
    from distributed import Client

    from reduce.swas.pipeline import reduce_swas

    with local_cluster(root, workers) as sched, Client(scheduler_file=str(sched), timeout=60) as client:
        client.wait_for_workers(workers, timeout=120)
        pids = client.run(os.getpid)
        load_before = os.getloadavg()[0]
        with RssSampler(pids.values()) as rss:
            t0 = time.perf_counter()
            summary = reduce_swas(store, out, client=client, redo=True, report=lambda line: None)
            wall = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
        peaks = client.run(lambda: __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss)
    scans = summary.counts.get("scans", 0)
    return {"workers": workers, "seconds": wall, "scans": scans, "units": sum(summary.units.values()),
            "failed": summary.units["failed"], "scans_per_s": scans / wall,
            "scans_per_s_per_worker": scans / wall / workers,
            "worker_peak_mb_sampled": rss.worker_mb, "worker_peak_mb": max(peaks.values()) / 1024.0,
            "client_peak_mb_sampled": rss.client_mb, "load_before": load_before, "load_after": load_after}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=Path("bench-output/memory"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    store = prepare(args.out, args.days)
    rows = [run_once(store, args.out / f"products-{args.days}d-{w}w", args.out, w) for w in args.workers]
    cpus = os.cpu_count()
    print(f"SWAS level 1, {args.days} simulated days ({rows[0]['scans']:,} scans, {rows[0]['units']} units), "
          f"{cpus} CPUs")
    print(f"{'workers':>7} {'wall s':>8} {'scans/s':>8} {'per worker':>10} {'worker peak MB':>15} "
          f"{'client peak MB':>15} {'load before/after':>18}")
    for r in rows:
        print(f"{r['workers']:>7} {r['seconds']:>8.1f} {r['scans_per_s']:>8.0f} {r['scans_per_s_per_worker']:>10.0f} "
              f"{max(r['worker_peak_mb'], r['worker_peak_mb_sampled']):>15.0f} {r['client_peak_mb_sampled']:>15.0f} "
              f"{r['load_before']:>8.2f} / {r['load_after']:<7.2f}"
              + (f"  ({r['failed']} units failed)" if r["failed"] else ""))
    one = next((r for r in rows if r["workers"] == 1), None)
    most = max(rows, key=lambda r: r["workers"])
    result = {"days": args.days, "cpus": cpus, "runs": rows}
    if one is not None and most is not one:
        result["speedup"] = one["seconds"] / most["seconds"]
        # the 1-minute load average counts this benchmark's own workers (and the previous run's tail):
        # only the load before the first run says whether something else was running
        first = rows[0]["load_before"]
        print(f"speed-up {most['workers']} workers / 1: {result['speedup']:.2f}x (goal >= 1.7x on a quiet machine; "
              f"load before the first run {first:.2f} on {cpus} CPUs"
              + (": something else was running, the ratio says little)" if first > 0.5 * cpus else ")"))
    (args.out / f"scaling-{args.days}d.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
