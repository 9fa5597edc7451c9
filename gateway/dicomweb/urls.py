"""The gateway's own DICOMweb root as clients should see it, for RetrieveURL and BulkDataURI.

``listen.public_url`` wins when set (behind a reverse proxy). Otherwise the root is built from
the request; some clients (dicomweb-client among them) send a ``Host`` header without the port,
so a missing port is taken from the socket the request came in on, unless a reverse proxy
forwarded the request (``X-Forwarded-Proto``, honoured by uvicorn from the addresses in
``FORWARDED_ALLOW_IPS``): there the client spoke to the proxy, whose ``Host`` without a port
means the scheme's default port, not the gateway's own (docs/tls.md).
"""

from __future__ import annotations

from starlette.requests import Request

_DEFAULT_PORTS = {"http": 80, "https": 443}


def dicomweb_root(request: Request) -> str:
    public_url: str | None = request.app.state.settings.listen.public_url
    if public_url:
        return public_url.rstrip("/") + "/dicomweb"
    url = request.base_url
    server = request.scope.get("server")
    proxied = "x-forwarded-proto" in request.headers
    if url.port is None and server and not proxied and server[1] != _DEFAULT_PORTS.get(url.scheme):
        url = url.replace(port=server[1])
    return str(url).rstrip("/") + "/dicomweb"
