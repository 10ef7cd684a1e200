"""The skyreduce command: exact forms, exit codes (0 / 1 / 2), messages."""
import pytest
from conftest import sha256_tree

from reduce.cli import main
from reduce.io.store import Store


@pytest.fixture(scope="module")
def scheduler():
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as lc:
        yield ["--scheduler", lc.scheduler_address, "-q"]


def test_version_and_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("skyreduce ")
    with pytest.raises(SystemExit) as exc:
        main(["ingest", "swas", "somewhere"])  # --store missing
    assert exc.value.code == 2
    assert "the following arguments are required: --store" in capsys.readouterr().err


def test_simulate_then_ingest_with_a_bad_file(tmp_path, scheduler, capsys):
    out = tmp_path / "raw"
    assert main(["simulate", "swas", str(out), "--days", "1", "--segments-per-day", "2", "--seed", "4", *scheduler]) == 0
    text = capsys.readouterr().out
    assert f"simulated SWAS: 2 level-0 files" in text and "swas_truth.json" in text
    (out / "junk.fits").write_text("not FITS at all")
    before = sha256_tree(out)
    code = main(["ingest", "swas", str(out), "--store", str(tmp_path / "s.zarr"), *scheduler])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip() == f"REJECTED {out / 'junk.fits'}: not a readable FITS file " \
                                   + captured.err.strip().split("not a readable FITS file ", 1)[1]
    assert "2 new files" in captured.out and "1 rejected" in captured.out
    assert Store(tmp_path / "s.zarr").open_group().sizes["segment"] == 2
    assert sha256_tree(out) == before
    # again: nothing new, the bad file still reported, exit 1
    assert main(["ingest", "swas", str(out), "--store", str(tmp_path / "s.zarr"), *scheduler]) == 1
    assert "0 new files" in capsys.readouterr().out


def test_missing_input_and_wrong_store(tmp_path, scheduler, capsys, mips_raw):
    code = main(["ingest", "mips", str(tmp_path / "nowhere"), "--store", str(tmp_path / "m.zarr"), *scheduler])
    assert code == 1
    assert f"REJECTED {tmp_path / 'nowhere'}: no such file or folder" in capsys.readouterr().err
    assert main(["ingest", "mips", str(mips_raw / "aor1"), "--store", str(tmp_path / "m.zarr"), *scheduler]) == 0
    capsys.readouterr()
    code = main(["ingest", "swas", str(mips_raw / "aor1"), "--store", str(tmp_path / "m.zarr"), *scheduler])
    assert code == 2
    assert f"skyreduce: error: {tmp_path / 'm.zarr'} holds a mips_store store, not swas_store" in capsys.readouterr().err


@pytest.mark.slow
def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--workers", "2", "-q"]) == 0
    out = capsys.readouterr().out
    # MIPS: 162 imaging DCEs (2 AORs) and one SED AOR of 6 cycles (30 DCEs)
    assert "simulated SWAS: 12 level-0 files" in out and "simulated MIPS: 192 level-0 files" in out
    assert "ingested SWAS" in out and "0 rejected" in out
    assert Store(tmp_path / "demo" / "swas.zarr").open_group().sizes["segment"] == 12
    assert Store(tmp_path / "demo" / "mips.zarr").open_group("mips70").sizes["dce"] == 54
    assert Store(tmp_path / "demo" / "mips.zarr").open_group("mips70sed").sizes["dce"] == 30
    assert "SED: 30 DCEs, 30 BCDs, 0 skipped" in out and "SED: 1 AOR spectra" in out
    assert len(list((tmp_path / "demo" / "products" / "mips").glob("SPITZER_M2_4*_sed.tbl"))) == 1
