"""Settings of the job queue (``queue:`` in the gateway's YAML)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: None: SQLite in data_dir; ``postgresql://...`` to share one queue between replicas.
    url: str | None = None
    #: A running job's lease; the worker renews it while the analysis runs.
    lease_seconds: Annotated[float, Field(gt=0)] = 60.0
    #: Attempts before a job with transient errors is ``dead``.
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    #: Backoff after the first transient failure; doubles each attempt, up to the cap.
    backoff_seconds: Annotated[float, Field(gt=0)] = 2.0
    backoff_max_seconds: Annotated[float, Field(gt=0)] = 300.0

    @field_validator("url")
    @classmethod
    def _postgresql_only(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("queue.url must be a postgresql:// URL (or null for SQLite)")
        return url
