"""Schemathesis against a live app over a real socket: requests generated from openapi/,
every answer checked against the document, bounded in examples so the suite stays quick.

Each app's test module parametrizes over :func:`operations` of its document (known at
collection) and calls :func:`check_operation` with the live app's URL (known once it runs).
Hypothesis drives the generation directly: schemathesis's own pytest plugin
(``from_fixture``) does not run under this pytest.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.openapi import OPENAPI_DIR

#: No 5xx; status, media type, headers and body as documented; what the document calls invalid
#: (a 65-character UID, a limit over the maximum, an empty string) is refused with a 4xx.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# STOW-RS bodies are multipart/related; schemathesis has no serializer of its own for that
# type, and its generated bodies are opaque bytes anyway (a schema of format binary): sent as
# they are, they exercise the intake's refusals (no boundary, no parts, not DICOM).
schemathesis.serializer.alias("multipart/related", "application/octet-stream")
# Likewise a model to install (an uncompressed tar): random bytes exercise its refusals.
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")

#: Random examples per operation and generation mode, after the coverage cases: a few, since
#: the coverage cases already reach every parameter's edges and the suite must stay quick.
MAX_EXAMPLES = 8
_MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def operations(document: str) -> list[APIOperation]:
    """Every operation of ``openapi/<document>``."""
    schema = schemathesis.openapi.from_path(OPENAPI_DIR / document)
    return [result.ok() for result in schema.get_all_operations()]


def operation_id(operation: APIOperation) -> str:
    return str(operation.label)


def _failure_kind(failure: AssertionError) -> str:
    """What went wrong, without the request: the check and the part of the request at fault."""
    lines = str(failure).splitlines()
    marks = ("- ST", "Invalid component", "Received:", "Documented:", "Expected:")
    return "\n".join(line for line in lines if line.strip().startswith(marks)) or lines[0]


def check_operation(
    operation: APIOperation,
    base_url: str,
    token: str | None = None,
    max_examples: int = MAX_EXAMPLES,
    seen: list[tuple[str, int]] | None = None,
) -> None:
    """Requests to ``operation`` at ``base_url``, each answer checked with :data:`CHECKS`.

    First schemathesis's coverage cases (deterministic: each parameter at its boundaries and
    just past them, empty and over-long strings, wrong types, undeclared methods), then
    ``max_examples`` random valid and invalid requests each. ``seen`` collects (operation
    label, status) of every answer, for a test to assert that successes were reached too.
    Raises an AssertionError listing every distinct failure of the coverage cases."""
    headers: dict[str, Any] = {"Authorization": f"Bearer {token}"} if token else {}

    def call(case: Case) -> None:
        response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
        if seen is not None:
            seen.append((operation.label, response.status_code))

    schema = operation.schema
    failures: dict[str, str] = {}
    for case in schema.iter_coverage_cases(  # type: ignore[attr-defined]
        operation,
        generation_modes=_MODES,
        generation_config=schema.config.generation_for(operation=operation),
    ):
        try:
            call(case)
        except AssertionError as failure:
            failures.setdefault(_failure_kind(failure), str(failure))
    if failures:
        raise AssertionError("\n\n".join(list(failures.values())[:8]))
    for mode in _MODES:

        @settings(
            max_examples=max_examples,
            deadline=None,
            # The same requests on every run: a failure in CI is one a developer can replay.
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Case) -> None:
            call(case)

        try:
            run()
        except Unsatisfiable:
            # Nothing to make invalid (no parameter, no body): only valid requests exist.
            if mode is not GenerationMode.NEGATIVE:
                raise
