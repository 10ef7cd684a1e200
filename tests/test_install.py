"""A non-editable install works: the wheel carries the YAML schemas and the cluster defaults.

Builds an sdist from a copy of the checkout and a wheel from that sdist (as ``python -m
build`` does), installs the wheel into a fresh virtual environment, and runs the command
line there from a folder outside the checkout. No network: the build runs without
isolation (the setuptools of this environment, see ``make install-test``), the wheel is
installed with ``--no-deps``, and the fresh environment sees this environment's
dependencies through a ``.pth`` file, whose folder is not a site folder, so the editable
install of skyreduce in it stays inert there.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                ".pytest_cache", "demo-output", "bench-output", "dask-worker-space", "notebooks")


def _run(cmd, *, cwd, env=None, timeout=300):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


def build_wheel(tmp: Path) -> Path:
    """sdist of a copy of the checkout, then a wheel built from the unpacked sdist."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    (tmp / "sdist").mkdir()
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
          "print(build_meta.build_sdist(sys.argv[1]))", tmp / "sdist"], cwd=src)
    sdist, = (tmp / "sdist").glob("skyreduce-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    unpacked, = (tmp / "unpacked").iterdir()
    try:
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
              unpacked, "-w", tmp / "dist"], cwd=tmp)
    except AssertionError as exc:
        raise AssertionError("building the wheel failed; the build runs without isolation with this "
                             "environment's setuptools>=69 and wheel (make install-test installs them)\n"
                             + str(exc)) from None
    wheel, = (tmp / "dist").glob("skyreduce-*.whl")
    return wheel


def fresh_venv(path: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed, seeing this environment's site-packages (a .pth)."""
    venv.EnvBuilder(with_pip=False).create(path)
    python = path / "bin" / "python"
    # the wheel goes in before the .pth exists: pip then sees no other skyreduce
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=path)
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=path).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (purelib / "zz_skyreduce_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    return path


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"reduce/_schemas/{p.name}" for p in (ROOT / "schemas").glob("*.yaml")}
    want.add("cluster/skyreduce-cluster.yaml")
    assert len(want) > 5
    assert not want - names, f"missing from {wheel.name}: {sorted(want - names)}"

    env_dir = fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "work"
    work.mkdir()
    assert not work.is_relative_to(ROOT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"

    # the wheel's files are what runs, not the checkout (editable install) nor the copy built from
    r = _run([env_dir / "bin" / "python", "-c", "import reduce, cluster, reduce.schemas as s; "
              "print(reduce.__file__); print(cluster.__file__); print(s.schema_dir())"], cwd=work, env=env)
    for line in r.stdout.split():
        assert Path(line).resolve().is_relative_to(env_dir.resolve()), r.stdout

    skyreduce = env_dir / "bin" / "skyreduce"
    _run([skyreduce, "demo", "--out", "D", "--workers", "1", "--no-dashboard", "-q"], cwd=work, env=env)
    for instrument in ("swas", "mips"):
        _run([skyreduce, "reduce", instrument, "--store", f"D/{instrument}.zarr", "--out", f"P/{instrument}",
              "--workers", "1", "--no-dashboard", "-q"], cwd=work, env=env)
        assert list((work / "P" / instrument).rglob("*.fits")), f"no FITS products under P/{instrument}"
