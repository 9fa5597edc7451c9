"""The embedded store: Part 10 files on disk and their SQLite catalog.

A lower layer: it never imports the HTTP layer (an import-linter contract checks this).
"""

from gateway.store.catalog import Catalog, InstanceRecord
from gateway.store.embedded import EmbeddedStore
from gateway.store.ingest import (
    FailureReason,
    IngestBatch,
    IngestOutcome,
    IngestPolicy,
    StoredInstance,
    WarningReason,
)

__all__ = [
    "Catalog",
    "EmbeddedStore",
    "FailureReason",
    "IngestBatch",
    "IngestOutcome",
    "IngestPolicy",
    "InstanceRecord",
    "StoredInstance",
    "WarningReason",
]
