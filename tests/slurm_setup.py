"""A real one-node SLURM for the tests (fixture ``slurm_cluster``, imported by conftest.py).

The session fixture starts, in a fresh temporary directory of its own:

* ``munged`` in the foreground with a new key and its own socket (``--force``, as root), so it
  neither needs nor disturbs a system munge;
* ``slurmctld`` and ``slurmd`` with a generated ``slurm.conf``: one node named after this host
  (address 127.0.0.1), one default partition, ``select/cons_tres`` with ``CR_CPU_Memory`` and a
  ``DefMemPerCPU`` that lets a job run on every CPU slot at once, ``proctrack/linuxproc``,
  ``task/none`` (no cgroups needed), no accounting, ``SlurmUser=root``, free ports picked at
  start, state, spool and logs in the temporary directory, and the munge socket passed with
  ``AuthInfo=socket=...``.

It waits until ``sinfo`` shows the node idle, exports ``SLURM_CONF`` in ``os.environ`` for the
whole session (so every ``sbatch``/``squeue``/``scancel`` of the tests and of dask-jobqueue
reaches this controller; jobs inherit it), and yields a :class:`SlurmCluster`. At the end it
cancels the jobs left, stops the daemons and removes the directory (kept when
``SKYREDUCE_KEEP_SLURM`` is set, for the logs).

Several sessions on one machine (other engineers' test runs) each get their own ports, paths
and munge socket. Daemons left behind by a session that died (SIGKILL) are found through the
pid files of their directory (whose owner process is gone) and stopped at the next start.

Without the tools the fixture skips locally and fails in CI (env ``CI`` set): ``make test``
installs slurm-wlm and munge. When the tools are there a failure to start is an error, with
the daemons' log tails, never a skip.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PREFIX = "skyreduce-slurm-"
PARTITION = "skyreduce"
CLUSTER_NAME = "skyreduce-test"
TOOLS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "slurmctld", "slurmd", "munged")
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                      "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"})
MIN_CPUS = 4             # job slots: a batch job plus worker jobs must fit at once, even on 2 cores
MAX_DEF_MEM_MB = 1024    # DefMemPerCPU ceiling
DAEMONS = ("slurmd", "slurmctld", "munged")   # stop order


def which(name):
    """Path of a SLURM/munge program (daemons live in /usr/sbin, not always on a user's PATH)."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(["/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def pid_alive(pid):
    """True while process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _start_time(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _mem_total_mib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("MemTotal not in /proc/meminfo")


def _base_dir():
    # unix socket paths are limited to ~107 bytes: keep the directory short
    base = tempfile.gettempdir()
    return base if len(base) <= 40 else "/tmp"


def reap_stale(base=None):
    """Stop daemons of directories whose owning test session is gone, and remove those directories."""
    for d in Path(base or _base_dir()).glob(PREFIX + "*"):
        try:
            owner = json.loads((d / "owner.json").read_text())
        except (OSError, ValueError):
            owner = None
        if owner and pid_alive(owner["pid"]) and _start_time(owner["pid"]) == owner["start"]:
            continue                        # a live session (maybe someone else's): leave it alone
        conf = d / "slurm.conf"
        pids = {}
        for name in DAEMONS:
            try:
                pid = int((d / "pids" / f"{name}.pid").read_text())
            except (OSError, ValueError):
                continue
            if pid_alive(pid) and str(d) in _cmdline(pid):
                pids[name] = pid
        if "slurmctld" in pids and conf.is_file():
            env = dict(os.environ, SLURM_CONF=str(conf))
            try:                            # end its jobs while the controller can still do it
                subprocess.run([which("scancel"), "--quiet", f"--partition={PARTITION}"],
                               env=env, timeout=10, capture_output=True)
                time.sleep(3)
            except (OSError, subprocess.SubprocessError, TypeError):
                pass
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(d, ignore_errors=True)


class SlurmError(RuntimeError):
    pass


class SlurmCluster:
    """A running one-node SLURM: configuration, sizes and helpers for the tests.

    Attributes: ``conf`` (path of slurm.conf), ``env`` (``{"SLURM_CONF": ...}``, also exported in
    ``os.environ`` by the fixture), ``partition``, ``nodename``, ``cpus`` (CPU slots of the node),
    ``real_memory_mb`` (memory of the node that jobs may ask for, MiB), ``def_mem_per_cpu_mb``
    (what a job gets per CPU when it asks for no memory), ``root`` (the temporary directory) and
    ``jobs_dir`` (a scratch directory for job scripts and outputs).
    """

    def __init__(self, root):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.jobs_dir = self.root / "jobs"
        self.log_dir = self.root / "log"
        self.partition = PARTITION
        self.nodename = socket.gethostname().split(".")[0]
        self.cpus = max(os.cpu_count() or 1, MIN_CPUS)
        total = _mem_total_mib()
        self.real_memory_mb = max(total - max(512, total // 10), 256)
        self.def_mem_per_cpu_mb = min(MAX_DEF_MEM_MB, self.real_memory_mb // self.cpus)
        self.env = {"SLURM_CONF": str(self.conf)}
        self.munge_socket = self.root / "run" / "munge.socket"
        self.ports = {}
        self._procs = {}

    # -- commands ---------------------------------------------------------------------------------

    def command(self, *args, check=True, timeout=60):
        """Run a SLURM client command (``squeue``, ``scontrol`` ...) against this cluster."""
        proc = subprocess.run([which(args[0]) or args[0], *map(str, args[1:])], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **self.env})
        if check and proc.returncode:
            raise SlurmError(f"{' '.join(map(str, args))} exited {proc.returncode}: "
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def submit(self, script=None, *, wrap=None, options=(), cwd=None):
        """``sbatch`` a script (a path, or its text) or a ``--wrap`` command; returns the job id.

        ``options`` are more sbatch options (``["--cpus-per-task=2", "-o", "out.txt"]``); the job
        runs in ``cwd`` (default ``jobs_dir``), where its default output ``slurm-<id>.out`` goes.
        """
        if (script is None) == (wrap is None):
            raise ValueError("give a script or wrap=, not both")
        cwd = Path(cwd or self.jobs_dir)
        args = ["sbatch", "--parsable", f"--chdir={cwd}", f"--partition={self.partition}", *options]
        if wrap is not None:
            args += ["--wrap", wrap]
        elif "\n" in str(script):
            fd, path = tempfile.mkstemp(suffix=".sh", dir=self.jobs_dir)
            with os.fdopen(fd, "w") as fh:
                fh.write(script)
            args.append(path)
        elif Path(script).is_file():
            args.append(str(script))
        else:
            raise FileNotFoundError(script)
        out = self.command(*args).stdout.strip()
        return out.split(";")[0]

    def squeue(self, *args):
        """Jobs in the queue: a list of ``{"id", "state", "name", "reason"}`` (``args`` filter, e.g. ``-j 3``)."""
        out = self.command("squeue", "--noheader", "--format=%i|%T|%j|%R", *args).stdout
        return [dict(zip(("id", "state", "name", "reason"), line.split("|", 3)))
                for line in out.splitlines() if line.strip()]

    def job(self, job_id):
        """``scontrol show job`` as a dict (also for jobs that ended in the last hour); {} if unknown."""
        proc = self.command("scontrol", "--oneliner", "show", "job", job_id, check=False)
        if proc.returncode:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))

    def state(self, job_id):
        """The job's state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED`` ...), or None if unknown."""
        return self.job(job_id).get("JobState")

    def wait(self, job_id, state=None, timeout=60):
        """Wait until the job is in ``state`` (default: any terminal state); returns the state reached.

        Raises SlurmError when the job ends in another state than the one awaited, and
        TimeoutError (with the queue and the daemons' logs) when time runs out.
        """
        deadline = time.monotonic() + timeout
        current = None
        while time.monotonic() < deadline:
            current = self.state(job_id)
            if current == state or (state is None and current in TERMINAL):
                return current
            if state is not None and current in TERMINAL:
                raise SlurmError(f"job {job_id} ended {current} while waiting for {state}: {self.job(job_id)}")
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still {current} after {timeout} s (waiting for "
                           f"{state or 'its end'}); queue: {self.squeue()}\n{self.log_tail()}")

    def cancel(self, *job_ids):
        if job_ids:
            self.command("scancel", *job_ids)

    def cancel_all(self, timeout=30):
        """Cancel every job of the cluster and wait until the queue is empty."""
        self.command("scancel", f"--partition={self.partition}", check=False)
        deadline = time.monotonic() + timeout
        while self.squeue() and time.monotonic() < deadline:
            time.sleep(0.3)
        return not self.squeue()

    def log_tail(self, lines=30):
        parts = []
        for path in sorted(self.log_dir.glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts)

    # -- daemons ----------------------------------------------------------------------------------

    def write_conf(self):
        ctld_port, slurmd_port = self.ports["slurmctld"], self.ports["slurmd"]
        r = self.root
        self.conf.write_text(f"""\
# generated by tests/slurm_setup.py: a one-node SLURM for the test session
ClusterName={CLUSTER_NAME}
SlurmctldHost={self.nodename}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={self.log_dir}/slurmctld.log
SlurmdLogFile={self.log_dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU={self.def_mem_per_cpu_mb}
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=0
KillWait=2
MinJobAge=3600
InactiveLimit=0
MailProg=/bin/true
NodeName={self.nodename} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.real_memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.nodename} Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name, args):
        out = open(self.log_dir / f"{name}.out", "w")
        proc = subprocess.Popen([which(name), *map(str, args)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **self.env})
        out.close()
        self._procs[name] = proc
        (self.root / "pids" / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def _wait_for(self, what, ok, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmError(f"{name} exited {proc.returncode} while waiting for {what}\n{self.log_tail()}")
            if ok():
                return
            time.sleep(0.2)
        raise SlurmError(f"timed out after {timeout} s waiting for {what}\n{self.log_tail()}")

    def _node_state(self):
        proc = self.command("sinfo", "--noheader", "--Node", f"--nodes={self.nodename}", "--format=%T",
                            check=False, timeout=15)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def start(self, timeout=60):
        for sub in ("munge", "run", "state", "spool", "log", "pids", "jobs"):
            (self.root / sub).mkdir(mode=0o700 if sub == "munge" else 0o755)
        os.chmod(self.root, 0o755)
        (self.root / "owner.json").write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())}))
        key = self.root / "munge" / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(1024))
        self._spawn("munged", ["--foreground", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
                               f"--pid-file={self.root}/run/munged.pid", f"--log-file={self.log_dir}/munged.log",
                               f"--seed-file={self.root}/munge/munged.seed", "--num-threads=2"])
        self._wait_for("the munge socket", self.munge_socket.is_socket, 20)

        self.ports = dict(zip(("slurmctld", "slurmd"), _free_ports(2)))
        self.write_conf()
        self._spawn("slurmctld", ["-D", "-i", "-f", self.conf])
        self._spawn("slurmd", ["-D", "-f", self.conf, "-N", self.nodename])
        self._wait_for(f"node {self.nodename} idle in sinfo", lambda: self._node_state() == "idle", timeout)

    def stop(self):
        """Cancel what is left, stop the daemons (slurmd, slurmctld, munged), remove the directory."""
        if self._procs.get("slurmctld") and self._procs["slurmctld"].poll() is None:
            try:
                self.cancel_all(timeout=20)
            except (OSError, subprocess.SubprocessError, SlurmError):
                pass
        for name in DAEMONS:
            proc = self._procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if not os.environ.get("SKYREDUCE_KEEP_SLURM"):
            shutil.rmtree(self.root, ignore_errors=True)


def start_slurm(timeout=60):
    """Start a one-node SLURM in a new temporary directory (after reaping stale ones); returns it."""
    reap_stale()
    cluster = SlurmCluster(tempfile.mkdtemp(prefix=PREFIX, dir=_base_dir()))
    try:
        cluster.start(timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM for the session (see the module docstring); SLURM_CONF exported meanwhile."""
    missing = [name for name in TOOLS if which(name) is None]
    if missing:
        msg = f"SLURM not installed ({', '.join(missing)} not found): make test installs slurm-wlm and munge"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    try:
        cluster = start_slurm()
    except SlurmError as exc:
        pytest.fail(f"the one-node SLURM did not start: {exc}", pytrace=False)
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        cluster.stop()
