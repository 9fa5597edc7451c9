"""Running jobs: call the inference service for each leased job and record the outcome.

Error classes follow the inference service's contract: a 4xx with ``kind: permanent`` (bad
input) fails the job; 5xx, ``kind: transient``, timeouts and connection errors retry with
backoff until the job is dead; 429 postpones it by ``Retry-After`` without spending an
attempt. The lease is renewed while the analysis runs, so a long analysis is not taken over,
but a crashed gateway's jobs are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import anyio.to_thread
import httpx
import structlog

from gateway.database_wait import DatabaseDisconnected
from gateway.metrics import JOB_RUN_SECONDS, JOB_WAIT_SECONDS, QUEUE_DEPTH
from gateway.pipeline.settings import PipelineSettings
from gateway.queue import Job, JobQueue
from tlsconfig import client_context

log = structlog.get_logger(__name__)

_IDLE_POLL_SECONDS = 0.5


class JobWorker:
    def __init__(
        self,
        queue: JobQueue,
        settings: PipelineSettings,
        worker_id: str,
        destination_url: str,
        callback_auth: dict[str, str] | None,
        transport: httpx.AsyncBaseTransport | None = None,
        research_destination_url: str | None = None,
    ):
        self.queue = queue
        self.settings = settings
        self.worker_id = worker_id
        self.destination_url = destination_url
        #: Where the results of an unvalidated model's research jobs go (the research store,
        #: never forwarded to the PACS); None: the clinical destination.
        self.research_destination_url = research_destination_url
        self.callback_auth = callback_auth
        self._transport = transport
        self._running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        """New jobs were enqueued here: claim now rather than at the next poll (any thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        timeout = httpx.Timeout(self.settings.analysis_timeout_seconds, connect=10.0)
        # pipeline.inference_tls: towards https:// inference services.
        verify = client_context(self.settings.inference_tls)
        async with httpx.AsyncClient(
            timeout=timeout, transport=self._transport, verify=verify
        ) as http:
            last_depth = 0.0
            while True:
                try:
                    await self._fill_slots(http)
                    if time.monotonic() - last_depth > 2:
                        await self._update_depth()
                        last_depth = time.monotonic()
                except DatabaseDisconnected as error:  # the queue's: retried at the next poll
                    log.warning("pipeline.worker_database_away", reason=str(error))
                except Exception:
                    log.exception("pipeline.worker_loop_error")
                # Until a job ends, new jobs are enqueued here, or the poll interval passes
                # (jobs enqueued by other replicas, backoffs that have run out).
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    {*self._running, waker},
                    timeout=_IDLE_POLL_SECONDS,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waker.cancel()

    async def _fill_slots(self, http: httpx.AsyncClient) -> None:
        free = self.settings.workers - len(self._running)
        if free <= 0:
            return
        jobs = await anyio.to_thread.run_sync(
            self.queue.claim,
            self.worker_id,
            free,
            self.settings.concurrency,
            self.settings.default_concurrency,
            self.settings.research.max_running,
            self.settings.research.wait_for_clinical,
        )
        for job in jobs:
            task = asyncio.create_task(self._run(http, job), name=f"job-{job.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _update_depth(self) -> None:
        for state, count in (await anyio.to_thread.run_sync(self.queue.depth_by_state)).items():
            QUEUE_DEPTH.labels(state=state).set(count)

    async def _run(self, http: httpx.AsyncClient, job: Job) -> None:
        structlog.contextvars.bind_contextvars(job_id=job.id)
        JOB_WAIT_SECONDS.labels(model=job.model).observe(max(0.0, time.time() - job.enqueued_at))
        heartbeat = asyncio.create_task(self._heartbeat(job))
        started = time.perf_counter()
        try:
            await self._analyse(http, job)
        except Exception as error:  # never lose a job to a bug: record it as transient
            log.exception("pipeline.job_crashed", job_id=job.id)
            await anyio.to_thread.run_sync(
                self.queue.fail, job.id, self.worker_id, f"gateway error: {error!r}", False, None
            )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            JOB_RUN_SECONDS.labels(model=job.model).observe(time.perf_counter() - started)

    async def _heartbeat(self, job: Job) -> None:
        interval = max(0.05, self.queue.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            owned = await anyio.to_thread.run_sync(self.queue.heartbeat, job.id, self.worker_id)
            if not owned:
                log.warning("pipeline.lease_lost", job_id=job.id)
                return

    def _request(self, job: Job) -> dict[str, Any]:
        source: dict[str, Any] = {"url": job.source_url}
        destination_url = self.destination_url
        if job.results_to_research and self.research_destination_url:
            destination_url = self.research_destination_url
        destination: dict[str, Any] = {"url": destination_url}
        if self.callback_auth:
            source["auth"] = destination["auth"] = self.callback_auth
        return {
            "model": job.model,
            "study_instance_uid": job.study_instance_uid,
            "series_instance_uid": job.series_instance_uid,
            "source": source,
            "destination": destination,
        }

    async def _analyse(self, http: httpx.AsyncClient, job: Job) -> None:
        url = f"{job.inference_url}/v1/analyses"
        try:
            # One id traces the job through both services' logs.
            response = await http.post(
                url, json=self._request(job), headers={"X-Request-ID": f"job-{job.id}"}
            )
        except httpx.TimeoutException:
            await self._fail(job, f"no answer from {url} in time", permanent=False)
            return
        except httpx.TransportError as error:
            await self._fail(job, f"{url} unreachable: {error!r}", permanent=False)
            return
        if response.status_code == 200:
            result = response.json()
            state = await anyio.to_thread.run_sync(
                self.queue.succeed, job.id, self.worker_id, result
            )
            log.info(
                "pipeline.job_succeeded",
                job_id=job.id,
                model=job.model,
                sr=result.get("sr_sop_instance_uid"),
                findings=len(result.get("findings", [])),
                next_state=state.value if state else "taken over",
            )
            return
        if response.status_code == 429:
            delay = _retry_after(response) or 5.0
            await anyio.to_thread.run_sync(
                self.queue.postpone, job.id, self.worker_id, delay, "inference service busy"
            )
            log.info("pipeline.job_postponed", job_id=job.id, seconds=delay)
            return
        kind, message = _error(response)
        permanent = kind == "permanent" or (kind is None and 400 <= response.status_code < 500)
        await self._fail(
            job, f"HTTP {response.status_code}: {message}", permanent, _retry_after(response)
        )

    async def _fail(
        self, job: Job, error: str, permanent: bool, retry_after: float | None = None
    ) -> None:
        state = await anyio.to_thread.run_sync(
            self.queue.fail, job.id, self.worker_id, error, permanent, retry_after
        )
        log.warning(
            "pipeline.job_failed",
            job_id=job.id,
            model=job.model,
            error=error,
            permanent=permanent,
            next_state=state.value if state else "taken over",
        )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), 600.0)
    except ValueError:
        return None


def _error(response: httpx.Response) -> tuple[str | None, str]:
    try:
        error = response.json().get("error", {})
        return error.get("kind"), str(error.get("message", ""))[:500]
    except (ValueError, AttributeError):
        return None, response.text[:500]
