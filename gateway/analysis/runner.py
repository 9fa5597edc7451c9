"""Running approved analyses at a site: install the model, select the cohort's series, enqueue.

For each analysis in state ``running`` the runner

1. installs its bundle (``data_dir/analyses/<bundle_sha256>/``) into the site's inference
   service under a name of its own (:mod:`gateway.analysis.install`; never over a model
   installed before);
2. selects the cohort's studies: the cohort language runs over the findings index, whose keys
   are salted hashes of UIDs (:mod:`gateway.index.keys`), so the studies the site holds (the
   embedded store's catalog, or the PACS by QIDO-RS when ``pacs.url`` is set) are matched by
   computing their keys; then each study's series that the model accepts (its model.yaml
   input: modality, body parts, at least ``min_slices`` instances), decided by the routing
   code that routes clinical studies (:func:`gateway.pipeline.routing.route_series`);
3. enqueues one research job per series (lane ``research``): created once, never requeued,
   so selecting again after a restart, or when a site comes back from an outage, redoes no
   finished series;
4. marks the analysis ``done`` once every job it selected has ended.

Selection happens once per analysis per process (a restart selects again, harmlessly, and
picks up studies that arrived meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import structlog
from pydicom.dataset import Dataset

from gateway.analysis.bundle import BundleError, ModelBundle
from gateway.analysis.install import InstallError, install_bundle
from gateway.analysis.records import Analysis
from gateway.analysis.store import AnalysisStore
from gateway.federated.cohort import Cohort
from gateway.federated.query import membership_sql
from gateway.index import FindingsIndex
from gateway.pacs import PacsClient
from gateway.pipeline.routing import NON_IMAGE_MODALITIES, SeriesFacts, route_series
from gateway.pipeline.scheduler import stored_series_facts
from gateway.pipeline.settings import ResearchSettings, RoutingRule
from gateway.queue import JobQueue
from gateway.store import EmbeddedStore
from tlsconfig import ClientTls, client_context

log = structlog.get_logger(__name__)

__all__ = ["AnalysisRunner", "model_rule"]

#: QIDO-RS page size when listing the PACS's series.
_PAGE = 500
_STUDY_UID, _SERIES_UID = "0020000D", "0020000E"
_MODALITY, _BODY_PART, _SERIES_SIZE = "00080060", "00180015", "00201209"
_SERIES_FIELDS = (_STUDY_UID, _MODALITY, _BODY_PART, _SERIES_SIZE)


def model_rule(analysis: Analysis, bundle: ModelBundle, inference_url: str) -> RoutingRule:
    """The series the analysis's model accepts, as a routing rule (model.yaml's ``input``)."""
    manifest_input: dict[str, Any] = bundle.manifest.get("input") or {}
    series: dict[str, Any] = manifest_input.get("series") or {}
    match: dict[str, Any] = {"Modality": str(manifest_input.get("modality", "CT"))}
    body_parts = [str(part) for part in series.get("body_parts") or ()]
    if body_parts:
        match["BodyPartExamined"] = body_parts
    assert analysis.installed_model is not None  # installed first
    return RoutingRule(
        name=f"analysis-{analysis.analysis_id}",
        match=match,
        min_instances=int(series.get("min_slices") or 1),
        models=[analysis.installed_model],
        inference_url=inference_url,
    )


class AnalysisRunner:
    def __init__(
        self,
        analyses: AnalysisStore,
        queue: JobQueue,
        index: FindingsIndex,
        store: EmbeddedStore,
        pacs: PacsClient | None,
        settings: ResearchSettings,
        inference_url: str,
        bundles_dir: Path,
        source_url: str,
        on_enqueued: Callable[[], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        inference_tls: ClientTls | None = None,
    ):
        self.analyses = analyses
        self.queue = queue
        self.index = index
        self.store = store
        self.pacs = pacs
        self.settings = settings
        self.inference_url = inference_url
        self.bundles_dir = bundles_dir
        self.source_url = source_url
        self.on_enqueued = on_enqueued
        self._transport = transport
        self.inference_tls = inference_tls
        #: Analyses whose series this process has selected already.
        self._selected: set[str] = set()

    async def run(self) -> None:
        timeout = httpx.Timeout(300.0, connect=10.0)  # a large model takes a while to send
        async with httpx.AsyncClient(
            timeout=timeout,
            transport=self._transport,
            verify=client_context(self.inference_tls),  # pipeline.inference_tls
        ) as http:
            while True:
                try:
                    await self.run_once(http)
                except Exception:
                    log.exception("analysis.runner_error")
                await asyncio.sleep(self.settings.poll_seconds)

    async def run_once(self, http: httpx.AsyncClient) -> None:
        lost = await anyio.to_thread.run_sync(self.analyses.drop_lost_jobs)
        if lost:
            log.warning("analysis.lost_jobs_dropped", jobs=lost)
        for analysis in await anyio.to_thread.run_sync(self.analyses.list):
            if analysis.state != "running":
                continue
            structlog.contextvars.bind_contextvars(analysis_id=analysis.analysis_id)
            try:
                await self._advance(http, analysis)
            except (InstallError, BundleError) as error:
                # Logged and tried again at the next round: an inference service that is
                # down comes back; a refused bundle needs the admin (the log says why).
                log.error("analysis.not_installed", reason=str(error))
            finally:
                structlog.contextvars.unbind_contextvars("analysis_id")

    async def _advance(self, http: httpx.AsyncClient, analysis: Analysis) -> None:
        if analysis.analysis_id not in self._selected:
            bundle = ModelBundle.read(self.bundles_dir / analysis.bundle_sha256)
            if analysis.installed_model is None:
                token = self.settings.install_token
                name = await install_bundle(
                    http, self.inference_url, token.get_secret_value() if token else None, bundle
                )
                analysis = await anyio.to_thread.run_sync(
                    self.analyses.set_installed_model, analysis.analysis_id, name
                )
                log.info("analysis.installed", model=name, inference_url=self.inference_url)
            series = await self._cohort_series(analysis, bundle)
            created = await anyio.to_thread.run_sync(self._enqueue, analysis, series)
            self._selected.add(analysis.analysis_id)
            log.info("analysis.selected", series=len(series), new_jobs=created)
            if created and self.on_enqueued is not None:
                self.on_enqueued()
        progress = await anyio.to_thread.run_sync(self.analyses.progress, analysis.analysis_id)
        if progress.queued or progress.running:
            return
        try:
            await anyio.to_thread.run_sync(
                lambda: self.analyses.set_state(analysis.analysis_id, "done", by="runner")
            )
        except ValueError:  # paused or cancelled meanwhile, or done by another replica
            return
        log.info("analysis.done", done=progress.done, failed=progress.failed)

    # -- selection ---------------------------------------------------------------------------

    async def _cohort_series(
        self, analysis: Analysis, bundle: ModelBundle
    ) -> list[tuple[str, str, str, str]]:
        """(study, series, model, rule) of every series of the cohort the model accepts."""
        rule = model_rule(analysis, bundle, self.inference_url)
        wanted = await anyio.to_thread.run_sync(self._cohort_study_keys, analysis)
        if self.pacs is not None:
            facts = [item async for item in self._pacs_series(wanted)]
        else:
            facts = await anyio.to_thread.run_sync(lambda: list(self._stored_series(wanted)))
        selected = []
        for study_uid, series in facts:
            for route in route_series([rule], series)[0]:
                selected.append((study_uid, series.series_instance_uid, route.model, route.rule))
        return selected

    def _cohort_study_keys(self, analysis: Analysis) -> set[int]:
        """The index's keys of the cohort's studies."""
        sql = membership_sql(Cohort.model_validate(analysis.cohort), "studies")
        return {int(row[0]) for row in self.index.database.query(sql.text, sql.params)}

    def _stored_series(self, wanted: set[int]) -> Iterator[tuple[str, SeriesFacts]]:
        rows = self.store.catalog.query(
            "SELECT study_instance_uid, series_instance_uid FROM series "
            "ORDER BY study_instance_uid, series_instance_uid",
            [],
        )
        for row in rows:
            study_uid, series_uid = row["study_instance_uid"], row["series_instance_uid"]
            if self.index.keys.study(study_uid) not in wanted:
                continue
            facts = stored_series_facts(self.store, series_uid)
            if facts is not None:
                yield study_uid, facts

    async def _pacs_series(self, wanted: set[int]) -> Any:
        """The PACS's series of the wanted studies, by QIDO-RS: every series of the PACS, page
        by page, with its study, modality, body part and size, kept when its study is wanted.

        One pass over the PACS's series, not a search per study: Orthanc 1.10 answered each
        study's series search in about 25 ms here (1,000 studies: 25 s), a page of 500 series
        in a fraction of that."""
        assert self.pacs is not None
        offset = 0
        while True:
            page = await self.pacs.search(
                "series",
                [
                    ("limit", str(_PAGE)),
                    ("offset", str(offset)),
                    *[("includefield", tag) for tag in _SERIES_FIELDS],
                ],
            )
            for series in page:
                study_uid = _first(series, _STUDY_UID)
                if not study_uid or self.index.keys.study(study_uid) not in wanted:
                    continue
                facts = _qido_series_facts(series)
                if facts is not None:
                    yield study_uid, facts
            if len(page) < _PAGE:
                return
            offset += len(page)

    def _enqueue(self, analysis: Analysis, series: list[tuple[str, str, str, str]]) -> int:
        return self.queue.enqueue_research(
            analysis.analysis_id,
            [
                (study_uid, series_uid, model, rule, self.inference_url, self.source_url)
                for study_uid, series_uid, model, rule in series
            ],
        )


def _first(attributes: dict[str, Any], tag: str) -> str | None:
    values = attributes.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def _qido_series_facts(attributes: dict[str, Any]) -> SeriesFacts | None:
    """Routing's facts of a series from its QIDO-RS attributes (PS3.18 10.6.3.3.2)."""
    series_uid = _first(attributes, _SERIES_UID)
    if not series_uid:
        return None
    header = Dataset()
    modality = _first(attributes, _MODALITY)
    if modality:
        header.Modality = modality
        # QIDO does not say whether a series holds images; its modality does (an SR, SEG or
        # KO series is never an image series), which is all routing asks "Rows" for.
        if modality.upper() not in NON_IMAGE_MODALITIES:
            header.Rows = 1
    body_part = _first(attributes, _BODY_PART)
    if body_part:
        header.BodyPartExamined = body_part
    size = _first(attributes, _SERIES_SIZE)
    return SeriesFacts(series_uid, header, int(size) if size and size.isdigit() else 0)
