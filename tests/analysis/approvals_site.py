"""A site whose admin has things to decide: a real gateway process (auth on, a trusted hub that
does not auto-approve) with training plans asked for before it starts (as the ClientApp asks
through :meth:`gateway.approvals.Approvals.ask`) and analyses that the hub signs and sends
over HTTP. For the approvals API's tests and the jobs page's."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.analysis.bundle import ModelBundle, pack_analysis, sign_analysis
from gateway.approvals import PLAN_KIND, Approvals
from gateway.index import IndexSettings
from gateway.learning.plan import parse_plan
from tests.learning.test_approvals import PLAN
from tests.support.gateway import GatewayProcess

__all__ = ["PLAN", "ApprovalsSite", "ask_for_plan", "running_approvals_site"]

HUB = "consortium"
SITE = "north"
ADMIN_TOKEN = "approvals-admin-token"
#: The person behind the admin's token: whom the decisions name.
ADMIN_PERSON = "dr.admin"
QUERY_TOKEN = "approvals-query-token"
COHORT = {"attributes": {"ModalitiesInStudy": "CT", "BodyPartExamined": "CHEST"}}
#: The bundled model the hub sends.
MODEL = "nodule-detector"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ask_for_plan(data_dir: Path, text: str, by: str) -> str:
    """What the ClientApp does when a run asks for a plan this site has not approved."""
    loaded = parse_plan(text.encode())
    approvals = Approvals.open(IndexSettings(), data_dir)
    try:
        summary = {"name": loaded.plan.name, "features": list(loaded.plan.feature_names)}
        approvals.ask(PLAN_KIND, loaded.sha256, content=text, summary=summary, by=by)
    finally:
        approvals.close()
    return loaded.sha256


@dataclass
class ApprovalsSite:
    gateway: GatewayProcess
    hub_key: ed25519.Ed25519PrivateKey
    bundle: ModelBundle

    def api(
        self, method: str, path: str, token: str = ADMIN_TOKEN, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return httpx.request(method, self.gateway.url + path, headers=headers, timeout=30, **kwargs)

    def send_analysis(self, cohort: dict[str, Any] = COHORT) -> str:
        """The hub signs an analysis for this site and it arrives (handed in by the admin, as
        test_federation.py does); it waits for the admin's decision."""
        analysis_id = secrets.token_hex(16)
        signature = sign_analysis(self.hub_key, HUB, SITE, analysis_id, self.bundle.sha256, cohort)
        body = pack_analysis(
            {"analysis_id": analysis_id, "cohort": cohort, "signature": signature}, self.bundle
        )
        answer = self.api(
            "POST",
            "/federated/v1/analyses",
            content=body,
            headers={"Content-Type": "application/x-tar"},
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["state"] == "pending"
        return analysis_id

    def approvals(self) -> dict[str, Any]:
        answer = self.api("GET", "/approvals")
        assert answer.status_code == 200, answer.text
        listing: dict[str, Any] = answer.json()
        return listing

    def analysis(self, analysis_id: str) -> dict[str, Any]:
        (found,) = [a for a in self.approvals()["analyses"] if a["analysis_id"] == analysis_id]
        return found

    def plan(self, sha256: str) -> dict[str, Any]:
        (found,) = [p for p in self.approvals()["training_plans"] if p["sha256"] == sha256]
        return found


@contextmanager
def running_approvals_site(
    workdir: Path, models_dir: Path, plans: dict[str, str]
) -> Iterator[ApprovalsSite]:
    """A running gateway trusting the hub ``consortium`` (no auto-approval), asked for each of
    ``plans`` (text -> who asked) before it starts; no analysis sent yet."""
    site = _approvals_site(workdir, models_dir)
    for text, by in plans.items():
        ask_for_plan(site.gateway.data_dir, text, by=by)
    site.gateway.start()
    try:
        yield site
    finally:
        site.gateway.stop()


def _approvals_site(workdir: Path, models_dir: Path) -> ApprovalsSite:
    hub_key = ed25519.Ed25519PrivateKey.generate()
    public_pem = (
        hub_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = {
        "auth": {
            "clients": [
                {
                    "name": "operator",
                    "token_sha256": _sha256(ADMIN_TOKEN),
                    "roles": ["admin"],
                    "person": ADMIN_PERSON,
                },
                {"name": "researcher", "token_sha256": _sha256(QUERY_TOKEN), "roles": ["query"]},
            ],
            "hubs": [{"name": HUB, "public_key": public_pem, "audience": SITE}],
        }
    }
    gateway = GatewayProcess(workdir, settings)
    return ApprovalsSite(gateway, hub_key, ModelBundle.read(models_dir / MODEL))
