"""Research analyses run at a lower CPU priority than clinical ones.

A federated analysis's backfill (issue 17) sends the inference service hundreds of studies
while new studies from the PACS keep arriving. The gateway's queue already takes every clinical
job before any research job, but a research analysis that is running when a clinical one
arrives shares the cores with it. Those analyses run in threads of their own whose scheduling
priority is lowered (``nice``): the kernel's scheduler then gives a clinical analysis nearly
all of the CPU while both run (CFS weights: nice 0 is 1024, nice 19 is 15), and a research
analysis still uses every idle cycle.

Linux keeps the nice value per thread (``setpriority(PRIO_PROCESS, tid)``, see
``sched(7)``), which is what lets one process hold threads of both priorities; any user may
lower a thread's priority, so this needs no privilege in a container. onnxruntime's own
intra-op threads keep the priority of the thread that created the session: for the whole of a
research model's run at the lower priority, install research models on a service with
``onnxruntime.intra_op_threads: 1`` or give research its own service
(``pipeline.research.inference_url`` at the gateway).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio
import structlog

log = structlog.get_logger(__name__)

#: The request's ``priority`` of a federated analysis's work.
RESEARCH = "research"
CLINICAL = "clinical"

T = TypeVar("T")


def lower_thread_priority(niceness: int) -> None:
    """Set the calling thread's nice value (Linux: per thread; elsewhere, the process's)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except OSError as error:  # a seccomp profile may forbid it: run at the normal priority
        log.warning("research_priority_unchanged", niceness=niceness, error=str(error))


class ResearchThreads:
    """A pool of threads at ``niceness`` for research analyses (at most ``size`` at once)."""

    def __init__(self, size: int, niceness: int) -> None:
        self.niceness = niceness
        self._pool = ThreadPoolExecutor(
            max_workers=size,
            thread_name_prefix="research-analysis",
            initializer=lower_thread_priority,
            initargs=(niceness,),
        )

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run ``function(*args)`` in a research thread and wait for it.

        Like ``anyio.to_thread.run_sync``: the work sees the caller's context variables (the
        request id on its log lines), and it is shielded: a caller that goes away does not stop
        the thread, so whatever slot the caller holds stays held until the work has ended.
        """
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        with anyio.CancelScope(shield=True):
            result = await loop.run_in_executor(self._pool, context.run, function, *args)
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
