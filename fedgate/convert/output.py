"""Where converted objects go: Part 10 files in a folder, or STOW-RS to a DICOMweb server.

Both take an iterator of datasets (built one at a time, so memory does not grow with the input)
and report progress as they go. STOW-RS checks what the server says it stored: an instance
counts as stored only if it is in the response's Referenced SOP Sequence (a 200 with nothing
stored has been seen from real servers), and a failed instance is reported with the server's
failure reason while the others are still sent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TextIO

import requests
import structlog
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

log = structlog.get_logger(__name__)

#: How many instances one STOW-RS request carries: small objects, few round trips.
STOW_BATCH_SIZE = 16


@dataclass
class Delivery:
    """What happened to the objects: where they went, and which failed and why."""

    written: list[str] = field(default_factory=list)  # file paths or SOP Instance UIDs
    failed: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID, reason)


class Progress:
    """``label succeeded/total`` lines on a stream (stderr by default), with the number that
    failed so far: at most about 100 of them, and always the last. What counts as succeeded
    is what the destination confirmed, never what was merely sent."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.succeeded = 0
        self.stream = stream or sys.stderr
        self._every = max(1, total // 100)
        self._shown = 0

    def advance(self, count: int = 1, succeeded: int | None = None) -> None:
        """``count`` more handled, of which ``succeeded`` (default: all) confirmed."""
        self.done += count
        self.succeeded += count if succeeded is None else succeeded
        if self.done - self._shown >= self._every or self.done >= self.total:
            self._shown = self.done
            failed = self.done - self.succeeded
            line = f"{self.label} {self.succeeded}/{self.total}"
            if failed:
                line += f" ({failed} not {self.label})"
            print(line, file=self.stream, flush=True)


def write_folder(
    datasets: Iterable[Dataset], directory: Path, progress: Progress | None = None
) -> Delivery:
    """Write each dataset as ``<SOPInstanceUID>.dcm``: same object, same file name, replaced.

    Written to a temporary name and renamed, so a file with the final name is always whole.
    """
    directory.mkdir(parents=True, exist_ok=True)
    delivery = Delivery()
    for dataset in datasets:
        path = directory / f"{dataset.SOPInstanceUID}.dcm"
        partial = path.with_suffix(".dcm.partial")
        dataset.save_as(partial, enforce_file_format=True)
        os.replace(partial, path)
        delivery.written.append(str(path))
        if progress:
            progress.advance()
    return delivery


def stow(
    datasets: Iterable[Dataset],
    url: str,
    *,
    token: str | None = None,
    progress: Progress | None = None,
    batch_size: int = STOW_BATCH_SIZE,
) -> Delivery:
    """STOW-RS the datasets to the DICOMweb root ``url`` in batches; per-instance outcome."""
    client = dicomweb_client(url, token)
    delivery = Delivery()
    for batch in _batches(datasets, batch_size):
        for dataset in batch:
            # dicomweb-client writes in-memory datasets without the Part 10 preamble unless it
            # is set, and some servers then store a file that pydicom cannot read back.
            if getattr(dataset, "preamble", None) is None:
                dataset.preamble = b"\x00" * 128
        sent = [str(dataset.SOPInstanceUID) for dataset in batch]
        delivered_before = len(delivery.written)
        try:
            response = client.store_instances(batch)
        except requests.RequestException as error:
            reason = _http_reason(error)
            log.warning("stow_failed", url=url, instances=len(batch), reason=reason)
            delivery.failed.extend((uid, reason) for uid in sent)
        else:
            _account(response, sent, delivery)
        if progress:
            progress.advance(len(batch), succeeded=len(delivery.written) - delivered_before)
    return delivery


def dicomweb_client(url: str, token: str | None = None) -> DICOMwebClient:
    """A client of the DICOMweb root ``url``, with the bearer token if one is given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = DICOMwebClient(url=url.rstrip("/"), headers=headers)
    # A few quick retries of a busy server (429/503/504), not dicomweb-client's five with
    # seconds-long back-off: a person is waiting at the command line.
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)
    return client


def _account(response: Dataset, sent: list[str], delivery: Delivery) -> None:
    stored = {
        str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", [])
    }
    failures = {
        str(item.ReferencedSOPInstanceUID): f"failure reason {item.get('FailureReason', '?')}"
        for item in response.get("FailedSOPSequence", [])
    }
    for uid in sent:
        if uid in stored:
            delivery.written.append(uid)
        else:
            delivery.failed.append((uid, failures.get(uid, "not in the server's stored list")))


def _http_reason(error: requests.RequestException) -> str:
    response = getattr(error, "response", None)
    if response is not None:
        return f"HTTP {response.status_code} {response.reason}"
    return f"{type(error).__name__}: {error}"


def _batches(datasets: Iterable[Dataset], size: int) -> Iterator[list[Dataset]]:
    iterator = iter(datasets)
    while batch := list(islice(iterator, size)):
        yield batch
