"""A real Orthanc (Debian package) with the DICOMweb plugin, on free loopback ports."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port, wait_for_http
from tests.support.process import spawn, terminate
from tests.support.requirements import require_executable, require_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class OrthancServer:
    """Start with :meth:`start`, stop with :meth:`stop`; storage lives in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        aet: str = "ORTHANC",
        overrides: dict[str, Any] | None = None,
        forward_to: str | None = None,
        forward_token: str | None = None,
        verify: ssl.SSLContext | None = None,
    ):
        """``forward_to``: a gateway's DICOMweb root that deploy/orthanc's Lua script
        forwards every stable study to, as a hospital's Orthanc would. With ``SslEnabled``
        in ``overrides`` Orthanc serves HTTPS: ``verify`` is then the client's SSL context
        (tests/support/tls.py) the start-up check connects with."""
        self.workdir = workdir
        self.aet = aet
        self.overrides = overrides or {}
        self.forward_to = forward_to
        self.forward_token = forward_token
        self.verify = verify
        self.http_port = 0
        self.dicom_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.overrides.get("SslEnabled") else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        """Orthanc as Debian installs it: only name, ports, paths and the DICOMweb plugin set.

        Everything else is Orthanc's default (HTTP compression on, StableAge 60 s ...), as a
        user meets it (DESIGN.md, "Testing against peers"). A test that needs a setting passes
        it in ``overrides``. With ``forward_to`` the forwarding part of the shipped
        deploy/orthanc/orthanc.json is added: its Lua script, the gateway as DICOMweb server,
        the metadata the script keeps and the overwrite policy results need.
        """
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "Plugins": [DICOMWEB_PLUGIN],
        }
        if self.forward_to:
            shipped = json.loads((REPO_ROOT / "deploy/orthanc/orthanc.json").read_text())
            server: dict[str, Any] = {"Url": self.forward_to.rstrip("/") + "/"}
            if self.forward_token:
                server["HttpHeaders"] = {"Authorization": f"Bearer {self.forward_token}"}
            config.update(
                {
                    "LuaScripts": [str(REPO_ROOT / "deploy/orthanc/forward-to-fedgate.lua")],
                    "DicomWeb": {"Servers": {"fedgate": server}},
                    "UserMetadata": shipped["UserMetadata"],
                    "OverwriteInstances": shipped["OverwriteInstances"],
                    # The script runs on Orthanc's stable event: 2 s instead of the default
                    # 60 s, or every forwarding test would wait a minute per study.
                    "StableAge": 2,
                }
            )
        for key, value in self.overrides.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def start(self) -> OrthancServer:
        binary = require_executable("Orthanc", "/usr/sbin/Orthanc")
        require_file(DICOMWEB_PLUGIN, "Orthanc DICOMweb plugin (Debian package orthanc-dicomweb)")
        if not self.http_port:
            self.http_port, self.dicom_port = free_port(), free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        self.process = spawn(
            [binary, "--logdir=" + str(self.workdir), str(config_path)],
            self.workdir / "orthanc.log",
        )
        try:
            # 401 counts as up: with authentication enabled Orthanc answers, but not to us.
            wait_for_http(
                f"{self.url}/system",
                timeout=30,
                process=self.process,
                ready=(401,),
                verify=self.verify or True,
            )
        except Exception:
            self.stop()
            raise RuntimeError(f"Orthanc did not start; see {self.workdir}/orthanc.log") from None
        return self

    def stored_file(self, sop_instance_uid: str) -> bytes:
        """The Part 10 file Orthanc stored for an instance, as it lies on its disk (REST API
        ``/tools/lookup`` then ``/instances/{id}/file``)."""
        found = httpx.post(f"{self.url}/tools/lookup", content=sop_instance_uid, timeout=10)
        found.raise_for_status()
        (instance,) = [item["ID"] for item in found.json() if item["Type"] == "Instance"]
        response = httpx.get(f"{self.url}/instances/{instance}/file", timeout=30)
        response.raise_for_status()
        return response.content

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
