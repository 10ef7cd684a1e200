"""Ge ramp fitting speed and accuracy: reduce.mips.kernels.ramps.fit_ramps vs stcal.

stcal runs as the JWST pipeline runs it: two-point jump detection then OLS_C,
one call per DCE, on data we have already linearised (its time excludes that);
ours includes linearity, saturation, jumps and fitting for all DCEs in one call.
Single core. Usage: python benchmarks/bench_ramps.py [--ndce 40] [--nread 32]
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "mips"))
from test_ramps import COEFFS, GAIN, RDNOISE, inject, make_ramps  # noqa: E402
from test_ramps_vs_stcal import stcal_jumps, stcal_layout, stcal_ols, DQFLAGS  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ndce", type=int, default=40)
    ap.add_argument("--nread", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    logging.getLogger("stcal").setLevel(logging.WARNING)
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass

    rng = np.random.default_rng(2026)
    shape = (args.ndce, args.nread, 32, 32)
    rate = rng.uniform(5.0, 3000.0, (args.ndce, 32, 32))
    # Ge arrays: up to one hit per pixel per 35 s; amplitudes 5 and 10 sigma_diff
    p_hit = 0.131072 / 35 / 2
    hits5, steps5 = inject(rng, shape, rate, p_hit, 5.0)
    hits10, steps10 = inject(rng, shape, rate, p_hit, 10.0)
    hits = hits5 | hits10
    reads = make_ramps(rng, *shape, rate=rate, cr=steps5 + steps10)
    nreads_total = reads.size
    kw = dict(coeffs=COEFFS, satlevel=32767, rdnoise=RDNOISE, gain=GAIN, cr_threshold=args.threshold)

    t0 = time.perf_counter()
    from reduce.mips.kernels.ramps import fit_ramps

    ours = fit_ramps(reads[:1], args.nread, **kw)
    first = time.perf_counter() - t0
    layout = stcal_layout(reads, args.nread)
    t_ours, t_st = [], []
    for _ in range(args.repeat):  # interleaved, best of each: the machine is shared
        t0 = time.perf_counter()
        ours = fit_ramps(reads, args.nread, **kw)
        t_ours.append(time.perf_counter() - t0)
        slopes, jumps = [], []
        t0 = time.perf_counter()
        for data, gdq in layout:
            gdq = stcal_jumps(data, gdq, rdnoise=RDNOISE, gain=GAIN, threshold=args.threshold)
            s, _ = stcal_ols(data, gdq, rdnoise=RDNOISE, gain=GAIN)
            slopes.append(s)
            jumps.append((gdq[0] & DQFLAGS["JUMP_DET"]) > 0)
        t_st.append(time.perf_counter() - t0)
    s_slope, s_jump = np.array(slopes), np.array(jumps)

    r_ours, r_st = nreads_total / min(t_ours), nreads_total / min(t_st)
    print(f"ramps: {args.ndce} DCEs x {args.nread} reads x 32x32 pixels = {nreads_total} reads, 1 core")
    print(f"first call (import + numba cache load or compile): {first:.2f} s")
    print(f"ours  fit_ramps (lin+sat+jumps+fit): {min(t_ours):.3f} s  {r_ours / 1e6:.2f} Mreads/s/core")
    print(f"stcal jump+OLS_C per DCE:            {min(t_st):.3f} s  {r_st / 1e6:.2f} Mreads/s/core")
    print(f"speed ratio ours/stcal: {r_ours / r_st:.1f}x")

    det = ours["cr_reads"]
    clean = ~hits.any(axis=1) & ~s_jump.any(axis=1) & (ours["ncr"] == 0)
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    pull = ((ours["slope"] - rate) / ours["error"])[clean]
    print(
        f"accuracy (CR-free pixels, N={clean.sum()}): rms(slope-truth) ours {rms((ours['slope'] - rate)[clean]):.3f}"
        f" stcal {rms((s_slope - rate)[clean]):.3f} DN/s; ours pull mean {pull.mean():+.3f} std {pull.std():.3f};"
        f" median |ours-stcal|/err {np.median(np.abs(ours['slope'] - s_slope)[clean] / ours['error'][clean]):.3f}"
    )
    for name, h in (("5 sigma_diff", hits5), ("10 sigma_diff", hits10)):
        print(f"CR completeness {name}: ours {(det & h).sum() / h.sum():.3f}  stcal {(s_jump & h).sum() / h.sum():.3f}")
    nf_o, nf_s = (det & ~hits).sum(), (s_jump & ~hits).sum()
    print(f"false jumps per read: ours {nf_o / (~hits).sum():.2e} ({nf_o})  stcal {nf_s / (~hits).sum():.2e} ({nf_s})")
    hp = hits.any(axis=1)
    print(
        f"CR-hit pixels: median |slope-truth|/err ours {np.median(np.abs(ours['slope'] - rate)[hp] / ours['error'][hp]):.2f}"
        f"  stcal {np.median(np.abs(s_slope - rate)[hp] / ours['error'][hp]):.2f}"
    )


if __name__ == "__main__":
    main()
