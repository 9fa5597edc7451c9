"""QIDO-RS (PS3.18 10.6) over the embedded store.

``GET /dicomweb/studies``, ``/studies/{study}/series``, ``/series``,
``/studies/{study}/series/{series}/instances``, ``/studies/{study}/instances``, ``/instances``.
Answers ``200`` with a DICOM JSON array, empty when nothing matches (never 204, which some
clients mishandle; PS3.18 permits either).
"""

from __future__ import annotations

import json
from typing import Any

import anyio.to_thread
import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from starlette.requests import Request
from starlette.responses import Response

from gateway.dicomweb import qido_json
from gateway.dicomweb.errors import DicomWebError, warning_header
from gateway.dicomweb.json_model import DICOM_JSON, element, person_name
from gateway.dicomweb.negotiation import require_json
from gateway.dicomweb.stores import store_of
from gateway.dicomweb.urls import dicomweb_root
from gateway.numbers import non_negative_integer
from gateway.store import EmbeddedStore
from gateway.store.instance_json import json_attributes
from gateway.store.query import (
    ATTRIBUTES,
    MODALITIES_IN_STUDY,
    SOP_CLASSES_IN_STUDY,
    Query,
    QueryError,
    QueryLevel,
    search_rows,
)
from gateway.store.uids import is_valid_uid

MAX_RESULTS = 10_000
_CONTROL_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching"}

# Attributes returned by default at each level (PS3.18 Tables 10.6.3-3, -4 and -5).
_DEFAULT_FIELDS = {
    QueryLevel.STUDY: [
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
    ],
    QueryLevel.SERIES: [
        "Modality",
        "SeriesDescription",
        "SeriesNumber",
        "SeriesInstanceUID",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "BodyPartExamined",
    ],
    QueryLevel.INSTANCE: [
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ],
}
# Attributes of the levels above, returned with series and instances (for /series, /instances).
_PARENT_FIELDS = {
    QueryLevel.STUDY: [],
    QueryLevel.SERIES: _DEFAULT_FIELDS[QueryLevel.STUDY],
    QueryLevel.INSTANCE: _DEFAULT_FIELDS[QueryLevel.STUDY] + _DEFAULT_FIELDS[QueryLevel.SERIES],
}


def _tag_hex(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise QueryError(f"unknown attribute {keyword!r}")
    return f"{tag:08X}"


def _keyword(name: str) -> str:
    """A keyword from a keyword or an 8-hex-digit tag; QueryError if neither."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(name) is not None:
        return name
    raise QueryError(f"unknown attribute {name!r}")


def parse_query(request: Request, level: QueryLevel) -> tuple[Query, list[str], list[str]]:
    """The Query, the include fields ('all' possible) and warnings for the response."""
    study_uid = request.path_params.get("study")
    series_uid = request.path_params.get("series")
    for name, uid in (("study", study_uid), ("series", series_uid)):
        if uid is not None and not is_valid_uid(uid):
            raise DicomWebError(400, f"the {name} UID in the URL is not a valid UID")
    query = Query(level=level, study_instance_uid=study_uid, series_instance_uid=series_uid)
    include: list[str] = []
    warnings: list[str] = []
    for name, value in request.query_params.multi_items():
        if name == "limit" or name == "offset":
            number = non_negative_integer(value)
            if number is None:
                raise DicomWebError(400, f"{name} must be a non-negative integer")
            setattr(query, name, number)
        elif name == "includefield":
            for field_name in value.split(","):
                field_name = field_name.strip()
                if field_name == "all":
                    include.append("all")
                elif field_name:
                    include.append(_checked_keyword(field_name))
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise DicomWebError(400, "fuzzymatching must be true or false")
            if value.lower() == "true":
                warnings.append("fuzzymatching is not supported; exact matching was used")
        else:
            keyword = _checked_keyword(name)
            if keyword in query.matches:
                raise DicomWebError(400, f"{keyword} is given more than once")
            query.matches[keyword] = value
            include.append(keyword)
    if query.limit is None or query.limit > MAX_RESULTS:
        if query.limit is not None:
            warnings.append(f"limit reduced to the server maximum of {MAX_RESULTS}")
        query.limit = MAX_RESULTS
    return query, include, warnings


def _checked_keyword(name: str) -> str:
    try:
        return _keyword(name)
    except QueryError as error:
        raise DicomWebError(400, str(error)) from None


def _value(keyword: str, row: dict[str, Any]) -> dict[str, Any] | None:
    """The DICOM JSON attribute for ``keyword`` from a catalog row, or None if not there."""
    if keyword == MODALITIES_IN_STUDY:
        modalities = row.get("modalities_in_study")
        return element("CS", *(modalities.split(",") if modalities else []))
    attribute = ATTRIBUTES.get(keyword)
    if attribute is None or attribute.column not in row:
        return None
    value = row[attribute.column]
    if attribute.vr == "PN":
        return person_name(value)
    return element(attribute.vr, value)


def build_result(
    store: EmbeddedStore, row: dict[str, Any], level: QueryLevel, include: list[str], base: str
) -> dict[str, Any]:
    """One result as DICOM JSON, the general way: attributes the catalog does not keep are
    read from a file of the entity (:func:`_representative_header`). Requests answered from the
    catalog alone are encoded faster by :mod:`gateway.dicomweb.qido_json`, to the same text."""
    result: dict[str, Any] = {}
    for keyword in _PARENT_FIELDS[level] + _DEFAULT_FIELDS[level]:
        value = _value(keyword, row)
        if value is not None:
            result[_tag_hex(keyword)] = value
    if level is QueryLevel.STUDY:
        result["00080061"] = _value(MODALITIES_IN_STUDY, row)
        result["00201206"] = element("IS", row["number_of_study_related_series"])
        result["00201208"] = element("IS", row["number_of_study_related_instances"])
        url = f"{base}/studies/{row['study_instance_uid']}"
    elif level is QueryLevel.SERIES:
        result["00201209"] = element("IS", row["number_of_series_related_instances"])
        url = f"{base}/studies/{row['study_instance_uid']}/series/{row['series_instance_uid']}"
    else:
        url = (
            f"{base}/studies/{row['study_instance_uid']}/series/{row['series_instance_uid']}"
            f"/instances/{row['sop_instance_uid']}"
        )
    result["00081190"] = element("UR", url)
    extra = [k for k in include if k != "all" and _tag_hex(k) not in result]
    from_file = [k for k in extra if _value(k, row) is None and k != SOP_CLASSES_IN_STUDY]
    for keyword in extra:
        value = _value(keyword, row)
        if value is not None:
            result[_tag_hex(keyword)] = value
    if "all" in include or from_file:
        header = _representative_header(store, row, level)
        if header is not None:
            wanted = None if "all" in include else {_tag_hex(k) for k in from_file}
            for tag, value in json_attributes(header, bulk_data_uri=None).items():
                if (wanted is None or tag in wanted) and tag not in result:
                    result[tag] = value
    for keyword in from_file:
        tag = _tag_hex(keyword)
        result.setdefault(tag, {"vr": dictionary_VR(tag)})
    return dict(sorted(result.items()))


def _representative_header(
    store: EmbeddedStore, row: dict[str, Any], level: QueryLevel
) -> pydicom.Dataset | None:
    """The header of one instance of the entity, for attributes the catalog doesn't keep."""
    if level is QueryLevel.INSTANCE:
        path = row["path"]
    else:
        key = "study_instance_uid" if level is QueryLevel.STUDY else "series_instance_uid"
        rows = store.catalog.query(
            f"SELECT path FROM instances WHERE {key} = ? ORDER BY instance_number LIMIT 1",
            [row[key]],
        )
        if not rows:
            return None
        path = rows[0]["path"]
    try:
        return pydicom.dcmread(store.path_of(path), stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError):
        return None


async def search_level(request: Request, level: QueryLevel) -> Response:
    store = store_of(request)
    require_json(request)
    query, include, warnings = parse_query(request, level)
    base = dicomweb_root(request)

    def run() -> str:
        rows = search_rows(store.catalog, query)
        if not rows:
            return "[]"
        attributes = qido_json.plan(
            level,
            include,
            qido_json.column_positions(rows[0]),
            _PARENT_FIELDS[level] + _DEFAULT_FIELDS[level],
            _tag_hex,
            base,
        )
        if attributes is not None:
            return qido_json.encode(rows, attributes)
        results = [build_result(store, dict(row), level, include, base) for row in rows]
        return json.dumps(results, separators=(",", ":"))

    try:
        body = await anyio.to_thread.run_sync(run)
    except QueryError as error:
        raise DicomWebError(400, str(error)) from None
    headers = {"Warning": ", ".join(warning_header(w) for w in warnings)} if warnings else None
    return Response(body, media_type=DICOM_JSON, headers=headers)


async def search_studies(request: Request) -> Response:
    return await search_level(request, QueryLevel.STUDY)


async def search_series(request: Request) -> Response:
    return await search_level(request, QueryLevel.SERIES)


async def search_instances(request: Request) -> Response:
    return await search_level(request, QueryLevel.INSTANCE)
