"""The live service holds to openapi/inference.yaml: every route documented, every answer valid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from dicomweb_client.api import DICOMwebClient
from starlette.routing import Route

from fedgate.phantom import PhantomSpec, generate_phantom
from inference_service.app import create_app
from inference_service.repository import ModelRepository
from inference_service.settings import InferenceSettings
from tests.inference_service import phantoms
from tests.support.inference import REPO_ROOT, InferenceProcess
from tests.support.orthanc import OrthancServer

DOCUMENT: dict[str, Any] = yaml.safe_load((REPO_ROOT / "openapi/inference.yaml").read_text())


def _schema(fragment: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; "#/components/..." refs resolve in the root.
    return jsonschema.Draft202012Validator({**fragment, "components": DOCUMENT["components"]})


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def check(method: str, template: str, response: httpx.Response) -> None:
    """``response`` to ``method template`` is documented and its JSON body fits the schema."""
    operation = DOCUMENT["paths"][template][method.lower()]
    documented = operation["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method} {template}: {status} is not documented"
    content = _resolve(documented[status]).get("content", {})
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in content, f"{method} {template} {status}: {media_type} not documented"
    if media_type == "application/json":
        _schema(content[media_type]["schema"]).validate(response.json())
    for header in _resolve(documented[status]).get("headers", {}):
        assert header in response.headers


def test_document_is_openapi_3_1_and_lists_every_route(repository: ModelRepository) -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    app = create_app(InferenceSettings(), repository)
    served = {
        (method.lower(), route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {
        (method, path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    }
    assert served == documented
    for schema in DOCUMENT["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[InferenceProcess]:
    process = InferenceProcess(tmp_path_factory.mktemp("inference"), models_dir).start()
    try:
        yield process
    finally:
        process.stop()


def test_oip_answers_fit_the_document(service: InferenceProcess) -> None:
    url = service.url
    check("GET", "/v2", httpx.get(f"{url}/v2"))
    check("GET", "/v2/health/live", httpx.get(f"{url}/v2/health/live"))
    check("GET", "/v2/health/ready", httpx.get(f"{url}/v2/health/ready"))
    check("GET", "/v2/models/{name}", httpx.get(f"{url}/v2/models/nodule-detector"))
    check("GET", "/v2/models/{name}", httpx.get(f"{url}/v2/models/nope"))
    check(
        "GET",
        "/v2/models/{name}/versions/{version}",
        httpx.get(f"{url}/v2/models/nodule-detector/versions/9"),
    )
    check("GET", "/v2/models/{name}/ready", httpx.get(f"{url}/v2/models/nodule-presence/ready"))
    request = {
        "inputs": [
            {"name": "volume", "shape": [1, 1, 2, 3, 3], "datatype": "FP32", "data": [-850.0] * 18}
        ]
    }
    _schema({"$ref": "#/components/schemas/InferRequest"}).validate(request)
    check(
        "POST",
        "/v2/models/{name}/infer",
        httpx.post(f"{url}/v2/models/nodule-presence/infer", json=request),
    )
    request["inputs"][0]["shape"] = [2, 3, 3]
    check(
        "POST",
        "/v2/models/{name}/infer",
        httpx.post(f"{url}/v2/models/nodule-presence/infer", json=request),
    )
    check("GET", "/v1/models", httpx.get(f"{url}/v1/models"))


@pytest.mark.orthanc
def test_analysis_answers_fit_the_document(
    service: InferenceProcess, shared_orthanc: OrthancServer
) -> None:
    phantom = generate_phantom(
        PhantomSpec(
            seed=61,
            rows=96,
            columns=96,
            slices=24,
            pixel_spacing_mm=2.0,
            slice_thickness_mm=2.0,
            lesion_diameters_mm=(12.0,),
        )
    )
    client = DICOMwebClient(shared_orthanc.dicomweb_url)
    client.store_instances(list(phantom.instances()))
    gap = phantoms.with_gap(phantom)
    client.store_instances(gap)
    body = {
        "model": "nodule-detector",
        "study_instance_uid": phantom.truth.study_instance_uid,
        "series_instance_uid": phantom.truth.series_instance_uid,
        "source": {"url": shared_orthanc.dicomweb_url},
        "destination": {
            "url": shared_orthanc.dicomweb_url,
            "auth": {"type": "basic", "username": "u", "password": "p"},
        },
    }
    _schema({"$ref": "#/components/schemas/AnalysisRequest"}).validate(body)
    url = f"{service.url}/v1/analyses"
    ok = httpx.post(url, json=body, timeout=120)
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["findings"]) == 1
    check("POST", "/v1/analyses", ok)
    unknown = httpx.post(url, json={**body, "model": "nope"})
    assert unknown.status_code == 404
    check("POST", "/v1/analyses", unknown)
    bad = httpx.post(
        url, json={**body, "series_instance_uid": gap[0].SeriesInstanceUID}, timeout=60
    )
    assert bad.status_code == 422
    check("POST", "/v1/analyses", bad)
    check(
        "POST",
        "/v1/analyses",
        httpx.post(url, content=b"[", headers={"content-type": "application/json"}),
    )
    not_found = httpx.post(url, json={**body, "method": "GET"})
    check("POST", "/v1/analyses", not_found)

    metrics = httpx.get(f"{service.url}/metrics")
    check("GET", "/metrics", metrics)
    text = metrics.text
    assert 'fedgate_inference_analyses_total{model="nodule-detector",outcome="ok"} 1.0' in text
    assert 'fedgate_inference_analyses_total{model="nodule-detector",outcome="permanent"}' in text
    assert 'fedgate_inference_analyses_total{model="(none)",outcome="permanent"} 3.0' in text
    stage = 'fedgate_inference_stage_seconds_count{model="nodule-detector",stage="model"}'
    assert f"{stage} 1.0" in text
