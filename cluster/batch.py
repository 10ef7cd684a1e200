"""What the batch-system backends share (``slurm``, ``pbs``; see ``cluster.slurm``, ``cluster.pbs``).

* :class:`BatchOptions`, resolved by :func:`resolve_batch_options` with the precedence
  explicit argument > dask config ``skyreduce.cluster.<slurm|pbs>.*`` (defaults in
  ``skyreduce-cluster.yaml``); keys left ``null`` there fall through to dask-jobqueue's
  own config ``jobqueue.<slurm|pbs>.*``.
* TLS credentials for the jobs: a private CA and one certificate/key written with
  ``cryptography`` into a fresh folder (mode 0700, files 0600) under
  ``skyreduce.cluster.shared-directory``, which the compute nodes must see too;
  the folder is removed when the cluster closes.
* :func:`make_cluster` / :func:`start`: a dask-jobqueue cluster from those options,
  scaled adaptively between ``min-jobs`` and ``max-jobs`` (a fixed ``jobs`` is
  ``min = max = jobs``, so that jobs whose workers reached their lifetime are replaced).
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import getpass
import logging
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import dask
from dask.utils import format_bytes, parse_bytes, parse_timedelta
from distributed.core import Status

from reduce.errors import ReduceError

log = logging.getLogger(__name__)

NAMESPACE = "skyreduce.cluster"
SECTIONS = {"slurm": "slurm", "pbs": "pbs", "slurm-allocation": "slurm"}  # backend -> config section
CERT_DAYS = 365  # validity of the generated certificates (the folder goes when the cluster closes)
CREDENTIAL_FILES = ("ca.pem", "cert.pem", "key.pem")


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class BatchOptions:
    """The settings of the jobs that carry the dask workers (one section of the config)."""

    section: str                 # slurm or pbs
    queue: str | None            # SLURM partition (-p) / PBS queue (-q)
    account: str | None          # -A
    cores: int                   # per job
    processes: int               # worker processes per job (threads = cores // processes)
    memory: int                  # bytes per job (each worker: memory // processes)
    walltime: str                # as the batch system reads it
    walltime_s: float
    jobs: int | None             # fixed number of jobs (None: adaptive)
    min_jobs: int
    max_jobs: int
    job_extra_directives: tuple[str, ...]
    job_script_prologue: tuple[str, ...]
    local_directory: str | None  # worker spill folder on the node
    log_directory: str | None    # the jobs' stdout/stderr
    interface: str | None        # network interface of scheduler and workers (e.g. ib0)
    lifetime: float | None       # s; None: workers live until the walltime kills them
    lifetime_stagger: float      # s
    lifetime_restart: bool
    resource_spec: str | None    # PBS -l (None: select=1:ncpus=<cores>:mem=<memory>)

    @property
    def threads(self):
        return self.cores // self.processes

    @property
    def worker_memory(self):
        return self.memory // self.processes

    @property
    def job_range(self):
        """(minimum, maximum) number of jobs that the adaptive scaling keeps."""
        return (self.jobs, self.jobs) if self.jobs is not None else (self.min_jobs, self.max_jobs)

    def worker_args(self):
        """Extra ``dask worker`` options: the lifetime, so that workers leave before the walltime."""
        if self.lifetime is None:
            return []
        return ["--lifetime", f"{self.lifetime:.0f}s", "--lifetime-stagger",
                f"{self.lifetime_stagger:.0f}s",
                "--lifetime-restart" if self.lifetime_restart else "--no-lifetime-restart"]


def _cfg(section, key):
    return dask.config.get(f"{NAMESPACE}.{section}.{key}", default=None)


def _err(section, key, msg):
    return ReduceError(f"{NAMESPACE}.{section}.{key}: {msg}")


def _int(section, key, value, minimum):
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise _err(section, key, f"expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _strings(section, key, value):
    if value is None:
        return ()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise _err(section, key, f"expected a list of strings, got {value!r}")
    return tuple(value)


def walltime_seconds(text, system="slurm"):
    """Seconds in a walltime as ``system`` reads it.

    SLURM: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``;
    PBS: ``S``, ``M:S``, ``H:M:S``. A bare number is minutes for SLURM, seconds for PBS.
    """
    if not isinstance(text, str):
        raise ValueError(f"give the walltime as a string like '01:00:00', not {text!r} "
                         "(in YAML quote it: unquoted, 01:00:00 is read as a number)")
    days, rest = 0, text.strip()
    m = re.fullmatch(r"(\d+)-(\d+(?::\d+){0,2})", rest) if system == "slurm" else None
    if m:
        days, parts = int(m[1]), [int(p) for p in m[2].split(":")]
        h, mi, s = (parts + [0, 0])[:3]
    else:
        if not re.fullmatch(r"\d+(?::\d+){0,2}", rest):
            raise ValueError(f"not a walltime: {text!r} (e.g. '01:30:00')")
        parts = [int(p) for p in rest.split(":")]
        if len(parts) == 3:
            h, mi, s = parts
        elif len(parts) == 2:
            h, (mi, s) = 0, parts
        else:
            h, mi, s = (0, parts[0], 0) if system == "slurm" else (0, 0, parts[0])
    seconds = ((days * 24 + h) * 60 + mi) * 60 + s
    if seconds <= 0:
        raise ValueError(f"walltime must be positive, got {text!r}")
    return float(seconds)


def _duration(section, key, value):
    try:
        return float(parse_timedelta(value, "s"))
    except (TypeError, ValueError, KeyError) as exc:
        raise _err(section, key, f"expected a duration like '50m' or seconds, got {value!r}") from exc


def _lifetime(section, walltime_s, lifetime, stagger):
    """(lifetime, stagger) in s: by default 90 % of the walltime minus the stagger, the stagger
    5 % of the walltime (at most 5 minutes); a worker leaves between lifetime +- stagger."""
    if lifetime is False or (isinstance(lifetime, str) and lifetime.lower() in ("off", "none")):
        return None, 0.0
    stagger = min(300.0, 0.05 * walltime_s) if stagger is None \
        else _duration(section, "lifetime-stagger", stagger)
    if stagger < 0:
        raise _err(section, "lifetime-stagger", f"must not be negative, got {stagger:g} s")
    if lifetime is None:
        lifetime = 0.9 * walltime_s - stagger
    else:
        lifetime = _duration(section, "lifetime", lifetime)
    if lifetime - stagger <= 0 or lifetime + stagger >= walltime_s:
        raise _err(section, "lifetime", f"a worker must leave before its job's walltime: "
                   f"lifetime {lifetime:g} s +- stagger {stagger:g} s does not fit in "
                   f"(0, {walltime_s:g} s)")
    return lifetime, stagger


def _scaling(section, jobs, min_jobs, max_jobs):
    """(jobs, min_jobs, max_jobs): explicit values replace the config's; jobs xor min/max."""
    if jobs is not None and (min_jobs is not None or max_jobs is not None):
        raise ReduceError("give either a fixed number of jobs (--jobs) or an adaptive range "
                          "(--min-jobs/--max-jobs), not both")
    if jobs is None and min_jobs is None and max_jobs is None:
        jobs = _cfg(section, "jobs")
    if min_jobs is None:
        min_jobs = _cfg(section, "min-jobs")
    if max_jobs is None:
        max_jobs = _cfg(section, "max-jobs")
    jobs = None if jobs is None else _int(section, "jobs", jobs, 1)
    min_jobs = _int(section, "min-jobs", 0 if min_jobs is None else min_jobs, 0)
    max_jobs = _int(section, "max-jobs", max(1, min_jobs) if max_jobs is None else max_jobs, 1)
    if jobs is None and max_jobs < min_jobs:
        raise _err(section, "max-jobs", f"{max_jobs} is below min-jobs {min_jobs}")
    return jobs, min_jobs, max_jobs


def resolve_batch_options(backend, *, jobs=None, min_jobs=None, max_jobs=None, queue=None,
                          account=None, walltime=None, job_cores=None, job_memory=None,
                          job_processes=None) -> BatchOptions:
    """The job settings of ``backend`` (slurm, pbs): argument > ``skyreduce.cluster.<section>.*``."""
    section = SECTIONS[backend]
    system = "pbs" if section == "pbs" else "slurm"

    def pick(key, explicit):
        return explicit if explicit is not None else _cfg(section, key)

    cores = _int(section, "cores", pick("cores", job_cores), 1)
    processes = pick("processes", job_processes)
    processes = cores if processes is None else _int(section, "processes", processes, 1)
    if cores % processes:
        raise _err(section, "processes", f"{processes} worker processes do not divide "
                   f"{cores} cores evenly")
    memory = pick("memory", job_memory)
    try:
        memory = parse_bytes(memory) if isinstance(memory, str) else int(memory)
    except (TypeError, ValueError) as exc:
        raise _err(section, "memory", f"expected a size like '16GiB', got {memory!r}") from exc
    if memory <= 0:
        raise _err(section, "memory", f"must be positive, got {memory!r}")
    wall = pick("walltime", walltime)
    if wall is None:
        raise _err(section, "walltime", "required (e.g. '01:00:00'), the workers' lifetime "
                   "is derived from it")
    try:
        wall_s = walltime_seconds(wall, system)
    except ValueError as exc:
        raise _err(section, "walltime", str(exc)) from None
    lifetime, stagger = _lifetime(section, wall_s, _cfg(section, "lifetime"),
                                  _cfg(section, "lifetime-stagger"))
    njobs, min_jobs, max_jobs = _scaling(section, jobs, min_jobs, max_jobs)
    text = {k: _cfg(section, k) for k in ("local-directory", "log-directory", "interface",
                                          "resource-spec")}
    return BatchOptions(
        section=section,
        queue=None if pick("queue", queue) is None else str(pick("queue", queue)),
        account=None if pick("account", account) is None else str(pick("account", account)),
        cores=cores, processes=processes, memory=memory, walltime=wall, walltime_s=wall_s,
        jobs=njobs, min_jobs=min_jobs, max_jobs=max_jobs,
        job_extra_directives=_strings(section, "job-extra-directives",
                                      _cfg(section, "job-extra-directives")),
        job_script_prologue=_strings(section, "job-script-prologue",
                                     _cfg(section, "job-script-prologue")),
        local_directory=text["local-directory"], log_directory=text["log-directory"],
        interface=text["interface"],
        lifetime=lifetime, lifetime_stagger=stagger,
        lifetime_restart=bool(_cfg(section, "lifetime-restart")),
        resource_spec=text["resource-spec"] if section == "pbs" else None,
    )


# ---------------------------------------------------------------- TLS credentials


def private_folder(parent, prefix):
    """A new folder only this user can enter (0700) under ``parent`` (created 0700 if missing)."""
    parent = Path(os.path.expandvars(os.path.expanduser(str(parent)))).absolute()
    if any(c.isspace() for c in str(parent)):  # job scripts carry the paths unquoted
        raise ReduceError(f"{NAMESPACE}.shared-directory: {str(parent)!r} contains white space")
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        os.chmod(folder, 0o700)
    except OSError as exc:
        raise ReduceError(f"{NAMESPACE}.shared-directory: cannot create a private folder "
                          f"under {parent}: {exc}") from exc
    return folder


def check_private(folder):
    """Refuse a folder that is not ours or that others can read, write or enter."""
    st = os.stat(folder)
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise ReduceError(f"{folder}: TLS folder must belong to you with mode 0700 "
                          f"(found uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")


def _write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_credentials(folder, *, days=CERT_DAYS):
    """A fresh CA and one certificate/key signed by it, as PEM files 0600 in ``folder``.

    The same certificate serves the scheduler, the workers and the client (dask checks the
    chain, not host names). The CA's private key is never written: nobody, not even this
    user, can sign another certificate that this cluster accepts.
    Returns the paths (ca_file, cert, key).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def usage(**on):
        names = ("digital_signature", "content_commitment", "key_encipherment",
                 "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                 "encipher_only", "decipher_only")
        return x509.KeyUsage(**{n: on.get(n, False) for n in names})

    now = datetime.datetime.now(datetime.timezone.utc)
    tag = f"{getpass.getuser()}@{socket.gethostname()} {now:%Y-%m-%dT%H:%M:%SZ}"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"skyreduce dask CA {tag}")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skyreduce-dask")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True, key_agreement=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("skyreduce-dask")]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    contents = (ca.public_bytes(pem), cert.public_bytes(pem),
                key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    folder = Path(folder)
    check_private(folder)
    paths = tuple(str(folder / name) for name in CREDENTIAL_FILES)
    for path, data in zip(paths, contents):
        _write_private(path, data)
    return paths


def batch_security(opts, security):
    """(Security or None, private folder or None) for a cluster started on a batch system.

    ``security=`` object > TLS files of the options > generated credentials when
    ``skyreduce.cluster.tls`` is true (the default) > plain TCP (with a warning).
    """
    from cluster.connect import tls_security

    files = (opts.tls_ca_file, opts.tls_cert, opts.tls_key)
    if security is not None or any(files):
        if security is not None and any(files):
            raise ReduceError("give TLS credentials either as files or as security=, not both")
        if not opts.tls:
            raise ReduceError("TLS switched off (--no-tls, skyreduce.cluster.tls: false) but "
                              "TLS credentials given")
        if security is None:
            return tls_security(*files, roles=("client", "scheduler", "worker")), None
        # in-memory keys (e.g. Security.temporary()) are dumped by dask-jobqueue: give it a
        # private folder for them
        return security, private_folder(opts.shared_directory, "tls-")
    if not opts.tls:
        log.warning("TLS is off: anyone who can reach the dask scheduler can run code as you")
        return None, None
    folder = private_folder(opts.shared_directory, "tls-")
    try:
        files = write_credentials(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return tls_security(*files, roles=("client", "scheduler", "worker")), folder


# ---------------------------------------------------------------- clusters


_import_lock = threading.Lock()


def jobqueue():
    """``import dask_jobqueue``, keeping this process's SIGINT handler.

    dask-jobqueue installs ``SIGINT -> sys.exit()`` when imported (for its runners), which
    would turn Ctrl-C in a skyreduce command into a silent exit.
    """
    with _import_lock:
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if main else None
        try:
            import dask_jobqueue
        except ImportError as exc:  # pragma: no cover - a dependency of skyreduce
            raise ReduceError("the slurm and pbs backends need dask-jobqueue "
                              "(pip install dask-jobqueue)") from exc
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


class _RemovesFolder:
    """Mixin for a jobqueue cluster: remove its private TLS folder once closed."""

    tls_folder = None

    async def _close(self):
        try:
            return await super()._close()
        finally:
            if self.tls_folder is not None:
                for name in ("_job_ca_file", "_job_cert", "_job_key"):
                    dumped = getattr(self, name, None)  # in-memory keys dumped by dask-jobqueue
                    with contextlib.suppress(OSError, AttributeError):
                        dumped.close()
                shutil.rmtree(self.tls_folder, ignore_errors=True)


class _MarksClosed:
    """Mixin for a jobqueue Job: closed once cancelled (dask-jobqueue 0.9 leaves it 'running',
    and a cluster that still holds such a job fails its close with an AssertionError)."""

    async def close(self):
        try:
            await super().close()
        finally:
            self.status = Status.closed
            self._event_finished.set()


TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
PROFILE_KEY = "distributed.worker.profile.enabled"


def worker_spawn_config() -> dict:
    """The dask config under which this package starts nannies (local clusters, the allocation
    mode's workers; a nanny hands its config to its worker process):

    - ``MALLOC_TRIM_THRESHOLD_`` in the workers' environment from
      ``skyreduce.cluster.worker-malloc-trim-threshold`` (default None: unset, glibc's own dynamic
      thresholds) instead of distributed's 65536;
    - distributed's statistical profiler from ``skyreduce.cluster.worker-profile`` (default off:
      its hour of profiles grew a worker's memory with the work done).

    skyreduce-cluster.yaml says why, with the figures. Set, not defaults: ``dask.config.refresh``
    would give distributed's defaults back."""
    return {TRIM_KEY: dask.config.get(f"{NAMESPACE}.worker-malloc-trim-threshold", default=None),
            PROFILE_KEY: bool(dask.config.get(f"{NAMESPACE}.worker-profile", default=False))}


def worker_environ() -> str:
    """The job-script line that gives a batch job's workers ``worker_spawn_config``: the job's
    ``dask worker`` does not import this package, so its nanny would use distributed's defaults. By
    the environment (a dask config variable whose value is a dict keeps the keys' case)."""
    spawn = worker_spawn_config()
    return (f"""export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON='{{"MALLOC_TRIM_THRESHOLD_": {spawn[TRIM_KEY]!r}}}'"""
            f" DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED={spawn[PROFILE_KEY]}")


@functools.lru_cache(maxsize=None)
def cluster_class(name):
    """dask-jobqueue's ``name`` cluster class (SLURMCluster, PBSCluster) that cleans up after itself."""
    base = getattr(jobqueue(), name)
    job = type(f"Skyreduce{base.job_cls.__name__}", (_MarksClosed, base.job_cls),
               {"__module__": __name__})
    return type(f"Skyreduce{name}", (_RemovesFolder, base),
                {"__module__": __name__, "job_cls": job})


def make_cluster(name, opts, security=None, **kw):
    """A dask-jobqueue ``name`` cluster (scheduler started here, no job submitted yet)."""
    b = opts.batch
    sec, folder = batch_security(opts, security)
    section = b.section
    extra_args = list(dask.config.get(f"jobqueue.{section}.worker-extra-args", default=None) or [])
    kwargs = dict(
        job_name="skyreduce-worker", queue=b.queue, account=b.account, cores=b.cores,
        processes=b.processes, memory=b.memory, walltime=b.walltime,
        job_extra_directives=list(b.job_extra_directives),
        job_script_prologue=[worker_environ()] + list(b.job_script_prologue),
        local_directory=b.local_directory, log_directory=b.log_directory, interface=b.interface,
        worker_extra_args=extra_args + b.worker_args(),
        security=sec, shared_temp_directory=None if folder is None else str(folder),
        scheduler_options={"dashboard": opts.dashboard,
                           "dashboard_address": opts.dashboard_address},
        silence_logs=opts.silence_logs,
    )
    if section == "pbs" and b.resource_spec is not None:
        kwargs["resource_spec"] = b.resource_spec
    kwargs.update(kw)
    try:
        cluster = cluster_class(name)(**kwargs)
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    cluster.tls_folder = folder
    return cluster


def start(cluster, opts):
    """Scale ``cluster`` adaptively and return a client that owns it (closing one closes both)."""
    from cluster.connect import OwningClient

    b = opts.batch
    lo, hi = b.job_range
    try:
        cluster.adapt(minimum_jobs=lo, maximum_jobs=hi)
        client = OwningClient(cluster, security=cluster.security, timeout=opts.timeout)
    except BaseException:
        cluster.close()
        raise
    scaling = f"{lo} jobs" if lo == hi else f"adaptive, {lo} to {hi} jobs"
    log.info("%s cluster: scheduler at %s; %s of %d cores, %s, %s%s%s (%d workers x %d threads "
             "per job)%s; TLS %s", b.section.upper(), cluster.scheduler_address, scaling, b.cores,
             format_bytes(b.memory), b.walltime,
             f", queue {b.queue}" if b.queue else "", f", account {b.account}" if b.account else "",
             b.processes, b.threads,
             f"; workers leave after {b.lifetime:.0f} +- {b.lifetime_stagger:.0f} s"
             if b.lifetime else "",
             f"credentials in {cluster.tls_folder}" if cluster.tls_folder else
             ("with the given credentials" if cluster.scheduler_address.startswith("tls://")
              else "OFF"))
    if opts.dashboard:
        log.info("dask dashboard at %s", client.dashboard_link)
    return client
