"""Pipeline and routing settings (``pipeline:`` and ``routing:`` in the gateway's YAML)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydicom.datadict import tag_for_keyword

from tlsconfig import ClientTls


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pattern(_Strict):
    """A regular expression a text attribute must match (``re.search``)."""

    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        return value


class Range(_Strict):
    """A numeric attribute within [min, max] (either end may be left open)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is larger than max")
        return self


#: A condition on one attribute: an exact or wildcard (``*``, ``?``) value, a list of them,
#: a ``{regex: ...}`` or a ``{min: ..., max: ...}`` range.
Condition = str | int | float | list[str] | Pattern | Range


class RoutingRule(_Strict):
    """Series matching ``match`` (all conditions) go to ``models`` at ``inference_url``."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    match: dict[str, Condition] = Field(default_factory=dict)
    #: The series must hold at least this many instances.
    min_instances: Annotated[int, Field(ge=1)] = 1
    models: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    inference_url: str
    #: SR, SEG and other non-image series (our own results above all) are skipped unless set.
    include_non_images: bool = False

    @field_validator("match")
    @classmethod
    def _keywords_exist(cls, match: dict[str, Any]) -> dict[str, Any]:
        for keyword in match:
            if tag_for_keyword(keyword) is None:
                raise ValueError(f"{keyword!r} is not a DICOM keyword")
        return match

    @field_validator("inference_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("inference_url must be an http:// or https:// URL")
        return url.rstrip("/")


class ResearchSettings(_Strict):
    """The research lane: federated analyses' backfills (issue 17), behind clinical work."""

    #: Research jobs running at once, all replicas together: the backfill's throttle.
    max_running: Annotated[int, Field(ge=1)] = 1
    #: Start no research job while a clinical job runs or waits (its analysis would share
    #: the inference service's cores with the clinical one). Off: research jobs fill the
    #: worker slots clinical jobs leave free, for a site whose clinical work never pauses.
    wait_for_clinical: bool = True
    #: The inference service that installs and runs analyses' models (default: the first
    #: routing rule's).
    inference_url: str | None = None
    #: The token that may install models there (its ``admin_token_sha256``).
    install_token: SecretStr | None = None
    #: How often the analysis runner looks for approved, paused and finished analyses.
    poll_seconds: Annotated[float, Field(gt=0)] = 2.0

    @field_validator("inference_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("inference_url must be an http:// or https:// URL")
        return url.rstrip("/") if url else url


class PipelineSettings(_Strict):
    #: A study is stable (complete) when no instance arrived for this long.
    stable_after_seconds: Annotated[float, Field(gt=0)] = 30.0
    #: Parallel analyses per model, at most (all replicas together); default for others.
    concurrency: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    default_concurrency: Annotated[int, Field(ge=1)] = 2
    #: Worker slots of this gateway process.
    workers: Annotated[int, Field(ge=0)] = 4
    #: How long one analysis may take before the gateway gives up on that attempt.
    analysis_timeout_seconds: Annotated[float, Field(gt=0)] = 600.0
    #: Token the inference service presents when it reads from and writes to the gateway
    #: (its SHA-256 must be an admin client in ``auth.clients`` when auth is on).
    callback_token: SecretStr | None = None
    #: Keep received instances this long after the last job of their study ended (only
    #: when an upstream PACS holds them; the embedded store as the PACS keeps everything).
    retention_seconds: Annotated[float, Field(ge=0)] | None = None
    #: This gateway's name in the shared queue (default: host name and data directory).
    gateway_id: str | None = None
    #: At start, each routing rule's models are looked up at its inference service: a model
    #: not served is a warning naming it, or (true) a refusal to start.
    require_served_models: bool = False
    #: Towards https:// inference services (``routing[].inference_url``): ``{ca, certificate,
    #: key}``, the CA that signs their certificates and the gateway's client certificate.
    inference_tls: ClientTls | None = None
    research: ResearchSettings = Field(default_factory=ResearchSettings)
