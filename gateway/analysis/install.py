"""Installing an analysis's model bundle into the site's inference service, under its own name.

The name is the bundle's model name followed by the first 12 hex digits of the bundle's
sha256 (``nodule-detector-3f9a0c1d2e4b``): it never is the name of a model the site installed
itself, and another bundle of the same model gets another name, so an installed model is
never overwritten. The inference service refuses (409) other content under a taken name
(``PUT /v2/repository/models/{name}``, openapi/inference.yaml); the same content again is a
200, so installing is safe to retry after a crash.
"""

from __future__ import annotations

import io
import tarfile

import httpx
import yaml

from gateway.analysis.bundle import BUNDLE_FILES, ModelBundle

__all__ = ["InstallError", "install_bundle", "installable_tar", "installed_name"]


class InstallError(Exception):
    """The inference service did not install the bundle; ``permanent`` when retrying the same
    request cannot help (refused, taken name, not a servable model)."""

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def installed_name(bundle: ModelBundle) -> str:
    return f"{bundle.name}-{bundle.sha256[:12]}"


def installable_tar(bundle: ModelBundle, name: str) -> bytes:
    """The bundle as the inference service installs it: model.yaml naming the model ``name``
    (everything else as the hub sent it), and model.onnx."""
    manifest = dict(bundle.manifest)
    manifest["name"] = name
    files = {
        "model.yaml": yaml.safe_dump(manifest, sort_keys=False).encode(),
        "model.onnx": bundle.files["model.onnx"],
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for file in BUNDLE_FILES:
            info = tarfile.TarInfo(file)
            info.size = len(files[file])
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(files[file]))
    return buffer.getvalue()


async def install_bundle(
    http: httpx.AsyncClient, inference_url: str, token: str | None, bundle: ModelBundle
) -> str:
    """Install ``bundle`` at the inference service; returns the name it is served under."""
    name = installed_name(bundle)
    headers = {"Content-Type": "application/x-tar"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = await http.put(
            f"{inference_url}/v2/repository/models/{name}",
            content=installable_tar(bundle, name),
            headers=headers,
        )
    except httpx.HTTPError as error:
        raise InstallError(f"{inference_url} unreachable: {error!r}", permanent=False) from None
    if response.status_code in (200, 201):
        return name
    try:
        reason = str(response.json().get("error", ""))[:500]
    except (ValueError, AttributeError):
        reason = response.text[:500]
    raise InstallError(
        f"{inference_url} did not install {name}: HTTP {response.status_code}: {reason}",
        permanent=400 <= response.status_code < 500 and response.status_code != 429,
    )
