"""Bundles, their sha256, the analysis tar and the hub's signature (gateway.analysis.bundle)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.analysis.bundle import (
    BundleError,
    ModelBundle,
    SignatureRefused,
    approval_subject,
    pack_analysis,
    sign_analysis,
    unpack_analysis,
    verify_analysis,
)

MANIFEST = b"name: nodule-detector\nversion: 2.0.0\n"
COHORT = {"attributes": {"ModalitiesInStudy": "CT", "StudyDate": "2019-2023"}}
ANALYSIS_ID = "0123456789abcdef0123456789abcdef"


def _bundle(onnx: bytes = b"\x08\x07onnx bytes") -> ModelBundle:
    return ModelBundle.from_files({"model.yaml": MANIFEST, "model.onnx": onnx})


def test_the_sha256_is_what_coreutils_give(tmp_path: Path) -> None:
    bundle = _bundle()
    bundle.write(tmp_path)
    listing = subprocess.run(
        ["sha256sum", "model.yaml", "model.onnx"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout
    expected = subprocess.run(
        ["sha256sum"], input=listing, capture_output=True, check=True
    ).stdout.split()[0]
    assert bundle.sha256 == expected.decode()
    assert ModelBundle.read(tmp_path).sha256 == bundle.sha256
    assert _bundle(b"other weights").sha256 != bundle.sha256
    assert (bundle.name, bundle.version) == ("nodule-detector", "2.0.0")


def test_what_is_approved_changes_with_the_model_and_with_the_cohort() -> None:
    subject = approval_subject(_bundle().sha256, COHORT)
    assert approval_subject(_bundle(b"x").sha256, COHORT) != subject
    assert (
        approval_subject(_bundle().sha256, {"attributes": {"ModalitiesInStudy": "MR"}}) != subject
    )
    assert approval_subject(_bundle().sha256, dict(reversed(COHORT.items()))) == subject


def test_an_analysis_round_trips_through_its_tar() -> None:
    metadata = {"analysis_id": ANALYSIS_ID, "cohort": COHORT, "signature": "x"}
    unpacked, bundle = unpack_analysis(io.BytesIO(pack_analysis(metadata, _bundle())))
    assert unpacked == metadata
    assert bundle.sha256 == _bundle().sha256


def _tar(members: list[tarfile.TarInfo], content: bytes = b"{}") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info in members:
            archive.addfile(info, io.BytesIO(content) if info.isfile() else None)
    buffer.seek(0)
    return buffer


def _file(name: str, size: int = 2) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    return info


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([_file("../model.onnx")], "unexpected member"),
        ([_link("model.onnx")], "unexpected member"),
        ([_file("analysis.json"), _file("extra.py")], "unexpected member"),
        ([_file("analysis.json"), _file("analysis.json")], "twice"),
        ([_file("model.yaml"), _file("model.onnx")], "no analysis.json"),
    ],
)
def test_a_tar_with_anything_else_is_refused(members: list[tarfile.TarInfo], words: str) -> None:
    with pytest.raises(BundleError, match=words):
        unpack_analysis(_tar(members))


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ({"analysis_id": "1", "cohort": COHORT}, "analysis_id"),
        ({"analysis_id": ANALYSIS_ID, "cohort": "CT"}, "cohort"),
    ],
)
def test_bad_metadata_is_refused(metadata: dict[str, object], words: str) -> None:
    with pytest.raises(BundleError, match=words):
        unpack_analysis(io.BytesIO(pack_analysis(metadata, _bundle())))


def test_not_a_tar_is_refused() -> None:
    with pytest.raises(BundleError, match="not an analysis tar"):
        unpack_analysis(io.BytesIO(b"PK\x03\x04 a zip file"))


def test_a_manifest_without_a_usable_name_is_refused() -> None:
    with pytest.raises(BundleError, match="name"):
        ModelBundle.from_files({"model.yaml": b"version: 1\n", "model.onnx": b"x"})
    with pytest.raises(BundleError, match="name"):
        ModelBundle.from_files({"model.yaml": b"name: ../evil\nversion: 1\n", "model.onnx": b"x"})


def test_the_signature_binds_hub_site_analysis_bundle_and_cohort() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    hubs = {"consortium": (key.public_key(), "site-a")}
    sha = _bundle().sha256
    token = sign_analysis(key, "consortium", "site-a", ANALYSIS_ID, sha, COHORT)
    assert verify_analysis(token, hubs, ANALYSIS_ID, sha, COHORT) == "consortium"

    with pytest.raises(SignatureRefused, match="another analysis, bundle or cohort"):
        verify_analysis(token, hubs, ANALYSIS_ID, _bundle(b"swapped").sha256, COHORT)
    with pytest.raises(SignatureRefused, match="another analysis, bundle or cohort"):
        verify_analysis(token, hubs, ANALYSIS_ID, sha, {"attributes": {}})
    with pytest.raises(SignatureRefused, match="does not verify"):
        verify_analysis(
            token, {"consortium": (key.public_key(), "site-b")}, ANALYSIS_ID, sha, COHORT
        )
    other = ed25519.Ed25519PrivateKey.generate()
    forged = sign_analysis(other, "consortium", "site-a", ANALYSIS_ID, sha, COHORT)
    with pytest.raises(SignatureRefused, match="does not verify"):
        verify_analysis(forged, hubs, ANALYSIS_ID, sha, COHORT)
    stranger = sign_analysis(other, "elsewhere", "site-a", ANALYSIS_ID, sha, COHORT)
    with pytest.raises(SignatureRefused, match="not a hub this site trusts"):
        verify_analysis(stranger, hubs, ANALYSIS_ID, sha, COHORT)
    with pytest.raises(SignatureRefused, match="no hub signature"):
        verify_analysis(None, hubs, ANALYSIS_ID, sha, COHORT)
