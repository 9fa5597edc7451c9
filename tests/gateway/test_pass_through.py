"""QIDO-RS and WADO-RS through the gateway give what the PACS gives (issue 13, item 1).

The PACS is a real Orthanc with its DEFAULT settings (it gzips DICOM JSON for any client that
accepts it), and the same Orthanc behind a real HTTP/1.1 server that compresses everything
(gzip or deflate) and sends it chunked. A dicomweb-client reading the gateway must get the
JSON Orthanc gives (after the URL rewriting) and the same bytes.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import Phantom
from gateway.dicomweb.multipart import MediaType, MultipartParser
from tests.gateway.conftest import phantom
from tests.support.gateway import GatewayProcess
from tests.support.orthanc import OrthancServer
from tests.support.recoding_upstream import RecodingUpstream

pytestmark = pytest.mark.orthanc

ALL_SYNTAXES = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture(scope="module")
def default_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def study(default_orthanc: OrthancServer) -> Phantom:
    study = phantom(seed=410, slices=3)
    stored = DICOMwebClient(default_orthanc.dicomweb_url).store_instances(list(study.instances()))
    assert len(stored.ReferencedSOPSequence) == 3  # what Orthanc stored, not only the status
    return study


def gateway_in_front_of(workdir: Any, pacs_url: str) -> GatewayProcess:
    return GatewayProcess(workdir, {"pacs": {"url": pacs_url, "retries": 0}}).start()


class _Parts:
    """Collects the bodies of a multipart answer (the gateway's own parser)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def part_begin(self, headers: dict[str, str]) -> None:
        self.bodies.append(b"")

    def part_data(self, data: memoryview) -> None:
        self.bodies[-1] += bytes(data)

    def part_end(self) -> None:
        pass


def multipart_bodies(url: str, accept: str = ALL_SYNTAXES) -> list[bytes]:
    response = httpx.get(url, headers={"Accept": accept}, timeout=60)
    assert response.status_code == 200, response.text
    boundary = MediaType(response.headers["content-type"]).params["boundary"]
    parts = _Parts()
    parser = MultipartParser(boundary, parts)
    parser.feed(response.content)
    parser.finish()
    return parts.bodies


def as_seen_through(answer: Any, pacs_root: str, gateway_root: str) -> Any:
    """The PACS's DICOM JSON with its URLs pointing at the gateway, as the gateway rewrites.

    Orthanc builds its URLs from the Host header, which dicomweb-client sends without the
    port: read directly, its URLs lack the port (``http://127.0.0.1/dicom-web/...``).
    """
    portless = re.sub(r":\d+/", "/", pacs_root, count=1)
    text = json.dumps(answer).replace(pacs_root, gateway_root).replace(portless, gateway_root)
    return json.loads(text)


def canonical(results: list[dict[str, Any]]) -> list[str]:
    """Results in an order that does not depend on the server."""
    return sorted(json.dumps(result, sort_keys=True) for result in results)


def assert_same_answers(gateway: GatewayProcess, orthanc: OrthancServer, study: Phantom) -> None:
    """QIDO-RS at every level, metadata, instances, frames: gateway == Orthanc."""
    truth = study.truth
    through, direct = DICOMwebClient(gateway.dicomweb_url), DICOMwebClient(orthanc.dicomweb_url)
    uid = truth.study_instance_uid
    series = truth.series_instance_uid
    instance = next(study.instances()).SOPInstanceUID

    def same(call: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        mine = getattr(through, call)(*args, **kwargs)
        theirs = as_seen_through(
            getattr(direct, call)(*args, **kwargs), orthanc.dicomweb_url, gateway.dicomweb_url
        )
        assert mine, f"{call}: nothing found"
        assert canonical(mine) == canonical(theirs), call
        return list(mine)

    studies = same("search_for_studies", search_filters={"PatientID": truth.patient_id})
    assert studies[0]["00081190"]["Value"][0].startswith(gateway.dicomweb_url)
    same("search_for_studies", search_filters={"StudyInstanceUID": uid})
    same("search_for_series", uid)
    same("search_for_series", search_filters={"StudyInstanceUID": uid})
    same("search_for_instances", uid)
    same("search_for_instances", uid, series)
    same("search_for_instances", search_filters={"StudyInstanceUID": uid})
    metadata = same("retrieve_study_metadata", uid)
    assert len(metadata) == 3
    same("retrieve_series_metadata", uid, series)
    same("retrieve_instance_metadata", uid, series, instance)

    # Instances: the same Part 10 bytes, whichever level they are asked at.
    mine = multipart_bodies(f"{gateway.dicomweb_url}/studies/{uid}")
    assert len(mine) == 3
    assert sorted(mine) == sorted(multipart_bodies(f"{orthanc.dicomweb_url}/studies/{uid}"))
    path = f"/studies/{uid}/series/{series}/instances/{instance}"
    assert multipart_bodies(gateway.dicomweb_url + path) == multipart_bodies(
        orthanc.dicomweb_url + path
    )
    assert [ds.SOPInstanceUID for ds in through.retrieve_series(uid, series)]
    # Orthanc refuses dicomweb-client's default frame media type (type="*/*"): name one.
    native = (("application/octet-stream", "1.2.840.10008.1.2.1"),)
    frames = through.retrieve_instance_frames(uid, series, instance, [1], media_types=native)
    assert frames == direct.retrieve_instance_frames(uid, series, instance, [1], native)
    assert len(frames[0]) == 2 * study.spec.rows * study.spec.columns  # 16-bit native pixels


def test_a_default_orthanc_through_the_gateway_gives_what_orthanc_gives(
    default_orthanc: OrthancServer, study: Phantom, tmp_path: Any
) -> None:
    # The premise: Orthanc as installed compresses its DICOM JSON (HttpCompressionEnabled).
    probe = httpx.get(
        f"{default_orthanc.dicomweb_url}/studies/{study.truth.study_instance_uid}/metadata",
        headers={"Accept-Encoding": "gzip"},
    )
    assert probe.headers.get("content-encoding") == "gzip"
    gateway = gateway_in_front_of(tmp_path, default_orthanc.dicomweb_url)
    try:
        assert_same_answers(gateway, default_orthanc, study)
    finally:
        gateway.stop()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_an_upstream_that_compresses_and_chunks_everything(
    default_orthanc: OrthancServer, study: Phantom, tmp_path: Any, encoding: str
) -> None:
    upstream = RecodingUpstream(default_orthanc.dicomweb_url, encoding).start()
    gateway = gateway_in_front_of(tmp_path, upstream.dicomweb_url)
    try:
        # Compared with Orthanc read directly: the recoder puts its own root into the URLs,
        # the gateway must put its root in their place, as it does for Orthanc's.
        assert_same_answers(gateway, default_orthanc, study)
    finally:
        gateway.stop()
        upstream.stop()
    # The premise: the gateway asked for compression and every answer came compressed,
    # chunked, in many chunks (multipart bodies included).
    assert upstream.served
    assert all(encoding in asked and sent == encoding for _, asked, sent, _ in upstream.served)
    assert max(chunks for *_, chunks in upstream.served) > 10


def test_the_gateway_compresses_json_for_a_client_that_asks(
    default_orthanc: OrthancServer, study: Phantom, tmp_path: Any
) -> None:
    gateway = gateway_in_front_of(tmp_path, default_orthanc.dicomweb_url)
    uid = study.truth.study_instance_uid
    try:
        url = f"{gateway.dicomweb_url}/studies/{uid}/metadata"
        with httpx.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
            raw = b"".join(response.iter_raw())
            assert response.headers["content-encoding"] == "gzip"
            assert "content-length" not in response.headers  # streamed, chunked
            assert "accept-encoding" in response.headers["vary"].lower()
        plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert json.loads(gzip.decompress(raw)) == plain.json()
        assert len(raw) * 3 < len(plain.content)
        # DICOM instances are sent as they are, never compressed by the gateway.
        instances = httpx.get(
            f"{gateway.dicomweb_url}/studies/{uid}",
            headers={"Accept": ALL_SYNTAXES, "Accept-Encoding": "gzip"},
        )
        assert instances.status_code == 200
        assert "content-encoding" not in instances.headers
    finally:
        gateway.stop()
