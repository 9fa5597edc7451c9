"""Fixtures: a site (real index + real HTTP server) with a cohort whose truth is known."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.auth import AuthClient, AuthSettings
from gateway.federated.settings import FederatedSettings
from gateway.index import FindingsIndex, IndexSettings
from tests.federated.servers import ThreadedServer, site_app
from tests.federated.synthetic import (
    DIAMETER,
    MALIGNANCY,
    MASS,
    SUSPICIOUS,
    SyntheticFinding,
    SyntheticPatient,
    SyntheticStudy,
    write_patients,
)

QUERY_TOKEN = "query-token-for-tests"
EXACT_TOKEN = "research-office-token-for-tests"
OTHER_QUERY_TOKEN = "second-client-token"
ADMIN_TOKEN = "admin-token-for-tests"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def site_auth() -> AuthSettings:
    return AuthSettings(
        clients=[
            AuthClient(name="researcher", token_sha256=sha256(QUERY_TOKEN), roles=["query"]),
            AuthClient(name="second", token_sha256=sha256(OTHER_QUERY_TOKEN), roles=["query"]),
            AuthClient(name="operator", token_sha256=sha256(ADMIN_TOKEN), roles=["admin"]),
            AuthClient(name="research-office", token_sha256=sha256(EXACT_TOKEN), roles=["exact"]),
        ]
    )


def standard_cohort() -> list[SyntheticPatient]:
    """31 women, 25 men, one man with 11 studies, one woman of 91 with a unique MR and mass."""
    patients = []
    for i in range(30):
        patients.append(
            SyntheticPatient(
                f"F{i:03d}",
                "F",
                [
                    SyntheticStudy(
                        date=20240101 + i,
                        age=60 + i % 10,
                        findings=[
                            SyntheticFinding(
                                diameter_mm=4.0 + i % 10,
                                qualitative=((MALIGNANCY, SUSPICIOUS),) if i < 12 else (),
                            )
                        ],
                    )
                ],
            )
        )
    for i in range(25):
        patients.append(
            SyntheticPatient(
                f"M{i:03d}",
                "M",
                [
                    SyntheticStudy(
                        date=20230101 + i,
                        age=50 + i % 20,
                        findings=[SyntheticFinding(diameter_mm=6.0 + i % 8)] if i < 20 else [],
                    )
                ],
            )
        )
    patients.append(
        SyntheticPatient(
            "MULTI", "M", [SyntheticStudy(date=20220101 + n, age=45) for n in range(11)]
        )
    )
    patients.append(
        SyntheticPatient(
            "LONER",
            "F",
            [
                SyntheticStudy(
                    date=20220601,
                    age=91,
                    modalities=("CT", "MR"),
                    findings=[SyntheticFinding(MASS, diameter_mm=30.0)],
                )
            ],
        )
    )
    return patients


class Site:
    """A site under test: its index, its HTTP server, and a client per token."""

    def __init__(self, index: FindingsIndex, server: ThreadedServer, settings: FederatedSettings):
        self.index = index
        self.server = server
        self.settings = settings

    @property
    def url(self) -> str:
        return f"{self.server.url}/federated/v1"

    def get(self, params: Any, token: str = EXACT_TOKEN) -> httpx.Response:
        return httpx.get(
            f"{self.url}/count",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def post(self, body: Any, token: str = EXACT_TOKEN) -> httpx.Response:
        return httpx.post(
            f"{self.url}/aggregate",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )


SiteFactory = Callable[..., Site]


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[SiteFactory]:
    started: list[tuple[FindingsIndex, ThreadedServer]] = []

    def make(
        patients: list[SyntheticPatient] | None = None,
        name: str = "site",
        auth: AuthSettings | None = None,
        **settings: Any,
    ) -> Site:
        data_dir = tmp_path / name
        index = FindingsIndex.open(IndexSettings(), data_dir)
        if patients is None:
            patients = standard_cohort()
        write_patients(index, patients)
        federated = FederatedSettings.model_validate(settings)
        server = ThreadedServer(site_app(index, federated, auth or site_auth())).start()
        started.append((index, server))
        return Site(index, server, federated)

    yield make
    for index, server in started:
        server.stop()
        index.close()


@pytest.fixture
def site(make_site: SiteFactory) -> Site:
    return make_site()


__all__ = ["DIAMETER", "Site", "SiteFactory"]
