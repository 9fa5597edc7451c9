"""Settings of the intake paths: the DIMSE SCP (``dimse:``) and PACS polling (``pacs.poll``)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tlsconfig import ServerTls

AeTitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[ -~]*[!-~][ -~]*$")]


class AllowedCaller(BaseModel):
    """A calling AE title allowed to store, optionally only from one host (an IP address)."""

    model_config = ConfigDict(extra="forbid")

    ae_title: AeTitle
    host: str | None = None

    @field_validator("host")
    @classmethod
    def _an_address(cls, host: str | None) -> str | None:
        if host is not None:
            ipaddress.ip_address(host)  # ValueError names the bad value
        return host


class DimseSettings(BaseModel):
    """``dimse:`` in the gateway's YAML.

    The same rule as HTTP (fedgate/commands/gateway.py): without an allow-list of calling AE
    titles the SCP listens on loopback only, whatever ``host`` says (issue 13, item 8).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    ae_title: AeTitle = "FEDGATE"
    #: Where to listen; an address off loopback needs ``allowed_calling_ae_titles``.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 11112
    #: Calling AE titles allowed to associate, each a title or ``{ae_title, host}``; others
    #: are rejected at association (A-ASSOCIATE-RJ, calling AE title not recognised). Empty:
    #: any title, and only from this machine (the SCP then binds loopback).
    allowed_calling_ae_titles: list[AeTitle | AllowedCaller] = Field(default_factory=list)

    @property
    def allowed_callers(self) -> list[AllowedCaller]:
        return [
            entry if isinstance(entry, AllowedCaller) else AllowedCaller(ae_title=entry)
            for entry in self.allowed_calling_ae_titles
        ]

    max_associations: Annotated[int, Field(ge=1)] = 10
    #: DICOM TLS (PS3.15 B.1, the TLS Secure Transport Connection Profile): ``{certificate,
    #: key, client_ca, require_client_certificate}``. None: plain TCP. With it every
    #: association is TLS; a sender without TLS, or whose certificate ``client_ca`` did not
    #: sign, never gets to associate.
    tls: ServerTls | None = None


class PollSettings(BaseModel):
    """``pacs.poll`` in the gateway's YAML."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    #: First study date to look at (YYYYMMDD); default: today.
    since: Annotated[str, Field(pattern=r"^\d{8}$")] | None = None
    overlap_days: Annotated[int, Field(ge=0, le=365)] = 1


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps a server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
