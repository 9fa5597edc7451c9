"""A federated analysis at a gateway, arriving as the site's API keeps it (tests, benchmark).

The hub's side and the site's HTTP API for analyses are another part's work; here an analysis
arrives as that API keeps it: its bundle written to ``data_dir/analyses/<sha256>/`` and the
analysis received and approved through :class:`gateway.analysis.store.AnalysisStore`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.analysis.bundle import ModelBundle
from gateway.analysis.records import Analysis, AnalysisState, Progress
from gateway.analysis.store import AnalysisStore
from gateway.queue import QueueSettings
from tests.support.gateway import GatewayProcess
from tests.support.waiting import wait_until


class SiteAnalysis:
    """One analysis at a gateway, as the site's API keeps it (see the module)."""

    def __init__(self, gateway: GatewayProcess, bundle_dir: Path, cohort: dict[str, Any]):
        self.gateway = gateway
        self.bundle = ModelBundle.read(bundle_dir)
        self.analysis_id = secrets.token_hex(16)
        self.cohort = cohort

    def store(self) -> AnalysisStore:
        return AnalysisStore.open(QueueSettings(), self.gateway.data_dir)

    def with_store(self, action: Callable[[AnalysisStore], Any]) -> Any:
        store = self.store()
        try:
            return action(store)
        finally:
            store.close()

    def approve(self) -> Analysis:
        self.bundle.write(self.gateway.data_dir / "analyses" / self.bundle.sha256)
        analysis = Analysis(
            analysis_id=self.analysis_id,
            hub="consortium",
            bundle_sha256=self.bundle.sha256,
            model_name=self.bundle.name,
            model_version=self.bundle.version,
            cohort=self.cohort,
            validated=False,
            state="pending",
            received_at=time.time(),
        )

        def receive_and_approve(store: AnalysisStore) -> Analysis:
            store.receive(analysis)
            return store.set_state(self.analysis_id, "running", by="test admin")

        approved: Analysis = self.with_store(receive_and_approve)
        return approved

    def get(self) -> Analysis:
        analysis: Analysis = self.with_store(lambda store: store.get(self.analysis_id))
        return analysis

    def progress(self) -> Progress:
        progress: Progress = self.with_store(lambda store: store.progress(self.analysis_id))
        return progress

    def set_state(self, state: AnalysisState) -> Analysis:
        changed: Analysis = self.with_store(
            lambda store: store.set_state(self.analysis_id, state, by="test admin")
        )
        return changed

    def wait_selected(self, count: int, timeout: float = 60) -> Progress:
        progress: Progress = wait_until(
            lambda: (p := self.progress()).selected >= count and p,
            timeout,
            f"{count} series selected for the analysis",
        )
        return progress
