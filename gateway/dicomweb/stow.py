"""STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{StudyInstanceUID}]``.

The body is parsed while it arrives; each part is written to a temporary file as its bytes
come in, then checked and published by a worker thread while the next part is received, so
reception and disk work overlap and memory stays bounded. The response is sent only after
every stored instance is durable and catalogued.

A sender that has waited for the study to be stable itself (Orthanc forwarding on its
StableStudy event) sends the header ``Fedgate-Study-Stable: <who decided>``: the series it
stored are then analysed without the gateway's own wait (``pipeline.stable_after_seconds``).

Status codes (PS3.18 10.5.3): 200 all stored; 202 some failed or stored with warnings;
409 none stored; 400 malformed multipart; 415 not ``multipart/related`` of
``application/dicom``; 413 body over ``ingest.max_request_bytes``.
"""

from __future__ import annotations

import time

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.dicomweb.errors import DicomWebError
from gateway.dicomweb.json_model import stow_response
from gateway.dicomweb.multipart import MediaType, MultipartError
from gateway.dicomweb.stores import store_of
from gateway.dicomweb.urls import dicomweb_root
from gateway.intake.stream import RequestTooLarge, ingest_multipart
from gateway.metrics import STORED_BYTES, STORED_INSTANCES, STOW_FAILURES
from gateway.store.ingest import IngestOutcome
from gateway.store.uids import is_valid_uid

log = structlog.get_logger(__name__)

#: The request header by which a forwarder says the study is complete (stable) already.
STUDY_STABLE_HEADER = "Fedgate-Study-Stable"
#: What a STOW refused while the database is away asks the sender to wait.
RETRY_AFTER_SECONDS = 5


def check_media_type(content_type: str | None) -> str:
    """The boundary of a STOW-RS body, or a 415/400 DicomWebError."""
    if not content_type:
        raise DicomWebError(415, "STOW-RS needs Content-Type multipart/related")
    media = MediaType(content_type)
    if media.mime != "multipart/related":
        raise DicomWebError(
            415, f'STOW-RS needs multipart/related; type="application/dicom", not {media.mime}'
        )
    part_type = media.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise DicomWebError(
            415, f"only application/dicom parts are supported, not type={part_type}"
        )
    boundary = media.params.get("boundary")
    if not boundary:
        raise DicomWebError(400, "the multipart/related Content-Type has no boundary")
    return boundary


async def store_instances(request: Request) -> Response:
    """The STOW-RS endpoint, at study level or for any study."""
    return await _store(request, forward_to_pacs=None)


async def store_results(request: Request) -> Response:
    """STOW-RS of analysis results (SR, SEG): stored, and forwarded to the PACS if there is one.

    The inference service writes here, so results reach the radiologists' PACS through the
    gateway's durable outbox even when the PACS is briefly down.
    """
    has_pacs = request.app.state.pacs is not None
    return await _store(request, forward_to_pacs=has_pacs)


async def store_research_results(request: Request) -> Response:
    """STOW-RS of research results (an unvalidated model's SR, SEG, issue 17): kept in the
    research store that this route's mount serves, learnt by the findings index, and never
    forwarded to the PACS: the radiologists' worklists never see them."""
    return await _store(request, forward_to_pacs=False)


async def _declare_stable(
    request: Request, outcomes: list[IngestOutcome], declared_by: str
) -> None:
    series = sorted(
        {
            (o.study_instance_uid, o.series_instance_uid)
            for o in outcomes
            if o.stored and o.study_instance_uid and o.series_instance_uid
        }
    )
    if not series:
        return
    # Printable ASCII, bounded: it goes into a log line.
    who = "".join(c for c in declared_by if c.isprintable())[:64] or "the sender"
    await run_in_threadpool(
        request.app.state.ledger.declare_stable,
        series,
        request.app.state.settings.pipeline.stable_after_seconds,
        f"declared stable by the sender ({STUDY_STABLE_HEADER}: {who})",
    )


async def _store(request: Request, forward_to_pacs: bool | None) -> Response:
    store = store_of(request)
    settings = request.app.state.settings.ingest
    study_uid = request.path_params.get("study")
    if study_uid is not None and not is_valid_uid(study_uid):
        raise DicomWebError(400, "the StudyInstanceUID in the URL is not a valid UID")
    boundary = check_media_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_request_bytes:
        raise DicomWebError(413, f"request larger than {settings.max_request_bytes} bytes")

    # With the index's or the queue's database away (a restart, a failover), what is stored
    # now would never be indexed nor analysed: refuse it, before reading the body, and let
    # the sender retry (PS3.18 10.5.3: 503, a Retry-After).
    database = await run_in_threadpool(request.app.state.database_health.problem)
    if database is not None:
        raise DicomWebError(
            503,
            f"the gateway's database does not answer: {database}; nothing was stored, "
            "send again later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    started = time.perf_counter()
    try:
        result = await ingest_multipart(
            store,
            request.stream(),
            boundary,
            max_instance_bytes=settings.max_instance_bytes,
            max_request_bytes=settings.max_request_bytes,
            expected_study_uid=study_uid,
            forward_to_pacs=forward_to_pacs,
        )
    except MultipartError as error:
        raise DicomWebError(400, f"malformed multipart body: {error}") from None
    except RequestTooLarge as error:
        raise DicomWebError(413, str(error)) from None
    except ClientDisconnect:
        log.warning("stow.client_disconnected")
        raise
    outcomes = result.outcomes
    for outcome in outcomes:
        if outcome.stored:
            STORED_INSTANCES.inc()
        else:
            STOW_FAILURES.labels(reason=f"0x{outcome.failure:04X}").inc()
    STORED_BYTES.inc(result.received_bytes)
    declared_by = request.headers.get(STUDY_STABLE_HEADER)
    if declared_by is not None and forward_to_pacs is None:
        await _declare_stable(request, outcomes, declared_by)
    log.info(
        "stow.done",
        study=study_uid,
        parts=len(outcomes),
        stored=sum(o.stored for o in outcomes),
        failed=sum(not o.stored for o in outcomes),
        bytes=result.received_bytes,
        seconds=round(time.perf_counter() - started, 3),
    )
    return stow_response(outcomes, base_url=dicomweb_root(request), study_uid=study_uid)
