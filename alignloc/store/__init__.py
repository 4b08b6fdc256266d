"""The on-disk activation store: safetensors shards plus a JSON manifest (see manifest.py)."""

from alignloc.store.manifest import StoreError
from alignloc.store.reader import Store, open_store
from alignloc.store.writer import DTYPES, StoreWriter

__all__ = ["DTYPES", "Store", "StoreError", "StoreWriter", "open_store"]
