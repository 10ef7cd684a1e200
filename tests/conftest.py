import os
import shutil
from pathlib import Path

import dask
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"

# session fixture `slurm_cluster`: a one-node SLURM (munged, slurmctld, slurmd) for the `slurm` tests
from slurm_setup import slurm_cluster  # noqa: E402,F401


@pytest.fixture(scope="session")
def reference_dir():
    """The real reference files of ../shared/reference (skip when absent)."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference files not found at {REFERENCE} (shared/ must sit beside the checkout)")
    return REFERENCE


def require_tool(name):
    """Return the path of an external tool, or skip in a local run / fail in CI."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not installed (make test installs it from Debian)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(autouse=True)
def _dask_scheduler_config_restored():
    """A distributed Client that fails in its __init__ (the TLS refusal tests) leaves dask's global
    config at scheduler='dask.distributed' (distributed's behaviour); put back what was there so
    that no later test computes against a cluster that is gone."""
    keys = ("scheduler", "shuffle")
    before = {k: dask.config.get(k, None) for k in keys}
    yield
    for key, value in before.items():
        if dask.config.get(key, None) != value:
            if value is None:
                dask.config.config.pop(key, None)
            else:
                dask.config.set({key: value})


class _RaiseOnCompute:
    """A dask scheduler that raises whenever something tries to compute."""

    def __call__(self, dsk, keys, **kwargs):
        raise RuntimeError("a dask graph was computed while it should only have been built")


@pytest.fixture
def raise_if_dask_computes():
    """Context in which any dask compute raises (proves a step stays lazy)."""
    return lambda: dask.config.set(scheduler=_RaiseOnCompute())


class HalfThenDiskFull:
    """Stand-in for ``open`` whose file object writes half of what it is given, then raises OSError."""

    def __init__(self, path, mode):
        self.fh = open(path, mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, content):
        self.fh.write(content[:len(content) // 2])
        raise OSError("disk full")


VOLATILE_CARDS = {"DATE", "CHECKSUM", "DATASUM"}


def fits_products(out):
    """{relative path: [(header cards without DATE and checksums, data bytes)] per HDU} of every FITS
    file under ``out``: two runs that made the same products compare equal."""
    import numpy as np
    from astropy.io import fits
    res = {}
    for p in sorted(Path(out).rglob("*.fits")):
        with fits.open(p) as hdul:
            res[str(p.relative_to(out))] = [
                ([(c.keyword, str(c.value)) for c in h.header.cards if c.keyword not in VOLATILE_CARDS],
                 None if h.data is None else np.ascontiguousarray(h.data).tobytes()) for h in hdul]
    return res


def sha256_tree(folder):
    """{relative path: sha256} of every file under ``folder`` (raw files must never change)."""
    import hashlib
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_stores_identical(a, b):
    """Two stores hold the same data, coordinates, attributes, ledger, quarantine and commit record."""
    import json

    import xarray as xr

    from reduce.io.store import Store

    sa, sb = Store(a), Store(b)
    for spec in sa.schema["groups"]:
        if spec["variables"]:
            xr.testing.assert_identical(sa.open_group(spec["path"]).load(), sb.open_group(spec["path"]).load())
    strip = lambda entries: [{k: v for k, v in e.items() if k != "path"} for e in entries]  # noqa: E731
    assert strip(sa.ledger()) == strip(sb.ledger())
    assert strip(sa.quarantine()) == strip(sb.quarantine())
    state_a, state_b = sa.read_state(), sb.read_state()
    for state in (state_a, state_b):
        for sets in state.get("group_attrs", {}).values():
            for calset in sets.get("calibration_sets", []):
                for entry in calset.values():
                    entry.pop("path", None)
    assert json.dumps(state_a, sort_keys=True) == json.dumps(state_b, sort_keys=True)


@pytest.fixture(scope="session")
def swas_raw(tmp_path_factory):
    """A small simulated SWAS set: 3 segments on day 5 and 1 on day 6 (folders day5/, day6/)."""
    from reduce.simulate.swas import simulate_swas
    from reduce.simulate.swas_plan import make_spec

    root = tmp_path_factory.mktemp("swas_raw")
    day5 = [make_spec(5, 1, "OMC-1", "NOD", 300, start_s=300.0, ground_gap=True),
            make_spec(5, 2, "SGRA-150", "CHOP", 160, lo_shift_kms=-150.0, start_s=1500.0),
            make_spec(5, 3, "G34.3+0.15/A", "MAP", 240, start_s=2400.0)]
    day6 = [make_spec(6, 1, "OMC-1", "NOD", 200, start_s=300.0)]
    simulate_swas(root / "day5", specs=day5, seed=1)
    simulate_swas(root / "day6", specs=day6, seed=1)
    return root


@pytest.fixture(scope="session")
def mips_raw(tmp_path_factory):
    """A small simulated MIPS set: aor1/ (photometry, 3 s DCEs) and aor2/ (scan map, 4 s DCEs)."""
    from reduce.simulate.mips import AorSpec, simulate_mips

    root = tmp_path_factory.mktemp("mips_raw")
    simulate_mips(root / "aor1", seed=2, specs=[AorSpec(
        aorkey=12345678, aot_type="MipsPhot", object="FIELD A", ra=150.0, dec=2.0,
        start_mjd=53500.0, n_dce=5, exptime_ge=3.0)])
    simulate_mips(root / "aor2", seed=2, specs=[AorSpec(
        aorkey=12346000, aot_type="MipsScan", object="FIELD B", ra=151.0, dec=2.5,
        start_mjd=53500.2, n_dce=4, exptime_ge=4.0)])
    return root
