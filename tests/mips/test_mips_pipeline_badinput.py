"""MIPS level-1 pipeline on bad input: each bad DCE gets one clear reason, is marked and skipped;
the rest is reduced exactly as without it."""
import shutil

import dask
import numpy as np
import pytest
from astropy.io import fits
from conftest import sha256_tree

from reduce.io.store import Store
from reduce.mips.ingest import ingest_mips
from reduce.mips.pipeline import assemble, open_bcd, plan_bcd, reduce_mips
from reduce.simulate.mips import AorSpec, simulate_mips


def _ingest(raw, store):
    lines = []
    summary = ingest_mips([raw], store, report=lines.append)
    return summary, lines


def _bcd(source, chnl):
    with dask.config.set(scheduler="synchronous"):
        return assemble(plan_bcd(source, chnl))[0].compute()


def _status(ds):
    return ds.status.values.astype(object).astype(str)


@pytest.fixture(scope="module")
def store(tmp_path_factory, mips_raw):
    path = tmp_path_factory.mktemp("bcd_bad") / "mips.zarr"
    assert _ingest(mips_raw, path)[0].exit_code == 0
    return path


@pytest.fixture(scope="module")
def good70(store):
    return _bcd(store, 2)


def test_missing_and_mismatched_reference_files(tmp_path, mips_raw):
    raw = tmp_path / "raw"
    shutil.copytree(mips_raw, raw)
    store = tmp_path / "mips.zarr"
    assert _ingest(raw, store)[0].exit_code == 0
    level0 = {k: v for k, v in sha256_tree(store / "mips70").items() if k != "zarr.json"}
    attrs0 = Store(store).open_group("mips70").attrs
    (raw / "aor2" / "cal" / "mips160_flat.fits").unlink()                      # missing
    with fits.open(raw / "aor1" / "cal" / "mips70_dark.fits") as hdul:          # changed after ingest
        hdul[0].data = hdul[0].data * 1.01
        hdul.writeto(raw / "aor1" / "cal" / "mips70_dark.fits", overwrite=True)
    lines = []
    with dask.config.set(scheduler="synchronous"):
        summary = reduce_mips(store, tmp_path / "out", report=lines.append)
    assert summary.exit_code == 1
    c = summary.counts
    assert (c["24 um DCEs"], c["24 um BCDs"], c["24 um skipped"]) == (9, 9, 0)
    assert (c["70 um DCEs"], c["70 um BCDs"], c["70 um skipped"]) == (9, 4, 5)
    assert (c["160 um DCEs"], c["160 um BCDs"], c["160 um skipped"]) == (9, 5, 4)
    b70, b160 = open_bcd(store, 2), open_bcd(store, 3)
    s70, s160 = _status(b70), _status(b160)
    aor70, aor160 = b70.aorkey.values, b160.aorkey.values
    assert all("mips70_dark.fits" in s and "SHA-256" in s and "recorded at ingest" in s for s in s70[aor70 == 12345678])
    assert (s70[aor70 == 12346000] == "ok").all()
    assert all("mips160_flat.fits" in s and "missing" in s for s in s160[aor160 == 12346000])
    assert (s160[aor160 == 12345678] == "ok").all()
    assert np.isnan(b70.bcd.values[aor70 == 12345678]).all()
    assert (b70.mask.values[aor70 == 12345678] & 64).all()                    # invalid
    assert np.isfinite(b70.bcd.values[aor70 == 12346000]).mean() > 0.9
    skipped = [line for line in lines if line.startswith("SKIPPED")]
    assert len(skipped) == 9 and all("SPITZER_M" in line for line in skipped)
    assert "mips70_dark.fits" in summary.text()
    after = {k: v for k, v in sha256_tree(store / "mips70").items() if k != "zarr.json"}
    assert after == level0 and Store(store).open_group("mips70").attrs == attrs0   # level 0 untouched
    exported = {p.name.split("_")[1] for p in (tmp_path / "out").glob("*_bcd.fits")}
    assert not list((tmp_path / "out").glob("SPITZER_M2_12345678_*"))
    assert exported == {"M1", "M2", "M3"}
    assert summary.files == len(list((tmp_path / "out").glob("*.fits")))


def test_wrong_shape_raw_file_rejected_at_ingest_rest_reduced(tmp_path, mips_raw):
    raw = tmp_path / "raw"
    shutil.copytree(mips_raw / "aor1", raw)
    src = sorted(raw.glob("SPITZER_M2_*_raw.fits"))[-1]
    with fits.open(src) as hdul:
        bad = fits.PrimaryHDU(hdul[0].data[:, :16, :], header=hdul[0].header)   # 16 x 32, not 32 x 32
    src.unlink()
    bad.writeto(src, checksum=True)
    store = tmp_path / "mips.zarr"
    summary, lines = _ingest(raw, store)
    assert summary.exit_code == 1
    assert any(line.startswith("REJECTED") and src.name in line and "(24, 16, 32)" in line for line in lines)
    # the wrong-shape cube cannot reach the store, so the pipeline never sees it: the rest is reduced
    bcd = _bcd(store, 2)
    assert bcd.sizes["dce"] == 4 and (_status(bcd) == "ok").all()


def test_every_read_saturated(store, good70):
    ds = Store(store).open_group("mips70").load()
    k = 4                                          # not a stim and not a stim's background
    n = int(ds.nreads[k])
    ds["reads"][k, :n] = 32767
    bcd = _bcd(ds.chunk({"dce": 3}), 2)
    st = _status(bcd)
    assert "every read saturated" in st[k]
    assert (np.delete(st, k) == "ok").all()
    assert np.isnan(bcd.bcd[k]).all() and (bcd.mask[k] & 16).all() and (bcd.mask[k] & 64).all()
    keep = np.arange(bcd.sizes["dce"]) != k
    np.testing.assert_array_equal(bcd.bcd.values[keep], good70.bcd.values[keep])


def test_fewer_than_4_reads(store, good70):
    ds = Store(store).open_group("mips70").load()
    k = 3
    ds = ds.assign_coords(nreads=ds.nreads.copy(data=np.where(np.arange(ds.sizes["dce"]) == k, 3,
                                                               ds.nreads.values).astype(np.int16)))
    plan = plan_bcd(ds.chunk({"dce": 4}), 2)
    _, reports = assemble(plan)
    assert len(reports) == 1 and reports[0].dcenum == int(ds.dcenum[k])
    assert "NREADS = 3" in reports[0].status and "4" in reports[0].status
    assert "SKIPPED SPITZER_M2_12345678" in reports[0].line()
    bcd = _bcd(ds.chunk({"dce": 4}), 2)
    st = _status(bcd)
    assert st[k] == reports[0].status and (np.delete(st, k) == "ok").all()
    keep = np.arange(bcd.sizes["dce"]) != k
    np.testing.assert_array_equal(bcd.bcd.values[keep], good70.bcd.values[keep])


def test_invalid_stim_flash_leaves_aor_without_responsivity(store, good70):
    """A stim whose stim - background <= 0 is not used; its AOR then has no valid stim."""
    ds = Store(store).open_group("mips70").load()
    aor = ds.aorkey.values == 12345678
    k = int(np.flatnonzero(aor & (ds.stimflsh.values == 1))[0])
    bg = ds["reads"][k - 1].values.astype(np.int32)
    n = int(ds.nreads[k])
    weak = bg[:1] + (bg - bg[:1]) // 2                         # half the background's signal
    ds["reads"][k, :n] = weak[:n].astype(np.int16)
    bcd = _bcd(ds.chunk({"dce": 3}), 2)
    st = _status(bcd)
    assert all("AOR 12345678" in s and "no valid stim flash" in s for s in st[aor])
    assert (st[~aor] == "ok").all()
    assert np.isnan(bcd.responsivity.values[aor]).all()
    assert (bcd.mask.values[aor] & 512).all()
    np.testing.assert_array_equal(bcd.bcd.values[~aor], good70.bcd.values[~aor])


def test_aor_without_any_stim_flash(tmp_path):
    specs = [AorSpec(aorkey=30000001, aot_type="MipsPhot", object="NOSTIM", ra=20.0, dec=10.0, start_mjd=53700.0,
                     n_dce=4, arrays=(2, 3), with_stim=False),
             AorSpec(aorkey=30000002, aot_type="MipsPhot", object="STIM", ra=21.0, dec=10.0, start_mjd=53700.1,
                     n_dce=4, arrays=(2, 3))]
    simulate_mips(tmp_path / "raw", seed=3, specs=specs)
    store = tmp_path / "mips.zarr"
    assert _ingest(tmp_path / "raw", store)[0].exit_code == 0
    for chnl in (2, 3):
        plan = plan_bcd(store, chnl)
        _, reports = assemble(plan)
        assert [r.aorkey for r in reports] == [30000001] * 4
        assert all("AOR 30000001 has no stim-flash DCE" in r.status for r in reports)
        bcd = _bcd(store, chnl)
        st = _status(bcd)
        nostim = bcd.aorkey.values == 30000001
        assert (st[~nostim] == "ok").all() and not (st[nostim] == "ok").any()
        assert np.isnan(bcd.bcd.values[nostim]).all()
        assert np.isfinite(bcd.bcd.values[~nostim]).mean() > 0.9
