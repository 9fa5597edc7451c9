"""The federated API's error answers, shared by the sites and the hub so that both speak alike.

A refusal or a malformed question is a JSON body ``{"error": reason, "field": ...}`` with the
status that says why (400 malformed, 403 role or budget, 413 too large); a validation error names
every field at fault (``problems``). The hub returns the same shapes for the questions it
validates before asking any site.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

MAX_BODY_BYTES = 1024 * 1024


def error_response(status: int, reason: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": reason}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def validation_response(error: ValidationError) -> JSONResponse:
    """400 naming each field at fault (dotted path) and why."""
    problems = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(body)"
        message = str(problem["msg"]).removeprefix("Value error, ")
        problems.append({"field": field, "reason": message})
    first = problems[0]
    return JSONResponse(
        {
            "error": f"{first['field']}: {first['reason']}",
            "field": first["field"],
            "problems": problems,
        },
        status_code=400,
    )
