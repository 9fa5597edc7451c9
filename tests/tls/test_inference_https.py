"""The inference service over HTTPS, both ways with client certificates: the gateway calls it
(``pipeline.inference_tls``), it fetches the series from the gateway and stores the SR back
(``dicomweb.tls``); each server requires the other's client certificate."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.pipeline.conftest import chest_phantom, pipeline_settings, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.tls import CertificateAuthority, Issued


def _server_tls(ca: CertificateAuthority, server: Issued) -> dict[str, str]:
    return {
        "certificate": str(server.certificate),
        "key": str(server.key),
        "client_ca": str(ca.certificate),
    }


def _client_tls(ca: CertificateAuthority, client: Issued) -> dict[str, str]:
    return {
        "ca": str(ca.certificate),
        "certificate": str(client.certificate),
        "key": str(client.key),
    }


def test_gateway_and_inference_service_over_mutual_tls(
    tmp_path: Path, models_dir: Path, ca: CertificateAuthority
) -> None:
    gateway_client = ca.client("gateway")
    inference_client = ca.client("inference")
    operator = ca.client("operator")
    inference = InferenceProcess(
        tmp_path / "inference",
        models_dir,
        {
            "listen": {"tls": _server_tls(ca, ca.server("inference"))},
            "dicomweb": {"tls": _client_tls(ca, inference_client)},
        },
        verify=ca.client_context(operator),
    ).start()
    try:
        assert inference.url.startswith("https://")
        # Who has no certificate from the hospital's CA gets no model.
        with pytest.raises(httpx.HTTPError):
            httpx.get(
                f"{inference.url}/v2/health/live", verify=ca.client_context(), timeout=10
            ).raise_for_status()

        settings = pipeline_settings(inference.url)
        settings["pipeline"]["inference_tls"] = _client_tls(ca, gateway_client)
        settings["listen"] = {"tls": _server_tls(ca, ca.server("gateway"))}
        gateway = GatewayProcess(
            tmp_path / "gateway", settings, verify=ca.client_context(operator)
        ).start()
        try:
            session = requests.Session()
            session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify (requests#3829)
            session.verify = str(ca.certificate)
            session.cert = (str(operator.certificate), str(operator.key))
            client = DICOMwebClient(gateway.dicomweb_url, session=session)
            phantom = chest_phantom(seed=1800, lesions=(20.0,))
            client.store_instances(list(phantom.instances()))

            def finished() -> list[dict[str, object]] | None:
                response = httpx.get(
                    f"{gateway.url}/jobs", verify=ca.client_context(operator), timeout=10
                )
                response.raise_for_status()
                current = response.json()["jobs"]
                done = [j for j in current if j["state"] in ("succeeded", "failed", "dead")]
                return current if current and len(done) == len(current) else None

            (job,) = wait_until(finished, 120, "the job over TLS to finish")
            assert job["state"] == "succeeded", job
            # The SR came back over HTTPS and is in the gateway.
            srs = client.search_for_instances(
                phantom.truth.study_instance_uid, search_filters={"Modality": "SR"}
            )
            assert [sr["00080018"]["Value"][0] for sr in srs] == [job["sr_sop_instance_uid"]]
            # The start-up check of the served models reached the service too.
            assert "pipeline.models_unchecked" not in gateway.log()
        finally:
            gateway.stop()
    finally:
        inference.stop()
