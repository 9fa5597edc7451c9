"""The job API: ``/jobs`` to see, retry and delete analysis jobs (admin role)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.numbers import DATABASE_INTEGER_MAX, clamp_to_database, non_negative_integer
from gateway.queue import JobQueue, JobState
from gateway.store.uids import is_valid_uid

_MAX_PAGE = 1000


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status)


def _queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


def _job_id(request: Request) -> int | None:
    """The job id in the URL; None (404) when it is not one the queue could have issued."""
    job_id = non_negative_integer(request.path_params["job_id"])
    return job_id if job_id is not None and job_id <= DATABASE_INTEGER_MAX else None


async def list_jobs(request: Request) -> Response:
    params = request.query_params
    unknown = set(params) - {"state", "study", "model", "limit", "offset"}
    if unknown:
        return _problem(400, f"unknown parameter(s): {', '.join(sorted(unknown))}")
    study = params.get("study")
    if study is not None and not is_valid_uid(study):
        return _problem(400, "study must be a Study Instance UID")
    state = params.get("state")
    if state is not None and state not in {s.value for s in JobState}:
        return _problem(400, f"state must be one of {', '.join(s.value for s in JobState)}")
    limit = non_negative_integer(params.get("limit", "100"))
    offset = non_negative_integer(params.get("offset", "0"))
    if limit is None or offset is None or not 1 <= limit <= _MAX_PAGE:
        return _problem(400, f"limit must be an integer from 1 to {_MAX_PAGE}, offset one from 0")
    jobs, total = await anyio.to_thread.run_sync(
        lambda: _queue(request).search(
            state, study, params.get("model"), limit, clamp_to_database(offset)
        )
    )
    body: dict[str, Any] = {
        "jobs": [job.as_json() for job in jobs],
        "total": total,
        "limit": limit,
        "offset": offset,
    }
    return JSONResponse(body)


async def get_job(request: Request) -> Response:
    job_id = _job_id(request)
    job = await anyio.to_thread.run_sync(_queue(request).get, job_id) if job_id else None
    if job is None:
        return _problem(404, "no such job")
    return JSONResponse(job.as_json(detail=True))


async def retry_job(request: Request) -> Response:
    job_id = _job_id(request)
    queue = _queue(request)
    if job_id is None or await anyio.to_thread.run_sync(queue.get, job_id) is None:
        return _problem(404, "no such job")
    job = await anyio.to_thread.run_sync(queue.retry, job_id)
    if job is None:
        return _problem(409, "the job is pending or running; only finished jobs can be retried")
    return JSONResponse(job.as_json())


async def delete_job(request: Request) -> Response:
    job_id = _job_id(request)
    if job_id is None or not await anyio.to_thread.run_sync(_queue(request).delete, job_id):
        return _problem(404, "no such job")
    return Response(status_code=204)


def job_routes() -> list[BaseRoute]:
    return [
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/jobs/{job_id}", delete_job, methods=["DELETE"]),
        Route("/jobs/{job_id}/retry", retry_job, methods=["POST"]),
    ]
