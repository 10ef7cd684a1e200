"""Client and worker memory of `skyreduce reduce swas` at several mission lengths (issue 7).

    python benchmarks/bench_runner_memory.py [--days 1 10 30] [--out bench-output/memory]

For each mission length: simulate and ingest N SWAS days (cached under --out), start a
2-worker cluster in its own process (scheduler file), run the real command
`skyreduce reduce swas --scheduler-file F` as the client process, and report

- the client's peak RSS (getrusage of the finished child: the command alone, no scheduler),
- the largest worker's peak RSS (asked from the workers at the end),
- the units, scans and wall time,

then the client's growth per mission day between the shortest and the longest mission
(goal: < 1 MB per day, so that a 2,000-day mission stays under 2 GB).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def sh(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode not in (0,):
        raise SystemExit(f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def prepare(root: Path, days: int) -> Path:
    store = root / f"swas-{days}d.zarr"
    if not (store / ".skyreduce" / "state.json").exists():
        raw = root / f"raw-{days}d"
        sh(BIN / "skyreduce", "simulate", "swas", raw, "--days", days, "-q", "--workers", "2", "--no-dashboard")
        sh(BIN / "skyreduce", "ingest", "swas", raw, "--store", store, "-q", "--workers", "2", "--no-dashboard")
    return store


CLUSTER = """
import sys, time
from distributed import LocalCluster
c = LocalCluster(n_workers=int(sys.argv[2]), threads_per_worker=1, processes=True, dashboard_address=None,
                 memory_limit="8GiB", scheduler_kwargs={"host": "127.0.0.1"})
import json; open(sys.argv[1], "w").write(json.dumps({"address": c.scheduler_address}))
while True:
    time.sleep(1)
"""


@contextlib.contextmanager
def local_cluster(root: Path, n_workers: int = 2):
    """A LocalCluster of ``n_workers`` single-threaded worker processes, with its scheduler, in a process
    of its own (not the client's); yields its scheduler file."""
    sched = root / "scheduler.json"
    sched.unlink(missing_ok=True)
    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER, str(sched), str(n_workers)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if sched.exists() and sched.stat().st_size:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        yield sched
    finally:
        cluster.kill()
        cluster.wait()


def worker_peak(scheduler_file) -> float:
    from distributed import Client
    with Client(scheduler_file=str(scheduler_file), timeout=30) as client:
        peaks = client.run(lambda: __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss)
    return max(peaks.values()) / 1024.0


def measure(store: Path, out: Path, root: Path) -> dict:
    with local_cluster(root, 2) as sched:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        r = subprocess.run([str(BIN / "skyreduce"), "reduce", "swas", "--store", str(store), "--out", str(out),
                            "--scheduler-file", str(sched), "--redo", "-q"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        client_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if r.returncode not in (0, 1):
            raise SystemExit(r.stdout + r.stderr)
        if client_peak <= before:
            raise SystemExit("the client's peak RSS could not be told apart from an earlier child's")
        return {"client_mb": client_peak / 1024.0, "worker_mb": worker_peak(sched), "seconds": wall,
                "summary": r.stdout.splitlines()[0] if r.stdout else ""}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, nargs="+", default=[1, 10, 30])
    ap.add_argument("--out", type=Path, default=Path("bench-output/memory"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    # each length in its own benchmark process, so that RUSAGE_CHILDREN's maximum is this run's client
    for days in args.days:
        store = prepare(args.out, days)
        if len(args.days) > 1:
            r = sh(sys.executable, __file__, "--days", days, "--out", args.out)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            continue
        res = measure(store, args.out / f"products-{days}d", args.out)
        res["days"] = days
        print(json.dumps(res))
        return
    print(f"{'days':>5} {'client peak MB':>15} {'largest worker MB':>18} {'wall s':>8}  summary")
    for r in rows:
        print(f"{r['days']:>5} {r['client_mb']:>15.1f} {r['worker_mb']:>18.1f} {r['seconds']:>8.1f}  {r['summary']}")
    lo, hi = rows[0], rows[-1]
    growth = (hi["client_mb"] - lo["client_mb"]) / max(hi["days"] - lo["days"], 1)
    print(f"client growth: {growth:.3f} MB per mission day ({lo['days']} -> {hi['days']} days); "
          f"2,000 days -> {lo['client_mb'] + growth * (2000 - lo['days']):.0f} MB")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
