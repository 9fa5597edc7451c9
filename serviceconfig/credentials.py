"""Credentials a service presents to a peer over HTTP: a PACS's DICOMweb root, the gateway's
``/results`` for an inference service, a site for the hub (``auth: {type: basic|bearer}``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BasicAuth(_Strict):
    """HTTP Basic (RFC 7617)."""

    type: Literal["basic"] = "basic"
    username: str
    password: SecretStr


class BearerAuth(_Strict):
    """A bearer token (RFC 6750)."""

    type: Literal["bearer"] = "bearer"
    token: SecretStr


PeerAuth = Annotated[BasicAuth | BearerAuth, Field(discriminator="type")]
