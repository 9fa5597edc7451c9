"""The site's findings index: studies, series and SR findings, keyed by salted hashes.

A lower layer: it imports neither the HTTP layer nor the store. See DESIGN.md principle 3.
"""

from gateway.index.findings_index import FindingsIndex
from gateway.index.records import (
    FindingRecord,
    MeasurementRecord,
    ReportRecord,
    SeriesRecord,
    StudyRecord,
)
from gateway.index.settings import IndexSettings

__all__ = [
    "FindingRecord",
    "FindingsIndex",
    "IndexSettings",
    "MeasurementRecord",
    "ReportRecord",
    "SeriesRecord",
    "StudyRecord",
]
