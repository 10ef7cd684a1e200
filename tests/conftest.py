import os
import shutil
from pathlib import Path

import dask
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def reference_dir():
    """The real reference files of ../shared/reference (skip when absent)."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference files not found at {REFERENCE} (shared/ must sit beside the checkout)")
    return REFERENCE


def require_tool(name):
    """Return the path of an external tool, or skip in a local run / fail in CI."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not installed (make test installs it from Debian)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


class _RaiseOnCompute:
    """A dask scheduler that raises whenever something tries to compute."""

    def __call__(self, dsk, keys, **kwargs):
        raise RuntimeError("a dask graph was computed while it should only have been built")


@pytest.fixture
def raise_if_dask_computes():
    """Context in which any dask compute raises (proves a step stays lazy)."""
    return lambda: dask.config.set(scheduler=_RaiseOnCompute())
