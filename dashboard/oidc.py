"""The browser sign-in with OpenID Connect: what ``/ui/config.json`` tells the login page.

The dashboard is a *public* client (it runs in the browser and can keep no secret), so it uses
the authorization code flow with PKCE (RFC 7636; OAuth 2.0 for Browser-Based Apps). The browser
does the flow itself (``static/login.js``); the server only says where the provider's endpoints
are. It reads them from the provider's discovery document (OpenID Connect Discovery 1.0,
``<issuer>/.well-known/openid-configuration``) here, on the server, rather than in the browser:

- the pages' Content Security Policy allows connections to this origin only; it must name the
  token endpoint's origin, so the server has to know it before it sends a page anyway;
- the browser needs CORS on the token endpoint only (which every provider offers a public client:
  Keycloak's "Web origins"), not on the discovery document too;
- a provider that cannot be reached, or whose metadata is wrong (another issuer, no S256), is
  found and logged once on the server, and the page shows the token form with the reason.

The document is cached for an hour (a failure for 30 s), so a page costs no round trip.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

log = structlog.get_logger(__name__)

#: How long a fetched discovery document is used, and how soon a failed fetch is retried.
CACHE_SECONDS = 3600.0
RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class OidcLogin:
    """The dashboard's registration at an OpenID provider (``auth.oidc`` in the settings)."""

    issuer: str
    client_id: str
    scope: str = "openid"
    display_name: str | None = None
    #: Default: ``<issuer>/.well-known/openid-configuration`` (Discovery 1.0 section 4).
    discovery_url: str | None = None
    timeout_seconds: float = 5.0

    @property
    def metadata_url(self) -> str:
        return self.discovery_url or f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"


class DiscoveryError(Exception):
    """The provider's metadata could not be used; the message says why, for the login page."""


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what a Content Security Policy names."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_metadata(login: OidcLogin, metadata: Any) -> dict[str, str]:
    """The endpoints the browser needs, after the checks Discovery 1.0 section 4.3 asks for."""
    if not isinstance(metadata, dict):
        raise DiscoveryError("the discovery document is not a JSON object")
    # Discovery 1.0 4.3: the issuer in the document must be exactly the configured one.
    if metadata.get("issuer") != login.issuer:
        raise DiscoveryError(
            f"the discovery document names issuer {metadata.get('issuer')!r}, "
            f"not the configured {login.issuer!r}"
        )
    endpoints: dict[str, str] = {}
    for name in ("authorization_endpoint", "token_endpoint"):
        value = metadata.get(name)
        if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
            raise DiscoveryError(f"the discovery document has no usable {name}")
        endpoints[name] = value
    # RFC 8414 section 2: absent means "no PKCE"; the dashboard sends only S256 (RFC 7636 4.2).
    methods = metadata.get("code_challenge_methods_supported")
    if methods is not None and "S256" not in methods:
        raise DiscoveryError("the provider does not support PKCE with S256")
    return endpoints


class OidcDiscovery:
    """The provider's endpoints for the login page, fetched once and cached."""

    def __init__(self, login: OidcLogin):
        self.login = login
        self._endpoints: dict[str, str] | None = None
        self._error: str | None = None
        self._until = 0.0
        self._lock = asyncio.Lock()

    async def endpoints(self) -> dict[str, str] | DiscoveryError:
        """The authorization and token endpoints, or why they are not known."""
        async with self._lock:
            if time.monotonic() >= self._until:
                await self._fetch()
        if self._endpoints is not None:
            return self._endpoints
        return DiscoveryError(self._error or "not fetched")

    async def _fetch(self) -> None:
        url = self.login.metadata_url
        try:
            async with httpx.AsyncClient(timeout=self.login.timeout_seconds) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            self._endpoints = check_metadata(self.login, response.json())
            self._error = None
            self._until = time.monotonic() + CACHE_SECONDS
            log.info("dashboard.oidc_discovered", issuer=self.login.issuer, **self._endpoints)
        except (httpx.HTTPError, ValueError, DiscoveryError) as error:
            reason = (
                str(error)
                if isinstance(error, DiscoveryError)
                else f"{url} could not be read: {error}"
            )
            # A provider that was reachable stays usable through a short outage.
            if self._endpoints is None:
                self._error = reason
            self._until = time.monotonic() + RETRY_SECONDS
            log.warning("dashboard.oidc_discovery_failed", issuer=self.login.issuer, reason=reason)

    async def page_config(self) -> dict[str, Any]:
        """``oidc_login`` in ``/ui/config.json``: the flow's parameters, or an ``error``."""
        endpoints = await self.endpoints()
        base = {
            "issuer": self.login.issuer,
            "name": self.login.display_name or self.login.issuer,
        }
        if isinstance(endpoints, DiscoveryError):
            return {**base, "error": f"sign-in with {base['name']} is not available: {endpoints}"}
        return {**base, "client_id": self.login.client_id, "scope": self.login.scope, **endpoints}

    async def connect_origins(self) -> list[str]:
        """The origins the page may connect to besides its own: the token endpoint's."""
        endpoints = await self.endpoints()
        if isinstance(endpoints, DiscoveryError):
            return []
        return [origin_of(endpoints["token_endpoint"])]
