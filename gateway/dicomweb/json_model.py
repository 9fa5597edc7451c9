"""DICOM JSON (PS3.18 F.2) for the responses the gateway builds itself."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.responses import Response

from gateway.store import IngestOutcome

DICOM_JSON = "application/dicom+json"


def element(vr: str, *values: Any) -> dict[str, Any]:
    """One DICOM JSON attribute; no values gives an empty attribute (present, zero length)."""
    present = [value for value in values if value is not None and value != ""]
    return {"vr": vr, "Value": present} if present else {"vr": vr}


def person_name(value: str | None) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": value}]} if value else {"vr": "PN"}


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status_code,
        media_type=DICOM_JSON,
        headers=headers,
    )


def stow_response(
    outcomes: Iterable[IngestOutcome], base_url: str, study_uid: str | None
) -> Response:
    """The Store Instances Response Module (PS3.18 Table 10.5.3-1) and its HTTP status."""
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    studies: set[str] = set()
    any_warning = False
    for outcome in outcomes:
        item: dict[str, Any] = {
            "00081150": element("UI", outcome.sop_class_uid),
            "00081155": element("UI", outcome.sop_instance_uid),
        }
        if outcome.stored:
            assert outcome.study_instance_uid is not None
            studies.add(outcome.study_instance_uid)
            item["00081190"] = element(
                "UR",
                f"{base_url}/studies/{outcome.study_instance_uid}/series/"
                f"{outcome.series_instance_uid}/instances/{outcome.sop_instance_uid}",
            )
            if outcome.warning is not None:
                any_warning = True
                item["00081196"] = element("US", int(outcome.warning))
                item["00000902"] = element("LO", outcome.comment[:64])
            referenced.append(item)
        else:
            assert outcome.failure is not None
            item["00081197"] = element("US", int(outcome.failure))
            # Error Comment (0000,0902): the reason in words, since codes alone are cryptic.
            item["00000902"] = element("LO", outcome.comment[:64])
            failed.append(item)
    body: dict[str, Any] = {}
    retrieve_study = study_uid or (next(iter(studies)) if len(studies) == 1 else None)
    if retrieve_study:
        body["00081190"] = element("UR", f"{base_url}/studies/{retrieve_study}")
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if not referenced:
        status = 409
    elif failed or any_warning:
        status = 202
    else:
        status = 200
    return json_response(body, status_code=status)
