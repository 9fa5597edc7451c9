"""Structured JSON logs (structlog) with the request id bound to every line of a request."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field


class LogSettings(BaseModel):
    """A service's ``log:`` settings."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    level: Literal["debug", "info", "warning", "error"] = "info"
    #: JSON lines (for a log collector); false: coloured console lines for a person.
    json_output: bool = Field(default=True, alias="json")


def configure_logging(level: str = "info", json_output: bool = True) -> None:
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
