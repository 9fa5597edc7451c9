"""An instance's header as DICOM JSON (PS3.18 F.2), as WADO-RS metadata serves it.

Bulk data (binary values above :data:`BULK_DATA_THRESHOLD` bytes of base64, and the pixel data)
is referenced by ``BulkDataURI`` (PS3.18 F.2.6). Each element is converted by pydicom
(``DataElement.to_json_dict``), so the result is pydicom's ``Dataset.to_json_dict``; what pydicom
cannot convert is left out and logged (as its ``suppress_invalid_tags`` does).

pydicom's conversion costs about 1.3 ms for a CT header, most of it per element, and most of a
series' elements are the same bytes in every instance (patient, study, series, equipment,
geometry). :func:`metadata_json` keeps the JSON text of such elements by their raw bytes, so a
series' second and later instances convert only what differs (the instance's UIDs, numbers,
positions): about 0.1-0.2 ms an instance. Only elements whose conversion depends on their bytes
alone are kept: not sequences, private elements, ``UN``, ambiguous VRs (resolved from other
elements) or bulk data (whose URI names the instance).

The intake builds each instance's metadata from the header it has parsed anyway
(:mod:`gateway.store.data_elements`), before the instance is acknowledged, and the catalog
keeps it (:meth:`gateway.store.catalog.CatalogWriter.keep_instance_metadata`): a viewer's first
request for a series' metadata is then a concatenation, not a read of every file (issue 19).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pydicom.uid
import structlog
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR

log = structlog.get_logger(__name__)

#: Binary values whose base64 is longer than this are bulk data: referenced, never inlined.
BULK_DATA_THRESHOLD = 1024
#: Stands for the DICOMweb root in metadata kept ahead of requests: the root is the request's
#: (its host, a proxy's prefix); the kept bytes are every request's.
ROOT_MARK = "urn:fedgate:dicomweb-root"
#: Where WADO-RS metadata ends: pydicom's ``stop_before_pixels`` stops at the first of these.
_PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
#: pydicom's bulk test: a binary value longer than this many bytes (base64 makes 3 bytes 4).
_INLINE_BYTES = (BULK_DATA_THRESHOLD // 4) * 3
_BINARY_VRS = frozenset(str(vr) for vr in BYTES_VR)
#: Elements whose conversion depends on their bytes alone, by (tag, VR, value, implicit VR,
#: little endian, character set): their JSON text. Most repeat across a series (its study's
#: and patient's attributes, the scanner's); an instance's own UIDs and positions do not, so
#: the dictionary is cleared whenever what it holds passes a bound in bytes (the values' and
#: texts' lengths plus an estimate of a dictionary entry's own cost).
_KEPT_ELEMENTS: dict[tuple[Any, ...], str | None] = {}
_KEPT_BYTES_MAX = 8 * 1024 * 1024
_ENTRY_OVERHEAD_BYTES = 200
_kept_bytes = 0
#: Values longer than this are converted each time (a long text: rarely repeated, large key).
_KEPT_VALUE_MAX = 256


def instance_url(base: str, study: str, series: str, instance: str) -> str:
    """The instance's WADO-RS URL under the DICOMweb root ``base`` (PS3.18 10.4.1)."""
    return f"{base}/studies/{study}/series/{series}/instances/{instance}"


def json_attributes(dataset: Dataset, bulk_data_uri: Callable[[str], str] | None) -> dict[str, Any]:
    """DICOM JSON of ``dataset``; bulk values as ``BulkDataURI`` from ``bulk_data_uri(tag)``,
    or left out when ``bulk_data_uri`` is None (QIDO-RS results carry no bulk data)."""
    omitted = "\x00omit"
    attributes: dict[str, Any] = {}
    for tag in list(dataset.keys()):
        converted = _element_dict(dataset, tag, bulk_data_uri or (lambda tag: omitted))
        if converted is not None:
            attributes[f"{tag:08X}"] = converted
    if bulk_data_uri is None:
        _drop_omitted(attributes, omitted)
    return attributes


def metadata_json(
    dataset: Dataset, transfer_syntax_uid: str, url: str, has_pixel_data: Callable[[], bool]
) -> bytes | None:
    """The instance's WADO-RS metadata: the JSON text of its header up to the pixel data, and
    the pixel data by BulkDataURI when ``has_pixel_data()``; the same text as
    ``json.dumps(json_attributes(...))`` of the header read with pydicom's
    ``stop_before_pixels``, plus that pixel data attribute. ``url`` is the instance's URL.

    None when the header in memory lacks a value (one deferred by the parse that is not bulk
    data): the caller builds it from the file then.
    """
    charset = dataset.original_character_set
    # Text is decoded in the character set the header was read in (if none: not kept).
    charset_key = charset if isinstance(charset, str) else tuple(charset)
    parts: list[str] = []
    for tag in list(dataset.keys()):
        if tag in _PIXEL_DATA_TAGS:
            break
        name = f'"{tag:08X}":'
        raw = dataset._dict[tag]
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            # Deferred by the parse (longer than its defer size): only bulk data is named
            # without its value.
            if raw.VR not in _BINARY_VRS:
                return None
            uri = f"{url}/bulkdata/{tag:08X}"
            parts.append(name + _dumps({"vr": raw.VR, "BulkDataURI": uri}))
            continue
        key = _key(raw, charset_key) if charset_key else None
        text = _KEPT_ELEMENTS.get(key, "") if key is not None else ""
        if text == "":
            converted = _element_dict(dataset, tag, lambda tag: f"{url}/bulkdata/{tag}")
            text = _dumps(converted) if converted is not None else None
            if key is not None:
                _keep(key, text)
        if text is not None:
            parts.append(name + text)
    if has_pixel_data():
        pixel_data = {
            "vr": "OW" if encapsulated(transfer_syntax_uid) is False else "OB",
            "BulkDataURI": f"{url}/bulkdata/7FE00010",
        }
        parts.append('"7FE00010":' + _dumps(pixel_data))
    return ("{" + ",".join(parts) + "}").encode()


def _keep(key: tuple[Any, ...], text: str | None) -> None:
    """Keep an element's JSON text for the next instance that holds the same bytes."""
    global _kept_bytes
    size = len(key[2]) + len(text or "") + _ENTRY_OVERHEAD_BYTES
    if _kept_bytes + size > _KEPT_BYTES_MAX:
        # Intake threads may race here: the count is an estimate, the bound holds within
        # an entry or two.
        _KEPT_ELEMENTS.clear()
        _kept_bytes = 0
    _KEPT_ELEMENTS[key] = text
    _kept_bytes += size


def kept_elements_bytes() -> int:
    """What the kept elements hold now, as counted against their bound."""
    return _kept_bytes


def encapsulated(transfer_syntax_uid: str) -> bool | None:
    """Whether Pixel Data in this transfer syntax is encapsulated (PS3.5 A.4), or None when
    pydicom does not know the transfer syntax (a private or newer one): the store keeps such
    instances as they came, and only what needs to know the encoding must refuse them."""
    uid = pydicom.uid.UID(transfer_syntax_uid)
    if not uid.is_transfer_syntax:
        return None
    return bool(uid.is_compressed)


def _key(raw: DataElement | RawDataElement, charset: Any) -> tuple[Any, ...] | None:
    """The key of an element whose JSON depends on its bytes alone; None for the others."""
    if not isinstance(raw, RawDataElement) or raw.tag >> 16 & 1:
        return None  # converted already, or private (its VR may come from its creator)
    value = raw.value
    if value is None or len(value) > _KEPT_VALUE_MAX:
        return None
    vr = raw.VR
    if vr is None:  # implicit VR: the dictionary's
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    if vr in AMBIGUOUS_VR or vr in ("SQ", "UN"):
        return None
    if vr in _BINARY_VRS and len(value) > _INLINE_BYTES:
        return None  # bulk data: its URI names the instance
    return (raw.tag, raw.VR, value, raw.is_implicit_VR, raw.is_little_endian, charset)


def _element_dict(
    dataset: Dataset, tag: BaseTag, bulk_data_uri: Callable[[str], str]
) -> dict[str, Any] | None:
    """pydicom's DICOM JSON of one element; None (logged) if pydicom cannot convert it.

    pydicom's ``suppress_invalid_tags`` also switches its process-wide reading validation to
    strict while it runs, which would make the intake's own conversions in other threads
    raise; here the reading mode in force stays, so a value pydicom merely warns about is
    kept as read."""
    try:
        return dataset[tag].to_json_dict(
            bulk_data_element_handler=lambda element: bulk_data_uri(f"{element.tag:08X}"),
            bulk_data_threshold=BULK_DATA_THRESHOLD,
        )
    except Exception as error:
        log.warning("dicom_json.element_left_out", tag=f"{tag:08X}", error=str(error))
        return None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _drop_omitted(attributes: dict[str, Any], omitted: str) -> None:
    for tag in list(attributes):
        value = attributes[tag]
        if value.get("BulkDataURI") == omitted:
            del attributes[tag]
        elif value.get("vr") == "SQ":
            for item in value.get("Value", []):
                _drop_omitted(item, omitted)
