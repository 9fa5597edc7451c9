"""Settings of the intake paths: the DIMSE SCP (``dimse:``) and PACS polling (``pacs.poll``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class DimseSettings(BaseModel):
    """``dimse:`` in the gateway's YAML."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    ae_title: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[ -~]*[!-~][ -~]*$")] = (
        "FEDGATE"
    )
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 11112
    #: Calling AE titles allowed to store; empty: any.
    allowed_calling_ae_titles: list[str] = Field(default_factory=list)
    max_associations: Annotated[int, Field(ge=1)] = 10


class PollSettings(BaseModel):
    """``pacs.poll`` in the gateway's YAML."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    #: First study date to look at (YYYYMMDD); default: today.
    since: Annotated[str, Field(pattern=r"^\d{8}$")] | None = None
    overlap_days: Annotated[int, Field(ge=0, le=365)] = 1
