"""Research analyses' threads: the lowest CPU priority, the caller's log context."""

from __future__ import annotations

import asyncio
import os
import threading

import structlog

from inference_service.priority import ResearchThreads


def _seen_by_the_thread() -> tuple[int, dict[str, object], str]:
    tid = threading.get_native_id()
    return (
        os.getpriority(os.PRIO_PROCESS, tid),
        structlog.contextvars.get_contextvars(),
        threading.current_thread().name,
    )


def test_research_threads_run_at_their_niceness_with_the_request_id() -> None:
    threads = ResearchThreads(size=2, niceness=19)
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def ask() -> tuple[int, dict[str, object], str]:
        structlog.contextvars.bind_contextvars(request_id="job-17")
        try:
            return await threads.run(_seen_by_the_thread)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")

    try:
        niceness, context, name = asyncio.run(ask())
    finally:
        threads.close()
    assert niceness == 19
    assert context == {"request_id": "job-17"}  # log lines of the analysis carry the job's id
    assert name.startswith("research-analysis")
    # The caller's own thread keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own
