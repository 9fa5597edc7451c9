"""Receiving an analysis and deciding on it: one place for the API, the command line and the
auto-approval of a trusted hub, so that every path records its decision the same way.

The decision is recorded in :mod:`gateway.approvals` (kind ``analysis-bundle``) on the subject
:func:`gateway.analysis.bundle.approval_subject` (the bundle with its cohort), and the analysis
moves to ``running`` (approved) or ``refused``; the runner starts approved analyses.
"""

from __future__ import annotations

import structlog

from gateway.analysis.bundle import approval_subject
from gateway.analysis.records import Analysis
from gateway.analysis.store import AnalysisStore
from gateway.approvals import Approvals

__all__ = ["APPROVAL_KIND", "approve", "receive", "refuse"]

APPROVAL_KIND = "analysis-bundle"

log = structlog.get_logger(__name__)


def _subject(analysis: Analysis) -> str:
    return approval_subject(analysis.bundle_sha256, analysis.cohort)


def approve(
    store: AnalysisStore, approvals: Approvals, analysis: Analysis, *, by: str, note: str = ""
) -> Analysis:
    approvals.decide(APPROVAL_KIND, _subject(analysis), "approved", by=by, note=note)
    log.info("analysis.approved", analysis_id=analysis.analysis_id, by=by)
    return store.set_state(analysis.analysis_id, "running", by=by)


def refuse(
    store: AnalysisStore, approvals: Approvals, analysis: Analysis, *, by: str, note: str = ""
) -> Analysis:
    approvals.decide(APPROVAL_KIND, _subject(analysis), "refused", by=by, note=note)
    log.info("analysis.refused", analysis_id=analysis.analysis_id, by=by)
    return store.set_state(analysis.analysis_id, "refused", by=by)


def receive(
    store: AnalysisStore, approvals: Approvals, analysis: Analysis, *, auto_approve: bool
) -> Analysis:
    """Keep a new analysis (or find the same one sent before) and start it when it may start
    without the admin: its bundle and cohort were approved before, or its hub is trusted to
    approve (its signature was verified by the caller). ValueError: the id is taken by another
    bundle."""
    stored = store.receive(analysis)
    if stored.state != "pending":
        return stored
    decision = approvals.current(APPROVAL_KIND, _subject(stored))
    if decision is not None and decision.decision == "approved":
        return store.set_state(stored.analysis_id, "running", by=decision.decided_by)
    if decision is not None and decision.decision == "refused":
        return store.set_state(stored.analysis_id, "refused", by=decision.decided_by)
    if auto_approve:
        return approve(store, approvals, stored, by=f"hub:{stored.hub}", note="auto-approved")
    log.info("analysis.pending", analysis_id=stored.analysis_id, hub=stored.hub)
    return stored
