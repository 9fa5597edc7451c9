"""The site admin's approvals API (admin role; openapi/gateway.yaml, docs/analysis.md,
docs/learning.md): what the federation asks this site to run, and the admin's decisions.

- ``GET /approvals``: every analysis a hub sent (as :func:`gateway.analysis.api.describe` gives
  it, with the decisions taken on its model and cohort) and every training plan asked for or
  decided on (its name and features read from the plan's text, the decision in force or
  ``asked``, the text itself so that the admin reads what they approve).
- ``POST /approvals/analyses/{analysis_id}``: approve or refuse a pending analysis, through
  :mod:`gateway.analysis.approval` as ``fedgate analysis approve|refuse`` does.
- ``POST /approvals/training-plans/{sha256}``: approve, refuse or revoke a plan, as ``fedgate
  learn approve|refuse|revoke`` does.

The person deciding is the caller's ``person`` (the audit trail names a human being, not a
token). Nothing here holds a UID or a patient's data: analyses are model, cohort definition and
counts; plans are YAML.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.analysis.api import describe
from gateway.analysis.approval import APPROVAL_KIND, approve, refuse
from gateway.analysis.bundle import approval_subject
from gateway.analysis.records import Analysis
from gateway.analysis.store import AnalysisStore
from gateway.approvals import PLAN_KIND, Approvals, Decision, DecisionName, SubjectError
from gateway.approvals import Request as PlanRequest
from gateway.auth import Principal
from gateway.learning.plan import PlanError, parse_plan

__all__ = ["approval_routes"]
#: The largest decision body taken: a decision and a note.
_MAX_BODY = 64 * 1024
_MAX_NOTE = 2000

log = structlog.get_logger(__name__)


def _problem(status: int, message: str) -> JSONResponse:
    """The error shape of the site's admin APIs (``JobError`` in openapi/gateway.yaml)."""
    return JSONResponse({"error": {"message": message}}, status_code=status)


def _decision(made: Decision) -> dict[str, str]:
    return {
        "decision": made.decision,
        "by": made.decided_by,
        "at": made.decided_at,
        "note": made.note,
    }


def _plan_summary(asked: PlanRequest | None, summary: dict[str, Any]) -> tuple[Any, Any]:
    """The plan's name and features, from its text (what the admin approves); from what the
    asker said only when the text is not a plan this version of fedgate reads."""
    if asked is not None:
        try:
            plan = parse_plan(asked.content.encode()).plan
        except PlanError:
            pass
        else:
            return plan.name, list(plan.feature_names)
    return summary.get("name"), summary.get("features")


class ApprovalEndpoints:
    def __init__(self, analyses: AnalysisStore, approvals: Approvals):
        self.analyses = analyses
        self.approvals = approvals

    # -- reading ---------------------------------------------------------------------------

    def _analysis(self, analysis: Analysis, decisions: list[Decision]) -> dict[str, Any]:
        subject = approval_subject(analysis.bundle_sha256, analysis.cohort)
        return {
            **describe(analysis, self.analyses),
            "decisions": [_decision(d) for d in decisions if d.sha256 == subject],
        }

    def _plan(self, sha256: str, decisions: list[Decision]) -> dict[str, Any]:
        asked = self.approvals.request(PLAN_KIND, sha256)
        mine = [d for d in decisions if d.sha256 == sha256]
        name, features = _plan_summary(asked, asked.summary if asked else {})
        current = mine[-1] if mine else None
        return {
            "sha256": sha256,
            "name": name,
            "features": features,
            "state": current.decision if current else "asked",
            "decided_by": current.decided_by if current else None,
            "decided_at": current.decided_at if current else None,
            "note": current.note if current else None,
            "asked_by": asked.asked_by if asked else None,
            "first_asked_at": asked.first_asked_at if asked else None,
            "last_asked_at": asked.last_asked_at if asked else None,
            "times_asked": asked.times_asked if asked else 0,
            "plan": asked.content if asked else None,
            "decisions": [_decision(d) for d in mine],
        }

    def _everything(self) -> dict[str, Any]:
        bundle_decisions = self.approvals.history(APPROVAL_KIND)
        plan_decisions = self.approvals.history(PLAN_KIND)
        asked = [r.sha256 for r in self.approvals.requests(PLAN_KIND)]
        # Plans asked for, most recent first, then those only decided on (by the command).
        decided_only = dict.fromkeys(
            d.sha256 for d in reversed(plan_decisions) if d.sha256 not in asked
        )
        return {
            "analyses": [self._analysis(a, bundle_decisions) for a in self.analyses.list()],
            "training_plans": [
                self._plan(sha256, plan_decisions) for sha256 in [*asked, *decided_only]
            ],
        }

    async def listing(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self._everything))

    # -- deciding --------------------------------------------------------------------------

    async def _body(
        self, request: Request, choices: tuple[DecisionName, ...]
    ) -> tuple[DecisionName, str] | Response:
        """The decision and note of a request body, or a 400 saying what is wrong."""
        raw = b""
        async for chunk in request.stream():  # never more than the limit held in memory
            raw += chunk
            if len(raw) > _MAX_BODY:
                return _problem(413, f"a decision is at most {_MAX_BODY} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _problem(400, 'send a JSON object: {"decision": ..., "note": ...}')
        if not isinstance(body, dict):
            return _problem(400, 'send a JSON object: {"decision": ..., "note": ...}')
        unknown = sorted(set(body) - {"decision", "note"})
        if unknown:
            return _problem(400, f"unknown field(s): {', '.join(unknown)}")
        decision, note = body.get("decision"), body.get("note", "")
        if decision not in choices:
            return _problem(400, f"decision must be one of {', '.join(choices)}")
        if not isinstance(note, str) or len(note) > _MAX_NOTE:
            return _problem(400, f"note must be a text of at most {_MAX_NOTE} characters")
        return decision, note

    async def decide_analysis(self, request: Request) -> Response:
        person = _person(request)
        analysis_id = request.path_params["analysis_id"]
        analysis = await run_in_threadpool(self.analyses.get, analysis_id)
        if analysis is None:
            return _problem(404, f"no analysis {analysis_id!r} at this site")
        body = await self._body(request, ("approved", "refused"))
        if isinstance(body, Response):
            return body
        decision, note = body
        if analysis.state != "pending":
            return _problem(409, f"analysis {analysis_id} is {analysis.state}, not pending")
        decide = approve if decision == "approved" else refuse
        try:
            decided = await run_in_threadpool(
                lambda: decide(self.analyses, self.approvals, analysis, by=person, note=note)
            )
        except ValueError as error:  # decided meanwhile, by another admin or replica
            return _problem(409, str(error))
        log.info("approvals.analysis", analysis_id=analysis_id, decision=decision, by=person)
        history = await run_in_threadpool(self.approvals.history, APPROVAL_KIND)
        return JSONResponse(await run_in_threadpool(self._analysis, decided, history))

    async def decide_plan(self, request: Request) -> Response:
        person = _person(request)
        sha256 = request.path_params["sha256"]
        try:
            asked = await run_in_threadpool(self.approvals.request, PLAN_KIND, sha256)
            current = await run_in_threadpool(self.approvals.current, PLAN_KIND, sha256)
        except SubjectError as error:
            return _problem(400, str(error))
        if asked is None and current is None:
            return _problem(404, f"no training plan {sha256} was asked for or decided here")
        body = await self._body(request, ("approved", "refused", "revoked"))
        if isinstance(body, Response):
            return body
        decision, note = body
        in_force = current.decision if current else "asked"
        if decision == "revoked" and in_force != "approved":
            return _problem(409, f"plan {sha256} is {in_force}: only an approval is revoked")
        if decision == in_force:
            return _problem(409, f"plan {sha256} is {in_force} already")
        made = await run_in_threadpool(
            lambda: self.approvals.decide(PLAN_KIND, sha256, decision, by=person, note=note)
        )
        log.info("approvals.plan", sha256=made.sha256, decision=decision, by=person)
        history = await run_in_threadpool(self.approvals.history, PLAN_KIND)
        return JSONResponse(await run_in_threadpool(self._plan, made.sha256, history))


def _person(request: Request) -> str:
    """Who decides: the person behind the caller's credential (the auth middleware's)."""
    principal: Principal = request.state.principal
    return principal.person


def approval_routes(analyses: AnalysisStore, approvals: Approvals) -> list[BaseRoute]:
    endpoints = ApprovalEndpoints(analyses, approvals)
    return [
        Route("/approvals", endpoints.listing, methods=["GET"]),
        Route("/approvals/analyses/{analysis_id}", endpoints.decide_analysis, methods=["POST"]),
        Route("/approvals/training-plans/{sha256}", endpoints.decide_plan, methods=["POST"]),
    ]
