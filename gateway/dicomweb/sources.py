"""Which source answers a read about one study when a PACS is configured: one rule, every level.

The rule (docs/dicomweb.md, "Where requests go"): a study is answered by ONE source, chosen
per study, at every URL that names it, whatever the level (study, series, instance, metadata,
frames, bulk data; in the path, ``/studies/{study}/...``, or as a single
``StudyInstanceUID`` key of ``/studies``, ``/series`` or ``/instances``):

- the embedded store when it holds every instance of the study that the PACS holds (the
  PACS holds nothing of it yet, or the same instances: the usual case once Orthanc has
  forwarded a study to us; answered from local files, without loading the PACS);
- the PACS, the archive of record, whenever it holds an instance the store lacks (an SR
  another tool stored there; a study the store holds only in part), and whenever the store
  holds nothing of the study. The store's own extra instances (results in the outbox, a
  study received with ``ingest.forward_to_pacs: false``) appear once they are in the PACS.
  The answer never mixes the two sources, so the same study looks the same at every level
  at any moment.

An unreachable PACS leaves the store to answer for a study it holds (and 502/504 otherwise).
The choice costs one QIDO-RS instance search of the PACS for a study the store holds; it is
kept for a few seconds so that a viewer's burst of requests about one study asks once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import anyio.to_thread
import structlog
from starlette.requests import Request

from gateway.pacs import PacsClient, UpstreamError
from gateway.store import EmbeddedStore

log = structlog.get_logger(__name__)

Source = Literal["store", "pacs"]

#: How long one choice is reused for a study (seconds).
CHOICE_SECONDS = 2.0
#: The QIDO-RS keys that name the study (PS3.18 10.6.1.2: keyword or tag).
_STUDY_KEYS = ("StudyInstanceUID", "0020000D", "0020000d")
_SOP_INSTANCE_UID = "00080018"


def named_study(request: Request) -> str | None:
    """The one study a read is about, or None for a search across studies."""
    study: str | None = request.path_params.get("study")
    if study is not None:
        return study
    values = [v for key in _STUDY_KEYS for v in request.query_params.getlist(key)]
    if len(values) != 1:
        return None
    value = values[0].strip()
    # A list (a,b) or a wildcard may match several studies: a search across studies.
    if not value or any(c in value for c in ",*?\\"):
        return None
    return value


@dataclass
class SourceChooser:
    """Applies the rule above; one per app (``app.state.sources``)."""

    store: EmbeddedStore
    pacs: PacsClient
    _chosen: dict[str, tuple[float, Source]] = field(default_factory=dict)

    async def source_for(self, study: str) -> Source:
        now = time.monotonic()
        cached = self._chosen.get(study)
        if cached is not None and cached[0] > now:
            return cached[1]
        source = await self._choose(study)
        # Drop expired choices so the map stays as small as the set of studies being read.
        self._chosen = {k: v for k, v in self._chosen.items() if v[0] > now}
        self._chosen[study] = (now + CHOICE_SECONDS, source)
        return source

    async def _choose(self, study: str) -> Source:
        rows = await anyio.to_thread.run_sync(
            self.store.catalog.query,
            "SELECT sop_instance_uid FROM instances WHERE study_instance_uid = ?",
            [study],
        )
        held = {row["sop_instance_uid"] for row in rows}
        if not held:
            return "pacs"
        try:
            archived = await self._pacs_instances(study)
        except UpstreamError as error:
            log.warning("dicomweb.pacs_unavailable_store_answers", study=study, error=str(error))
            return "store"
        if archived <= held:
            return "store"
        log.debug(
            "dicomweb.pacs_holds_more",
            study=study,
            only_in_store=len(held - archived),
            only_in_pacs=len(archived - held),
        )
        return "pacs"

    async def _pacs_instances(self, study: str) -> set[str]:
        try:
            results = await self.pacs.search(f"studies/{study}/instances")
        except UpstreamError as error:
            if error.status_code == 404:  # some archives answer 404 for a study they lack
                return set()
            raise
        return {
            uid
            for result in results
            for uid in result.get(_SOP_INSTANCE_UID, {}).get("Value", [])[:1]
        }
