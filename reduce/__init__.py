"""skyreduce: reduction library for SWAS and Spitzer MIPS on dask/xarray/zarr."""
import logging
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skyreduce")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())
