"""MIPS SED bad input (issue 11, part 5): an SED AOR without OFF DCEs, without stim flashes, with
every ON DCE saturated, or with a missing SED calibration file gets its reason and no spectrum;
the rest of the run is done; the command exits 1."""
import dataclasses
import shutil

import pytest

from reduce.cli import main
from reduce.mips.ingest import ingest_mips
from reduce.sed.pipeline import open_sed_bcd, reduce_sed
from reduce.simulate.mips import AorSpec, simulate_mips
from reduce.simulate.mips_sed import plan_sed

_BASE = [dataclasses.replace(s, n_cycles=3, exptime=3.0) for s in plan_sed(4, seed=8)]
GOOD, NO_OFF, NO_STIM, SATURATED = (_BASE[0], dataclasses.replace(_BASE[1], with_off=False),
                                    dataclasses.replace(_BASE[2], with_stim=False),
                                    dataclasses.replace(_BASE[3], saturate_on=True))
PHOT = AorSpec(aorkey=21000077, aot_type="MipsPhot", object="PHOT", ra=30.0, dec=5.0, start_mjd=53400.0,
               n_dce=6, arrays=(2,))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("sedbad")
    simulate_mips(root / "raw", seed=8, specs=[], sed_specs=[GOOD, NO_OFF, NO_STIM, SATURATED])
    store = root / "mips.zarr"
    assert ingest_mips([root / "raw"], store, report=lambda line: None).exit_code == 0
    summaries = reduce_sed(store, root / "out", report=lambda line: None)
    return {"root": root, "store": store, "out": root / "out", "summaries": summaries}


def _problems(summaries):
    return [p for s in summaries for p in s.problems]


def test_good_aor_done_bad_ones_explained(bad):
    bcd_run, spec_run = bad["summaries"]
    assert bcd_run.exit_code == 1 and spec_run.exit_code == 1
    out = bad["out"]
    assert (out / f"SPITZER_M2_{GOOD.aorkey}_0.1.0_sed.tbl").is_file()
    for spec in (NO_OFF, NO_STIM, SATURATED):
        assert not list(out.glob(f"SPITZER_M2_{spec.aorkey}_*_sed*")), spec.aorkey
    assert spec_run.units["done"] == 1 and spec_run.units["excluded"] == 3
    problems = _problems(bad["summaries"])
    assert f"SED AOR {NO_OFF.aorkey}: no spectrum: no OFF DCE: the background cannot be removed (ON - OFF)" \
        in problems
    assert any(p.startswith(f"SED AOR {NO_STIM.aorkey}: no spectrum: no usable ON DCE") and
               "has no stim-flash DCE (STIMFLSH=1): responsivity cannot be calibrated" in p for p in problems)
    assert any(p.startswith(f"SED AOR {SATURATED.aorkey}: no spectrum: no usable ON DCE (every ON DCE skipped: ")
               and "pixels of the calibrated window saturated" in p for p in problems)


def test_skipped_dces_named_one_line_each(bad):
    problems = _problems(bad["summaries"][:1])
    lines = [p for p in problems if p.startswith("SKIPPED ")]
    no_stim = [p for p in lines if f"_{NO_STIM.aorkey}_" in p]
    assert len(no_stim) == 5 * NO_STIM.n_cycles
    assert all("MIPS SED DCE" in p and "has no stim-flash DCE" in p for p in no_stim)
    sat = [p for p in lines if f"_{SATURATED.aorkey}_" in p]
    on = [p for p in sat if p.split("_")[4] in ("0001", "0003")]     # DCENUM 1 and 3: the ON DCEs
    assert len(on) == 2 * SATURATED.n_cycles
    assert all(" of the 432 pixels of the calibrated window saturated (reads at the A/D limit dropped)" in p
               for p in on)
    assert not [p for p in lines if f"_{GOOD.aorkey}_" in p or f"_{NO_OFF.aorkey}_" in p]
    # the AOR without OFF DCEs still has its BCDs: only its spectrum is missing
    assert len(list(bad["out"].glob(f"SPITZER_M2_{NO_OFF.aorkey}_*_bcd.fits"))) == 3 * NO_OFF.n_cycles
    status = open_sed_bcd(bad["store"]).status.values.astype(object).astype(str)
    # (the saturated AOR's stim flashes saturate too: none of its DCEs has a responsivity)
    assert (status == "ok").sum() == 5 * GOOD.n_cycles + 3 * NO_OFF.n_cycles


def test_missing_sed_calibration_file(tmp_path, capsys):
    """The SED illumination file removed after ingest: every SED DCE is skipped with the file's
    name, no SED product; the imaging AOR in the same store is reduced; exit 1."""
    simulate_mips(tmp_path / "raw", seed=9, specs=[PHOT], sed_specs=[GOOD])
    store = tmp_path / "mips.zarr"
    assert ingest_mips([tmp_path / "raw"], store, report=lambda line: None).exit_code == 0
    illum = tmp_path / "raw" / "cal" / "mips70sed_illum.fits"
    shutil.move(illum, tmp_path / "elsewhere.fits")
    code = main(["reduce", "mips", "--store", str(store), "--out", str(tmp_path / "out"), "--level", "1", "--quiet"])
    assert code == 1
    text = capsys.readouterr().out
    assert f"calibration file {illum} (ILLUM) is missing" in text
    assert not list((tmp_path / "out").glob(f"SPITZER_M2_{GOOD.aorkey}_*"))
    assert len(list((tmp_path / "out").glob(f"SPITZER_M2_{PHOT.aorkey}_*_bcd.fits"))) == PHOT.n_dce
