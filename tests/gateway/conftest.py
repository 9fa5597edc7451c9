from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient

from fedgate.phantom import Phantom, PhantomSpec, generate_phantom
from gateway.queue import QueueSettings
from tests.support.gateway import GatewayProcess
from tests.support.postgres import PostgresServer

# Small limits so the size checks can be exercised with small payloads.
MAX_INSTANCE_BYTES = 256 * 1024
MAX_REQUEST_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway process on the embedded store for the tests of a module."""
    process = GatewayProcess(
        tmp_path_factory.mktemp("gateway"),
        {
            "ingest": {
                "max_instance_bytes": MAX_INSTANCE_BYTES,
                "max_request_bytes": MAX_REQUEST_BYTES,
            }
        },
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> DICOMwebClient:
    return DICOMwebClient(gateway.dicomweb_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> QueueSettings:
    """Queue settings on SQLite, then on a fresh database of the real PostgreSQL server."""
    url = None
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        import psycopg

        name = f"q{time.monotonic_ns()}"
        with psycopg.connect(server.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        url = server.url.rsplit("/", 1)[0] + "/" + name
    return QueueSettings(
        url=url, lease_seconds=30, max_attempts=3, backoff_seconds=0.01, backoff_max_seconds=0.05
    )


def phantom(seed: int, slices: int = 4, **overrides: object) -> Phantom:
    settings: dict[str, object] = {
        "rows": 64,
        "columns": 64,
        "pixel_spacing_mm": 4.0,
        "slice_thickness_mm": 5.0,
        "lesion_diameters_mm": (),
        **overrides,
    }
    spec = PhantomSpec(seed=seed, slices=slices, **settings)  # type: ignore[arg-type]
    return generate_phantom(spec)


def store_files(data_dir: Path) -> list[Path]:
    """Every file under the store, temporary files included."""
    return sorted(p for p in (data_dir / "store").rglob("*") if p.is_file())
