"""Hub assertions: a hub tells a site, verifiably, which person a relayed question is for.

A hub asks sites on behalf of analysts. If the site saw only the hub's credential, every analyst
of that hub would share one privacy budget, and one analyst could ask through the hub and
directly and spend two. So with each question the hub signs a short-lived JWT (RFC 7519, signed
with EdDSA over Ed25519, RFC 8037; ES256 also accepted) with

- ``iss``: the hub's name, ``sub``: the analyst's person (as the hub authenticated them),
- ``aud``: the site's name as the hub calls it, ``iat``, ``exp`` (``iat`` + 60 s), ``jti``,
- ``roles``: the analyst's federated roles at the hub (``query`` and/or ``exact``),

and sends it in the ``Fedgate-On-Behalf-Of`` header, beside the hub's own bearer token. The site
holds each hub's public key (``auth.hubs``) and charges the asserted person
(:meth:`gateway.auth.Authenticator.identify`).

This module is shared by both sides (signing at the hub, verifying at the site) so that both
agree on one format. It imports nothing else of the gateway.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

#: Lifetime of an assertion: long enough for one question to reach a slow site, short enough
#: that a leaked one is useless soon.
ASSERTION_SECONDS = 60
#: The most a site accepts between ``iat`` and ``exp``, whatever a hub signs.
MAX_ASSERTION_SECONDS = 300
#: Clock skew tolerated between hub and site.
LEEWAY_SECONDS = 10

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class AssertionLedger:
    """The assertions a site has taken, until they expire: an assertion answers one request.

    RFC 7519's ``jti`` is there for this (4.1.7). Without it, whoever also held the hub's bearer
    credential could send a seen assertion again within its minute, with another question,
    as that analyst and with their roles. Kept in the process's memory (a site of several
    replicas keeps one ledger per replica), pruned as entries expire.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: dict[tuple[str, str], float] = {}
        self._next_prune = 0.0

    def take(self, claims: Mapping[str, Any], now: float | None = None) -> bool:
        """True the first time the assertion of ``claims`` (verified) is taken, else False."""
        current = time.time() if now is None else now
        key = (str(claims["iss"]), str(claims["jti"]))
        with self._lock:
            if current >= self._next_prune:
                self._taken = {k: t for k, t in self._taken.items() if t > current}
                self._next_prune = current + ASSERTION_SECONDS
            if key in self._taken:
                return False
            # Kept while it could still verify: its expiry and the leeway after it.
            self._taken[key] = float(claims["exp"]) + LEEWAY_SECONDS
            return True


class AssertionRefused(Exception):
    """The assertion does not verify; the message says why (safe to show the caller)."""


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The JWS algorithm (RFC 7518, RFC 8037) that ``key`` signs with."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"unsupported curve {key.curve.name}: use Ed25519 (or EC P-256)")


def _load(pem: bytes, loader: Callable[[bytes], object], kinds: tuple[type, ...]) -> Any:
    """The key ``loader`` reads from ``pem`` if it is one of ``kinds``, else ValueError."""
    try:
        key = loader(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ValueError(f"not a usable PEM key ({error})") from None
    if not isinstance(key, kinds):
        raise ValueError(f"the key must be Ed25519 (or EC P-256), not {type(key).__name__}")
    algorithm_for(key)  # type: ignore[arg-type]
    return key


def load_private_key(pem: bytes) -> PrivateKey:
    """A hub's signing key from unencrypted PEM (PKCS#8): Ed25519, or EC P-256."""
    key: PrivateKey = _load(
        pem,
        lambda data: serialization.load_pem_private_key(data, password=None),
        (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey),
    )
    return key


def load_public_key(pem: bytes) -> PublicKey:
    """A hub's verification key from PEM (SubjectPublicKeyInfo): Ed25519, or EC P-256."""
    key: PublicKey = _load(
        pem,
        serialization.load_pem_public_key,
        (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey),
    )
    return key


def public_pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def write_key_pair(directory: Path, stem: str = "hub-signing-key") -> tuple[Path, Path]:
    """A new Ed25519 key pair in ``directory``: ``<stem>.pem`` (mode 0600) and ``<stem>.pub``.

    Refuses to overwrite an existing key (FileExistsError): the sites trust the old one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{stem}.pem", directory / f"{stem}.pub"
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: never replace a key; 0600 from the start, so the secret is never world-readable.
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public_path.write_text(public_pem(key), encoding="utf-8")
    return private_path, public_path


def sign_assertion(
    key: PrivateKey,
    hub: str,
    person: str,
    audience: str,
    roles: Iterable[str],
    now: float | None = None,
    seconds: int = ASSERTION_SECONDS,
) -> str:
    """The compact JWS the hub sends to the site ``audience`` for ``person``."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": hub,
        "sub": person,
        "aud": audience,
        "iat": issued,
        "exp": issued + seconds,
        "jti": uuid.uuid4().hex,
        "roles": sorted(set(roles)),
    }
    return jwt.encode(claims, key, algorithm=algorithm_for(key))


def verify_assertion(
    token: str, hubs: Mapping[str, tuple[PublicKey, str]], now: float | None = None
) -> dict[str, Any]:
    """The claims of ``token`` if a known hub signed it for this site and it is current.

    ``hubs`` maps a hub's name (``iss``) to its public key and the audience it must name (this
    site's name as that hub calls it). Checks the signature with the algorithm of the hub's
    key only (no ``alg`` confusion, no ``none``), ``iss``, ``aud``, ``exp``, ``iat``, and that
    the assertion is short-lived. Raises AssertionRefused with the reason.
    """
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise AssertionRefused(f"not a JWT: {error}") from None
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or issuer not in hubs:
        raise AssertionRefused(f"issuer {issuer!r} is not a hub this site trusts")
    key, audience = hubs[issuer]
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm_for(key)],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
        )
    except jwt.PyJWTError as error:
        raise AssertionRefused(str(error)) from None
    if claims["exp"] - claims["iat"] > MAX_ASSERTION_SECONDS:
        raise AssertionRefused(f"lives longer than {MAX_ASSERTION_SECONDS} s")
    current = time.time() if now is None else now
    if claims["iat"] > current + LEEWAY_SECONDS:
        raise AssertionRefused("issued in the future")
    person = claims["sub"]
    if not isinstance(person, str) or not person.strip() or len(person) > 200:
        raise AssertionRefused("'sub' must name a person (1-200 characters)")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise AssertionRefused("'roles' must be a list of role names")
    return claims
