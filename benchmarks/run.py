"""Ingest benchmark: one worker against the physical write limit, per-file overhead, 1 -> 2 worker scaling.

    python benchmarks/run.py [--out bench-output] [--swas-days 8] [--mips-aors 8] [--repeat 2] [--workers 1 2]

For each instrument, in one run (all times the best of --repeat, the first four interleaved; MB/s of raw
level-0 FITS bytes):
  * simulate a data set (kept in OUT/raw, reused when present);
  * ``cat FILES > /dev/null`` with the page cache warm: reading the bytes;
  * ``ingest`` into a new store on a LocalCluster of 1 worker, 1 thread (cluster start-up not counted);
  * the write-limit peer, on that worker: every array of the ingested store, held in memory, written
    into a new store with the same chunks and codecs (the same bytes, no FITS);
  * the check phase on that worker (``inspect_group``: read, SHA-256, integrity, parse, validate every
    file) and the byte work alone (read, SHA-256): the per-file overhead is (check - bytes) / files
    (CFITSIO's checksum verification counted in it), and its share of the 1-worker ingest time;
  * ingest on 2 workers (the speed-up), unless ``--workers 1``.
Goals (issue 8): ingest on 1 worker >= 50 % of the peer; MIPS per-file overhead < 25 % of the ingest
time. Foundation issue: 2 workers >= 1.7x one.
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


def _best(fn, repeat):
    return min(fn(i) for i in range(repeat))


def time_cat(files, repeat):
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm the cache

    def once(_):
        t0 = time.perf_counter()
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t0
    return _best(once, repeat)


def _adapter(instrument):
    from reduce.mips.ingest import MipsAdapter
    from reduce.swas.ingest import SwasAdapter
    return SwasAdapter() if instrument == "swas" else MipsAdapter()


def time_ingest(client, instrument, raw, store):
    """Seconds of one ingest of ``raw`` into a new ``store`` (kept)."""
    from reduce.mips.ingest import ingest_mips
    from reduce.swas.ingest import ingest_swas

    shutil.rmtree(store, ignore_errors=True)
    client.run(lambda: None)  # workers up
    t0 = time.perf_counter()
    summary = (ingest_swas if instrument == "swas" else ingest_mips)([raw], store, client=client, report=print)
    seconds = time.perf_counter() - t0
    assert summary.exit_code == 0 and summary.ingested
    return seconds


def write_peer(store, dest):
    """Seconds to write every array of ``store``, loaded into memory first, into a new store ``dest``
    with the same shapes, chunks and codecs, all arrays at once: the write limit of the same bytes
    (runs on a worker)."""
    import asyncio

    import zarr
    from zarr.core.sync import sync

    groups = {}

    def walk(group, path):
        groups[path] = [(name, arr, arr[...]) for name, arr in group.arrays()]
        for name, sub in group.groups():
            walk(sub, f"{path}/{name}".lstrip("/"))

    walk(zarr.open_group(store, mode="r", use_consolidated=False), "")

    async def write(group, name, arr, data):
        new = await group.create_array(name, shape=arr.shape, chunks=arr.chunks, dtype=arr.dtype,
                                       fill_value=arr.fill_value, filters=arr.filters, serializer=arr.serializer,
                                       compressors=arr.compressors)
        if data.size:
            await new.setitem(..., data)

    async def write_all():
        root = await zarr.api.asynchronous.open_group(store=str(dest), mode="w")
        jobs = []
        for path, arrays in groups.items():
            group = await root.create_group(path) if path else root
            jobs += [write(group, *item) for item in arrays]
        await asyncio.gather(*jobs)

    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.perf_counter()
    sync(write_all())
    seconds = time.perf_counter() - t0
    shutil.rmtree(dest)
    return seconds


def time_check(instrument, files):
    """(seconds of the check phase of ``files``, seconds of their byte work alone: reading them and their
    SHA-256) (runs on a worker)."""
    import hashlib

    from reduce.io.ingest import FileRecord, inspect_group

    adapter = _adapter(instrument)
    t0 = time.perf_counter()
    results = inspect_group(adapter, files, set())
    t_check = time.perf_counter() - t0
    assert all(isinstance(r, FileRecord) for r in results)
    t0 = time.perf_counter()
    for path in files:
        with open(path, "rb") as f:
            buf = f.read()
        hashlib.sha256(buf).hexdigest()
    return t_check, time.perf_counter() - t0


def measure(instrument, raw, out, repeat, workers):
    import cluster

    files = _files(raw)
    mb = sum(f.stat().st_size for f in files) / 1e6
    r = {"files": len(files), "raw_MB": round(mb, 1), "cat_MBps": round(mb / time_cat(files, repeat), 1)}
    store = out / f"{instrument}-1w.zarr"
    times = []  # (ingest, peer, check, bytes) seconds: interleaved, so that each best sees the same load
    with cluster.connect(n_workers=1, threads_per_worker=1, dashboard=False) as client:
        for _ in range(repeat):
            t_ingest = time_ingest(client, instrument, raw, store)
            t_peer = client.submit(write_peer, store, out / f"{instrument}-peer.zarr", pure=False).result()
            times.append((t_ingest, t_peer, *client.submit(time_check, instrument, files, pure=False).result()))
    t_ingest, t_peer, t_check, t_bytes = (min(column) for column in zip(*times))
    overhead = max(t_check - t_bytes, 0.0)
    r.update(ingest_1w_MBps=round(mb / t_ingest, 1), peer_MBps=round(mb / t_peer, 1),
             ratio_1w_to_peer=round(t_peer / t_ingest, 3), check_ms_per_file=round(t_check / len(files) * 1e3, 3),
             overhead_ms_per_file=round(overhead / len(files) * 1e3, 3),
             overhead_pct_of_ingest=round(100 * overhead / t_ingest, 1))
    if 2 in workers:
        with cluster.connect(n_workers=2, threads_per_worker=1, dashboard=False) as client:
            t2 = _best(lambda i: time_ingest(client, instrument, raw, out / f"{instrument}-2w.zarr"), repeat)
        r.update(ingest_2w_MBps=round(mb / t2, 1), speedup_2w=round(t_ingest / t2, 2))
    for path in out.glob(f"{instrument}-*w.zarr"):
        shutil.rmtree(path)
    return r


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument("--swas-days", type=int, default=8)
    parser.add_argument("--mips-aors", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], choices=[1, 2])
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
        results[instrument] = measure(instrument, raw, args.out, args.repeat, args.workers)
    print(f"{'instrument':10} {'files':>6} {'raw MB':>7} {'cat MB/s':>9} {'peer MB/s':>9} {'1w MB/s':>8} "
          f"{'1w/peer':>7} {'check ms/file':>13} {'overhead ms/file':>16} {'overhead %':>10} "
          f"{'2w MB/s':>8} {'speed-up':>8}")
    for name, r in results.items():
        print(f"{name:10} {r['files']:6d} {r['raw_MB']:7.1f} {r['cat_MBps']:9.1f} {r['peer_MBps']:9.1f} "
              f"{r['ingest_1w_MBps']:8.1f} {r['ratio_1w_to_peer']:7.3f} {r['check_ms_per_file']:13.3f} "
              f"{r['overhead_ms_per_file']:16.3f} {r['overhead_pct_of_ingest']:10.1f} "
              f"{r.get('ingest_2w_MBps', float('nan')):8.1f} {r.get('speedup_2w', float('nan')):8.2f}")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
