"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel on demo-like stores.

The kernel is the ``python3`` kernelspec that ipykernel installs into the environment running
the tests (jupyter_client starts it with this very interpreter); it inherits the test's
environment, so ``SKYREDUCE_DATA`` points it at fresh copies of the stores and
``SKYREDUCE_NOTEBOOK_THREADS`` gives it a one-worker threaded cluster.
"""
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
PROBE = "import sys\nprint('KERNEL-PREFIX', sys.prefix)\nprint('KERNEL-PYTHON', sys.executable)"

# lines each notebook must print (a notebook not listed here only has to run without errors)
EXPECT = {
    "explore_stores.ipynb": ["ZERO:", "peak", "first reads"],
    "level1_step_by_step.ipynb": ["pairs graph:", "none run yet", "radiometer", "peak Ta*", "v_LSR",
                                  "swas_level1 on", "stored coadds", "median slope", "cosmic-ray jump",
                                  "stored 70 um BCDs", "mips_bcd on"],
    "irac_stability.ipynb": ["first frame:", "intrapixel:"],
    "mips_ramps_to_mosaic.ipynb": ["ramp of pixel", "BCD graph:", "none run yet", "BCD of DCE", "stored BCD of DCE",
                                   "mips_bcd on", "mips_mosaic on", "exit code 0", "mosaic: (", "NFRAMES"],
    "stability.ipynb": ["none run yet", "swas_segments:", "Tsys of segment", "mips_responsivity:",
                        "responsivity 70 um:", "index.html at"],
}


@pytest.fixture(scope="module")
def demo_stores(tmp_path_factory, swas_raw, mips_raw):
    """swas.zarr (4 segments) and mips.zarr (2 AORs, 24/70/160 um), as `skyreduce demo` makes them."""
    from reduce.mips.ingest import ingest_mips
    from reduce.swas.ingest import ingest_swas

    root = tmp_path_factory.mktemp("nbdata")
    assert ingest_swas([swas_raw], root / "swas.zarr", report=print).exit_code == 0
    assert ingest_mips([mips_raw / "aor1", mips_raw / "aor2"], root / "mips.zarr", report=print).exit_code == 0
    return root


def _text(cell):
    """What a code cell printed (stdout, stderr) and displayed (text/plain)."""
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append(o["text"])
        elif o["output_type"] in ("execute_result", "display_data"):
            out.append(o["data"].get("text/plain", ""))
    return "".join(out)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, demo_stores, tmp_path, monkeypatch):
    data = tmp_path / "data"          # a copy per notebook: the level-1 runs write into the stores
    shutil.copytree(demo_stores, data)
    monkeypatch.setenv("SKYREDUCE_DATA", str(data))
    monkeypatch.setenv("SKYREDUCE_NOTEBOOK_THREADS", "1")
    raw = json.loads(path.read_text())
    for i, cell in enumerate(raw["cells"]):     # nbformat 4.5 wants cell ids; older notebooks lack them
        cell.setdefault("id", f"cell-{i}")
    nb = nbformat.reads(json.dumps(raw), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()      # raises CellExecutionError at the first cell that fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    out = "\n".join(_text(c) for c in code)
    probe = _text(code[0])
    assert f"KERNEL-PREFIX {sys.prefix}\n" in probe, f"the kernel is not this environment's Python: {probe}"
    for expected in EXPECT.get(path.name, []):
        assert expected in out, f"{path.name} did not print {expected!r}:\n{out}"
    if path.name == "level1_step_by_step.ipynb":
        _check_level1(out)


def _check_level1(out):
    """The numbers a user checks in level1_step_by_step.ipynb."""
    ratio = float(re.search(r"radiometer \S+, ratio ([\d.]+)", out).group(1))
    assert 0.8 < ratio < 1.25, f"channel noise / radiometer expectation {ratio}"
    step = re.search(r"peak Ta\* ([\d.]+) K at channel (\d+), v_LSR ([-\d.]+) km/s \(VSOURCE ([-\d.]+)", out)
    peak, channel, v, vsource = float(step[1]), int(step[2]), float(step[3]), float(step[4])
    assert peak > 1.0 and abs(v - vsource) < 3.0, step[0]
    stored = re.search(r"stored 13CO total coadd .*: peak Ta\* ([\d.]+) K at channel (\d+)", out)
    assert (float(stored[1]), int(stored[2])) == (peak, channel), (stored[0], step[0])
    assert out.count("exit code 0") == 2, out
    assert "(1 run now, 0 done before)" in out and "(6 run now, 0 done before)" in out
    jumps = float(re.search(r"pixels with a cosmic-ray jump: ([\d.]+)%", out).group(1))
    assert 0.0 < jumps < 20.0
    without = float(re.search(r"slope / straight line ([\d.]+) without", out).group(1))
    assert abs(without - 1.0) < 0.05
    bcd = re.search(r"stored BCD of DCE \d+: median (\S+) MJy/sr \(step by step above: (\S+)\)", out)
    assert bcd[1] == bcd[2], bcd[0]
