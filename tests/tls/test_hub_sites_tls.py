"""A hub over HTTPS asks two real site gateways over HTTPS, presenting its client certificate
(``sites[].tls``) to sites that require one (``listen.tls.client_ca``); a hub without one is
refused by the sites, and says so per site."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from gateway.index import FindingsIndex, IndexSettings
from tests.federated.conftest import EXACT_TOKEN, sha256
from tests.federated.synthetic import write_patients
from tests.federated.test_hub import HUB_TOKEN, hub_process, site_patients
from tests.support.gateway import GatewayProcess
from tests.support.tls import CertificateAuthority, client_tls, server_tls

#: site -> (women, men): CT patients written into its findings index before it starts.
SITES = {"north": (12, 10), "south": (15, 11)}


def _site(workdir: Path, name: str, ca: CertificateAuthority) -> GatewayProcess:
    women, men = SITES[name]
    index = FindingsIndex.open(IndexSettings(), workdir / "data")
    try:
        write_patients(index, site_patients(name, women, men, nodules=0))
    finally:
        index.close()
    server = ca.server(name)
    return GatewayProcess(
        workdir,
        {
            "listen": {"tls": server_tls(server, ca)},
            # The hub relays for the research office here: exact counts, compared with truth.
            "auth": {
                "clients": [
                    {"name": "hub", "token_sha256": sha256(EXACT_TOKEN), "roles": ["exact"]}
                ]
            },
        },
        verify=ca.client_context(ca.client(f"{name}-operator")),
    ).start()


def _ask(hub: str, ca: CertificateAuthority) -> dict[str, Any]:
    response = httpx.get(
        f"{hub}/count",
        params={"ModalitiesInStudy": "CT"},
        headers={"Authorization": f"Bearer {HUB_TOKEN}"},
        verify=ca.client_context(),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_hub_asks_sites_with_its_client_certificate(
    tmp_path: Path, ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    hub_certificate = ca.client("hub")
    hub_server = ca.server("hub")
    hub_tls = server_tls(hub_server)
    with ExitStack() as stack:
        sites = {}
        for name in SITES:
            site = _site(tmp_path / name, name, ca)
            stack.callback(site.stop)
            sites[name] = site

        def configs(tls: dict[str, str]) -> list[dict[str, Any]]:
            return [
                {
                    "name": name,
                    "url": f"{site.url}/federated/v1",
                    "token": EXACT_TOKEN,
                    "tls": tls,
                }
                for name, site in sites.items()
            ]

        with_certificate = client_tls(ca, hub_certificate)
        with hub_process(
            tmp_path, configs(with_certificate), tls=hub_tls, verify=ca.client_context()
        ) as hub:
            assert hub.startswith("https://")
            answer = _ask(hub, ca)
            assert {s["name"]: s["status"] for s in answer["sites"]} == dict.fromkeys(SITES, "ok")
            assert answer["count"] == sum(women + men for women, men in SITES.values())

        # A hub without a client certificate, and one signed by another CA: refused by every
        # site, each named in the answer with the reason, and nothing counted.
        impostor = other_ca.client("impostor")
        for tls in (client_tls(ca), client_tls(ca, impostor)):
            with hub_process(
                tmp_path, configs(tls), tls=hub_tls, verify=ca.client_context()
            ) as hub:
                answer = _ask(hub, ca)
                statuses = {s["name"]: s["status"] for s in answer["sites"]}
                assert statuses == dict.fromkeys(SITES, "error"), answer
                assert answer["complete"] is False
                assert answer["count"] is None and answer["error"] == "no site answered"
                assert all(s["error"] for s in answer["sites"])
