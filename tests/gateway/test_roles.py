"""Roles: every route of the gateway with every role gets the status docs/roles.md promises.

The matrix is read from docs/roles.md, the routes from the application itself (as
test_openapi.py does), so a new route without a row, or a row the gateway does not honour,
fails here. The calls go to a real gateway process over HTTP, one bearer token per role.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.conftest import phantom
from tests.pipeline.conftest import wait_until
from tests.support.dicom import multipart_body, part10_bytes
from tests.support.gateway import REPO_ROOT, GatewayProcess
from tests.support.openapi import app_operations
from tests.support.orthanc import OrthancServer

ROLES_DOC = REPO_ROOT / "docs" / "roles.md"
NO_TOKEN = "no token"
#: Values for the path parameters: well-formed, naming nothing the gateway holds.
PATH_VALUES = {
    "study": "1.2.826.0.1.3680043.10.1",
    "series": "1.2.826.0.1.3680043.10.2",
    "instance": "1.2.826.0.1.3680043.10.3",
    "frames": "1",
    "frame": "1",
    "tag": "7FE00010",
    "job_id": "1",
    "analysis_id": "0" * 32,
    "path": "studies",
    "sha256": "0" * 64,
}


@dataclass(frozen=True)
class Row:
    """One row of the matrix: methods, a path prefix, and who may call it."""

    methods: frozenset[str]
    prefix: str
    allowed: dict[str, bool]

    def covers(self, method: str, path: str) -> bool:
        return method in self.methods and (
            path == self.prefix or path.startswith(self.prefix.rstrip("/") + "/")
        )


def matrix() -> tuple[list[str], list[Row]]:
    """The callers (roles and "no token") and rows of the table in docs/roles.md."""
    lines = ROLES_DOC.read_text().split("## The matrix", 1)[1].splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    callers = header[2:]
    rows = []
    for line in table[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert all(cell in {"yes", "no"} for cell in cells[2:]), line
        rows.append(
            Row(
                methods=frozenset(re.findall(r"`(\w+)`", cells[0])),
                prefix=cells[1].strip("`"),
                allowed={
                    caller: cell == "yes" for caller, cell in zip(callers, cells[2:], strict=True)
                },
            )
        )
    return callers, rows


def row_for(rows: list[Row], method: str, path: str) -> Row:
    """The most specific row covering a request (the longest prefix)."""
    covering = [row for row in rows if row.covers(method, path)]
    assert covering, f"{method} {path} is in no row of docs/roles.md"
    return max(covering, key=lambda row: len(row.prefix))


def operations(tmp_path: Path) -> set[tuple[str, str]]:
    """Every (method, path template) the gateway serves, embedded and in front of a PACS;
    HEAD wherever GET (Starlette answers it)."""
    embedded = create_app(GatewaySettings(data_dir=tmp_path / "embedded"))
    upstream = create_app(
        GatewaySettings(data_dir=tmp_path / "upstream", pacs={"url": "http://127.0.0.1:9/dw"})
    )
    found = app_operations(list(embedded.routes)) | app_operations(list(upstream.routes))
    return found | {("HEAD", path) for method, path in found if method == "GET"}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: PATH_VALUES[match.group(1)], path)


def token(caller: str) -> str:
    return f"roles-test-{caller}-token"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@pytest.fixture(scope="module")
def with_every_role(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    callers, _ = matrix()
    roles = [caller for caller in callers if caller != NO_TOKEN] + ["hub"]
    clients = [
        {"name": role, "token_sha256": digest(token(role)), "roles": [role]} for role in roles
    ]
    process = GatewayProcess(tmp_path_factory.mktemp("roles"), {"auth": {"clients": clients}})
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_every_route_has_a_row_and_every_row_a_route(tmp_path: Path) -> None:
    _, rows = matrix()
    served = operations(tmp_path)
    for method, path in served:
        row_for(rows, method, path)  # fails naming the route without a rule
    for row in rows:
        assert any(row.covers(method, path) for method, path in served), (
            f"docs/roles.md: {sorted(row.methods)} {row.prefix} covers no route of the gateway"
        )


def test_every_route_with_every_role(with_every_role: GatewayProcess, tmp_path: Path) -> None:
    callers, rows = matrix()
    wrong = []
    with httpx.Client(base_url=with_every_role.url, timeout=30) as client:
        for method, template in sorted(operations(tmp_path)):
            path = concrete(template)
            row = row_for(rows, method, template)
            for caller in [*callers, "hub"]:
                headers = {} if caller == NO_TOKEN else {"Authorization": f"Bearer {token(caller)}"}
                status = client.request(method, path, headers=headers).status_code
                public = row.allowed[NO_TOKEN]
                if caller in (NO_TOKEN, "hub"):
                    # A hub's credential without its assertion is not a person: 401.
                    expected = "allowed" if public else "401"
                else:
                    expected = "allowed" if row.allowed[caller] else "403"
                got = "allowed" if status not in (401, 403) else str(status)
                if got != expected or status >= 500:
                    wrong.append(f"{method} {path} as {caller}: {status}, expected {expected}")
    assert wrong == [], "\n".join(wrong)


def test_a_refusal_names_the_role_needed(with_every_role: GatewayProcess) -> None:
    answer = httpx.post(
        f"{with_every_role.dicomweb_url}/studies",
        headers={"Authorization": f"Bearer {token('viewer')}"},
    )
    assert answer.status_code == 403
    assert "'forwarder'" in answer.text


def test_forwarder_stores_and_viewer_reads(with_every_role: GatewayProcess) -> None:
    """What a PACS's forwarding does with a forwarder token (STOW-RS with the stable header),
    then what a viewer does with a viewer token; neither can do the other's part."""
    dataset = next(phantom(seed=1800).instances())
    body, content_type = multipart_body([part10_bytes(dataset)])
    base = with_every_role.dicomweb_url
    forwarder = {"Authorization": f"Bearer {token('forwarder')}"}
    viewer = {"Authorization": f"Bearer {token('viewer')}"}
    study = f"{base}/studies/{dataset.StudyInstanceUID}"
    stored = httpx.post(
        f"{base}/studies",
        content=body,
        headers={
            **forwarder,
            "Content-Type": content_type,
            "Fedgate-Study-Stable": "roles test",
        },
    )
    assert stored.status_code == 200, stored.text
    assert httpx.get(f"{study}/metadata", headers=forwarder).status_code == 403
    metadata = httpx.get(f"{study}/metadata", headers=viewer)
    assert metadata.status_code == 200
    assert metadata.json()[0]["00080018"]["Value"] == [dataset.SOPInstanceUID]
    again = httpx.post(
        f"{base}/studies", content=body, headers={**viewer, "Content-Type": content_type}
    )
    assert again.status_code == 403


@pytest.mark.orthanc
def test_orthanc_forwards_with_a_forwarder_token(
    with_every_role: GatewayProcess, tmp_path: Path
) -> None:
    """The shipped forwarding (deploy/orthanc) needs no more than the ``forwarder`` role."""
    dataset = next(phantom(seed=1801).instances())
    orthanc = OrthancServer(
        tmp_path / "orthanc",
        forward_to=with_every_role.dicomweb_url,
        forward_token=token("forwarder"),
    ).start()
    try:
        httpx.post(f"{orthanc.url}/instances", content=part10_bytes(dataset)).raise_for_status()
        viewer = {"Authorization": f"Bearer {token('viewer')}"}

        def forwarded() -> bool:
            found = httpx.get(
                f"{with_every_role.dicomweb_url}/studies",
                params={"StudyInstanceUID": dataset.StudyInstanceUID},
                headers=viewer,
            )
            return found.status_code == 200 and len(found.json()) == 1

        wait_until(forwarded, 60, "the study forwarded by Orthanc's script")
    finally:
        orthanc.stop()
