"""Flower's SuperNode (``flower-supernode``), polling the SuperLink promptly during a run.

Flower 1.42's SuperNode asks the SuperLink for a message, and when none is waiting sleeps a
fixed 3 s before asking again (``flwr.supernode.start_client_internal``, not configurable);
waiting for its ClientApp's reply, it sleeps 0.5 s at a time. A round of federated learning is
one message per site: each site hears of the next round up to 3 s after the hub sends it, and
the round waits for the last site. Over 20 rounds that is about a minute of waiting alone.

This entry point runs Flower's own ``flower-supernode`` (same arguments) with two changes of
pace, nothing else: while a run is active (a message came within :data:`BUSY_SECONDS`) the
SuperNode asks every :data:`BUSY_POLL_SECONDS` instead of every 3 s, and it checks for its
ClientApp's reply every 20 ms instead of 0.5 s; idle, it keeps Flower's 3 s, so an idle site
costs the SuperLink what it did. It replaces the ``time`` module seen by that one Flower
module (Flower 1.42 has no setting for it; pinned in pyproject.toml).

Run: ``python -m gateway.learning.supernode --superlink HOST:PORT ...`` (``fedgate learn site``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from gateway.learning.pace import quicken_object_pulls
from gateway.learning.trace import mark

__all__ = ["BUSY_POLL_SECONDS", "BUSY_SECONDS", "Pace", "main"]

#: How long after a message the SuperNode keeps asking the SuperLink promptly.
BUSY_SECONDS = 30.0
BUSY_POLL_SECONDS = 0.1
#: Flower's own waits: 3 s between empty polls, 0.5 s while a reply is being prepared.
_FLOWER_IDLE_POLL = 3
_REPLY_POLL_SECONDS = 0.02


class Pace:
    """Stands in for the ``time`` module in ``flwr.supernode.start_client_internal``."""

    def __init__(self) -> None:
        self.last_message = float("-inf")

    def sleep(self, seconds: float) -> None:
        if seconds >= _FLOWER_IDLE_POLL:
            # The wait after an empty poll: short while a run is active.
            busy = time.monotonic() - self.last_message < BUSY_SECONDS
            time.sleep(BUSY_POLL_SECONDS if busy else seconds)
        else:
            # Waiting for the ClientApp's reply or its content: on the round's critical path.
            time.sleep(min(seconds, _REPLY_POLL_SECONDS))

    def watch(self, pull: Callable[..., int | None]) -> Callable[..., int | None]:
        """``pull`` (Flower's pull-and-store of one message), noting when a message came."""

        def pull_and_note(*args: Any, **kwargs: Any) -> int | None:
            run_id = pull(*args, **kwargs)
            if run_id is not None:
                self.last_message = time.monotonic()
                mark("node.pulled", run=run_id)
            return run_id

        return pull_and_note


def _traced_push(push: Callable[..., None]) -> Callable[..., None]:
    """``push`` (Flower's wait for the ClientApp's reply and its sending to the SuperLink),
    marking when the reply has been sent (:mod:`gateway.learning.trace`)."""

    def push_and_mark(*args: Any, **kwargs: Any) -> None:
        push(*args, **kwargs)
        mark("node.sent")

    return push_and_mark

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def main(argv: list[str] | None = None) -> None:
    """``flower-supernode`` with :class:`Pace`; ``argv`` are flower-supernode's arguments."""
    import flwr.supernode.start_client_internal as supernode_loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    quicken_object_pulls()
    pace = Pace()
    supernode_loop._pull_and_store_message = pace.watch(supernode_loop._pull_and_store_message)
    supernode_loop._push_messages = _traced_push(supernode_loop._push_messages)
    supernode_loop.time = pace  # type: ignore[assignment]
    sys.argv = ["flower-supernode", *(sys.argv[1:] if argv is None else argv)]
    flower_supernode()


if __name__ == "__main__":
    main()
