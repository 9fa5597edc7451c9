"""Polling the upstream PACS by QIDO-RS, for archives that cannot forward studies.

Every ``interval_seconds`` the poller searches the PACS for studies dated on or after its
watermark, and retrieves (WADO-RS) those the embedded store holds fewer instances of than the
PACS reports. DICOMweb has no "received since" query, so the watermark is a study date kept
``overlap_days`` behind the newest date seen: late-arriving studies of recent days are still
found, and a study already held in full is not fetched again. The watermark is kept in
``data_dir/poller.json`` so a restart does not rescan the archive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import anyio.to_thread
import structlog

from gateway.dicomweb.multipart import MediaType
from gateway.intake.settings import PollSettings
from gateway.intake.stream import ingest_multipart
from gateway.pacs import PacsClient, UpstreamError
from gateway.store import EmbeddedStore

log = structlog.get_logger(__name__)

_PAGE = 500


class PacsPoller:
    def __init__(
        self,
        store: EmbeddedStore,
        pacs: PacsClient,
        settings: PollSettings,
        state_path: Path,
        max_instance_bytes: int,
    ):
        self.store = store
        self.pacs = pacs
        self.settings = settings
        self.state_path = state_path
        self.max_instance_bytes = max_instance_bytes
        # Studies some of whose instances were refused (a patient that contradicts the held
        # study's, an unsupported SOP class): StudyInstanceUID -> the archive's instance count
        # then. Such a study is fetched again only once the archive holds more of it, not on
        # every pass (it would be refused again, forever).
        self._refused: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            try:
                fetched = await self.poll_once()
                if fetched:
                    log.info("poll.fetched", studies=fetched)
            except UpstreamError as error:
                log.warning("poll.upstream_error", error=str(error))
            except Exception:
                log.exception("poll.error")
            await asyncio.sleep(self.settings.interval_seconds)

    def _watermark(self) -> str:
        try:
            return str(json.loads(self.state_path.read_text())["watermark"])
        except (OSError, ValueError, KeyError):
            return self.settings.since or dt.date.today().strftime("%Y%m%d")

    def _save_watermark(self, newest: str) -> None:
        date = dt.datetime.strptime(newest, "%Y%m%d").date()
        date = min(date, dt.date.today()) - dt.timedelta(days=self.settings.overlap_days)
        watermark = max(date.strftime("%Y%m%d"), self._watermark())
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"watermark": watermark}))
        temporary.replace(self.state_path)

    async def poll_once(self) -> int:
        """One pass: fetch every study the PACS holds more of than we do; returns how many."""
        watermark = self._watermark()
        fetched = 0
        newest = watermark
        offset = 0
        while True:
            studies = await self.pacs.search(
                "studies",
                [
                    ("StudyDate", f"{watermark}-"),
                    ("includefield", "NumberOfStudyRelatedInstances"),
                    ("limit", str(_PAGE)),
                    ("offset", str(offset)),
                ],
            )
            for study in studies:
                uid = _first(study, "0020000D")
                remote_count = int(_first(study, "00201208") or 0)
                date = _first(study, "00080020")
                if date and date > newest:
                    newest = str(date)
                if not uid or await self._held(uid) >= remote_count:
                    continue
                if self._refused.get(uid) == remote_count:
                    continue  # refused in part last time, and nothing new since
                if await self._fetch(uid):
                    self._refused[uid] = remote_count
                else:
                    self._refused.pop(uid, None)
                fetched += 1
            if len(studies) < _PAGE:
                break
            offset += _PAGE
        await anyio.to_thread.run_sync(self._save_watermark, newest)
        return fetched

    async def _held(self, study_uid: str) -> int:
        rows = await anyio.to_thread.run_sync(
            self.store.catalog.query,
            "SELECT count(*) AS n FROM instances WHERE study_instance_uid = ?",
            [study_uid],
        )
        return int(rows[0]["n"])

    async def _fetch(self, study_uid: str) -> int:
        """Retrieve the study into the store; returns how many of its instances were refused."""
        response = await self.pacs.open_stream(
            "GET",
            f"studies/{study_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        try:
            if response.status_code != 200:
                raise UpstreamError(
                    "status",
                    f"WADO-RS of {study_uid} answered {response.status_code}",
                    response.status_code,
                )
            boundary = MediaType(response.headers.get("content-type", "")).params.get("boundary")
            if not boundary:
                raise UpstreamError("status", "WADO-RS answer without a multipart boundary")
            result = await ingest_multipart(
                self.store,
                response.aiter_bytes(),  # decoded: the PACS may compress its answer
                boundary,
                max_instance_bytes=self.max_instance_bytes,
                max_request_bytes=2**62,
                expected_study_uid=study_uid,
            )
        finally:
            await response.aclose()
        failed = [o for o in result.outcomes if not o.stored]
        log.info(
            "poll.study_fetched",
            study=study_uid,
            instances=len(result.outcomes),
            failed=len(failed),
        )
        for outcome in failed:
            # The store logged the reason of each refusal; this says the poll moves on.
            log.warning(
                "poll.instance_skipped",
                study=study_uid,
                sop_instance_uid=outcome.sop_instance_uid,
                reason=f"0x{outcome.failure or 0:04X}",
                comment=outcome.comment,
            )
        return len(failed)


def _first(attributes: dict[str, Any], tag: str) -> Any:
    values = attributes.get(tag, {}).get("Value") or [None]
    return values[0]
