"""Bounded concurrency: past running + waiting slots, 429 with Retry-After; slots come back."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.inference import InferenceProcess
from tests.support.ports import free_port


class _SlowSource(http.server.BaseHTTPRequestHandler):
    """A DICOMweb "source" that takes 3 s to answer 503 (a busy archive)."""

    def do_GET(self) -> None:
        time.sleep(3.0)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_source() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _SlowSource)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def one_slot_service(tmp_path: Path, models_dir: Path) -> Iterator[InferenceProcess]:
    settings = {"concurrency": {"max_analyses": 1, "max_waiting": 1, "retry_after_seconds": 7}}
    process = InferenceProcess(tmp_path / "svc", models_dir, settings).start()
    try:
        yield process
    finally:
        process.stop()


def test_saturated_service_answers_429_with_retry_after(
    one_slot_service: InferenceProcess, slow_source: str
) -> None:
    body = {
        "model": "nodule-presence",
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.4",
        "source": {"url": slow_source},
        "destination": {"url": slow_source},
    }
    url = f"{one_slot_service.url}/v1/analyses"
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.submit(httpx.post, url, json=body, timeout=30)
        time.sleep(0.5)
        waiting = pool.submit(httpx.post, url, json=body, timeout=30)
        time.sleep(0.5)
        refused = httpx.post(url, json=body, timeout=30)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "7"
        assert refused.json()["error"]["kind"] == "transient"
        # The admitted ones ran to their own (transient) answer: the busy source's 503.
        for future in (running, waiting):
            response = future.result()
            assert response.status_code == 502
            assert response.json()["error"]["kind"] == "transient"
            assert "answered 503" in response.json()["error"]["message"]
    # Slots are given back: the service admits again.
    again = httpx.post(url, json={**body, "model": "no-such-model"}, timeout=30)
    assert again.status_code == 404
    started = time.monotonic()
    admitted = httpx.post(url, json=body, timeout=30)
    assert admitted.status_code == 502 and time.monotonic() - started >= 2.5
