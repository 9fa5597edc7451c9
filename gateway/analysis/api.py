"""The site's analyses API, under ``/federated/v1/analyses`` (openapi/federated.yaml).

- ``POST /federated/v1/analyses`` (a ``hub`` credential with its assertion of the consortium
  member sending it, as for questions; or ``admin``): a hub sends an analysis (the tar of
  :mod:`gateway.analysis.bundle`). 202 with its state: ``pending`` until the site's admin
  approves it, or ``running`` at once when the same model over the same cohort was approved
  before or the hub is trusted to approve (``auth.hubs[].auto_approve_analyses``). Sending the
  same analysis again is harmless (200 with its state); the same id with another bundle or
  cohort is a 409; an analysis that a hub this site trusts did not sign for it is a 403.
- ``GET /federated/v1/analyses/{id}`` and ``GET /federated/v1/analyses`` (``hub``): state and
  progress as counts (selected, queued, running, done, failed); nothing about a patient.

The body is spooled to ``data_dir`` (never held whole in memory), up to
:data:`MAX_ANALYSIS_BYTES`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import structlog
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.analysis.approval import receive
from gateway.analysis.bundle import BundleError, SignatureRefused, unpack_analysis, verify_analysis
from gateway.analysis.records import Analysis
from gateway.analysis.store import AnalysisStore
from gateway.approvals import Approvals
from gateway.auth import (
    ON_BEHALF_OF_HEADER,
    RELAYABLE_ROLES,
    Authenticator,
    Principal,
    TrustedHub,
    authorize,
)
from gateway.federated.cohort import Cohort
from gateway.federated.errors import error_response, validation_response

__all__ = ["MAX_ANALYSIS_BYTES", "analysis_routes", "describe"]

#: The largest analysis (model and manifest) a site takes: models of a few hundred MB fit.
MAX_ANALYSIS_BYTES = 2 * 1024**3
_SPOOL_IN_MEMORY = 16 * 1024**2
TAR_MEDIA_TYPE = "application/x-tar"

log = structlog.get_logger(__name__)


def describe(analysis: Analysis, store: AnalysisStore) -> dict[str, Any]:
    """What a hub may see of an analysis: its identity, model, state and counts."""
    progress = store.progress(analysis.analysis_id)
    counts = asdict(progress)
    counts.pop("state")
    return {
        "analysis_id": analysis.analysis_id,
        "hub": analysis.hub,
        "state": progress.state,
        "model": {
            "name": analysis.model_name,
            "version": analysis.model_version,
            "bundle_sha256": analysis.bundle_sha256,
            "installed_as": analysis.installed_model,
            "validated": analysis.validated,
        },
        "cohort": analysis.cohort,
        "received_at": analysis.received_at,
        "progress": counts,
    }


class AnalysisEndpoints:
    def __init__(
        self,
        store: AnalysisStore,
        approvals: Approvals,
        authenticator: Authenticator,
        hubs: list[TrustedHub],
        data_dir: Path,
    ):
        self.store = store
        self.approvals = approvals
        self.authenticator = authenticator
        self.hubs = {hub.name: (hub.key, hub.audience) for hub in hubs}
        self.auto_approve = {hub.name: hub.auto_approve_analyses for hub in hubs}
        self.bundles = data_dir / "analyses"
        self.spool_dir = data_dir / "tmp"

    def _caller(self, request: Request) -> Principal | Response:
        """A hub's credential (with the assertion of the person it acts for: the consortium
        member who sent or follows the analysis), or an administrator of this site."""
        authorization = request.headers.get("authorization")
        credential = self.authenticator.authenticate(authorization)
        if credential is not None and "hub" in credential.roles:
            return authorize(
                self.authenticator,
                authorization,
                tuple(sorted(RELAYABLE_ROLES)),
                request.headers.get(ON_BEHALF_OF_HEADER),
                request.scope.setdefault("state", {}),
            )
        return authorize(self.authenticator, authorization, ("hub",))

    async def submit(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != TAR_MEDIA_TYPE:
            return error_response(415, f"send the analysis as {TAR_MEDIA_TYPE}", "Content-Type")
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.SpooledTemporaryFile(
            _SPOOL_IN_MEMORY, mode="w+b", dir=str(self.spool_dir)
        ) as spool:
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > MAX_ANALYSIS_BYTES:
                    return error_response(413, f"an analysis is at most {MAX_ANALYSIS_BYTES} bytes")
                spool.write(chunk)
            spool.seek(0)
            return await run_in_threadpool(self._receive, spool, caller)

    def _receive(self, spool: IO[bytes], caller: Principal) -> Response:
        try:
            metadata, bundle = unpack_analysis(spool)
        except BundleError as error:
            return error_response(400, str(error), "(body)")
        try:
            Cohort.model_validate(metadata["cohort"])
        except ValidationError as error:
            return validation_response(error)
        analysis_id = metadata["analysis_id"]
        try:
            hub = verify_analysis(
                metadata.get("signature"), self.hubs, analysis_id, bundle.sha256, metadata["cohort"]
            )
        except SignatureRefused as error:
            log.warning("analysis.signature_refused", client=caller.name, reason=str(error))
            return error_response(403, str(error), "signature")
        bundle.write(self.bundles / bundle.sha256)
        analysis = Analysis(
            analysis_id=analysis_id,
            hub=hub,
            bundle_sha256=bundle.sha256,
            model_name=bundle.name,
            model_version=bundle.version,
            cohort=metadata["cohort"],
            validated=False,
            state="pending",
            received_at=time.time(),
        )
        known = self.store.get(analysis_id) is not None
        try:
            stored = receive(
                self.store, self.approvals, analysis, auto_approve=self.auto_approve[hub]
            )
        except ValueError as error:
            return error_response(409, str(error), "analysis_id")
        log.info(
            "analysis.received",
            analysis_id=analysis_id,
            hub=hub,
            sent_by=caller.name,
            state=stored.state,
        )
        return JSONResponse(
            describe(stored, self.store),
            status_code=200 if known else 202,
            headers={"Location": f"/federated/v1/analyses/{analysis_id}"},
        )

    async def show(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        analysis_id = request.path_params["analysis_id"]
        analysis = await run_in_threadpool(self.store.get, analysis_id)
        if analysis is None:
            return error_response(404, f"no analysis {analysis_id!r} at this site", "analysis_id")
        return JSONResponse(await run_in_threadpool(describe, analysis, self.store))

    async def listing(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller

        def everything() -> list[dict[str, Any]]:
            return [describe(analysis, self.store) for analysis in self.store.list()]

        return JSONResponse({"analyses": await run_in_threadpool(everything)})


def analysis_routes(
    store: AnalysisStore,
    approvals: Approvals,
    authenticator: Authenticator,
    hubs: list[TrustedHub],
    data_dir: Path,
) -> list[BaseRoute]:
    """The routes to mount beside the federated API's, at ``/federated/v1``."""
    endpoints = AnalysisEndpoints(store, approvals, authenticator, hubs, data_dir)
    return [
        Route("/analyses", endpoints.submit, methods=["POST"]),
        Route("/analyses", endpoints.listing, methods=["GET"]),
        Route("/analyses/{analysis_id}", endpoints.show, methods=["GET"]),
    ]
