"""What every fedgate service logs, the same way: structlog JSON lines on stderr, and a
request id (``X-Request-ID``, the caller's or a new one) bound to every line of a request,
with one access line per request.

A library: it imports no service (the import contracts in pyproject.toml keep it so), so the
gateway, the inference service and the hub log alike and one id follows a job across them.
"""

from observability.logs import LogSettings, configure_logging
from observability.request_context import RequestContextMiddleware

__all__ = ["LogSettings", "RequestContextMiddleware", "configure_logging"]
