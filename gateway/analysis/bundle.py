"""Model bundles and the analyses that carry them from a hub to a site.

A **bundle** is a model as the inference service serves it: ``model.yaml`` (its manifest) and
``model.onnx``. Its identity is the sha256 of ``sha256sum model.yaml model.onnx``'s output,
so a site's admin can check a bundle on disk with nothing but coreutils::

    sha256sum model.yaml model.onnx | sha256sum

An **analysis** on the wire (``POST /federated/v1/analyses``, ``application/x-tar``) is an
uncompressed tar of three regular files: ``analysis.json`` (its id, the cohort, and the hub's
signature), ``model.yaml`` and ``model.onnx``. The signature is a JWT (RFC 7519; EdDSA over
Ed25519, RFC 8037, with the key the hub signs its assertions with) whose claims name the hub
(``iss``), the site (``aud``), the analysis id, the bundle's sha256 and the cohort's (the
sha256 of its canonical JSON): what the site runs is exactly what the hub signed.

What a site approves (:mod:`gateway.approvals`, kind ``analysis-bundle``) is the bundle together
with the cohort it is to run over (:func:`approval_subject`): another model, or the same model
over other patients, is asked about again.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import jwt
import yaml

from gateway.hub_assertion import LEEWAY_SECONDS, PrivateKey, PublicKey, algorithm_for

__all__ = [
    "BUNDLE_FILES",
    "BundleError",
    "ModelBundle",
    "SignatureRefused",
    "approval_subject",
    "cohort_sha256",
    "pack_analysis",
    "sign_analysis",
    "unpack_analysis",
    "verify_analysis",
]

BUNDLE_FILES = ("model.yaml", "model.onnx")
METADATA_FILE = "analysis.json"
_ID = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: How long a hub's signature of an analysis stays valid: long enough for a site that is down
#: for a weekend, short enough that an old signature cannot be replayed for ever.
SIGNATURE_SECONDS = 14 * 24 * 3600


class BundleError(ValueError):
    """Not a usable bundle or analysis; the message says what is wrong (safe to show)."""


class SignatureRefused(BundleError):
    """The analysis is not signed, for this site, by a hub it trusts."""


@dataclass(frozen=True)
class ModelBundle:
    files: Mapping[str, bytes]  # BUNDLE_FILES -> content

    @property
    def sha256(self) -> str:
        listing = "".join(
            f"{hashlib.sha256(self.files[name]).hexdigest()}  {name}\n" for name in BUNDLE_FILES
        )
        return hashlib.sha256(listing.encode()).hexdigest()

    @property
    def manifest(self) -> dict[str, Any]:
        document = yaml.safe_load(self.files["model.yaml"])
        assert isinstance(document, dict)  # checked by from_files
        return document

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> ModelBundle:
        """A bundle whose model.yaml names the model and its version (the inference service
        checks the rest of the manifest when it installs it)."""
        missing = [name for name in BUNDLE_FILES if name not in files]
        if missing:
            raise BundleError(f"a bundle holds model.yaml and model.onnx; missing {missing}")
        try:
            manifest = yaml.safe_load(files["model.yaml"])
        except yaml.YAMLError as error:
            raise BundleError(f"model.yaml is not YAML: {error}") from None
        if not isinstance(manifest, dict):
            raise BundleError("model.yaml is not a mapping")
        for key in ("name", "version"):
            value = manifest.get(key)
            if not isinstance(value, str | int | float) or not _NAME.match(str(value)):
                raise BundleError(f"model.yaml's {key} must be 1-64 of A-Z a-z 0-9 . _ -")
        if not files["model.onnx"]:
            raise BundleError("model.onnx is empty")
        return cls({name: files[name] for name in BUNDLE_FILES})

    @classmethod
    def read(cls, directory: Path) -> ModelBundle:
        files = {}
        for name in BUNDLE_FILES:
            try:
                files[name] = (directory / name).read_bytes()
            except OSError as error:
                raise BundleError(f"cannot read {directory / name}: {error.strerror}") from None
        return cls.from_files(files)

    def write(self, directory: Path) -> None:
        """Into ``directory`` (created), atomically per file."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            partial = directory / f".{name}.partial"
            partial.write_bytes(content)
            partial.replace(directory / name)


def cohort_sha256(cohort: Mapping[str, Any]) -> str:
    """The sha256 of a cohort as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(cohort, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def approval_subject(bundle_sha256: str, cohort: Mapping[str, Any]) -> str:
    """What a site approves: this model over this cohort (a sha256 of both)."""
    return hashlib.sha256(f"{bundle_sha256}:{cohort_sha256(cohort)}".encode()).hexdigest()


def sign_analysis(
    key: PrivateKey,
    hub: str,
    site: str,
    analysis_id: str,
    bundle_sha256: str,
    cohort: Mapping[str, Any],
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": hub,
        "aud": site,
        "iat": issued,
        "exp": issued + SIGNATURE_SECONDS,
        "analysis_id": analysis_id,
        "bundle_sha256": bundle_sha256,
        "cohort_sha256": cohort_sha256(cohort),
    }
    return jwt.encode(claims, key, algorithm=algorithm_for(key))


def verify_analysis(
    token: object,
    hubs: Mapping[str, tuple[PublicKey, str]],
    analysis_id: str,
    bundle_sha256: str,
    cohort: Mapping[str, Any],
) -> str:
    """The name of the trusted hub that signed exactly this analysis for this site, or
    SignatureRefused with the reason. ``hubs``: name -> (public key, this site's name there)."""
    if not isinstance(token, str) or not token:
        raise SignatureRefused("the analysis carries no hub signature")
    try:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError as error:
        raise SignatureRefused(f"the signature is not a JWT: {error}") from None
    if not isinstance(issuer, str) or issuer not in hubs:
        raise SignatureRefused(f"signed by {issuer!r}, not a hub this site trusts")
    key, audience = hubs[issuer]
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm_for(key)],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "aud", "exp", "iat"]},
        )
    except jwt.PyJWTError as error:
        raise SignatureRefused(f"the hub's signature does not verify: {error}") from None
    signed = (claims.get("analysis_id"), claims.get("bundle_sha256"), claims.get("cohort_sha256"))
    if signed != (analysis_id, bundle_sha256, cohort_sha256(cohort)):
        raise SignatureRefused("the signature is of another analysis, bundle or cohort")
    return issuer


def pack_analysis(metadata: Mapping[str, Any], bundle: ModelBundle) -> bytes:
    """The analysis as the hub sends it (an uncompressed tar; see the module's description)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        members = {METADATA_FILE: json.dumps(metadata).encode(), **bundle.files}
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def unpack_analysis(stream: IO[bytes]) -> tuple[dict[str, Any], ModelBundle]:
    """The metadata and bundle of an analysis tar (read from ``stream``); BundleError if it is
    anything but the three expected regular files."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r:") as archive:
            for member in archive:
                if member.name not in (METADATA_FILE, *BUNDLE_FILES) or not member.isfile():
                    raise BundleError(f"unexpected member {member.name!r} in the analysis")
                if member.name in files:
                    raise BundleError(f"{member.name} twice in the analysis")
                extracted = archive.extractfile(member)
                assert extracted is not None  # a regular file
                files[member.name] = extracted.read()
    except tarfile.TarError as error:
        raise BundleError(f"not an analysis tar: {error}") from None
    if METADATA_FILE not in files:
        raise BundleError(f"the analysis has no {METADATA_FILE}")
    try:
        metadata = json.loads(files.pop(METADATA_FILE))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{METADATA_FILE} is not JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise BundleError(f"{METADATA_FILE} is not an object")
    analysis_id = metadata.get("analysis_id")
    if not isinstance(analysis_id, str) or not _ID.match(analysis_id):
        raise BundleError("analysis_id must be 32 lower-case hexadecimal digits")
    if not isinstance(metadata.get("cohort"), dict):
        raise BundleError("cohort must be a cohort definition (an object)")
    return metadata, ModelBundle.from_files(files)
