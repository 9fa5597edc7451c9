"""The site's long-lived ClientApp executor, beside a SuperNode run with ``--isolation process``.

Flower 1.42 runs each message a SuperNode receives as a *task*: an executor (Flower's own
``flower-superexec``) acquires the task from the SuperNode's Runtime API and starts a
``flwr-clientapp`` process with the task's token, which pulls the message, runs the ClientApp
and pushes the reply. Started per message, that process pays Python's start-up and the imports
of Flower, NumPy and fedgate (about 1.5 s of CPU; 2.4 s more for scikit-learn) each time,
while the training itself takes milliseconds.

This executor plays ``flower-superexec``'s part (``flower-supernode --isolation process``
leaves it to us) with the imports done once: it imports Flower's ClientApp runtime and
fedgate's ClientApp (and scikit-learn, for the ``sgd`` and ``mlp`` families) at start, polls the
Runtime API for ClientApp tasks, and runs each in a child forked from itself, through Flower's
own :func:`flwr.supernode.runtime.run_clientapp.run_clientapp`. A task still gets a process of
its own (Flower's isolation: one message cannot leave state or memory behind for the next), at
the price of a ``fork`` (milliseconds) instead of a new interpreter. One thing does pass from a
task to the next, on purpose and through this executor: the site's training table, built once
per run, plan and state of the findings index (:mod:`gateway.learning.table_cache`); each child
writes the table it built to a pipe, and the executor keeps it for the children it forks next.

Poll interval: 0.1 s while tasks come (within :data:`BUSY_SECONDS` of the last one), Flower's
1 s when idle. Run: ``python -m gateway.learning.executor --runtime-api-address HOST:PORT``
(``fedgate learn site`` starts it beside its SuperNode).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import select
import sys
import time

from gateway.learning import table_cache
from gateway.learning.pace import quicken_object_pulls
from gateway.learning.trace import mark

__all__ = ["BUSY_SECONDS", "PRELOADED", "main", "preload"]

#: Loaded into the executor once; every forked task shares them.
PRELOADED = (
    "flwr.supernode.runtime.run_clientapp",
    "gateway.learning.client",
    "sklearn.linear_model",  # the sgd family
    "sklearn.neural_network",  # the mlp family
)

#: How long after a task the executor keeps polling fast (a run's next round comes sooner).
BUSY_SECONDS = 30.0
BUSY_POLL_SECONDS = 0.1
IDLE_POLL_SECONDS = 1.0


def preload() -> None:
    """Import what every ClientApp task needs, once, before any fork."""
    for module in PRELOADED:
        importlib.import_module(module)
    quicken_object_pulls()


def _run_task(runtime_api_address: str, token: str, pipe: int) -> None:
    """In the forked child: Flower's ClientApp process body for one task, then the site's table
    it built (if any) to the executor over ``pipe``; never returns."""
    code = 1
    mark("task.forked")
    try:
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        run_clientapp(runtime_api_address=runtime_api_address, token=token, insecure=True)
        code = 0
    except SystemExit as exit_:  # flwr_exit ends the task by sys.exit
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        mark("task.exit")  # after Flower pushed the reply to the SuperNode
        # After the reply: the executor reads it while the next message is on its way. An
        # executor that is gone (OSError) has no use for it.
        with contextlib.suppress(OSError):
            table_cache.publish(pipe)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never back into the parent's loop, nor its atexit handlers


class _Tables:
    """The read ends of the children's pipes, and what each child wrote so far."""

    def __init__(self) -> None:
        self.reading: dict[int, bytearray] = {}

    def wait(self, seconds: float) -> None:
        """Up to ``seconds``, reading what children write; a child's whole table (its pipe
        closed) is kept for the next children (:func:`table_cache.receive`)."""
        if not self.reading:
            time.sleep(seconds)
            return
        ready, _, _ = select.select(list(self.reading), [], [], seconds)
        for pipe in ready:
            chunk = os.read(pipe, 1 << 20)
            if chunk:
                self.reading[pipe] += chunk
                continue
            os.close(pipe)
            table_cache.receive(bytes(self.reading.pop(pipe)))


def _reap() -> None:
    """Collect the exit status of finished children (no zombies)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--runtime-api-address", required=True, help="the SuperNode's Runtime API, HOST:PORT"
    )
    args = parser.parse_args(argv)
    preload()

    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    # Plain HTTP: the Runtime API listens on the SuperNode's loopback port only.
    client = RuntimeHttpClient.from_server_address(
        server_address=args.runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    last_task = float("-inf")
    tables = _Tables()
    while True:
        _reap()
        acquired = client.AcquireTask(
            AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
        )
        if acquired.HasField("task") and acquired.token:
            last_task = time.monotonic()
            mark("executor.acquired")
            pipe_out, pipe_in = os.pipe()
            if os.fork() == 0:
                os.close(pipe_out)
                _run_task(args.runtime_api_address, acquired.token, pipe_in)
            os.close(pipe_in)
            tables.reading[pipe_out] = bytearray()
            continue  # another task may be waiting already
        busy = time.monotonic() - last_task < BUSY_SECONDS
        tables.wait(BUSY_POLL_SECONDS if busy else IDLE_POLL_SECONDS)


if __name__ == "__main__":
    raise SystemExit(main())
