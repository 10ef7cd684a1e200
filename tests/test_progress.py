"""reduce.progress: a bar on a terminal, one line per phase in a log, nothing when disabled."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reduce.progress import Progress, track

SKYREDUCE = str(Path(sys.executable).with_name("skyreduce"))
LINE = re.compile(r"^(?P<label>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>.+) in \d+\.\d s "
                  r"\((?P<rate>\d+(\.\d+)?) (?P=unit)/s\)$")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_one_line_per_phase_with_counts():
    out = io.StringIO()
    with Progress("checking 12 files", 3, unit="tasks", stream=out) as bar:
        for _ in range(3):
            bar.advance()
    with Progress("writing", 40, unit="chunks", stream=out) as bar:
        bar.advance(15)
        bar.advance(25)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2 and text.endswith("\n")
    first, second = (LINE.match(line) for line in lines)
    assert first and second, lines
    assert (first["label"], first["done"], first["total"], first["unit"]) == ("checking 12 files", "3", "3", "tasks")
    assert (second["label"], second["done"], second["total"], second["unit"]) == ("writing", "40", "40", "chunks")


def test_log_line_says_when_a_phase_stopped():
    out = io.StringIO()
    with pytest.raises(RuntimeError), Progress("phase", 5, stream=out) as bar:
        bar.advance(2)
        raise RuntimeError("boom")
    assert out.getvalue().startswith("phase: 2/5 items in ")
    assert out.getvalue().endswith("(stopped: RuntimeError)\n")


def test_terminal_bar_redrawn_in_place_and_rate_limited():
    out = Terminal()
    with Progress("phase", 1000, unit="files", stream=out) as bar:
        for _ in range(1000):
            bar.advance()
    text = out.getvalue()
    frames = text.split("\r")[1:]
    assert 2 <= len(frames) <= 5  # first and last frame, not one per advance
    assert text.endswith("\n") and text.count("\n") == 1
    assert "phase: [" in frames[0] and "0/1000 files" in frames[0]
    assert "1000/1000 files" in frames[-1] and "#" * 24 in frames[-1]


def test_disabled_prints_nothing():
    for out in (io.StringIO(), Terminal()):
        with Progress("phase", 3, stream=out, enabled=False) as bar:
            bar.advance(3)
        assert out.getvalue() == ""


def test_default_stream_is_stderr(capsys):
    with Progress("phase", 1) as bar:
        bar.advance()
    captured = capsys.readouterr()
    assert captured.out == "" and LINE.match(captured.err.strip())


def _inc(x):
    return x + 1


def test_track_yields_every_future_as_it_completes():
    from distributed import Client

    out = io.StringIO()
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        futures = client.map(_inc, range(10))
        with Progress("adding", len(futures), unit="tasks", stream=out) as bar:
            done = [f.result() for f in track(futures, bar)]
        assert sorted(done) == list(range(1, 11))
        assert bar.done == 10
        assert list(track([], bar)) == []
    assert LINE.match(out.getvalue().strip())["done"] == "10"


@pytest.mark.slow
def test_cli_into_a_pipe_writes_no_carriage_returns(tmp_path):
    """The command's output captured by a pipe (as in a batch log): progress lines, no frames."""
    env = {k: v for k, v in os.environ.items() if k not in ("SKYREDUCE_INGEST_BATCH_BYTES", "SKYREDUCE_FAULT")}

    def run(*args):
        r = subprocess.run([SKYREDUCE, *args, "--workers", "1", "--no-dashboard"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "\r" not in r.stdout and "\r" not in r.stderr
        return [line for line in r.stderr.splitlines() if LINE.match(line)]

    assert len(run("simulate", "swas", "raw", "--days", "1", "--segments-per-day", "2")) == 1
    lines = run("ingest", "swas", "raw", "--store", "s.zarr")
    assert [LINE.match(line)["label"] for line in lines] == ["checking 2 files", "writing 2 files"]
