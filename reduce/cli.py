"""The ``skyreduce`` command: thin layer that parses, connects to a cluster and calls the library.

Exit codes: 0 all went well; 1 some inputs were rejected or some units failed (the rest done);
2 usage or fatal error, among them a dask scheduler lost in the middle of a run (what was done
is kept: rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import ReduceError

log = logging.getLogger("reduce.cli")


def _cluster_parent():
    from cluster.options import add_cluster_arguments

    parent = argparse.ArgumentParser(add_help=False)
    add_cluster_arguments(parent)
    parent.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only results and problems")
    parent.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    from cluster.options import _positive_int

    parent = _cluster_parent()
    parser = argparse.ArgumentParser(prog="skyreduce", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"skyreduce {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write simulated level-0 files (with a truth file)")
    sim = simulate.add_subparsers(dest="instrument", required=True)
    p = sim.add_parser("swas", parents=[parent], help="SWAS level-0.5 segment files")
    p.add_argument("outdir", type=Path)
    p.add_argument("--days", type=int, default=1, help="mission days to simulate (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-day", type=int, default=1, help="first mission day (day 1 = 1998-11-01)")
    p.add_argument("--segments-per-day", type=int, default=None)
    p.add_argument("--tsys-step-day", type=_positive_int, default=None, metavar="D",
                   help="mission day (>= 1) from which the receiver temperatures step up (default 15; "
                        "reduce.simulate.swas_mission)")
    p.add_argument("--no-drifts", action="store_true",
                   help="no mission drifts (gain drift, Tsys step, gain fluctuations)")
    p = sim.add_parser("mips", parents=[parent], help="Spitzer MIPS raw DCE files and calibration files")
    p.add_argument("outdir", type=Path)
    p.add_argument("--aors", type=int, default=2, help="observation requests to simulate (default 2)")
    p.add_argument("--start-mjd", type=float, default=53500.0, metavar="MJD",
                   help="start of the first AOR (default 53500; the simulated drifts start at MJD 53750)")
    p.add_argument("--span-days", type=float, default=0.0, metavar="DAYS",
                   help="spread the AORs evenly over this many days (default: 0.1 day apart)")
    p.add_argument("--sed-aors", type=int, default=1, metavar="N",
                   help="SED-mode observation requests to simulate (default 1; AORKEYs 40000000 and up)")
    p.add_argument("--seed", type=int, default=0)

    ingest = commands.add_parser("ingest", help="ingest level-0 files into a zarr store (incremental)")
    ing = ingest.add_subparsers(dest="instrument", required=True)
    for name in ("swas", "mips"):
        p = ing.add_parser(name, parents=[parent], help=f"{name.upper()} level-0 files or folders")
        p.add_argument("raw", nargs="+", type=Path, metavar="RAW", help="files or folders")
        p.add_argument("--store", type=Path, required=True)
        p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait this long for another ingest's lock on the store (default: refuse at once)")
        if name == "mips":
            p.add_argument("--cal", type=Path, default=None, help="calibration folder (default: cal/ beside the raw files)")

    red = commands.add_parser("reduce", help="reduce a store to level-1 FITS products")
    rd = red.add_subparsers(dest="instrument", required=True)
    for name, what in (("swas", "SWAS level-0.5 store -> level-1 coadded spectra (IRAF and CLASS FITS)"),
                       ("mips", "MIPS store -> level-1 BCD images (with uncertainty and mask)")):
        p = rd.add_parser(name, parents=[parent], help=what)
        p.add_argument("--store", type=Path, required=True)
        p.add_argument("--out", type=Path, required=True, help="folder for the products")
        p.add_argument("--redo", action="store_true",
                       help="recompute every unit, also those already done (default: only what is not done yet)")
        p.add_argument("--redo-failed", action="store_true", help="retry the units that failed before")
        p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait this long for another writer's lock on the store (default: refuse at once)")
        if name == "mips":
            p.add_argument("--level", type=int, choices=(1, 2), default=2,
                           help="2 (default): BCDs, then the post-BCD mosaics of every AOR and array; 1: BCDs only")
            p.add_argument("--refcat", type=Path, default=None, metavar="FILE",
                           help="reference positions (CSV with columns ra,dec in deg, or a FITS table with RA, DEC) "
                                "that tie the refined pointing to absolute positions; default: relative refinement")

    p = commands.add_parser("mosaic", parents=[parent],
                            help="mosaic BCD FITS files (ours or the SSC's, MIPS or IRAC): one mosaic per array, "
                                 "or per AOR and array")
    p.add_argument("bcds", nargs="+", type=Path, metavar="BCD", help="BCD FITS files or folders (searched for *_bcd.fits)")
    p.add_argument("--out", type=Path, required=True, help="folder for the products (its work/ store keeps the state)")
    p.add_argument("--refcat", type=Path, default=None, metavar="FILE", help="reference positions (as for reduce mips)")
    p.add_argument("--per-aor", action="store_true", help="one mosaic per AOR and array (default: per array)")
    p.add_argument("--pixel-scale", type=float, default=None, metavar="ARCSEC",
                   help="output pixel scale (default: MIPS 2.45/4.0/8.0, IRAC 0.6)")
    p.add_argument("--redo", action="store_true", help="recompute every mosaic, also those already done")
    p.add_argument("--redo-failed", action="store_true", help="retry the mosaics that failed before")

    trend = commands.add_parser("trend", help="instrument-stability time series of a store: tables, plots with "
                                "fitted trends, index.html")
    tr = trend.add_subparsers(dest="instrument", required=True)
    for name, what in (("swas", "SWAS: Tsys, noise ratio, gains, dispersion, Allan variance, flag rates per segment"),
                       ("mips", "MIPS: stim-flash responsivity, zero level, read noise, cosmic-ray rate, "
                                "saturated fraction")):
        p = tr.add_parser(name, parents=[parent], help=what)
        p.add_argument("--store", type=Path, required=True, help="the store (an ingested one is enough)")
        p.add_argument("--out", type=Path, required=True, help="folder for the tables, plots and index.html")
        p.add_argument("--from", dest="start", metavar="WHEN", default=None,
                       help="first time analysed: ISO date or date-time in UTC, or an MJD (default: the start)")
        p.add_argument("--to", dest="stop", metavar="WHEN", default=None,
                       help="last time analysed: ISO date or date-time in UTC, or an MJD (default: the end)")

    p = commands.add_parser("demo", parents=[parent],
                            help="simulate a small SWAS and MIPS set, ingest both and reduce them (SWAS level 1, "
                                 "MIPS BCDs and mosaics)")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for everything (default demo-output)")

    p = commands.add_parser("batch", parents=[parent],
                            help="reprocess a whole mission from a manifest: ingest what is new, reduce every unit "
                                 "not yet done, write the status table (resumable; for sbatch)")
    p.add_argument("manifest", type=Path, metavar="MANIFEST", help="YAML (or .toml) manifest, see reduce/batch.py")
    redo = p.add_mutually_exclusive_group()
    redo.add_argument("--redo", action="store_true", help="recompute every unit, also those already done")
    redo.add_argument("--redo-failed", action="store_true", help="retry the units that failed before")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another writer's lock on a store (default: refuse at once)")
    s = p.add_argument_group("sbatch script", "--print-sbatch prints the SLURM job script that runs this command "
                             "in one allocation (and creates OUTPUT/logs/ for its log); directives: these options, "
                             "else the manifest's sbatch: section, else the defaults")
    s.add_argument("--print-sbatch", action="store_true", help="print the job script and exit (runs nothing)")
    s.add_argument("--partition", metavar="P", help="#SBATCH --partition")
    s.add_argument("--account", metavar="A", help="#SBATCH --account")
    s.add_argument("--time", metavar="T", help="#SBATCH --time (default 24:00:00)")
    s.add_argument("--cpus", metavar="N", type=int, help="#SBATCH --cpus-per-task = dask workers (default 8)")
    s.add_argument("--mem", metavar="M", help="#SBATCH --mem (default 32G)")
    s.add_argument("--job-name", metavar="NAME", help="#SBATCH --job-name (default skyreduce-batch)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except ReduceError as exc:
        print(f"skyreduce: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skyreduce: interrupted", file=sys.stderr)
        return 2


def _run(args) -> int:
    from cluster.options import connect_from_args

    if args.command == "batch":              # reads its manifest (and cluster config) before connecting
        return _batch(args)
    if args.command == "trend":              # checks --from / --to before connecting
        return _trend(args)
    with connect_from_args(args) as client:
        if args.command == "simulate":
            return _simulate(args, client)
        if args.command == "ingest":
            return _ingest(args, client)
        if args.command == "reduce":
            return _reduce(args, client)
        if args.command == "demo":
            return _demo(args, client)
        if args.command == "mosaic":
            return _mosaic(args, client)
    raise AssertionError(args.command)


def _simulate(args, client, instrument=None, outdir=None):
    instrument = instrument or args.instrument
    outdir = outdir or args.outdir
    if instrument == "swas":
        from .simulate.swas import simulate_swas
        from .simulate.swas_mission import MissionDrifts
        drifts = MissionDrifts.off() if getattr(args, "no_drifts", False) else MissionDrifts()
        if getattr(args, "tsys_step_day", None) is not None:
            drifts = drifts.with_(tsys_step_day=args.tsys_step_day)
        result = simulate_swas(outdir, days=getattr(args, "days", 1), seed=args.seed,
                               start_day=getattr(args, "start_day", 1),
                               segments_per_day=getattr(args, "segments_per_day", None), client=client,
                               progress=not args.quiet, drifts=drifts)
    else:
        from .simulate.mips import simulate_mips
        from .simulate.mips_sed import plan_sed
        sed_specs = plan_sed(getattr(args, "sed_aors", 1), seed=args.seed)  # the demo: one SED AOR
        from .simulate.mips import plan_mips
        specs = plan_mips(aors=getattr(args, "aors", 2), seed=args.seed, start_mjd=getattr(args, "start_mjd", 53500.0),
                          span_days=getattr(args, "span_days", 0.0))
        result = simulate_mips(outdir, seed=args.seed, specs=specs, client=client, progress=not args.quiet,
                               sed_specs=sed_specs)
    mb = result.get("bytes", 0) / 1e6
    print(f"simulated {instrument.upper()}: {len(result['files'])} level-0 files ({mb:.1f} MB) in {outdir}")
    print(f"  truth: {result['truth']}")
    return 0


def _ingest(args, client, instrument=None, raw=None, store=None):
    instrument = instrument or args.instrument
    raw = raw or args.raw
    store = store or args.store
    report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    kwargs = dict(client=client, wait=getattr(args, "wait", 0.0), progress=not args.quiet, report=report)
    if instrument == "swas":
        from .swas.ingest import ingest_swas
        summary = ingest_swas(raw, store, **kwargs)
    else:
        from .mips.ingest import ingest_mips
        summary = ingest_mips(raw, store, cal_dir=getattr(args, "cal", None), **kwargs)
    rate = summary.raw_bytes / 1e6 / summary.seconds if summary.seconds else 0.0
    rows = ", ".join(f"{k} +{v}" for k, v in sorted(summary.rows.items())) or "nothing new"
    print(f"ingested {instrument.upper()} into {store}: {len(summary.ingested)} new files "
          f"({summary.raw_bytes / 1e6:.1f} MB, {rate:.1f} MB/s; {rows}); "
          f"{len(summary.already)} already in the store; {len(summary.rejected)} rejected")
    if summary.rejected:
        print(f"  rejected inputs are listed in {Path(store) / '.skyreduce' / 'quarantine.jsonl'}")
    return summary.exit_code


def _reduce(args, client):
    report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.instrument == "swas":
        from .swas.pipeline import reduce_swas as run
    else:
        from .mips.pipeline import reduce_mips as run
    kwargs = dict(client=client, progress=not args.quiet, report=report, redo=getattr(args, "redo", False),
                  redo_failed=getattr(args, "redo_failed", False), wait=getattr(args, "wait", 0.0))
    summary = run(args.store, args.out, **kwargs)
    print(summary.text())
    if args.instrument != "mips":
        return summary.exit_code
    from .sed.pipeline import reduce_sed
    sed = reduce_sed(args.store, args.out, level=args.level, **kwargs)     # [] without SED DCEs
    for s in sed:
        print(s.text())
    codes = [summary.exit_code] + [s.exit_code for s in sed]
    if args.level == 1:
        return max(codes)
    from .mosaic.files import usable_refcat
    from .mosaic.pipeline import MosaicParams, reduce_mips_level2
    refcat, bad = usable_refcat(args.refcat)
    if bad:
        report(bad)
    level2 = reduce_mips_level2(args.store, args.out, params=MosaicParams().with_refcat(refcat), **kwargs)
    print(level2.text())
    return max(codes + [level2.exit_code, 1 if bad else 0])


def _mosaic(args, client):
    from .mosaic.files import mosaic_files
    report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    summary = mosaic_files(args.bcds, args.out, refcat=args.refcat, per_aor=args.per_aor,
                           pixel_scale=args.pixel_scale, client=client, progress=not args.quiet, report=report,
                           redo=args.redo, redo_failed=args.redo_failed)
    print(summary.text())
    return summary.exit_code


def _demo(args, client):
    """Simulate, ingest and reduce both instruments; print where everything is and a short table."""
    from .mips.pipeline import reduce_mips
    from .swas.pipeline import reduce_swas

    out = args.out
    args.seed = 0
    report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    codes, summaries = [], {}
    for instrument in ("swas", "mips"):
        raw = out / "raw" / instrument
        codes.append(_simulate(args, client, instrument, raw))
        codes.append(_ingest(args, client, instrument, [raw], out / f"{instrument}.zarr"))
    from .mosaic.pipeline import reduce_mips_level2
    from .sed.pipeline import SedBcd, SedSpectrum
    from .runner import run

    for instrument, reduce_fn in (("swas", reduce_swas), ("mips", reduce_mips), ("mips2", reduce_mips_level2),
                                  ("mips_sed", functools.partial(run, SedBcd())),
                                  ("mips_sed2", functools.partial(run, SedSpectrum()))):
        store = out / f"{instrument[:4]}.zarr"
        summaries[instrument] = summary = reduce_fn(store, out / "products" / instrument[:4], client=client,
                                                    progress=not args.quiet, report=report)
        codes.append(summary.exit_code)
    print()
    print(f"demo in {out}: raw files {out / 'raw'}, stores {out / 'swas.zarr'} and {out / 'mips.zarr'}")
    print(f"  SWAS level 1 -> {out / 'products' / 'swas'} (one folder per target, iraf/ and class/ FITS, "
          "reduction.log)")
    print("\n".join(summaries["swas"].lines))
    print(f"  MIPS BCDs    -> {out / 'products' / 'mips'} (_bcd, _bunc, _bbmsk FITS per DCE)")
    print("\n".join(summaries["mips"].lines))
    print(f"  MIPS level 2 -> {out / 'products' / 'mips'} (_maic, _munc, _mcov FITS and _mptg.tbl per AOR and array)")
    print("\n".join(summaries["mips2"].lines))
    print(f"  MIPS SED     -> {out / 'products' / 'mips'} (27 x 16 rectified _bcd/_bunc/_bbmsk per DCE; _sed.tbl, "
          "_sed.fits, _sedcoadd.fits per AOR)")
    print("\n".join(summaries["mips_sed"].lines + summaries["mips_sed2"].lines))
    for line in [p for s in summaries.values() for p in s.problems]:
        print(f"    problem: {line}")
    print("  open the stores with xarray.open_datatree(path, engine='zarr'), or reduce.swas.open_store(path)")
    return max(codes)


def _trend(args):
    """``skyreduce trend swas|mips``: the study of the store in [--from, --to], written to --out.
    Exit 0; 1 when some units could not be analysed (listed); 2 on a bad WHEN or a fatal error."""
    from cluster.options import connect_from_args

    from .stability.study import parse_when, write_study

    when = {}
    for opt, key in (("--from", "start"), ("--to", "stop")):
        text = getattr(args, key)
        try:
            when[key] = None if text is None else parse_when(text)
        except ValueError as exc:
            print(f"skyreduce: error: {opt}: {exc}", file=sys.stderr)
            return 2
    if when["start"] is not None and when["stop"] is not None and when["start"] > when["stop"]:
        print(f"skyreduce: error: --from {args.start} is after --to {args.stop}", file=sys.stderr)
        return 2
    if not Path(args.store).exists():
        print(f"skyreduce: error: store {args.store} does not exist", file=sys.stderr)
        return 2
    if args.instrument == "swas":
        from .stability.swas import study
    else:
        from .stability.mips import study
    with connect_from_args(args) as client:
        result = study(args.store, start=when["start"], stop=when["stop"], client=client)
        paths = write_study(result, args.out, client=client)
    for line in result.problems:
        print(f"problem: {line}", file=sys.stderr)
    rows = ", ".join(f"{name} {len(df)} rows" for name, df in result.tables.items())
    pngs = sum(1 for p in paths if p.suffix == ".png")
    print(f"{args.instrument.upper()} stability of {args.store} -> {args.out}: {rows}; {pngs} plots; "
          f"{Path(args.out) / 'index.html'}")
    for line in result.notes:
        print(f"  note: {line}")
    return 1 if result.problems else 0


def _batch(args):
    """``skyreduce batch MANIFEST``: validate the manifest, apply its cluster section, run, print the table."""
    import dask

    from cluster.options import connect_from_args

    from .batch import ManifestError, cluster_config, load_manifest, render_sbatch, run_batch

    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        for line in exc.problems:
            print(f"skyreduce: error: {line}", file=sys.stderr)
        return 2
    if args.print_sbatch:
        options = ["--redo"] if args.redo else ["--redo-failed"] if args.redo_failed else []
        text = render_sbatch(manifest, partition=args.partition, time=args.time, cpus=args.cpus, mem=args.mem,
                             account=args.account, job_name=args.job_name, options=options)
        (manifest.output / "logs").mkdir(parents=True, exist_ok=True)
        print(text, end="")
        return 0
    report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    with dask.config.set(cluster_config(manifest)):
        with connect_from_args(args) as client:
            result = run_batch(manifest, client=client, redo=args.redo, redo_failed=args.redo_failed,
                               progress=not args.quiet, report=report, wait=args.wait)
    print(result.text())
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
