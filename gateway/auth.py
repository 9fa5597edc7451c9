"""Who is calling: bearer tokens per client, with roles.

Tokens are configured only as their SHA-256 (``auth.clients[].token_sha256``), so the settings
file holds no usable secret. With no client configured, authentication is off and the gateway
refuses to listen anywhere but loopback (see ``gateway.commands``).

Roles: ``admin`` may use everything; ``query`` may use only the federated aggregate API.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["query", "admin"]


class AuthClient(BaseModel):
    """A client of the gateway, identified by a bearer token stored only as its SHA-256."""

    model_config = ConfigDict(extra="forbid")

    name: str
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    roles: list[Role] = Field(default_factory=lambda: list[Role](["admin"]))


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: list[AuthClient] = Field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.clients)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return "admin" in self.roles or role in self.roles


#: The caller when authentication is off (loopback only): may do everything.
ANONYMOUS_ADMIN = Principal(name="anonymous", roles=frozenset({"admin"}))


class Authenticator:
    """Turns an ``Authorization`` header into a Principal, or None when it is not valid."""

    def __init__(self, settings: AuthSettings):
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def authenticate(self, authorization: str | None) -> Principal | None:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        for client in self.settings.clients:
            # Constant-time comparison: no timing oracle on the stored digests.
            if hmac.compare_digest(digest, client.token_sha256):
                return Principal(name=client.name, roles=frozenset(client.roles))
        return None
