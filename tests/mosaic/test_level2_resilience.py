"""Level 2 killed and rerun (issue 9): ``skyreduce reduce mips`` killed (SIGKILL of the command and
its local dask workers, as a batch system kills a job) right after a mosaic unit and an SED
spectrum unit wrote their store rows, before their products and records; the rerun of the same
command finishes, runs only what was not recorded, and its products and store tables are the
same as those of an undisturbed run."""
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fits_products

from reduce.mips.ingest import ingest_mips
from reduce.runner import read_records
from reduce.simulate.mips import AorSpec, simulate_mips
from reduce.simulate.mips_sed import plan_sed

SKYREDUCE = str(Path(sys.executable).parent / "skyreduce")
PHOT = AorSpec(aorkey=21000055, aot_type="MipsPhot", object="K", ra=20.0, dec=3.0, start_mjd=53400.0,
               n_dce=8, arrays=(1, 2))
SED = dataclasses.replace(plan_sed(1, seed=6)[0], n_cycles=3, exptime=3.0)
LEVEL2_GROUPS = ("level2", "mosaic_frames", "mosaic_units", "sed_spectra", "sed_units")


def _reduce(store, out, env=None, level=2):
    cmd = [SKYREDUCE, "reduce", "mips", "--level", str(level), "--store", str(store), "--out", str(out), "--workers", "1",
           "--threads-per-worker", "1", "--no-dashboard", "-q"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, start_new_session=True, env=env)


def _groups(store):
    return {str(p.relative_to(store)): p.read_bytes()
            for g in LEVEL2_GROUPS for p in sorted((Path(store) / g).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """An ingested store: one 24 + 70 um photometry AOR and one SED AOR."""
    root = tmp_path_factory.mktemp("l2kill")
    simulate_mips(root / "raw", seed=6, specs=[PHOT], sed_specs=[SED])
    store = root / "mips.zarr"
    assert ingest_mips([root / "raw"], store, report=lambda line: None).exit_code == 0
    return store


@pytest.mark.slow
def test_killed_after_level2_rows_written_rerun_is_identical(ingested, tmp_path):
    """The SED spectra run before the mosaics: the 1st level-2 unit written is the SED AOR's (done
    and recorded), the 2nd the first mosaic's: killed there."""
    point, pipeline = "unit_written@2", "mips_mosaic"
    ref_store = shutil.copytree(ingested, tmp_path / "ref.zarr")
    ref = _reduce(ref_store, tmp_path / "ref")
    assert ref.returncode == 0, ref.stdout + ref.stderr
    run_store = shutil.copytree(ingested, tmp_path / "run.zarr")
    first = _reduce(run_store, tmp_path / "out", level=1)            # the BCDs, undisturbed
    assert first.returncode == 0, first.stdout + first.stderr
    killed = _reduce(run_store, tmp_path / "out", env={**os.environ, "SKYREDUCE_FAULT": point})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    done_before = {k for k, r in read_records(run_store, pipeline).items() if r["status"] == "done"}
    assert len(done_before) < len(read_records(ref_store, pipeline))      # the killed unit has no record
    again = _reduce(run_store, tmp_path / "out")
    assert again.returncode == 0, again.stdout + again.stderr
    ran = set(read_records(run_store, pipeline)) - done_before
    assert ran == set(read_records(ref_store, pipeline)) - done_before and ran
    assert set(read_records(run_store, "mips_sed")) == set(read_records(ref_store, "mips_sed"))
    assert fits_products(tmp_path / "out") == fits_products(tmp_path / "ref")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tbl")) == \
        sorted(p.name for p in (tmp_path / "ref").glob("*.tbl"))
    assert _groups(run_store) == _groups(ref_store)
    assert not list((tmp_path / "out").rglob("*.skyreduce-tmp"))
