"""Schemathesis over openapi/inference.yaml against a real inference service serving the
bundled models: no 5xx, every answer as documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from schemathesis import APIOperation

from tests.support.inference import InferenceProcess
from tests.support.schemathesis import check_operation, operation_id, operations


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[InferenceProcess]:
    process = InferenceProcess(tmp_path_factory.mktemp("schemathesis-inference"), models_dir)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("operation", operations("inference.yaml"), ids=operation_id)
def test_inference_service_answers_as_documented(
    service: InferenceProcess, operation: APIOperation
) -> None:
    check_operation(operation, service.url)
