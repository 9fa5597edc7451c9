"""The gateway's settings: one pydantic model, from a YAML file, overridable by environment.

Precedence, highest first: ``FEDGATE_*`` environment variables (``__`` separates nesting
levels, e.g. ``FEDGATE_PACS__URL``), then the YAML file given by ``--config``, then the
defaults below. Unknown keys are errors, so a typo in a hospital's config is caught at start-up
instead of silently falling back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from gateway.auth import AuthSettings
from gateway.federated.settings import FederatedSettings
from gateway.index.settings import IndexSettings
from gateway.intake.settings import DimseSettings, PollSettings
from gateway.pipeline.settings import PipelineSettings, RoutingRule
from gateway.queue.settings import QueueSettings
from observability import LogSettings
from serviceconfig import (
    ConfigError,
    EnvironmentFirst,
    PeerAuth,
    describe_validation_error,
    read_settings_file,
)
from tlsconfig import ClientTls, ServerTls

__all__ = ["ConfigError", "GatewaySettings", "load_settings"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    #: The root URL clients reach the gateway at, when behind a reverse proxy
    #: (e.g. https://fedgate.hospital.example); used in RetrieveURL and BulkDataURI.
    public_url: str | None = None
    #: HTTPS: ``{certificate, key, client_ca, require_client_certificate}`` (docs/tls.md).
    #: None: plain HTTP (behind a reverse proxy that terminates TLS, or on loopback).
    tls: ServerTls | None = None


class HttpSettings(_Strict):
    """HTTP behaviour towards browsers."""

    #: Origins (``https://viewer.example``) whose pages may call the gateway from a browser:
    #: a DICOMweb viewer (OHIF) served from another origin. Empty: no CORS headers at all, so
    #: browsers let only the gateway's own pages read its answers (Fetch Standard, CORS).
    cors_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _origins_are_origins(self) -> HttpSettings:
        origins = []
        for origin in self.cors_origins:
            # An origin is scheme://host[:port] (RFC 6454 6.2), as browsers send it: no path,
            # no trailing slash, no wildcard, which would never match.
            text = origin.rstrip("/")
            parsed = urlsplit(text)
            if (
                parsed.scheme not in ("http", "https")
                or not parsed.netloc
                or parsed.path
                or parsed.query
                or parsed.fragment
                or "*" in text
            ):
                raise ValueError(
                    f"http.cors_origins: {origin!r} is not an origin "
                    "(scheme://host[:port], e.g. https://viewer.example)"
                )
            origins.append(text.lower())
        self.cors_origins = origins
        return self


class PacsSettings(_Strict):
    """The upstream PACS. With no ``url`` the embedded store is the PACS."""

    url: str | None = None
    auth: PeerAuth | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    #: Towards an https:// PACS: ``{ca, certificate, key}``: the CA that signs the PACS's
    #: certificate (default: the public ones) and a client certificate if it asks for one.
    tls: ClientTls | None = None
    #: Poll the PACS for new studies (for archives that cannot forward).
    poll: PollSettings = Field(default_factory=PollSettings)

    @model_validator(mode="after")
    def _url_is_http(self) -> PacsSettings:
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("pacs.url must be an http:// or https:// DICOMweb root")
        if self.url is not None:
            self.url = self.url.rstrip("/")
        return self


DuplicatePolicy = Literal["replace", "keep"]
PatientMismatchPolicy = Literal["reject", "accept"]


class IngestSettings(_Strict):
    """STOW-RS intake."""

    #: Largest single instance accepted (bytes); larger parts fail with 0xA700.
    max_instance_bytes: Annotated[int, Field(gt=0)] = 2 * 1024**3
    #: Largest request body (bytes); past it the request is refused with 413.
    max_request_bytes: Annotated[int, Field(gt=0)] = 64 * 1024**3
    #: What a second copy of a stored SOP Instance UID does (see docs/dicomweb.md).
    duplicates: DuplicatePolicy = "replace"
    #: An instance whose patient contradicts the held study's: refused (0xA778/0xA779), or
    #: stored keeping its own attributes; the study keeps its patient either way.
    patient_mismatch: PatientMismatchPolicy = "reject"
    #: SOP Class UIDs accepted; empty means every storage class (else 0x0122 for others).
    sop_classes: list[str] = Field(default_factory=list)
    #: Also STOW accepted instances to ``pacs.url`` (modalities send to the gateway first).
    forward_to_pacs: bool = False


class GatewaySettings(EnvironmentFirst):
    """Everything the gateway reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="FEDGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    listen: ListenSettings = Field(default_factory=ListenSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    data_dir: Path = Path("./fedgate-data")
    pacs: PacsSettings = Field(default_factory=PacsSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    federated: FederatedSettings = Field(default_factory=FederatedSettings)
    dimse: DimseSettings = Field(default_factory=DimseSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    routing: list[RoutingRule] = Field(default_factory=list)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    #: At start, how long to keep trying a PostgreSQL ``index.url`` / ``queue.url`` that does
    #: not answer yet (it may come up after the gateway: a node restart, a failover); 0: one
    #: try. A wrong password or a missing database fails at once (docs/operations.md).
    database_wait_seconds: Annotated[float, Field(ge=0)] = 60.0
    log: LogSettings = Field(default_factory=LogSettings)


def load_settings(path: Path | None) -> GatewaySettings:
    """Read ``path`` (YAML) and the environment into settings, or raise ConfigError."""
    data = read_settings_file(path)
    try:
        settings = GatewaySettings(**data)
    except ValidationError as error:
        raise ConfigError(
            "invalid configuration: " + describe_validation_error(error, data)
        ) from error
    names = [rule.name for rule in settings.routing]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"invalid configuration: routing: rule name(s) used twice: {duplicates}")
    return settings
