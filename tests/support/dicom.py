"""Building DICOM test payloads: Part 10 bytes and multipart/related bodies."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence

from pydicom.dataset import Dataset


def part10_bytes(dataset: Dataset, preamble: bool = True) -> bytes:
    """``dataset`` as a Part 10 file (or, with ``preamble=False``, without preamble and DICM)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data if preamble else data[132:]


def multipart_body(
    parts: Sequence[bytes], boundary: str | None = None, content_type: str = "application/dicom"
) -> tuple[bytes, str]:
    """A multipart/related body and its Content-Type header value."""
    boundary = boundary or uuid.uuid4().hex
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    header = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), header


def failure_reasons(response_json: dict) -> dict[str | None, int]:  # type: ignore[type-arg]
    """SOP Instance UID -> Failure Reason from a STOW-RS response."""
    result: dict[str | None, int] = {}
    for item in response_json.get("00081198", {}).get("Value", []):
        uid = item.get("00081155", {}).get("Value", [None])[0]
        result[uid] = item["00081197"]["Value"][0]
    return result


def stored_uids(response_json: dict) -> list[str]:  # type: ignore[type-arg]
    return [
        item["00081155"]["Value"][0] for item in response_json.get("00081199", {}).get("Value", [])
    ]
