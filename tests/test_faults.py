"""reduce.faults: inert without SKYREDUCE_FAULT; with it, SIGKILL of the process group at the N-th time."""
import os
import signal
import subprocess
import sys

import pytest

from reduce.faults import ENV, fault_point, parse

SCRIPT = """
import sys
from reduce.faults import fault_point
for i in range(1, 4):
    fault_point("a")
    print("a", i, flush=True)
    fault_point("b")
    print("b", i, flush=True)
"""


def test_parse():
    assert parse("a") == {("a", 1)}
    assert parse(" a@3 , b ,") == {("a", 3), ("b", 1)}
    for bad in ("a@0", "a@x", "@2", "a@"):
        with pytest.raises(ValueError, match=ENV):
            parse(bad)


def test_inert_without_the_variable(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    fault_point("before_commit")  # returns: the test process lives on
    monkeypatch.setenv(ENV, "another_point")
    fault_point("before_commit")


def _run(spec):
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if spec is not None:
        env[ENV] = spec
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=60, start_new_session=True)


@pytest.mark.parametrize("spec, printed", [
    (None, ["a 1", "b 1", "a 2", "b 2", "a 3", "b 3"]),
    ("c", ["a 1", "b 1", "a 2", "b 2", "a 3", "b 3"]),
    ("a", []),
    ("b", ["a 1"]),
    ("a@2", ["a 1", "b 1"]),
    ("b@3,a@3", ["a 1", "b 1", "a 2", "b 2"]),
    ("b@9", ["a 1", "b 1", "a 2", "b 2", "a 3", "b 3"]),
])
def test_kills_the_process_group_at_the_nth_time(spec, printed):
    r = _run(spec)
    assert r.stdout.splitlines() == printed
    if len(printed) == 6:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == -signal.SIGKILL
        assert f"{ENV}={spec}: killing the process group at" in r.stderr


def test_scope_process_kills_only_the_process_that_reached_the_point():
    """SKYREDUCE_FAULT_SCOPE=process: a worker dies alone (its parent, in the same process group, lives)."""
    parent = ("import subprocess, sys\n"
              "child = subprocess.run([sys.executable, '-c', 'from reduce.faults import fault_point; "
              "fault_point(\"a\"); print(\"child lives\")'])\n"
              "print('child', child.returncode, flush=True)\n")
    env = {**os.environ, ENV: "a", "SKYREDUCE_FAULT_SCOPE": "process"}
    r = subprocess.run([sys.executable, "-c", parent], env=env, capture_output=True, text=True, timeout=60,
                       start_new_session=True)
    assert (r.returncode, r.stdout.splitlines()) == (0, [f"child {-signal.SIGKILL}"]), r.stderr
    assert "killing process" in r.stderr
