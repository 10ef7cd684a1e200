"""The MIPS BCD product's definitions shared by the steps, their kernels and the pipeline:
schema and store groups, pipeline version, mask bits (schemas/mips_bcd.yaml) and the per-DCE
problem codes the kernels set (``dce_code``; the pipeline turns them into a reason).
"""
from __future__ import annotations

from .. import __version__
from ..schemas import load_schema

PIPELINE_VERSION = f"skyreduce {__version__}"
BCD_SCHEMA = "mips_bcd"
GROUPS = {1: "bcd24", 2: "bcd70", 3: "bcd160"}
RAW_GROUPS = {1: "mips24", 2: "mips70", 3: "mips160"}

DCE_CODES = {"all_saturated": 1, "no_valid_pixel": 2, "no_responsivity": 4}
"""Per-DCE problem bits found in the data (pipeline.py turns them into a reason)."""


def mask_bits() -> dict[str, int]:
    """BCD mask bits name -> value (schemas/mips_bcd.yaml ``mask_bits``)."""
    return dict(load_schema(BCD_SCHEMA)["mask_bits"])
