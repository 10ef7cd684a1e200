"""benchmarks/bench_scale.py at a tiny size: its synthetic stores pass the store schemas, and the tasks
it counts are the client's tasks plus the tasks of every unit's graph (nothing timed)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_scale  # noqa: E402

from reduce.io.store import Store  # noqa: E402


@pytest.mark.parametrize("instrument", ["swas", "mips"])
def test_counted_tasks_are_the_client_tasks_and_every_unit_graph(tmp_path, instrument):
    store = tmp_path / f"{instrument}.zarr"
    if instrument == "swas":
        written = bench_scale.write_swas_store(store, 1, tmp_path)
        assert written["scans"] == bench_scale.SCANS_PER_DAY
        Store(store).open_group()                       # validated against schemas/swas_store.yaml
    else:
        written = bench_scale.write_mips_store(store, 300, tmp_path)
        assert written["dces"] >= 300
        for group in ("mips24", "mips70", "mips160"):
            Store(store).open_group(group)
    res = bench_scale.measure(instrument, store, workers=1, sizing=False)
    pipeline = bench_scale._pipeline(instrument)
    units = pipeline.units(str(store), None)
    per_unit = [len(bench_scale.optimised_graph(pipeline.build_unit(str(store), u))) for u in units]
    assert res["units"] == len(units) > 1 and res["tasks_per_unit"] == per_unit
    assert res["graph_tasks"] == sum(per_unit)
    sizing = len(units) if instrument == "swas" else 0   # SWAS units are sized by a task each; MIPS know their sizes
    assert res["client_tasks"] == len(units) + sizing
    assert res["total_tasks"] == len(units) + sizing + sum(per_unit)
    window = res["window"]
    assert res["in_flight_tasks"] == min(window, len(units)) + max(
        sum(per_unit[i:i + window]) for i in range(max(len(units) - window + 1, 1)))
