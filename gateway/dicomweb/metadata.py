"""Instance headers as DICOM JSON (PS3.18 F.2), with bulk data as BulkDataURI (F.2.6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

# Binary values above this many bytes are bulk data: referenced by URI, never inlined.
BULK_DATA_THRESHOLD = 1024
_OMIT = "\x00omit"


def header_to_json(dataset: Dataset, bulk_data_uri: Callable[[str], str] | None) -> dict[str, Any]:
    """DICOM JSON of ``dataset``; bulk values as ``BulkDataURI`` from ``bulk_data_uri(tag)``,
    or left out when ``bulk_data_uri`` is None (QIDO-RS results carry no bulk data)."""

    def handler(data_element: DataElement) -> str:
        if bulk_data_uri is None:
            return _OMIT
        return bulk_data_uri(f"{data_element.tag:08X}")

    result: dict[str, Any] = dataset.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD,
        bulk_data_element_handler=handler,
        suppress_invalid_tags=True,
    )
    if bulk_data_uri is None:
        _drop_omitted(result)
    return result


def _drop_omitted(attributes: dict[str, Any]) -> None:
    for tag in list(attributes):
        value = attributes[tag]
        if value.get("BulkDataURI") == _OMIT:
            del attributes[tag]
        elif value.get("vr") == "SQ":
            for item in value.get("Value", []):
                _drop_omitted(item)
