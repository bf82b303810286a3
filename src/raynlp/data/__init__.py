"""Data readers and the small real samples shipped with raynlp."""

from raynlp.data.paths import resolve_data_path
from raynlp.data.readers import read_rows, split_rows

__all__ = ["read_rows", "resolve_data_path", "split_rows"]
