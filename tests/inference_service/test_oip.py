"""Open Inference Protocol v2 endpoints, and a model run on a remote OIP server (a 2nd service)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import PhantomSpec, generate_phantom
from inference_service.backends.remote import RemoteBackend
from inference_service.errors import TransientError
from inference_service.manifest import OipBackend
from tests.support.inference import InferenceProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[InferenceProcess]:
    process = InferenceProcess(tmp_path_factory.mktemp("inference"), models_dir).start()
    try:
        yield process
    finally:
        process.stop()


def _volume(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = np.full((1, 1, 4, 24, 24), -1000.0, dtype=np.float32)
    volume[..., 2:22, 2:22] = 40.0
    volume[..., 5:19, 5:19] = -850.0
    volume[..., 1:3, 10:13, 10:13] = 30.0
    return volume + rng.normal(0, 8, volume.shape).astype(np.float32)


def _local(models_dir: Path, name: str, volume: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(models_dir / name / "model.onnx"))
    return np.asarray(session.run(None, {"volume": volume})[0])


def test_server_and_model_metadata(service: InferenceProcess) -> None:
    server = httpx.get(f"{service.url}/v2").json()
    assert server["name"] == "fedgate-inference" and "binary_tensor_data" in server["extensions"]
    assert httpx.get(f"{service.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{service.url}/v2/health/ready").json() == {"ready": True}
    metadata = httpx.get(f"{service.url}/v2/models/nodule-detector").json()
    assert metadata["versions"] == ["1.0.0"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [
        {"name": "volume", "datatype": "FP32", "shape": [1, 1, -1, -1, -1]}
    ]
    assert metadata["outputs"][0]["name"] == "lesion_probability"
    ready = httpx.get(f"{service.url}/v2/models/nodule-presence/versions/1.0.0/ready")
    assert ready.status_code == 200 and ready.json() == {"name": "nodule-presence", "ready": True}
    unknown = httpx.get(f"{service.url}/v2/models/no-such-model")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "unknown model 'no-such-model'", "kind": "permanent"}


def test_json_infer_matches_onnxruntime(service: InferenceProcess, models_dir: Path) -> None:
    volume = _volume()
    request = {
        "id": "42",
        "inputs": [
            {
                "name": "volume",
                "shape": list(volume.shape),
                "datatype": "FP32",
                "data": volume.ravel().tolist(),
            }
        ],
    }
    response = httpx.post(f"{service.url}/v2/models/nodule-presence/infer", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "nodule-presence" and body["id"] == "42"
    (output,) = body["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [1, 2]
    assert output["datatype"] == "FP32"
    np.testing.assert_allclose(
        output["data"], _local(models_dir, "nodule-presence", volume).ravel(), rtol=1e-6
    )


def test_triton_style_binary_request_and_response(
    service: InferenceProcess, models_dir: Path
) -> None:
    """JSON header + raw input bytes in, all outputs binary out (binary_data_output)."""
    volume = _volume(2)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "volume",
                    "shape": list(volume.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": volume.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = httpx.post(
        f"{service.url}/v2/models/nodule-detector/infer",
        content=header + volume.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    (output,) = json.loads(response.content[:length])["outputs"]
    assert output["parameters"]["binary_data_size"] == volume.nbytes
    received = np.frombuffer(response.content[length:], dtype="<f4").reshape(output["shape"])
    np.testing.assert_array_equal(received, _local(models_dir, "nodule-detector", volume))


def test_binary_infer_through_the_remote_backend(
    service: InferenceProcess, models_dir: Path
) -> None:
    remote = RemoteBackend(OipBackend(url=service.url), "nodule-detector")
    assert remote.ready()
    assert [spec.name for spec in remote.inputs] == ["volume"]
    volume = _volume(1)
    (output,) = remote.infer({"volume": volume}).values()
    np.testing.assert_array_equal(output, _local(models_dir, "nodule-detector", volume))


BAD_TENSORS = {
    "wrong rank": (
        {"name": "volume", "shape": [1, 4, 24, 24], "datatype": "FP32"},
        "shape [1, 4, 24, 24] given",
    ),
    "wrong dtype": (
        {"name": "volume", "shape": [1, 1, 4, 24, 24], "datatype": "FP64"},
        "datatype FP64 given, FP32 expected",
    ),
    "unknown dtype": (
        {"name": "volume", "shape": [1, 1, 4, 24, 24], "datatype": "FLOAT"},
        "datatype 'FLOAT' is not one of",
    ),
    "wrong count": (
        {"name": "volume", "shape": [1, 1, 4, 24, 25], "datatype": "FP32"},
        "2304 values given for shape",
    ),
    "unknown input": (
        {"name": "image", "shape": [1, 1, 4, 24, 24], "datatype": "FP32"},
        "unknown ['image']",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_bad_tensor_is_a_permanent_400(service: InferenceProcess, case: str) -> None:
    tensor, reason = BAD_TENSORS[case]
    tensor = {**tensor, "data": _volume().ravel().tolist()}
    response = httpx.post(
        f"{service.url}/v2/models/nodule-detector/infer", json={"inputs": [tensor]}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["kind"] == "permanent"
    assert reason in body["error"]
    assert httpx.get(f"{service.url}/v2/health/live").status_code == 200


def test_malformed_infer_bodies_are_400(service: InferenceProcess) -> None:
    url = f"{service.url}/v2/models/nodule-detector/infer"
    not_json = httpx.post(url, content=b"{inputs: [", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    no_inputs = httpx.post(url, json={"outputs": []})
    assert no_inputs.status_code == 400 and "'inputs' list" in no_inputs.json()["error"]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "volume",
                    "shape": [1, 1, 4, 24, 24],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 100},
                }
            ]
        }
    ).encode()
    short = httpx.post(
        url,
        content=header + b"\0" * 100,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400 and "100 bytes of binary data" in short.json()["error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {"inputs": [{"name": "volume", "shape": [10**20], "datatype": "FP32", "data": [1]}]},
            "dimension over",
        ),
        (
            {"inputs": [{"name": "v", "shape": [0, 2**40, 2**40], "datatype": "FP32", "data": []}]},
            "too big",
        ),
        (
            {"inputs": [{"name": "volume", "shape": [1], "datatype": "UINT8", "data": [1e300]}]},
            "data is not UINT8",
        ),
        (
            {"inputs": [{"name": "volume", "shape": [True], "datatype": "FP32", "data": [1]}]},
            "'shape' must be",
        ),
        (
            {"inputs": [], "outputs": [{"name": "probability", "parameters": [1]}]},
            "'parameters' must be an object",
        ),
        (
            {"inputs": [], "outputs": [{"name": "probability", "parameters": "binary"}]},
            "'parameters' must be an object",
        ),
        ({"inputs": [], "outputs": 0}, "'outputs' must be a list"),
        ({"inputs": [], "id": None}, "'id' must be a string"),
        (
            {"inputs": [], "outputs": [{"name": "p", "parameters": {"binary_data": "yes"}}]},
            "must be true or false",
        ),
        (
            {"inputs": [{"name": "volume", "shape": [], "datatype": "FP32", "data": 1}]},
            "'data' must be a list",
        ),
    ],
)
def test_hostile_tensors_and_outputs_are_a_permanent_400(
    service: InferenceProcess, body: dict[str, object], reason: str
) -> None:
    response = httpx.post(f"{service.url}/v2/models/nodule-presence/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["kind"] == "permanent"
    assert reason in response.json()["error"]


@pytest.fixture(scope="module")
def remote_service(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, service: InferenceProcess
) -> Iterator[InferenceProcess]:
    """A second service whose models both run on the first one over OIP."""
    backend = {"backend": {"type": "oip", "url": service.url}}
    process = InferenceProcess(
        tmp_path_factory.mktemp("remote"),
        models_dir,
        {"models": {"nodule-detector": backend, "nodule-presence": backend}},
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.orthanc
def test_analysis_on_a_remote_model_server_matches_local(
    service: InferenceProcess, remote_service: InferenceProcess, shared_orthanc: OrthancServer
) -> None:
    phantom = generate_phantom(
        PhantomSpec(seed=51, rows=128, columns=128, slices=40, lesion_diameters_mm=(8.0, 12.0))
    )
    DICOMwebClient(shared_orthanc.dicomweb_url).store_instances(list(phantom.instances()))
    body = {
        "model": "nodule-detector",
        "study_instance_uid": phantom.truth.study_instance_uid,
        "series_instance_uid": phantom.truth.series_instance_uid,
        "source": {"url": shared_orthanc.dicomweb_url},
        "destination": {"url": shared_orthanc.dicomweb_url},
    }
    local = httpx.post(f"{service.url}/v1/analyses", json=body, timeout=120)
    remote = httpx.post(f"{remote_service.url}/v1/analyses", json=body, timeout=120)
    assert local.status_code == remote.status_code == 200, remote.text
    assert remote.json()["findings"] == local.json()["findings"]
    assert len(remote.json()["lesions"]) == 2
    models = httpx.get(f"{remote_service.url}/v1/models").json()["models"]
    assert all(m["backend"].startswith(f"remote OIP {service.url}") for m in models)
    assert (
        httpx.get(f"{remote_service.url}/v2/models/nodule-detector").json()["platform"]
        == "oip_remote"
    )


def test_unreachable_remote_server_is_transient(models_dir: Path) -> None:
    remote = RemoteBackend(OipBackend(url="http://127.0.0.1:9"), "nodule-detector")
    assert not remote.ready()
    with pytest.raises(TransientError, match="unreachable"):
        remote.infer({"volume": _volume()})


@pytest.mark.orthanc
def test_remote_model_server_down_is_transient_and_not_ready(
    tmp_path: Path, models_dir: Path, shared_orthanc: OrthancServer
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    process = InferenceProcess(
        tmp_path / "svc",
        models_dir,
        {"models": {"nodule-presence": {"backend": {"type": "oip", "url": nowhere}}}},
    ).start()  # starts: a remote model's metadata is read when first needed
    try:
        ready = httpx.get(f"{process.url}/v2/health/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        assert httpx.get(f"{process.url}/v2/models/nodule-presence/ready").status_code == 503
        assert httpx.get(f"{process.url}/v2/models/nodule-detector/ready").status_code == 200
        phantom = generate_phantom(
            PhantomSpec(seed=52, rows=96, columns=96, slices=24, lesion_diameters_mm=())
        )
        DICOMwebClient(shared_orthanc.dicomweb_url).store_instances(list(phantom.instances()))
        response = httpx.post(
            f"{process.url}/v1/analyses",
            json={
                "model": "nodule-presence",
                "study_instance_uid": phantom.truth.study_instance_uid,
                "series_instance_uid": phantom.truth.series_instance_uid,
                "source": {"url": shared_orthanc.dicomweb_url},
                "destination": {"url": shared_orthanc.dicomweb_url},
            },
            timeout=60,
        )
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert (
            error["kind"] == "transient"
            and f"model server {nowhere} unreachable" in error["message"]
        )
        assert process.alive()
    finally:
        process.stop()
