"""Client and worker memory of `skyreduce reduce swas|mips` at several program lengths (issues 7, 9).

    python benchmarks/bench_runner_memory.py [--instrument swas] [--days 1 10 30] [--out bench-output/memory]
    python benchmarks/bench_runner_memory.py --instrument mips [--aors 2 8] [--out bench-output/memory]

For each length (SWAS: mission days; MIPS: imaging AORs, `skyreduce simulate mips --aors N
--sed-aors 0`, reduced to level 2, the default: BCDs, then one mosaic per AOR and array):
simulate and ingest the program (cached under --out), start a 2-worker cluster in its own
process (scheduler file), run the real command `skyreduce reduce INSTRUMENT --scheduler-file F`
as the client process, and report

- the client's peak RSS (getrusage of the finished child: the command alone, no scheduler),
- the largest worker's peak RSS and its RSS after the command (asked from the workers at the end;
  the cluster's workers start as skyreduce starts them: ``cluster.batch.worker_spawn_config``),
- the units (summed over the command's pipelines) and wall time,

then the client's growth per day / AOR between the shortest and the longest program (SWAS
goal: < 1 MB per day, so that a 2,000-day mission stays under 2 GB). Each length is measured
in a benchmark process of its own; the rows are also written to OUT/memory-INSTRUMENT.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent

# per instrument: the length option, its unit, how a length is named and simulated, the extrapolation
LENGTH = {
    "swas": {"option": "days", "unit": "day", "tag": "{}d", "store": "swas-{}d.zarr", "simulate": ["--days", "{}"],
             "far": 2000},
    "mips": {"option": "aors", "unit": "AOR", "tag": "mips-{}aor", "store": "mips-{}aor.zarr",
             "simulate": ["--aors", "{}", "--sed-aors", "0"], "far": 1000},
}


def sh(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode not in (0,):
        raise SystemExit(f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def prepare(root: Path, n: int, instrument: str = "swas") -> Path:
    """The store of a simulated program of ``n`` days (SWAS) or AORs (MIPS), simulated and ingested once."""
    spec = LENGTH[instrument]
    store = root / spec["store"].format(n)
    if not (store / ".skyreduce" / "state.json").exists():
        raw = root / f"raw-{spec['tag'].format(n)}"
        cluster = ["-q", "--workers", "2", "--no-dashboard"]
        sh(BIN / "skyreduce", "simulate", instrument, raw, *[a.format(n) for a in spec["simulate"]], *cluster)
        sh(BIN / "skyreduce", "ingest", instrument, raw, "--store", store, *cluster)
    return store


CLUSTER = """
import sys, time
import dask
from distributed import LocalCluster
from cluster.batch import worker_spawn_config    # the workers as skyreduce starts them
with dask.config.set(worker_spawn_config()):
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


def _rss_now_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker_memory(scheduler_file) -> tuple[float, float]:
    """(largest peak RSS, largest RSS now) of the workers, MB: the peak of the run, and what a
    worker still holds after it (memory that grows with the work done shows there)."""
    from distributed import Client
    with Client(scheduler_file=str(scheduler_file), timeout=30) as client:
        peaks = client.run(lambda: __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss)
        now = client.run(_rss_now_mb)
    return max(peaks.values()) / 1024.0, max(now.values())


def measure(store: Path, out: Path, root: Path, instrument: str = "swas") -> dict:
    with local_cluster(root, 2) as sched:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        r = subprocess.run([str(BIN / "skyreduce"), "reduce", instrument, "--store", str(store), "--out", str(out),
                            "--scheduler-file", str(sched), "--redo", "-q"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        client_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if r.returncode not in (0, 1):
            raise SystemExit(r.stdout + r.stderr)
        if client_peak <= before:
            raise SystemExit("the client's peak RSS could not be told apart from an earlier child's")
        # one unindented summary line per pipeline run ("mips_bcd on STORE: 6 units: ..."); notes are indented
        pipelines = [line for line in r.stdout.splitlines() if re.match(r"\S+ on .*: \d+ units:", line)]
        worker_mb, worker_end_mb = worker_memory(sched)
        return {"client_mb": client_peak / 1024.0, "worker_mb": worker_mb, "worker_end_mb": worker_end_mb,
                "seconds": wall,
                "units": sum(int(re.search(r": (\d+) units:", line).group(1)) for line in pipelines),
                "summary": " | ".join(pipelines)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instrument", choices=sorted(LENGTH), default="swas")
    ap.add_argument("--days", type=int, nargs="+", default=[1, 10, 30], help="SWAS mission lengths")
    ap.add_argument("--aors", type=int, nargs="+", default=[2, 8], help="MIPS program lengths (imaging AORs)")
    ap.add_argument("--out", type=Path, default=Path("bench-output/memory"))
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # measure the one length here
    args = ap.parse_args(argv)
    inst, spec = args.instrument, LENGTH[args.instrument]
    option, unit = spec["option"], spec["unit"]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        (n,) = getattr(args, option)
        res = measure(prepare(args.out, n, inst), args.out / f"products-{spec['tag'].format(n)}", args.out, inst)
        res[option] = n
        print(json.dumps(res))
        return
    rows = []
    # each length in its own benchmark process, so that RUSAGE_CHILDREN's maximum is this run's client
    for n in getattr(args, option):
        prepare(args.out, n, inst)
        r = sh(sys.executable, __file__, "--one", "--instrument", inst, f"--{option}", n, "--out", args.out)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    (args.out / f"memory-{inst}.json").write_text(json.dumps({"instrument": inst, "workers": 2, "rows": rows},
                                                             indent=1) + "\n")
    print(f"{option:>5} {'client peak MB':>15} {'largest worker MB':>18} {'worker at end MB':>17} {'units':>6} "
          f"{'wall s':>8}  summary")
    for r in rows:
        print(f"{r[option]:>5} {r['client_mb']:>15.1f} {r['worker_mb']:>18.1f} {r['worker_end_mb']:>17.1f} "
              f"{r['units']:>6} {r['seconds']:>8.1f}"
              f"  {r['summary']}")
    lo, hi = rows[0], rows[-1]
    growth = (hi["client_mb"] - lo["client_mb"]) / max(hi[option] - lo[option], 1)
    wgrowth = (hi["worker_end_mb"] - lo["worker_end_mb"]) / max(hi[option] - lo[option], 1)
    print(f"worker growth (RSS after the command): {wgrowth:.2f} MB per {unit}")
    print(f"client growth: {growth:.3f} MB per {unit} ({lo[option]} -> {hi[option]} {option}); "
          f"{spec['far']:,} {option} -> {lo['client_mb'] + growth * (spec['far'] - lo[option]):.0f} MB")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
