"""Content negotiation of QIDO-RS and WADO-RS answers (PS3.18 8.7.8.1, RFC 9110 12.5.1).

The ``Accept`` header's media ranges are tried in order of preference (``q``, then the order
given); ``q=0`` means "not this". A resource answers in the first range it can satisfy, or
406 naming what it can give. What each resource gives:

- QIDO-RS results and WADO-RS metadata: ``application/dicom+json`` (``application/json`` is
  accepted as its synonym, PS3.18 8.7.3.5);
- instances: ``multipart/related; type="application/dicom"``, and for one instance also the
  single part ``application/dicom`` (PS3.18 Table 8.7.3-2: a single-part payload only where
  the resource is one instance);
- frames and bulk data: ``multipart/related; type="application/octet-stream"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.dicomweb.errors import DicomWebError
from gateway.dicomweb.multipart import MediaType

DICOM_JSON = "application/dicom+json"
_JSON_RANGES = frozenset({DICOM_JSON, "application/json", "application/*", "*/*"})


def media_ranges(request: Request) -> list[MediaType]:
    """The ``Accept`` header's ranges, most preferred first, without those of ``q=0``;
    ``*/*`` when there is no header (RFC 9110 12.5.1)."""
    ranked: list[tuple[float, int, MediaType]] = []
    for position, text in enumerate(request.headers.get("accept", "*/*").split(",")):
        if not text.strip():
            continue
        media = MediaType(text)
        try:
            quality = float(media.params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0:
            ranked.append((-quality, position, media))
    return [media for _, _, media in sorted(ranked, key=lambda r: (r[0], r[1]))]


def require_json(request: Request) -> None:
    """406 unless the client accepts DICOM JSON (QIDO-RS results, WADO-RS metadata)."""
    if not any(media.mime in _JSON_RANGES for media in media_ranges(request)):
        raise DicomWebError(
            406, f"this resource is available as {DICOM_JSON} only (asked for: {asked(request)})"
        )


@dataclass(frozen=True)
class BulkChoice:
    """How to answer a bulk (instance or frame) retrieval."""

    #: The range chosen, for its ``transfer-syntax`` parameter; None for a wildcard.
    media: MediaType | None
    #: A single part (``application/dicom``) instead of multipart/related.
    single_part: bool = False

    @property
    def transfer_syntax(self) -> str | None:
        return self.media.params.get("transfer-syntax") if self.media else None


def choose_bulk(request: Request, part_type: str, single_part_allowed: bool) -> BulkChoice:
    """The first range of ``Accept`` the resource satisfies with parts of ``part_type``."""
    for media in media_ranges(request):
        if media.mime in ("*/*", "multipart/*"):
            return BulkChoice(None)
        if media.mime == "multipart/related":
            if media.params.get("type", part_type).lower() in (part_type, "*/*"):
                return BulkChoice(media)
        elif media.mime == part_type and single_part_allowed:
            return BulkChoice(media, single_part=True)
    available = f'multipart/related; type="{part_type}"'
    if single_part_allowed:
        available += f" or {part_type}"
    raise DicomWebError(
        406, f"this resource is available as {available} (asked for: {asked(request)})"
    )


def asked(request: Request) -> str:
    return request.headers.get("accept", "")[:200]
