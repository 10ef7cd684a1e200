"""The runner's own count of a unit's starts (reduce.runner.core): what a task does when it is
started again after its worker died. The cluster tests are in tests/test_resilience.py."""
import pytest

from reduce.io.store import StoreWriter
from reduce.mips.pipeline import MipsBcd
from reduce.runner import read_records
from reduce.runner.core import _note_start, _run_unit, records_dir, unit_starts


@pytest.fixture(scope="module")
def store(mips_raw, tmp_path_factory):
    from reduce.mips.ingest import ingest_mips
    path = tmp_path_factory.mktemp("failures") / "mips.zarr"
    assert ingest_mips([mips_raw], path, report=print).exit_code == 0
    return path


def test_a_unit_lost_more_than_allowed_fails_without_computing(store, tmp_path):
    """Started a 3rd time after 2 deaths, with allowed-failures 1 (a scheduler you join may allow
    more): recorded failed, no rows, no products, the starts folded into the record."""
    pipeline = MipsBcd()
    unit = pipeline.units(store)[0]
    for _ in range(2):
        _note_start(store, pipeline.name, unit.key)
    with StoreWriter(store, pipeline.store_schema) as writer:
        res = _run_unit(pipeline, str(store), str(tmp_path / "out"), unit, {}, writer.token, 1)
    reason = ("lost with its worker 2 times (the worker process died while the unit ran: killed, out of memory "
              "or crashed; skyreduce.cluster.allowed-failures = 1)")
    assert (res["status"], res["reason"], res["files"]) == ("failed", reason, 0)
    rec = read_records(store, pipeline.name)[unit.key]
    assert (rec["attempts"], rec["rows"], rec["log"]) == (3, {}, [])
    assert unit_starts(store, pipeline.name, unit.key) == []
    assert not (records_dir(store, pipeline.name) / f"{unit.key}.starts").exists()
    assert not (tmp_path / "out").exists()


def test_a_task_started_again_after_its_unit_was_done_returns_the_record(store, tmp_path):
    """A worker that died after the unit's record was written, before its answer reached the
    client: the task runs again and answers with the record, computing nothing."""
    pipeline = MipsBcd()
    unit = pipeline.units(store)[1]
    folder = records_dir(store, pipeline.name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{unit.key}.json").write_text(
        '{"key": "%s", "status": "done", "reason": "", "files": 7, "problems": []}' % unit.key)
    res = _run_unit(pipeline, str(store), str(tmp_path / "out"), unit, {}, "no lock needed", 3)
    assert res == {"key": unit.key, "status": "done", "reason": "", "files": 7, "problems": []}
    assert unit_starts(store, pipeline.name, unit.key) == []
