"""The one runner every pipeline runs on (units of work, store tables, records, summary)."""
from .core import Pipeline, RunSummary, Unit, UnitResult, compute_graph, hash_strings, read_records, run
from .tables import TableSpec, ensure_table, open_table, open_units, read_slot, write_slot

__all__ = ["Pipeline", "RunSummary", "Unit", "UnitResult", "TableSpec", "run", "compute_graph", "read_records", "hash_strings",
           "ensure_table", "open_table", "open_units", "read_slot", "write_slot"]
