"""The inference service over HTTPS, every hop with client certificates: the gateway calls it
(``pipeline.inference_tls``); it fetches the series from the gateway and stores the SR back
(``dicomweb.tls``); it runs the model on a remote Open Inference Protocol server, as it would
on Triton (``models.<name>.backend.tls``; here a second inference service). Each server
requires a client certificate of the hospital's CA."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.pipeline.conftest import chest_phantom, pipeline_settings, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.inference import InferenceProcess
from tests.support.tls import CertificateAuthority, client_tls, server_tls


def test_gateway_and_inference_service_over_mutual_tls(
    tmp_path: Path, models_dir: Path, ca: CertificateAuthority
) -> None:
    gateway_client = ca.client("gateway")
    inference_client = ca.client("inference")
    operator = ca.client("operator")
    with ExitStack() as stack:
        model_server = InferenceProcess(
            tmp_path / "model-server",
            models_dir,
            {"listen": {"tls": server_tls(ca.server("model-server"), ca)}},
            verify=ca.client_context(operator),
        ).start()
        stack.callback(model_server.stop)
        remote = {"type": "oip", "url": model_server.url, "tls": client_tls(ca, inference_client)}
        inference = InferenceProcess(
            tmp_path / "inference",
            models_dir,
            {
                "listen": {"tls": server_tls(ca.server("inference"), ca)},
                "dicomweb": {"tls": client_tls(ca, inference_client)},
                "models": {"nodule-detector": {"backend": remote}},
            },
            verify=ca.client_context(operator),
        ).start()
        stack.callback(inference.stop)
        assert inference.url.startswith("https://")
        # Who has no certificate from the hospital's CA gets no model.
        with pytest.raises(httpx.HTTPError):
            httpx.get(
                f"{inference.url}/v2/health/live", verify=ca.client_context(), timeout=10
            ).raise_for_status()
        models = httpx.get(
            f"{inference.url}/v1/models", verify=ca.client_context(operator), timeout=10
        ).json()["models"]
        backends = {m["name"]: m["backend"] for m in models}
        assert backends["nodule-detector"].startswith(f"remote OIP {model_server.url}")

        settings = pipeline_settings(inference.url)
        settings["pipeline"]["inference_tls"] = client_tls(ca, gateway_client)
        settings["listen"] = {"tls": server_tls(ca.server("gateway"), ca)}
        gateway = GatewayProcess(
            tmp_path / "gateway", settings, verify=ca.client_context(operator)
        ).start()
        stack.callback(gateway.stop)

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
        assert job["findings_count"] == 1
        # The SR came back over HTTPS and is in the gateway.
        srs = client.search_for_instances(
            phantom.truth.study_instance_uid, search_filters={"Modality": "SR"}
        )
        assert [sr["00080018"]["Value"][0] for sr in srs] == [job["sr_sop_instance_uid"]]
        # The start-up check of the served models reached the service too.
        assert "pipeline.models_unchecked" not in gateway.log()
