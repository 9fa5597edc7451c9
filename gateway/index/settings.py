"""Settings of the findings index (``index:`` in the gateway's YAML)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


class IndexSettings(BaseModel):
    """Where the findings index lives.

    With no ``url`` the index is a SQLite file in the gateway's ``data_dir``
    (``findings-index.sqlite3``); with ``url`` (``postgresql://user@host/db``) it is a
    PostgreSQL database shared by several gateway replicas.
    """

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    #: How many series keys the intake path remembers, so that the 2nd..Nth instance of a
    #: series costs no database write (STOW hot path).
    seen_series_cache: Annotated[int, Field(ge=0)] = 100_000
    #: A columnar copy of the index (DuckDB, ``findings-index.duckdb`` beside it) answers the
    #: federated API's cohort queries, kept current from the index's writes before each
    #: answer (docs/federated.md). Embedded (SQLite) index only: ignored with ``url``.
    columnar_copy: bool = True
    #: The copy's memory at most (DuckDB's buffer pool; the rest stays in its file).
    columnar_memory_mb: Annotated[int, Field(ge=16)] = 64

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("index.url must be a postgresql:// URL (omit it for SQLite)")
        return url
