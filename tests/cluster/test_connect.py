"""cluster.connect / cluster.options: local sizing, joining schedulers, TLS, CLI options, config.

Small clusters only (threads, one worker) except the default-rule test (2 processes).
"""
import argparse
import datetime
import importlib
import ipaddress
import logging
import os
import urllib.error
import urllib.request

import dask
import dask.array as da
import dask.system
import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster, Security
from distributed.core import Status
from distributed.system import MEMORY_LIMIT

from cluster.connect import connect, resolve_options
from cluster.options import add_cluster_arguments, connect_from_args
from reduce.errors import ReduceError
from worker_probes import WORKER_MALLOC_TRIM, WORKER_PROFILING

# the submodules (the package attribute `cluster.connect` is the function)
cc = importlib.import_module("cluster.connect")
co = importlib.import_module("cluster.options")

TIMEOUT = "3s"  # short connection timeouts for the refusal tests


def _sum_on(client):
    """A small dask array sum computed through ``client``."""
    x = da.arange(1000, chunks=100)
    return client.compute(x.sum()).result(timeout=20)


def _http_status(port, path="status"):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _listen_ips(port):
    """IP addresses this process listens on at ``port``."""
    conns = psutil.Process(os.getpid()).net_connections(kind="inet")
    return {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


@pytest.fixture
def small_cluster(tmp_path):
    """A running one-worker TCP cluster that also wrote a scheduler file."""
    sfile = tmp_path / "scheduler.json"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address=None, silence_logs=logging.WARNING,
                      scheduler_kwargs={"scheduler_file": str(sfile),
                                        "dashboard_address": "127.0.0.1:0"}) as lc:
        yield lc, sfile


# ---------------------------------------------------------------- local cluster sizing


@pytest.mark.parametrize(
    "cores, kwargs, expected",
    [
        (8, {}, (8, 1)),
        (8, {"threads_per_worker": 2}, (4, 2)),
        (8, {"threads_per_worker": 16}, (1, 16)),
        (8, {"n_workers": 3}, (3, 1)),
        (8, {"processes": False}, (1, 8)),
        (8, {"processes": False, "n_workers": 2}, (2, 4)),
        (1, {}, (1, 1)),
    ],
)
def test_sizing_rule(monkeypatch, cores, kwargs, expected):
    monkeypatch.setattr(dask.system, "CPU_COUNT", cores)
    opts = resolve_options(**kwargs)
    assert (opts.n_workers, opts.threads_per_worker) == expected
    assert opts.memory_limit == MEMORY_LIMIT // expected[0]


def test_default_local_cluster(monkeypatch, caplog):
    """Default connect(): 2 cores -> 2 worker processes x 1 thread, localhost dashboard, workers
    without MALLOC_TRIM_THRESHOLD_."""
    monkeypatch.setattr(dask.system, "CPU_COUNT", 2)  # bounded size on any CI machine
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)   # as a shell starts the command
    caplog.set_level(logging.INFO, logger="cluster")
    with connect() as client:
        lc = client.cluster
        info = client.scheduler_info()
        workers = info["workers"].values()
        assert len(workers) == 2
        assert [w["nthreads"] for w in workers] == [1, 1]
        assert {w["memory_limit"] for w in workers} == {MEMORY_LIMIT // 2}
        assert lc.scheduler_address.startswith("tcp://127.0.0.1:")
        port = lc.scheduler.http_server.port
        assert _listen_ips(port) == {"127.0.0.1"}
        assert _http_status(port) == 200
        assert _sum_on(client) == 499500
        # the nanny spawned them without distributed's MALLOC_TRIM_THRESHOLD_ (skyreduce-cluster.yaml)
        assert set(client.run(WORKER_MALLOC_TRIM).values()) == {None}
        # and without distributed's profiler (skyreduce.cluster.worker-profile)
        assert set(client.run(WORKER_PROFILING).values()) == {False}
    assert client.status == "closed"
    assert lc.status == Status.closed
    messages = [r.getMessage() for r in caplog.records if r.name == "cluster.connect"]
    assert f"dask dashboard at http://127.0.0.1:{port}/status" in messages


def test_no_dashboard(caplog):
    caplog.set_level(logging.INFO, logger="cluster")
    with connect(dashboard=False, processes=False, n_workers=1, threads_per_worker=1) as client:
        port = client.cluster.scheduler.http_server.port
        assert _listen_ips(port) == {"127.0.0.1"}  # health/metrics server, still local only
        assert _http_status(port) == 404
        assert _sum_on(client) == 499500
    ours = [r.getMessage() for r in caplog.records if r.name == "cluster.connect"]
    assert ours and not any("dashboard" in m for m in ours)


def test_memory_limit_string():
    with connect(processes=False, n_workers=1, threads_per_worker=1, memory_limit="300MiB",
                 dashboard=False) as client:
        (w,) = client.scheduler_info()["workers"].values()
        assert w["memory_limit"] == 300 * 2**20


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_workers": 0}, "n-workers: expected a positive integer"),
        ({"threads_per_worker": 1.5}, "threads-per-worker: expected a positive integer"),
        ({"memory_limit": "12 parsecs"}, "memory-limit: expected bytes"),
        ({"backend": "slurm", "n_workers": 2}, "n_workers only apply to a local cluster"),
        ({"backend": "cloud"}, "unknown 'cloud'"),
    ],
)
def test_bad_local_options(kwargs, match):
    with pytest.raises(ReduceError, match=match):
        connect(**kwargs)


# ---------------------------------------------------------------- existing scheduler


def test_join_by_address(small_cluster):
    lc, _ = small_cluster
    with connect(scheduler=lc.scheduler_address) as client:
        assert client.scheduler.address == lc.scheduler_address
        assert _sum_on(client) == 499500
    assert lc.status == Status.running  # leaving a shared scheduler does not close it


def test_join_by_scheduler_file(small_cluster):
    lc, sfile = small_cluster
    with connect(scheduler_file=sfile) as client:
        assert client.scheduler.address == lc.scheduler_address
        assert _sum_on(client) == 499500
    assert lc.status == Status.running


def test_join_refuses_local_options():
    with pytest.raises(ReduceError, match="n_workers, memory_limit only apply to a local"):
        connect(scheduler="tcp://127.0.0.1:1", n_workers=2, memory_limit="1GiB")
    with pytest.raises(ReduceError, match="either a scheduler address .* or a scheduler file"):
        connect(scheduler="tcp://127.0.0.1:1", scheduler_file="s.json")


def test_missing_scheduler_file(tmp_path):
    missing = tmp_path / "nowhere.json"
    with dask.config.set({"skyreduce.cluster.timeout": "0.3s"}):
        with pytest.raises(ReduceError, match=f"{missing}: scheduler file not found"):
            connect(scheduler_file=missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ReduceError, match=f"{bad}: not a dask scheduler file"):
        connect(scheduler_file=bad)


def test_unreachable_scheduler():
    with dask.config.set({"skyreduce.cluster.timeout": "1s"}):
        with pytest.raises(ReduceError, match="cannot connect to the dask scheduler at tcp://127.0.0.1:9"):
            connect(scheduler="tcp://127.0.0.1:9")


# ---------------------------------------------------------------- TLS


def _pem_key(key):
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _make_cert(name, issuer=None, *, ca=False):
    """(key, certificate): self-signed when ``issuer`` (key, cert) is None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_key, issuer_cert = issuer if issuer else (key, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())


def _write_pki(folder, tag):
    """CA + one leaf certificate signed by it, as PEM files; returns (ca, cert, key) paths."""
    from cryptography.hazmat.primitives import serialization

    folder.mkdir()
    ca = _make_cert(f"skyreduce test CA {tag}", ca=True)
    key, cert = _make_cert("localhost", ca)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    return tuple(str(p) for p in paths)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography")
    root = tmp_path_factory.mktemp("pki")
    return {"good": _write_pki(root / "good", "A"), "other": _write_pki(root / "other", "B")}


@pytest.fixture
def tls_cluster(pki):
    ca, cert, key = pki["good"]
    sec = Security(tls_ca_file=ca, tls_scheduler_cert=cert, tls_scheduler_key=key,
                   tls_worker_cert=cert, tls_worker_key=key, tls_client_cert=cert,
                   tls_client_key=key, require_encryption=True)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://",
                      host="127.0.0.1", security=sec, dashboard_address=None,
                      silence_logs=logging.WARNING,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as lc:
        yield lc


def test_tls_join_with_credentials(tls_cluster, pki):
    addr = tls_cluster.scheduler_address
    assert addr.startswith("tls://127.0.0.1:")
    ca, cert, key = pki["good"]
    with connect(scheduler=addr, tls_ca_file=ca, tls_cert=cert, tls_key=key) as client:
        assert _sum_on(client) == 499500


def test_tls_join_with_distributed_tls_config(tls_cluster, pki):
    """distributed's own TLS config (distributed.comm.tls.*) is accepted as credentials."""
    ca, cert, key = pki["good"]
    with dask.config.set({"distributed.comm.tls.ca-file": ca,
                          "distributed.comm.tls.client.cert": cert,
                          "distributed.comm.tls.client.key": key}):
        with connect(scheduler=tls_cluster.scheduler_address) as client:
            assert _sum_on(client) == 499500


def test_tls_refused_without_credentials(tls_cluster):
    addr = tls_cluster.scheduler_address
    with pytest.raises(ReduceError, match=f"scheduler {addr} uses TLS: give tls_ca_file"):
        connect(scheduler=addr)
    # plain distributed without security: refused too (it cannot even open a TLS comm)
    with pytest.raises((TypeError, OSError, TimeoutError), match="(?i)tls|ssl|timed out"):
        Client(addr, timeout=TIMEOUT).close()


def test_tls_refused_with_foreign_ca(tls_cluster, pki):
    """A certificate from another CA fails the handshake (mutual TLS)."""
    ca, cert, key = pki["other"]
    with dask.config.set({"skyreduce.cluster.timeout": TIMEOUT}):
        with pytest.raises(ReduceError, match="cannot connect to the dask scheduler .*certificate"):
            connect(scheduler=tls_cluster.scheduler_address,
                    tls_ca_file=ca, tls_cert=cert, tls_key=key)


def test_tls_credential_errors(pki, tmp_path):
    ca, cert, key = pki["good"]
    with pytest.raises(ReduceError, match="missing tls_key"):
        connect(scheduler="tls://127.0.0.1:1", tls_ca_file=ca, tls_cert=cert)
    gone = str(tmp_path / "gone.pem")
    with pytest.raises(ReduceError, match=f"{gone}: tls_cert file not found"):
        connect(scheduler="tls://127.0.0.1:1", tls_ca_file=ca, tls_cert=gone, tls_key=key)
    with pytest.raises(ReduceError, match="scheduler tcp://127.0.0.1:1 is not tls://"):
        connect(scheduler="tcp://127.0.0.1:1", tls_ca_file=ca, tls_cert=cert, tls_key=key)
    with pytest.raises(ReduceError, match="either as files or as security="):
        connect(scheduler="tls://127.0.0.1:1", tls_ca_file=ca, tls_cert=cert, tls_key=key,
                security=Security())


def test_tls_security_object_and_local_tls(pki):
    """A local cluster with TLS files runs on tls://; a Security object joins it."""
    ca, cert, key = pki["good"]
    with connect(processes=False, n_workers=1, threads_per_worker=1, dashboard=False,
                 tls_ca_file=ca, tls_cert=cert, tls_key=key) as owner:
        addr = owner.scheduler.address
        assert addr.startswith("tls://127.0.0.1:")
        sec = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                       require_encryption=True)
        with connect(scheduler=addr, security=sec) as client:
            assert _sum_on(client) == 499500


# ---------------------------------------------------------------- CLI options


def _parser():
    return add_cluster_arguments(argparse.ArgumentParser(prog="skyreduce-test"))


def test_cli_defaults_are_none(monkeypatch):
    calls = []
    monkeypatch.setattr(co, "connect", lambda **kw: calls.append(kw))
    connect_from_args(_parser().parse_args([]))
    assert calls == [dict.fromkeys([*co._KEYWORDS, *co._RENAMED.values()])]


def test_cli_parses_into_connect_call(monkeypatch):
    calls = []
    monkeypatch.setattr(co, "connect", lambda **kw: calls.append(kw))
    args = _parser().parse_args(
        ["--scheduler", "tls://head:8786", "--workers", "4", "--threads-per-worker", "2",
         "--memory-limit", "4GiB", "--tls-ca-file", "ca.pem", "--tls-cert", "c.pem",
         "--tls-key", "k.pem", "--no-dashboard"])
    connect_from_args(args)
    assert calls == [dict(scheduler="tls://head:8786", scheduler_file=None, n_workers=4,
                          threads_per_worker=2, memory_limit="4GiB", tls_ca_file="ca.pem",
                          tls_cert="c.pem", tls_key="k.pem", dashboard=False,
                          **dict.fromkeys(["backend", "tls", "jobs", "min_jobs", "max_jobs",
                                           "job_cores", "job_memory", "job_processes", "queue",
                                           "account", "walltime"]))]
    connect_from_args(_parser().parse_args(["--scheduler-file", "s.json"]))
    assert calls[1]["scheduler_file"] == "s.json" and calls[1]["scheduler"] is None


@pytest.mark.parametrize("argv", [
    ["--workers", "0"], ["--threads-per-worker", "x"], ["--memory-limit", "lots"],
    ["--scheduler", "tcp://a:1", "--scheduler-file", "s.json"],
])
def test_cli_rejects(argv, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_cli_end_to_end(small_cluster):
    lc, _ = small_cluster
    args = _parser().parse_args(["--scheduler", lc.scheduler_address])
    with connect_from_args(args) as client:
        assert client.scheduler.address == lc.scheduler_address
        assert client.compute(da.from_array(np.ones((20, 20)), chunks=5).sum()).result() == 400


# ---------------------------------------------------------------- configuration


def test_yaml_defaults_registered():
    assert dask.config.get("skyreduce.cluster.backend") == "local"
    assert dask.config.get("skyreduce.cluster.dashboard-address") == "127.0.0.1:0"
    assert dask.config.get("skyreduce.cluster.host") == "127.0.0.1"


def test_config_overrides(monkeypatch):
    monkeypatch.setattr(dask.system, "CPU_COUNT", 8)
    with dask.config.set({"skyreduce.cluster.n-workers": 3,
                          "skyreduce.cluster.threads-per-worker": 2,
                          "skyreduce.cluster.memory-limit": "1GiB",
                          "skyreduce.cluster.dashboard": False}):
        opts = resolve_options()
        assert (opts.n_workers, opts.threads_per_worker, opts.memory_limit, opts.dashboard) \
            == (3, 2, 2**30, False)
        explicit = resolve_options(n_workers=5, dashboard=True)  # argument beats config
        assert (explicit.n_workers, explicit.threads_per_worker, explicit.dashboard) == (5, 2, True)
    assert resolve_options().n_workers == 8


def test_config_scheduler_used_by_connect(small_cluster):
    lc, sfile = small_cluster
    with dask.config.set({"skyreduce.cluster.scheduler": lc.scheduler_address}):
        with connect() as client:
            assert client.scheduler.address == lc.scheduler_address
            assert _sum_on(client) == 499500
        # an explicit scheduler file replaces the configured address (no 'both' error)
        assert resolve_options(scheduler_file=sfile).scheduler is None


def test_environment_variable_override(monkeypatch):
    monkeypatch.setenv("DASK_SKYREDUCE__CLUSTER__N_WORKERS", "7")
    monkeypatch.setenv("DASK_SKYREDUCE__CLUSTER__SCHEDULER", "tls://head:8786")
    try:
        dask.config.refresh()
        opts = resolve_options()
        assert (opts.n_workers, opts.scheduler) == (7, "tls://head:8786")
        assert dask.config.get("skyreduce.cluster.dashboard-address") == "127.0.0.1:0"
    finally:
        monkeypatch.delenv("DASK_SKYREDUCE__CLUSTER__N_WORKERS")
        monkeypatch.delenv("DASK_SKYREDUCE__CLUSTER__SCHEDULER")
        dask.config.refresh()
    assert resolve_options().scheduler is None


# ---------------------------------------------------------------- failures (tests/test_resilience.py)


def test_started_scheduler_gets_allowed_failures_joined_one_keeps_its_own(small_cluster):
    """skyreduce.cluster.allowed-failures becomes distributed.scheduler.allowed-failures of a
    scheduler connect() starts, and of no other (dask's own default stays for everything else)."""
    lc, _ = small_cluster
    with dask.config.set({"skyreduce.cluster.allowed-failures": 1}):
        with connect(n_workers=1, processes=False, dashboard=False) as client:
            assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 1
        with connect(scheduler=lc.scheduler_address) as client:
            assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 3
    assert dask.config.get("distributed.scheduler.allowed-failures") == 3
    assert resolve_options().allowed_failures == 3


@pytest.mark.parametrize("key, value", [("allowed-failures", -1), ("allowed-failures", "x"), ("retries", 1.5)])
def test_bad_failure_settings(key, value):
    with dask.config.set({f"skyreduce.cluster.{key}": value}):
        with pytest.raises(ReduceError, match=f"skyreduce.cluster.{key}: expected an integer >= 0"):
            resolve_options()


def test_scheduler_file_read_once_whole(tmp_path):
    """`dask scheduler` writes its file in place: an empty (or half) file is waited for, not refused."""
    import threading
    path = tmp_path / "scheduler.json"
    path.write_text("")
    timer = threading.Timer(0.3, lambda: path.write_text('{"address": "tcp://127.0.0.1:8786"}'))
    timer.start()
    try:
        assert cc._read_scheduler_file(path, 10) == "tcp://127.0.0.1:8786"
    finally:
        timer.cancel()
    path.write_text('{"addr')
    with pytest.raises(ReduceError, match="not a dask scheduler file"):
        cc._read_scheduler_file(path, 0.2)
