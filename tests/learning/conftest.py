"""The learning tests reuse the pipeline's real inference service (bundled models)."""

from tests.pipeline.conftest import inference  # noqa: F401  (a fixture, re-exported)
