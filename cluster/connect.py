"""connect(): a dask ``Client`` on a local cluster, an existing scheduler, a scheduler file or
a batch system (SLURM, PBS through dask-jobqueue; see ``cluster.batch``).

Options are resolved once, in :func:`resolve_options`, with the precedence
explicit argument > dask config (``skyreduce.cluster.*``, defaults in
``skyreduce-cluster.yaml``) > a default derived from the machine.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.system
import yaml
from dask.utils import parse_bytes, parse_timedelta
from distributed import Client, LocalCluster, Security
from distributed.system import MEMORY_LIMIT

from cluster.batch import SECTIONS as _BATCH_SECTIONS
from cluster.batch import BatchOptions, resolve_batch_options, worker_spawn_config
from reduce.errors import ReduceError

log = logging.getLogger(__name__)

NAMESPACE = "skyreduce.cluster"
DEFAULTS_FILE = Path(__file__).with_name("skyreduce-cluster.yaml")
_TLS_SCHEMES = ("tls://", "wss://")
_LOCAL_ONLY = ("n_workers", "threads_per_worker", "memory_limit", "processes")


def _load_defaults():
    """Register the YAML defaults with dask (config already set, e.g. env vars, keeps priority)."""
    with open(DEFAULTS_FILE) as f:
        dask.config.update_defaults(yaml.safe_load(f))


_load_defaults()


@dataclass(frozen=True)
class ClusterOptions:
    """Every setting of a connection, resolved (see :func:`resolve_options`)."""

    backend: str
    scheduler: str | None
    scheduler_file: str | None
    timeout: float  # s
    n_workers: int
    threads_per_worker: int
    memory_limit: int  # bytes per worker (0: no limit)
    processes: bool
    host: str
    dashboard: bool
    dashboard_address: str
    silence_logs: int | bool  # logging level, False: keep all
    tls_ca_file: str | None
    tls_cert: str | None
    tls_key: str | None
    tls: bool = True               # batch backends: TLS with generated credentials by default
    shared_directory: str = "~/.skyreduce"  # seen by this machine and the compute nodes
    batch: BatchOptions | None = None       # job settings (backends slurm, pbs, slurm-allocation)
    allowed_failures: int = 3      # distributed.scheduler.allowed-failures of the schedulers started here

    @property
    def joins_existing(self):
        return self.scheduler is not None or self.scheduler_file is not None


def _config(key):
    return dask.config.get(f"{NAMESPACE}.{key}", default=None)


def _pick(name, explicit):
    """Explicit value if given, else the dask config value (both may be None)."""
    return explicit if explicit is not None else _config(name.replace("_", "-"))


def _integer(name, value, minimum=1):
    """An integer >= ``minimum`` from the config key ``name`` (or the option of that name)."""
    try:
        ok = int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ReduceError(f"{NAMESPACE}.{name}: expected {what}, got {value!r}")
    return int(value)


def _memory_bytes(value, n_workers):
    """Bytes per worker from an int, a string like '4GiB', or None (total // n_workers)."""
    if value is None:
        return MEMORY_LIMIT // n_workers
    try:
        nbytes = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError) as exc:
        raise ReduceError(
            f"{NAMESPACE}.memory-limit: expected bytes or a size like '4GiB', got {value!r}"
        ) from exc
    if nbytes < 0:
        raise ReduceError(f"{NAMESPACE}.memory-limit: must not be negative, got {value!r}")
    return nbytes


def _log_level(value):
    if value is False or value is None:
        return False
    if isinstance(value, int):
        return value
    level = logging.getLevelName(str(value).upper())
    if not isinstance(level, int):
        raise ReduceError(f"{NAMESPACE}.silence-logs: expected a logging level, got {value!r}")
    return level


def _size(processes, n_workers, threads_per_worker, cores):
    """(workers, threads per worker) from the rule stated in :func:`connect`."""
    if processes:
        threads = threads_per_worker or 1
        workers = n_workers or max(1, cores // threads)
    else:
        workers = n_workers or 1
        threads = threads_per_worker or max(1, cores // workers)
    return workers, threads


def _schedulers(scheduler, scheduler_file):
    """The (address, file) to join: explicit ones replace the config's pair entirely."""
    if scheduler is None and scheduler_file is None:
        scheduler, scheduler_file = _config("scheduler"), _config("scheduler-file")
    if scheduler is not None and scheduler_file is not None:
        raise ReduceError(
            f"give either a scheduler address ({scheduler!r}) or a scheduler file "
            f"({str(scheduler_file)!r}), not both"
        )
    return scheduler, (None if scheduler_file is None else str(scheduler_file))


def resolve_options(*, scheduler=None, scheduler_file=None, n_workers=None,
                    threads_per_worker=None, memory_limit=None, processes=None,
                    dashboard=None, tls_ca_file=None, tls_cert=None, tls_key=None,
                    backend=None, tls=None, jobs=None, min_jobs=None, max_jobs=None, queue=None,
                    account=None, walltime=None, job_cores=None, job_memory=None,
                    job_processes=None):
    """All options of :func:`connect` resolved: argument > dask config > machine default."""
    scheduler, scheduler_file = _schedulers(scheduler, scheduler_file)
    backend = str(_pick("backend", backend))
    job_kw = dict(jobs=jobs, min_jobs=min_jobs, max_jobs=max_jobs, queue=queue, account=account,
                  walltime=walltime, job_cores=job_cores, job_memory=job_memory,
                  job_processes=job_processes)
    given = [k for k, v in job_kw.items() if v is not None]
    joining = scheduler is not None or scheduler_file is not None
    if given and (joining or backend not in ("slurm", "pbs")):
        where = "the scheduler you join" if joining else f"backend {backend!r}"
        raise ReduceError(f"{', '.join(given)} only apply to a cluster started on a batch "
                          f"system (backend slurm or pbs), not to {where}")
    batch = None
    if backend in _BATCH_SECTIONS and not joining:
        batch = resolve_batch_options(backend, **job_kw)
    processes = bool(_pick("processes", processes))
    _integer("retries", _config("retries"), 0)   # read by the runner (reduce.runner) when it submits
    n = _pick("n_workers", n_workers)
    t = _pick("threads_per_worker", threads_per_worker)
    n = None if n is None else _integer("n-workers", n)
    t = None if t is None else _integer("threads-per-worker", t)
    workers, threads = _size(processes, n, t, dask.system.CPU_COUNT)
    files = [_pick(k, v) for k, v in
             (("tls_ca_file", tls_ca_file), ("tls_cert", tls_cert), ("tls_key", tls_key))]
    return ClusterOptions(
        backend=backend,
        scheduler=None if scheduler is None else str(scheduler),
        scheduler_file=scheduler_file,
        timeout=parse_timedelta(_config("timeout"), "s"),
        n_workers=workers,
        threads_per_worker=threads,
        memory_limit=_memory_bytes(_pick("memory_limit", memory_limit), workers),
        processes=processes,
        host=str(_config("host")),
        dashboard=bool(_pick("dashboard", dashboard)),
        dashboard_address=str(_config("dashboard-address")),
        silence_logs=_log_level(_config("silence-logs")),
        tls_ca_file=None if files[0] is None else str(files[0]),
        tls_cert=None if files[1] is None else str(files[1]),
        tls_key=None if files[2] is None else str(files[2]),
        tls=bool(_pick("tls", tls)),
        shared_directory=str(_config("shared-directory") or "~/.skyreduce"),
        batch=batch,
        allowed_failures=_integer("allowed-failures", _config("allowed-failures"), 0),
    )


def tls_security(ca_file, cert, key, *, roles=("client",)):
    """A ``distributed.Security`` requiring encryption, from three PEM files (same cert per role)."""
    given = {"tls_ca_file": ca_file, "tls_cert": cert, "tls_key": key}
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ReduceError(
            f"TLS needs a CA file, a certificate and a key; missing {', '.join(missing)} "
            "(--tls-ca-file/--tls-cert/--tls-key or skyreduce.cluster.tls-*)"
        )
    for name, path in given.items():
        if not os.path.isfile(path):
            raise ReduceError(f"{path}: {name} file not found")
    kwargs = {"tls_ca_file": ca_file}
    for role in roles:
        kwargs[f"tls_{role}_cert"] = cert
        kwargs[f"tls_{role}_key"] = key
    return Security(require_encryption=True, **kwargs)


def _security(opts, security, roles):
    """The Security to use (None: plain TCP); refuses files and an object together."""
    files = (opts.tls_ca_file, opts.tls_cert, opts.tls_key)
    if security is not None:
        if any(files):
            raise ReduceError("give TLS credentials either as files or as security=, not both")
        return security
    if not any(files):
        if roles == ("client",):  # joining: distributed's own TLS config also counts
            configured = Security()  # distributed.comm.tls.* of the dask config
            return configured if configured.tls_client_cert else None
        return None
    return tls_security(*files, roles=roles)


class OwningClient(Client):
    """A Client that owns its cluster (local or batch): closing the client closes the cluster too."""

    def close(self, *args, **kwargs):
        cluster = self.cluster
        try:
            return super().close(*args, **kwargs)
        finally:
            if cluster is not None:
                cluster.close()


LocalClusterClient = OwningClient  # its first name


class JoinedClient(Client):
    """The Client of a scheduler that skyreduce joined (``--scheduler``, ``--scheduler-file``).

    A client that lost its scheduler tries to reconnect in the background for its ``timeout``
    (``skyreduce.cluster.timeout``); the runner does not wait for that (the tasks are gone with
    the scheduler) and the command closes the client at once. distributed then logs the
    reconnection it cancels as an error with a traceback, after skyreduce said what happened:
    that close is quiet."""

    def close(self, *args, **kwargs):
        if self.status != "connecting":
            return super().close(*args, **kwargs)
        logger = logging.getLogger("distributed.client")
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            return super().close(*args, **kwargs)
        finally:
            logger.setLevel(level)


def _dashboard_url(cluster, opts):
    """http://host:port/status where the local scheduler's web server listens."""
    host = opts.dashboard_address.rsplit(":", 1)[0] or opts.host
    return f"http://{host}:{cluster.scheduler.http_server.port}/status"


def _connect_local(opts, security, kw):
    """Start a LocalCluster on this machine and return a client that owns it."""
    sec = _security(opts, security, roles=("client", "scheduler", "worker"))
    # The scheduler always runs a web server (health, metrics); keep it on localhost too.
    scheduler_kwargs = {"dashboard": opts.dashboard, "dashboard_address": opts.dashboard_address,
                        **kw.pop("scheduler_kwargs", {})}
    # Without bokeh, distributed appends its "missing bokeh" page to this config list in
    # place, so every later scheduler of the process served /status: give it a clean copy.
    routes = [r for r in dask.config.get("distributed.scheduler.http.routes")
              if not r.endswith("missing_bokeh")]
    with dask.config.set({"distributed.scheduler.http.routes": routes, **worker_spawn_config()}):
        cluster = LocalCluster(
            n_workers=opts.n_workers, threads_per_worker=opts.threads_per_worker,
            memory_limit=opts.memory_limit, processes=opts.processes,
            host=opts.host, protocol="tls://" if sec is not None else "tcp://",
            security=sec, dashboard_address=opts.dashboard_address if opts.dashboard else None,
            scheduler_kwargs=scheduler_kwargs, silence_logs=opts.silence_logs, **kw)
    try:
        client = OwningClient(cluster, security=sec, timeout=opts.timeout)
    except BaseException:
        cluster.close()
        raise
    log.info("local dask cluster at %s: %d workers x %d threads, %.2f GiB each",
             cluster.scheduler_address, opts.n_workers, opts.threads_per_worker,
             opts.memory_limit / 2**30)
    if opts.dashboard:
        log.info("dask dashboard at %s", _dashboard_url(cluster, opts))
        if importlib.util.find_spec("bokeh") is None:
            log.info("the dashboard's plots need bokeh, which is not installed")
    return client


def _read_scheduler_file(path, timeout):
    """The address in a scheduler file, waiting up to ``timeout`` s for it to appear (and for its
    JSON to be whole: ``dask scheduler`` writes it in place)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                return json.load(f)["address"]
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            if isinstance(exc, FileNotFoundError):
                raise ReduceError(f"{path}: scheduler file not found (waited {timeout:g} s)") from None
            raise ReduceError(f"{path}: not a dask scheduler file (JSON with 'address'): {exc}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReduceError(f"{path}: not a dask scheduler file (JSON with 'address'): {exc}") from exc


def _connect_existing(opts, security, kw):
    """Join a running scheduler given by address or scheduler file."""
    given = [k for k in _LOCAL_ONLY if kw.get(k) is not None]
    if given:
        raise ReduceError(f"{', '.join(given)} only apply to a local cluster; the scheduler "
                          "you join has its own workers")
    kw = {k: v for k, v in kw.items() if k not in _LOCAL_ONLY}
    if opts.scheduler_file is not None:
        address = _read_scheduler_file(opts.scheduler_file, opts.timeout)
    else:
        address = opts.scheduler
    sec = _security(opts, security, roles=("client",))
    if address.startswith(_TLS_SCHEMES) and sec is None:
        raise ReduceError(
            f"scheduler {address} uses TLS: give tls_ca_file, tls_cert and tls_key "
            "(--tls-ca-file/--tls-cert/--tls-key) or security=distributed.Security(...)")
    if sec is not None and sec.require_encryption and "://" in address \
            and not address.startswith(_TLS_SCHEMES):
        raise ReduceError(f"TLS credentials given but scheduler {address} is not tls://")
    try:
        client = JoinedClient(address, security=sec, timeout=opts.timeout, **kw)
    except (OSError, TimeoutError) as exc:
        raise ReduceError(f"cannot connect to the dask scheduler at {address} "
                          f"(timeout {opts.timeout:g} s): {exc}") from exc
    log.info("joined dask scheduler at %s; dashboard at %s", address, client.dashboard_link)
    return client


def _connect_batch(opts, security, kw):
    """Start a cluster on a batch system (modules cluster.slurm, cluster.pbs, cluster.allocation)."""
    given = [k for k in _LOCAL_ONLY if kw.get(k) is not None]
    if given:
        raise ReduceError(f"{', '.join(given)} only apply to a local cluster; size the jobs of "
                          f"backend {opts.backend!r} with jobs/min_jobs/max_jobs, job_cores, "
                          "job_memory, job_processes (--jobs, --job-cores, ...)")
    kw = {k: v for k, v in kw.items() if k not in _LOCAL_ONLY}
    module = importlib.import_module(f"cluster.{_BATCH_MODULES[opts.backend]}")
    return module.connect(opts, security, kw)


_BATCH_MODULES = {"slurm": "slurm", "pbs": "pbs", "slurm-allocation": "allocation"}
_BACKENDS = {"local": _connect_local, **dict.fromkeys(_BATCH_MODULES, _connect_batch)}


def connect(*, scheduler=None, scheduler_file=None, n_workers=None, threads_per_worker=None,
            memory_limit=None, tls_ca_file=None, tls_cert=None, tls_key=None, security=None,
            dashboard=None, processes=None, backend=None, tls=None, jobs=None, min_jobs=None,
            max_jobs=None, queue=None, account=None, walltime=None, job_cores=None,
            job_memory=None, job_processes=None, **kw) -> Client:
    """A ``distributed.Client`` on a new cluster (local or batch system) or an existing scheduler.

    Join a running scheduler with ``scheduler`` (``tcp://host:port`` or
    ``tls://host:port``) or ``scheduler_file`` (JSON written by
    ``dask scheduler --scheduler-file``); otherwise start a cluster of ``backend``
    (config ``skyreduce.cluster.backend``, default ``local``).

    Local cluster sizing, for C usable CPU cores (``dask.system.CPU_COUNT``,
    cgroup-aware) and M bytes of memory (``distributed.system.MEMORY_LIMIT``):

    * processes (default): ``threads_per_worker`` = 1 (the FITS work holds the
      GIL), ``n_workers`` = max(1, C // threads_per_worker);
    * ``processes=False``: ``n_workers`` = 1, ``threads_per_worker`` =
      max(1, C // n_workers);
    * ``memory_limit`` (per worker, bytes or '4GiB') = M // n_workers.

    The scheduler, workers and dashboard listen on 127.0.0.1 only (the dashboard
    on a free port, logged at INFO); the cluster's own logs below WARNING are
    dropped. TLS: the three PEM files ``tls_ca_file``, ``tls_cert``, ``tls_key``
    or a ready ``security=distributed.Security(...)`` (when joining, a client
    certificate in the dask config ``distributed.comm.tls.*`` also counts); a
    ``tls://`` address without them raises ``ReduceError`` before any connection
    is tried.

    ``None`` means "from dask config ``skyreduce.cluster.*``, else the default
    above". Other keywords go to ``LocalCluster`` (or the dask-jobqueue cluster) or
    ``Client``. Use the result
    as a context manager; closing it also closes a cluster it started.

    Batch systems (``backend`` ``slurm`` or ``pbs``, through dask-jobqueue): the scheduler
    runs in this process and each job runs ``job_processes`` workers; ``jobs`` fixes the
    number of jobs, else it adapts between ``min_jobs`` and ``max_jobs``; ``queue``,
    ``account``, ``walltime``, ``job_cores``, ``job_memory`` (per job) and the rest of the
    job settings default to ``skyreduce.cluster.<slurm|pbs>.*``. Workers leave before the
    walltime (``lifetime``, staggered) and the adaptive scaling replaces their jobs. These
    clusters use TLS: unless credentials are given, a private CA and certificate are written
    into a new folder (0700) under ``skyreduce.cluster.shared-directory`` and removed on
    close; ``tls=False`` (``skyreduce.cluster.tls: false``) switches TLS off.
    ``slurm-allocation`` runs scheduler, client and workers as the tasks of one ``srun``
    (see ``cluster.allocation``).
    """
    batch_kw = dict(jobs=jobs, min_jobs=min_jobs, max_jobs=max_jobs, queue=queue,
                    account=account, walltime=walltime, job_cores=job_cores,
                    job_memory=job_memory, job_processes=job_processes)
    opts = resolve_options(
        scheduler=scheduler, scheduler_file=scheduler_file, n_workers=n_workers,
        threads_per_worker=threads_per_worker, memory_limit=memory_limit,
        processes=processes, dashboard=dashboard, tls_ca_file=tls_ca_file,
        tls_cert=tls_cert, tls_key=tls_key, backend=backend, tls=tls, **batch_kw)
    explicit = dict(n_workers=n_workers, threads_per_worker=threads_per_worker,
                    memory_limit=memory_limit, processes=processes)
    if opts.joins_existing:
        return _connect_existing(opts, security, {**kw, **explicit})
    try:
        start = _BACKENDS[opts.backend]
    except KeyError:
        raise ReduceError(f"{NAMESPACE}.backend: unknown {opts.backend!r}, expected one of "
                          f"{', '.join(sorted(_BACKENDS))}") from None
    if start is _connect_batch:
        kw = {**kw, **explicit}
    # read by the scheduler when it starts (here, in every backend): a scheduler you join keeps its own
    with dask.config.set({"distributed.scheduler.allowed-failures": opts.allowed_failures}):
        return start(opts, security, kw)
