"""The notebooks run top to bottom on real stores (their code cells, in order)."""
import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_stores(tmp_path_factory, swas_raw, mips_raw):
    from reduce.mips.ingest import ingest_mips
    from reduce.swas.ingest import ingest_swas

    root = tmp_path_factory.mktemp("nbdata")
    assert ingest_swas([swas_raw], root / "swas.zarr", report=print).exit_code == 0
    assert ingest_mips([mips_raw / "aor1"], root / "mips.zarr", report=print).exit_code == 0
    return root


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, demo_stores, monkeypatch, capsys):
    monkeypatch.setenv("SKYREDUCE_DATA", str(demo_stores))
    monkeypatch.setenv("SKYREDUCE_NOTEBOOK_THREADS", "1")
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    namespace = {"__name__": "__notebook__"}
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"{path.name}[cell {i}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert "ZERO:" in out and "peak" in out and "first reads" in out
