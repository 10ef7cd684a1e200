"""Fault injection: kill the whole run at a named point, to test that a crash there is safe.

The library marks the moments where a crash matters with ``fault_point("name")``. A
fault point does nothing unless the environment variable ``SKYREDUCE_FAULT`` is set
(reading one variable is all it costs otherwise); it names the points to fire at::

    SKYREDUCE_FAULT=before_commit            the first time before_commit is reached
    SKYREDUCE_FAULT=mid_write@3              the 3rd time mid_write is reached in a process
    SKYREDUCE_FAULT=after_resize,mid_write@2 whichever of the two comes first

Firing sends SIGKILL to the process group of the process that reached the point: the
command and its local dask workers (which share its group) die at once, with no
cleanup and no exception handler running, as when a batch system kills a job. Start
the command in its own session (``subprocess.run(..., start_new_session=True)``) so that
the caller survives; the command then ends with return code ``-signal.SIGKILL``.
Counts are kept per process: a point reached on workers fires at the N-th time one
worker reaches it.

``SKYREDUCE_FAULT_SCOPE=process`` kills only the process that reached the point (a dask
worker dies as when the kernel's OOM killer takes it; its nanny starts a new one, where
the counts begin again, so a point ``@1`` on a worker fires in every new worker process).

Points in the library (grep ``fault_point(`` for the current list):

- ``after_resize`` (ingest): the arrays are grown beyond the committed length, nothing
  written into them yet;
- ``mid_write`` (ingest, on a worker): one chunk of bulk data written, before the commit;
- ``before_commit`` (store): ledger and quarantine lines appended, ``state.json`` not yet
  replaced;
- ``after_commit`` (store): ``state.json`` replaced, group attributes and consolidated
  metadata not yet updated;
- ``units_allocated`` (runner, client): slots allocated, no unit submitted yet;
- ``unit_started:<key>`` (runner, worker): the task of unit ``<key>`` noted its start,
  nothing computed yet;
- ``unit_written`` (runner, worker): a unit's rows written to its slots, no product or record yet.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections import Counter

ENV = "SKYREDUCE_FAULT"
SCOPE_ENV = "SKYREDUCE_FAULT_SCOPE"   # "group" (default) or "process"

_reached: Counter = Counter()  # point name -> times reached in this process (only while ENV is set)
_lock = threading.Lock()


def fault_point(name: str) -> None:
    """Kill this process group here when ``SKYREDUCE_FAULT`` names this point (see the module doc)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    with _lock:
        _reached[name] += 1
        count = _reached[name]
    if (name, count) in parse(spec):
        if os.environ.get(SCOPE_ENV, "group") == "process":
            print(f"skyreduce: {ENV}={spec}: killing process {os.getpid()} at {name} (time {count})",
                  file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            return
        print(f"skyreduce: {ENV}={spec}: killing the process group at {name} (time {count})",
              file=sys.stderr, flush=True)
        os.killpg(os.getpgid(0), signal.SIGKILL)


@functools.lru_cache(maxsize=16)
def parse(spec: str) -> frozenset[tuple[str, int]]:
    """``"a,b@3"`` -> {("a", 1), ("b", 3)}; raises ValueError on a malformed entry."""
    out = set()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, at, count = item.partition("@")
        try:
            n = int(count) if at else 1
        except ValueError:
            n = 0
        if not name.strip() or n < 1:
            raise ValueError(f"{ENV}={spec!r}: {item!r} is not NAME or NAME@N with N >= 1")
        out.add((name.strip(), n))
    return frozenset(out)
