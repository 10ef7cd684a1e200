"""``skyreduce batch``: a whole mission from a manifest (ingest what is new, reduce what is not done,
status table), resuming, appending, failures and --redo-failed, manifest errors, the sbatch script."""
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from reduce.batch import ManifestError, cluster_config, load_manifest, render_sbatch, run_batch
from reduce.cli import main
from reduce.runner import read_records

CLUSTER = ["--workers", "1", "--threads-per-worker", "1", "--no-dashboard", "-q"]


def _manifest(folder, text, name="mission.yaml"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _tsv(output):
    lines = (output / "status.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["instrument", "unit", "label", "status", "reason"]
    return [dict(zip(("instrument", "unit", "label", "status", "reason"), line.split("\t"))) for line in lines[1:]]


def _mission(folder, swas_days, mips_aors, swas_raw, mips_raw):
    """A manifest of SWAS days and MIPS AORs of the session fixtures (one MIPS calibration folder)."""
    swas = ", ".join(str(swas_raw / f"day{d}") for d in swas_days)
    mips = ", ".join(str(mips_raw / f"aor{a}") for a in mips_aors)
    return _manifest(folder, f"""\
        name: small-mission
        output: out
        swas:
          raw: [{swas}]
          store: stores/swas.zarr
          levels: [ingest, level1]
        mips:
          raw: [{mips}]
          cal: {mips_raw / 'aor1' / 'cal'}
          store: stores/mips.zarr
        """)


def _records(store, name):
    return {k: (r["status"], r["input_hash"]) for k, r in read_records(store, name).items()}


@pytest.mark.slow
def test_mission_runs_appends_and_resumes(tmp_path, swas_raw, mips_raw, capsys):
    root = tmp_path / "mission"
    out = root / "out"
    # day 5 and AOR 1 first, in this process
    first = run_batch(_mission(root, [5], [1], swas_raw, mips_raw), report=print)
    assert first.exit_code == 0, first.text()
    rows = _tsv(out)
    assert [(r["instrument"], r["status"]) for r in rows] == [("swas", "done")] + [("mips", "done")] * 3
    assert {r["unit"] for r in rows if r["instrument"] == "mips"} == set(read_records(root / "stores/mips.zarr",
                                                                                       "mips_bcd"))
    assert first.instruments["swas"].ingest["new"] == 3 and first.instruments["mips"].summary.ran == 3
    swas_before = _records(root / "stores/swas.zarr", "swas_level1")
    mips_before = _records(root / "stores/mips.zarr", "mips_bcd")
    aor1 = {p: p.stat().st_mtime_ns for p in (out / "mips").glob("SPITZER_M*_12345678_*_bcd.fits")}
    assert aor1
    capsys.readouterr()

    # both days and both AORs, through the command: only the new and the changed units run
    manifest = _mission(root, [5, 6], [1, 2], swas_raw, mips_raw)
    assert main(["batch", str(manifest), *CLUSTER]) == 0
    printed = capsys.readouterr().out
    status = json.loads((out / "status.json").read_text())
    swas, mips = status["instruments"]["swas"], status["instruments"]["mips"]
    assert swas["ingest"]["new"] == 1 and swas["ingest"]["already"] == 3
    assert mips["ingest"]["already"] == 15 and mips["ingest"]["new"] > 0 and mips["ingest"]["rejected"] == 0
    assert swas["ran"] == 1          # the one SWAS unit grew with day 6: changed, done again
    assert mips["ran"] == 3          # the three arrays of AOR 2; AOR 1's units are kept
    after = _records(root / "stores/mips.zarr", "mips_bcd")
    assert {k: after[k] for k in mips_before} == mips_before
    assert swas_before.keys() == _records(root / "stores/swas.zarr", "swas_level1").keys()
    assert {p: p.stat().st_mtime_ns for p in aor1} == aor1
    rows = _tsv(out)
    assert len(rows) == 1 + 6 and all(r["status"] == "done" and r["reason"] == "" for r in rows)
    assert {r["unit"] for r in rows if r["instrument"] == "mips"} == set(after)
    assert [u["unit"] for u in status["units"]] == [r["unit"] for r in rows]
    assert status["exit_code"] == 0 and status["instruments"]["mips"]["level1"]["pipeline"] == "mips_bcd"
    assert "swas" in printed and "mips" in printed and "status.tsv" in printed
    # products
    assert (out / "swas" / "targets.tsv").is_file() and (out / "swas" / "reduction.log").is_file()
    assert list((out / "swas" / "omc-1" / "class").glob("*.fits"))
    for band in (1, 2, 3):
        for aor in (12345678, 12346000):
            assert list((out / "mips").glob(f"SPITZER_M{band}_{aor}_*_bcd.fits")), (band, aor)

    # again: nothing new, said so, exit 0; the table is written again, the same
    tsv = (out / "status.tsv").read_text()
    assert main(["batch", str(manifest), *CLUSTER]) == 0
    printed = capsys.readouterr().out
    assert "nothing new" in printed
    status = json.loads((out / "status.json").read_text())
    assert status["units_run"] == 0 and status["new_files"] == 0 and status["nothing_new"]
    assert (out / "status.tsv").read_text() == tsv


@pytest.mark.slow
def test_failed_unit_is_reported_and_redo_failed_fixes_it(tmp_path, mips_raw, capsys):
    root = tmp_path / "m"
    manifest = _manifest(root, f"""\
        output: out
        mips:
          raw: {mips_raw / 'aor1'}
          store: mips.zarr
        """)
    out = root / "out"
    assert run_batch(manifest, report=print).exit_code == 0
    # a folder standing where one 24 um BCD goes: that unit's export fails, the others are done
    target = sorted((out / "mips").glob("SPITZER_M1_12345678_*_bcd.fits"))[0]
    target.unlink()
    target.mkdir()
    failed = run_batch(manifest, redo=True, report=print)
    assert failed.exit_code == 1
    rows = {r["unit"]: r for r in _tsv(out)}
    assert rows["m24-12345678"]["status"] == "failed"
    assert "export" in rows["m24-12345678"]["reason"] and "IsADirectoryError" in rows["m24-12345678"]["reason"]
    assert rows["m70-12345678"]["status"] == rows["m160-12345678"]["status"] == "done"
    assert "m24-12345678" in failed.text() and "IsADirectoryError" in failed.text()
    # a plain rerun reports it again without retrying it
    again = run_batch(manifest, report=print)
    assert again.exit_code == 1 and again.ran == 0 and _tsv(out) == list(rows.values())
    assert "--redo-failed" in again.text()
    # the obstacle removed, --redo-failed retries that unit only
    target.rmdir()
    capsys.readouterr()
    assert main(["batch", str(manifest), "--redo-failed", *CLUSTER]) == 0
    status = json.loads((out / "status.json").read_text())
    assert status["units_run"] == 1 and status["exit_code"] == 0
    assert all(r["status"] == "done" for r in _tsv(out)) and target.is_file()


@pytest.mark.slow
def test_export_problem_of_a_target_is_in_the_status_table(tmp_path, swas_raw):
    root = tmp_path / "s"
    manifest = _manifest(root, f"""\
        output: out
        swas:
          raw: [{swas_raw / 'day5'}]
          store: swas.zarr
        """)
    (root / "out" / "swas").mkdir(parents=True)
    (root / "out" / "swas" / "omc-1").write_text("a file where the OMC-1 target folder should be\n")
    result = run_batch(manifest, report=print)
    assert result.exit_code == 1
    [row] = _tsv(root / "out")
    assert row["instrument"] == "swas" and row["status"] == "failed"
    assert "export failed" in row["reason"] and "OMC-1" in row["reason"]
    (root / "out" / "swas" / "omc-1").unlink()
    fixed = run_batch(manifest, redo_failed=True, report=print)
    assert fixed.exit_code == 0 and _tsv(root / "out")[0]["reason"] == ""
    assert list((root / "out" / "swas" / "omc-1" / "class").glob("*.fits"))


# ---------------------------------------------------------------- manifest
@pytest.mark.parametrize("text, message", [
    ("output: out\nswas: {raw: [raw], store: s.zarr}\nmisison: x\n",
     "unknown key 'misison' (allowed: name, output, cluster, sbatch, swas, mips)"),
    ("output: out\nswas: {raw: [raw, nowhere], store: s.zarr}\n", "swas.raw: no such folder: {root}/nowhere"),
    ("output: out\nswas: {raw: [raw]}\n", "swas: 'store' (the zarr store of SWAS) is missing"),
    ("output: out\nswas: {raw: [raw], store: s.zarr, levels: [ingest, level2]}\n",
     "swas.levels: unknown level 'level2' (allowed: ingest, level1)"),
    ("output: out\nmips: {raw: [raw], store: s.zarr, calib: raw}\n",
     "mips: unknown key 'calib' (allowed: raw, cal, store, levels)"),
    ("swas: {raw: [raw], store: s.zarr}\n", "'output' (the folder for products and the status table) is missing"),
    ("output: out\nswas: {raw: [raw], store: s.zarr}\ncluster: {workers: 4}\n", "cluster: unknown key 'workers'"),
    ("output: out\nswas: {store: s.zarr, levels: [level1]}\n", "swas.store: {root}/s.zarr does not exist"),
    ("output: out\nswas: {raw: [raw], store: s.zarr}\nmips: {raw: [raw], store: s.zarr}\n",
     "mips.store: {root}/s.zarr is also the store of swas"),
    ("output: [out\n", "not valid YAML"),
])
def test_manifest_error_is_one_clear_line_and_exit_2(tmp_path, capsys, text, message):
    root = tmp_path / "m"
    (root / "raw").mkdir(parents=True)
    manifest = _manifest(root, text)
    assert main(["batch", str(manifest), *CLUSTER]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"skyreduce: error: manifest {manifest}") and message.format(root=root) in lines[0]
    assert captured.out == "" and not (root / "out").exists()


def test_several_manifest_errors_are_one_line_each(tmp_path, capsys):
    manifest = _manifest(tmp_path, "output: out\nextra: 1\nswas: {raw: [a, b], store: s.zarr, levels: [l2]}\n")
    assert main(["batch", str(manifest)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("skyreduce: error: manifest ") for line in lines)
    with pytest.raises(ManifestError) as exc:
        load_manifest(manifest)
    assert len(exc.value.problems) == 4


def test_toml_manifest_relative_paths_and_cluster_section(tmp_path):
    from dask.utils import parse_bytes

    from cluster.connect import resolve_options

    (tmp_path / "raw" / "cal").mkdir(parents=True)
    yml = _manifest(tmp_path, """\
        output: products
        mips: {raw: [raw], cal: raw/cal, store: stores/mips.zarr, levels: [ingest]}
        cluster: {n-workers: 3, memory_limit: 2GiB, scheduler-file: sched.json}
        """)
    toml = _manifest(tmp_path, """\
        output = "products"
        [mips]
        raw = ["raw"]
        cal = "raw/cal"
        store = "stores/mips.zarr"
        levels = ["ingest"]
        [cluster]
        n-workers = 3
        memory_limit = "2GiB"
        scheduler-file = "sched.json"
        """, name="mission.toml")
    a, b = load_manifest(yml), load_manifest(toml)
    assert {**a.to_dict(), "path": None} == {**b.to_dict(), "path": None}
    spec = a.instruments["mips"]
    assert spec.raw == (tmp_path / "raw",) and spec.cal == tmp_path / "raw" / "cal"
    assert spec.store == tmp_path / "stores" / "mips.zarr" and spec.levels == ("ingest",)
    assert spec.products == tmp_path / "products" / "mips" and a.output == tmp_path / "products"
    assert a.cluster["skyreduce.cluster.scheduler-file"] == str(tmp_path / "sched.json")
    import dask
    config = cluster_config(a)
    config.pop("skyreduce.cluster.scheduler-file")
    with dask.config.set(config):
        assert resolve_options().n_workers == 3 and resolve_options().memory_limit == parse_bytes("2GiB")
        assert resolve_options(n_workers=2).n_workers == 2          # a CLI option wins


# ---------------------------------------------------------------- sbatch
def _sbatch_manifest(tmp_path):
    (tmp_path / "raw").mkdir()
    return _manifest(tmp_path, """\
        output: products
        swas: {raw: [raw], store: swas.zarr}
        sbatch: {partition: long, time: "2-00:00:00", cpus: 16, extra: ["--qos=mission"]}
        """)


def test_print_sbatch(tmp_path, capsys):
    manifest = _sbatch_manifest(tmp_path)
    assert main(["batch", str(manifest), "--print-sbatch", "--cpus", "4", "--mem", "8G", "--account", "astro",
                 "--redo-failed"]) == 0
    text = capsys.readouterr().out
    log = tmp_path / "products" / "logs" / "skyreduce-batch-%j.log"
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH ")]
    assert directives == ["#SBATCH --job-name=skyreduce-batch", "#SBATCH --nodes=1", "#SBATCH --ntasks=1",
                          "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G", "#SBATCH --time=2-00:00:00",
                          "#SBATCH --partition=long", "#SBATCH --account=astro", f"#SBATCH --output={log}",
                          "#SBATCH --open-mode=append", "#SBATCH --qos=mission"]
    assert text.startswith("#!/bin/bash\n") and "\nset -euo pipefail\n" in text
    body = text.split("set -euo pipefail", 1)[1]
    assert "#SBATCH" not in body                      # sbatch reads directives only before the first command
    assert f"MANIFEST={manifest}\n" in text
    assert ('"$SKYREDUCE" batch "$MANIFEST" --workers "$WORKERS" --threads-per-worker 1 --no-dashboard' in text
            and "--redo-failed" in body)
    assert 'WORKERS="${SLURM_CPUS_PER_TASK:-1}"' in text
    assert (tmp_path / "products" / "logs").is_dir()          # SLURM opens the log before the job starts
    assert not (tmp_path / "products" / "status.tsv").exists()  # nothing was run
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_sbatch_script_runs_the_command_with_the_allocation(tmp_path):
    manifest = _sbatch_manifest(tmp_path)
    text = render_sbatch(manifest, time="01:00:00", mem="4G", job_name="m1", skyreduce="/nonexistent/skyreduce")
    assert "#SBATCH --time=01:00:00" in text and "#SBATCH --cpus-per-task=16" in text
    assert "#SBATCH --job-name=m1" in text and "#SBATCH --partition=long" in text
    assert "#SBATCH --account" not in text
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    stub = tmp_path / "fake-skyreduce"
    stub.write_text('#!/bin/bash\necho "ARGS $*"\nexit 1\n')
    stub.chmod(0o755)
    env = {**os.environ, "SKYREDUCE": str(stub), "SLURM_CPUS_PER_TASK": "3", "SLURM_MEM_PER_NODE": "3000",
           "SLURM_JOB_ID": "42"}
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr                       # the command's exit status is the job's
    assert (f"ARGS batch {manifest} --workers 3 --threads-per-worker 1 --no-dashboard --memory-limit 1000MiB"
            in r.stdout)
    assert "job 42" in r.stdout and "exit status 1" in r.stdout
    env.pop("SLURM_MEM_PER_NODE")
    r = subprocess.run(["bash", str(script)], env={**env, "SLURM_MEM_PER_CPU": "500"}, capture_output=True,
                       text=True, timeout=60)
    assert "--no-dashboard --memory-limit 500MiB\n" in r.stdout
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert f"ARGS batch {manifest} --workers 3 --threads-per-worker 1 --no-dashboard\n" in r.stdout


def test_sbatch_template_is_package_data():
    from importlib import resources
    assert resources.files("cluster").joinpath("skyreduce-batch.sbatch.in").is_file()
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'cluster = ["*.yaml", "*.sbatch.in"]' in pyproject


# ---------------------------------------------------------------- dask performance report
def test_performance_report_beside_the_status_table(tmp_path, swas_raw):
    """One dask performance report per batch run on a cluster (ingest only, to keep it cheap)."""
    from distributed import Client, LocalCluster

    root = tmp_path / "p"
    manifest = _manifest(root, f"output: out\nswas: {{raw: [{swas_raw / 'day6'}], store: swas.zarr, levels: [ingest]}}\n")
    out = root / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as lc, \
            Client(lc) as client:
        result = run_batch(manifest, client=client, report=print)
    assert result.exit_code == 0, result.text()
    html = out / "performance-report.html"
    assert html.is_file() and (out / "status.tsv").is_file()
    text = html.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and "dask" in text.lower()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]     # no temporary left
    status = json.loads((out / "status.json").read_text())
    assert status["performance_report"] == {"path": str(html), "reason": ""}
    assert f"dask performance report: {html}" in result.text()

    # without a distributed client: none written, and the status says why
    html.unlink()
    again = run_batch(manifest, report=print)
    assert again.exit_code == 0 and not html.exists()
    status = json.loads((out / "status.json").read_text())
    assert status["performance_report"]["path"] is None
    assert "without a dask distributed client" in status["performance_report"]["reason"]
    assert "dask performance report: none (the batch ran without a dask distributed client" in again.text()


def test_lost_scheduler_stops_the_batch_with_the_status_so_far(tmp_path, swas_raw, mips_raw, monkeypatch):
    """A lost dask scheduler ends the whole batch (the next instrument would need it too): the error
    goes up (the command exits 2), the status table says so, and the next instrument is not run."""
    import reduce.batch as batch
    from reduce.runner.core import SchedulerLost

    def lost(spec, level, **kw):
        raise SchedulerLost("lost the dask scheduler at tcp://nowhere:1 in the middle of the swas_level1 run")

    ingested = []
    monkeypatch.setattr(batch, "_reduce", lost)
    monkeypatch.setattr(batch, "_ingest", lambda spec, **kw: ingested.append(spec.store) or None)
    manifest = _mission(tmp_path, [5], [1], swas_raw, mips_raw)
    (tmp_path / "stores" / "swas.zarr").mkdir(parents=True)          # "ingested"
    with pytest.raises(SchedulerLost, match="tcp://nowhere:1"):
        run_batch(manifest, report=print)
    assert ingested == [tmp_path / "stores" / "swas.zarr"]             # mips never started
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert "lost the dask scheduler at tcp://nowhere:1" in json.dumps(status)


def test_mips_level2_runs_mosaics_and_sed(tmp_path):
    """``levels: [ingest, level1, level2]`` for MIPS: the BCDs of imaging and SED AORs, then the
    mosaics and the SED spectra; one status row per unit of every pipeline; a rerun runs nothing."""
    import dataclasses

    from reduce.simulate.mips import AorSpec, simulate_mips
    from reduce.simulate.mips_sed import plan_sed
    phot = AorSpec(aorkey=21000099, aot_type="MipsPhot", object="B", ra=10.0, dec=1.0, start_mjd=53400.0,
                   n_dce=6, arrays=(1,))
    sed = dataclasses.replace(plan_sed(1, seed=4)[0], n_cycles=3, exptime=3.0)
    simulate_mips(tmp_path / "raw", seed=4, specs=[phot], sed_specs=[sed])
    path = _manifest(tmp_path, """\
        output: out
        mips:
          raw: [raw]
          store: mips.zarr
          levels: [ingest, level1, level2]
        """)
    res = run_batch(path, report=print)
    assert res.exit_code == 0, res.text()
    rows = _tsv(tmp_path / "out")
    assert sorted(r["unit"] for r in rows) == sorted(["m24-21000099", f"sed-{sed.aorkey}", "m24-21000099",
                                                      f"sed-{sed.aorkey}"])
    assert all(r["status"] == "done" for r in rows)
    products = tmp_path / "out" / "mips"
    assert len(list(products.glob("SPITZER_M1_21000099_*_maic.fits"))) == 1
    assert (products / f"SPITZER_M2_{sed.aorkey}_0.1.0_sed.tbl").is_file()
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["instruments"]["mips"]["level1"]["pipeline"] == "mips_bcd+mips_sed_bcd+mips_mosaic+mips_sed"
    again = run_batch(path, report=print)
    assert again.exit_code == 0 and again.nothing_new, again.text()
