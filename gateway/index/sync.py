"""``fedgate index sync``: rebuild the findings index from the PACS, so a lost index loses nothing.

A QIDO-RS crawl (PS3.18 10.6) of every study and its series gives the cohort attributes; every
SR series is retrieved by WADO-RS (PS3.18 10.4) and read for findings. Each study is marked done
in ``sync_state`` once all of it is indexed, so an interrupted sync resumes where it stopped
(``--full`` crawls everything again). A study that fails is reported and left unmarked: the next
run retries it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from gateway.index.findings_index import FindingsIndex

log = structlog.get_logger(__name__)

STUDY_FIELDS = [
    "PatientID",
    "IssuerOfPatientID",
    "PatientSex",
    "PatientAge",
    "PatientBirthDate",
    "StudyDate",
]
SERIES_FIELDS = ["Modality", "BodyPartExamined", "Manufacturer", "ManufacturerModelName"]
PAGE_SIZE = 500

Progress = Callable[[int, int], None]


@dataclass
class SyncReport:
    studies_found: int = 0
    studies_synced: int = 0
    studies_skipped: int = 0
    series: int = 0
    reports: int = 0
    failures: list[str] = field(default_factory=list)


def _studies(client: DICOMwebClient) -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        page = client.search_for_studies(offset=offset, limit=PAGE_SIZE, fields=STUDY_FIELDS)
        yield from page
        if len(page) < PAGE_SIZE:
            return
        offset += len(page)


def _uid(attributes: dict[str, Any], tag: str) -> str:
    return str(attributes[tag]["Value"][0])


def sync_index(
    index: FindingsIndex,
    client: DICOMwebClient,
    *,
    resume: bool = True,
    progress: Progress | None = None,
) -> SyncReport:
    report = SyncReport()
    studies = list(_studies(client))
    report.studies_found = len(studies)
    done = (
        {row[0] for row in index.database.query("SELECT study_key FROM sync_state")}
        if resume
        else set()
    )
    for number, study in enumerate(studies, start=1):
        study_uid = _uid(study, "0020000D")
        study_key = index.keys.study(study_uid)
        if study_key in done:
            report.studies_skipped += 1
        else:
            try:
                _sync_study(index, client, study_uid, study, report)
            except Exception as error:  # one bad study must not stop the crawl
                report.failures.append(f"study {number}: {type(error).__name__}: {error}")
                log.warning("index.sync_study_failed", error=str(error))
            else:
                index.database.execute(
                    "INSERT INTO sync_state (study_key, synced_at) VALUES (?, ?) "
                    "ON CONFLICT (study_key) DO UPDATE SET synced_at = excluded.synced_at",
                    (study_key, dt.datetime.now(dt.UTC).isoformat()),
                )
                report.studies_synced += 1
        if progress is not None:
            progress(number, len(studies))
    return report


def _sync_study(
    index: FindingsIndex,
    client: DICOMwebClient,
    study_uid: str,
    study: dict[str, Any],
    report: SyncReport,
) -> None:
    headers = []
    for series in client.search_for_series(study_uid, fields=SERIES_FIELDS):
        header = Dataset.from_json({**study, **series})
        header.StudyInstanceUID = study_uid
        headers.append(header)
        if str(header.get("Modality", "")) == "SR":
            instances = client.retrieve_series(study_uid, _uid(series, "0020000E"))
            index.observe_instances(instances)
            report.reports += len(instances)
    index.observe_instances(headers)
    report.series += len(headers)
