"""MIPS level-1 pipeline throughput, on a simulated store, in one run.

* 24 um: BCD throughput (DCEs/s, MB/s of raw input) beside the rate of just reading the
  same raw data from the store; BCD computed in memory.
* 70 um: Ge ramp fitting inside the pipeline (fit_ramps over the store's chunks:
  linearity, saturation, jumps, fused GLS slopes) in reads/s per core, and the whole Ge BCD.
* the whole job on the runner (reduce_mips --redo: per-AOR units, BCDs written into the
  store tables, FITS exported from the store), one core, in DCEs/s.

Per-core figures use dask's synchronous scheduler and one numba/BLAS thread.
Usage: python benchmarks/bench_mips_pipeline.py [--n24 256] [--n70 256] [--workdir DIR]
(benchmarks/bench_ramps.py compares the ramp kernel itself with stcal.)
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import dask  # noqa: E402


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n24", type=int, default=256, help="24 um DCEs")
    ap.add_argument("--n70", type=int, default=256, help="70 um DCEs (3-s, 24 reads)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from reduce.io.store import Store
    from reduce.mips.ingest import ingest_mips
    from reduce.mips.kernels.ramps import GeParams
    from reduce.mips.pipeline import build_bcd, plan_bcd, reduce_mips
    from reduce.mips.steps import fit_ramps
    from reduce.simulate.mips import AorSpec, simulate_mips

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_mips_"))
    raw, store = work / "raw", work / "mips.zarr"
    t0 = time.perf_counter()
    if not store.exists():
        specs = [AorSpec(aorkey=40000001, aot_type="MipsScan", object="BENCH24", ra=30.0, dec=5.0,
                         start_mjd=53800.0, n_dce=args.n24, arrays=(1,), overhead=0.3),
                 AorSpec(aorkey=40000002, aot_type="MipsScan", object="BENCH70", ra=31.0, dec=5.0,
                         start_mjd=53800.2, n_dce=args.n70, arrays=(2,), overhead=0.3)]
        simulate_mips(raw, seed=9, specs=specs)
        ingest_mips([raw], store, report=lambda line: None)
    print(f"setup (simulate + ingest) {time.perf_counter() - t0:.1f} s in {work}")

    with dask.config.set(scheduler="synchronous"):
        # ---------------- 24 um
        g24 = Store(store).open_group("mips24")
        n24 = g24.sizes["dce"]
        mb24 = g24.raw.nbytes / 1e6
        t_read = best(lambda: g24.raw.data.sum().compute(), args.repeat)
        build_bcd(store, 1)[0][["bcd", "unc", "mask"]].compute()       # warm-up (imports)
        t_plan = best(lambda: build_bcd(store, 1), args.repeat)
        keep = ["bcd", "unc", "mask", "slope", "difference", "replaced"]
        t_bcd = best(lambda: build_bcd(store, 1)[0][keep].compute(), args.repeat)
        print(f"24 um: {n24} DCEs, raw {mb24:.1f} MB, one core")
        print(f"  read raw from store      {t_read:7.2f} s  {n24 / t_read:8.1f} DCEs/s  {mb24 / t_read:7.1f} MB/s")
        print(f"  plan + build graph       {t_plan:7.2f} s")
        print(f"  BCD (compute, in memory) {t_bcd:7.2f} s  {n24 / t_bcd:8.1f} DCEs/s  {mb24 / t_bcd:7.1f} MB/s"
              f"  ({t_read / t_bcd:.2f} x the read rate)")

        # ---------------- 70 um
        g70 = Store(store).open_group("mips70")
        n70 = g70.sizes["dce"]
        nreads = int(g70.nreads.values.astype(int).sum()) * 32 * 32
        mb70 = g70.reads.nbytes / 1e6
        t_read70 = best(lambda: g70.reads.data.sum().compute(), args.repeat)
        plan = plan_bcd(store, 2)
        fit_ramps(plan.ds.isel(dce=slice(0, 2)), plan.cal, GeParams()).rate.compute()  # numba load
        t_ramps = best(lambda: fit_ramps(plan.ds, plan.cal, GeParams()).rate.compute(), args.repeat)
        t_ge = best(lambda: build_bcd(store, 2)[0][["bcd", "unc", "mask"]].compute(), args.repeat)
        print(f"70 um: {n70} DCEs, {nreads / 1e6:.1f} M reads (pixel x read), stored {mb70:.1f} MB padded, one core")
        print(f"  read raw from store      {t_read70:7.2f} s  {nreads / t_read70 / 1e6:7.2f} M reads/s")
        print(f"  ramp fitting (pipeline)  {t_ramps:7.2f} s  {nreads / t_ramps / 1e6:7.2f} M reads/s/core"
              f"  {n70 / t_ramps:7.1f} DCEs/s")
        print(f"  whole Ge BCD             {t_ge:7.2f} s  {nreads / t_ge / 1e6:7.2f} M reads/s/core"
              f"  {n70 / t_ge:7.1f} DCEs/s")
        # ---------------- the whole job on the runner (both arrays: BCDs into the store + FITS export)
        t_run = best(lambda: reduce_mips(store, work / "out", redo=True, report=lambda line: None), 1)
        print(f"runner, both arrays ({n24 + n70} DCEs: store tables + FITS), one core: {t_run:7.2f} s  "
              f"{(n24 + n70) / t_run:8.1f} DCEs/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
