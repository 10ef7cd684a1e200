"""Honest BCD uncertainties (issue 9, part 7): pulls of 70 and 160 um BCDs against the true sky,
inside and outside the stim-flash span of their AOR, when the responsivity drifts ~5 % across it.

Simulated MipsPhot AORs (two at 70 um, sixteen at 160 um, 150 DCEs each, a DCE every ~43 s so an AOR
lasts ~1.8 h, a stim flash every third DCE as the simulator schedules them, ~every 2 min). The
stim DCEs of the first 10 and the last 20 DCEs are lost (their files removed before ingest), so
~7 min of an AOR come before its first stim and ~16 min after its last. The simulator's
responsivity is 1 + 4 % sin(2 pi (MJD - 53000) / 0.25 d + phase[array]); each AOR ends 20 min
after its array's responsivity falls fastest (~4 %/h; ~5 % across the AOR, ~6 % in the data the
issue was found on), where holding the last stim's value ('linear' outside the stims) is worst.
The default drift model ('gp', reduce.mips.kernels.responsivity) must give pulls
(BCD - true sky) / unc with |mean| < 0.1 and std within 10 % of 1 on each side of the stim span,
the responsivity error included in ``unc``; the former model fails outside at 160 um.
"""
import json

import dask
import numpy as np
import pytest

from reduce.mips.calib import load_calibration
from reduce.mips.ingest import ingest_mips
from reduce.mips.kernels.ramps import GeParams
from reduce.mips.pipeline import BcdParams, assemble, plan_bcd
from reduce.simulate.mips import AorSpec, dce_duration, responsivity, simulate_mips

SEED = 7
N_DCE, OVERHEAD = 150, 40.0
LOST_FIRST, LOST_LAST = 10, 20       # stim DCEs lost at the start / end of each AOR
N_AOR = {2: 2, 3: 16}                 # AORs per array (160 um DCEs are cheap, their pulls noisier)

pytestmark = pytest.mark.slow


def _specs():
    """N_AOR[array] photometry AORs per array (70 and 160 um apart: their drifts have different phases)
    whose block ends 20 min after the steepest fall of that array's responsivity."""
    proto = AorSpec(aorkey=0, aot_type="MipsPhot", object="", ra=0.0, dec=0.0, start_mjd=0.0,
                    n_dce=N_DCE, exptime_ge=3.0, arrays=(3,), overhead=OVERHEAD)
    block = N_DCE * dce_duration(proto) / 86400.0                 # d
    grid = 53600.0 + np.linspace(0.0, 0.25, 5001)                 # one period of the drift
    specs = []
    for chnl in (2, 3):
        fall = grid[np.argmin(np.gradient(responsivity(chnl, grid, seed=SEED)))]
        end = fall + 20 / 1440.0                                  # ~5 % drift across the block
        specs += [AorSpec(aorkey=31000001 + 100 * chnl + k, aot_type="MipsPhot", object=f"PULL{chnl}{k}",
                          ra=40.0 + 7 * k, dec=-20.0 + 3 * k, start_mjd=float(end - block + 0.25 * (k + 1)),
                          n_dce=N_DCE, exptime_ge=3.0, arrays=(chnl,), pa=30.0 + 40 * k, overhead=OVERHEAD)
                  for k in range(N_AOR[chnl])]
    return specs


def simulate(raw):
    """Simulate the AORs into ``raw``, then remove the stim DCEs near their ends."""
    simulate_mips(raw, seed=SEED, specs=_specs())
    for d in json.loads((raw / "mips_truth.json").read_text())["dces"]:
        if d["stim"] and (d["index"] < LOST_FIRST or d["index"] >= N_DCE - LOST_LAST):
            (raw / d["file"]).unlink()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("bcd_pulls")
    simulate(root / "raw")
    store = root / "mips.zarr"
    assert ingest_mips([root / "raw"], store, report=lambda line: None).exit_code == 0
    return root, store


def _pulls(sim, chnl, method):
    """(pulls inside, pulls outside the stim span, true responsivity drift within one AOR)."""
    root, store = sim
    params = BcdParams(ge=GeParams(resp_method=method))
    with dask.config.set(scheduler="synchronous"):
        plan = plan_bcd(store, chnl, params=params)
        bcd = assemble(plan, params)[0][["bcd", "unc"]].compute()
    truth = json.loads((root / "raw" / "mips_truth.json").read_text())
    npz = np.load(root / "raw" / "mips_truth.npz")
    by_file = {d["file"]: d for d in truth["dces"] if d["chnl"] == chnl}
    dces = [by_file[f] for f in bcd.source_file.values.astype(object)]
    assert len(dces) == N_AOR[chnl] * (N_DCE - 3 - 7)
    flux = np.stack([npz[f"{d['npz']['key']}_flux"][d["npz"]["index"]] for d in dces])   # true sky, MJy/sr
    sat = np.stack([npz[f"{d['npz']['key']}_sat"][d["npz"]["index"]] for d in dces])
    cal = load_calibration(root / "raw" / "cal", chnl)
    stim = np.array([d["stim"] for d in dces])
    aor = np.array([d["aorkey"] for d in dces])
    mjd = np.array([d["mjd"] for d in dces])
    nreads = np.array([d["nreads"] for d in dces])
    resp = np.array([d["resp"] for d in dces])
    outside = np.zeros(len(dces), bool)
    for a in np.unique(aor):
        mine = aor == a
        t_stim = mjd[mine & stim]
        outside[mine] = (mjd[mine] < t_stim.min()) | (mjd[mine] > t_stim.max())
    crpix = np.zeros(flux.shape, bool)
    for i, d in enumerate(dces):
        for h in d["crs"]:
            crpix[i, h["y"], h["x"]] = True
    # good, unsaturated, no cosmic ray, not a stim DCE, source-free enough (within 30 % of the
    # DCE's median sky: the truth sky has point sources and clouds on a background)
    sel = (cal.pmask == 0)[None] & np.isfinite(bcd.bcd.values) & ~crpix & ~stim[:, None, None]
    sel &= sat == nreads[:, None, None]
    sel &= flux < 1.3 * np.median(flux, axis=(1, 2), keepdims=True)
    pull = (bcd.bcd.values - flux) / bcd.unc.values
    drift = max(np.ptp(resp[aor == a]) for a in np.unique(aor))
    return pull[sel & ~outside[:, None, None]], pull[sel & outside[:, None, None]], drift


@pytest.mark.parametrize("chnl", [2, 3])
def test_bcd_pulls_unbiased_and_unit_width(sim, chnl):
    inside, outside, drift = _pulls(sim, chnl, "gp")
    assert drift > 0.05                                  # several % of drift within an AOR
    assert outside.size > (3000 if chnl == 2 else 300) and inside.size > 3 * outside.size
    for name, p in (("inside", inside), ("outside", outside)):
        assert abs(p.mean()) < 0.1 and abs(p.std() - 1) < 0.1, (chnl, name, p.mean(), p.std())


def test_former_model_fails_outside_the_stims_at_160um(sim):
    """Holding the last stim's responsivity after the last stim ('linear') biases the 160 um BCDs
    there by ~1 % of the sky, comparable with their noise, and ``unc`` does not know it."""
    inside, outside, _ = _pulls(sim, 3, "linear")
    assert abs(outside.mean()) > 0.2 or abs(outside.std() - 1) > 0.1, (outside.mean(), outside.std())
