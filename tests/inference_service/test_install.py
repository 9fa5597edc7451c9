"""Installing a federated analysis's model at a real inference service (issue 17, item 3a):
under a name of its own, never over an installed model."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx
import pytest

from gateway.analysis.bundle import ModelBundle
from gateway.analysis.install import installable_tar, installed_name
from tests.support.inference import INSTALL_TOKEN as TOKEN
from tests.support.inference import InferenceProcess


@pytest.fixture(scope="module")
def service(installing_inference_service: InferenceProcess) -> InferenceProcess:
    return installing_inference_service


def put(service: InferenceProcess, name: str, body: bytes, token: str | None = TOKEN):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/x-tar"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.put(
        f"{service.url}/v2/repository/models/{name}", content=body, headers=headers, timeout=60
    )


def served(service: InferenceProcess) -> dict[str, str]:
    models = httpx.get(service.url + "/v1/models", timeout=10).json()["models"]
    return {model["name"]: model["version"] for model in models}


def tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_a_bundle_is_installed_under_its_own_name_and_served(
    service: InferenceProcess, models_dir: Path
) -> None:
    bundle = ModelBundle.read(models_dir / "nodule-detector")
    name = installed_name(bundle)
    assert name.startswith("nodule-detector-") and name != "nodule-detector"
    response = put(service, name, installable_tar(bundle, name))
    assert response.status_code == 201, response.text
    assert response.json() == {"name": name, "version": bundle.version, "installed": True}
    assert served(service)[name] == bundle.version
    assert "nodule-detector" in served(service)  # the site's own model is still there
    metadata = httpx.get(f"{service.url}/v2/models/{name}", timeout=10).json()
    assert metadata["name"] == name and metadata["inputs"][0]["name"] == "volume"
    # Installing the same files again (a gateway restarted mid-install) changes nothing.
    again = put(service, name, installable_tar(bundle, name))
    assert again.status_code == 200 and again.json()["installed"] is False


def test_a_taken_name_is_refused_and_the_installed_model_untouched(
    service: InferenceProcess, models_dir: Path
) -> None:
    installed = models_dir / "nodule-detector"
    before = {
        f: (service.models_dir / "nodule-detector" / f).read_bytes()
        for f in ("model.yaml", "model.onnx")
    }
    other = ModelBundle.read(models_dir / "nodule-presence")
    response = put(service, "nodule-detector", installable_tar(other, "nodule-detector"))
    assert response.status_code == 409, response.text
    assert "never overwritten" in response.json()["error"]
    after = {f: (service.models_dir / "nodule-detector" / f).read_bytes() for f in before}
    assert after == before
    assert served(service)["nodule-detector"] == ModelBundle.read(installed).version
    metadata = httpx.get(f"{service.url}/v2/models/nodule-detector", timeout=10).json()
    assert metadata["outputs"][0]["name"] == "lesion_probability"  # still the detector


def test_installing_needs_the_admin_token(service: InferenceProcess, models_dir: Path) -> None:
    bundle = ModelBundle.read(models_dir / "nodule-presence")
    body = installable_tar(bundle, "presence-copy")
    assert put(service, "presence-copy", body, token=None).status_code == 401
    assert put(service, "presence-copy", body, token="wrong").status_code == 403
    assert "presence-copy" not in served(service)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"model.yaml": b"name: x\n"}, "lacks model.onnx"),
        ({"model.yaml": b"a", "model.onnx": b"b", "run.sh": b"c"}, "exactly the regular files"),
        (None, "'nodule-presence' differs from its folder 'renamed'"),
        ("broken-onnx", "not an installable model"),
    ],
)
def test_what_is_not_a_servable_model_is_a_400(
    service: InferenceProcess, models_dir: Path, files: object, reason: str
) -> None:
    folder = models_dir / "nodule-presence"
    if files is None:  # model.yaml keeps its own name
        body = tar({f: (folder / f).read_bytes() for f in ("model.yaml", "model.onnx")})
    elif files == "broken-onnx":
        manifest = (folder / "model.yaml").read_text().replace("nodule-presence", "renamed")
        body = tar({"model.yaml": manifest.encode(), "model.onnx": b"not onnx"})
    else:
        assert isinstance(files, dict)
        body = tar(files)
    response = put(service, "renamed", body)
    assert response.status_code == 400 and reason in response.json()["error"], response.text
    assert "renamed" not in served(service)
    assert not [p for p in service.models_dir.iterdir() if p.name.startswith(".incoming")]
    assert put(service, "renamed", b"not a tar").status_code == 400
