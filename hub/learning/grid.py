"""The ServerApp's Grid, collecting the sites' replies as they come rather than every 3 s.

Flower 1.42's ``Grid.send_and_receive`` (``flwr.superlink.grid.http_grid``) pushes the messages,
then asks the SuperLink for the replies and, while some are missing, sleeps a fixed 3 s before
asking again. A round that the sites answer within 0.3 s thus lasts 3 s. :class:`PromptGrid`
is the same Grid with its own ``send_and_receive`` over the Grid's public ``push_messages`` and
``pull_messages``: it asks every :data:`POLL_SECONDS` (50 ms) for the first
:data:`PROMPT_SECONDS` of a step (a round of one full-batch step takes about 0.6 s on loopback:
backing off from the start left the last reply waiting 0.1 s, a sixth of the round) and then
backs off to 1 s, so a long round does not load the SuperLink more than it needs to.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from gateway.learning.trace import mark

__all__ = ["POLL_SECONDS", "PROMPT_SECONDS", "PromptGrid"]

POLL_SECONDS = 0.05
PROMPT_SECONDS = 2.0
MAX_POLL_SECONDS = 1.0


class PromptGrid(Grid):
    """``grid`` (Flower's) with a prompt ``send_and_receive``; everything else is ``grid``'s."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``, then collect their replies until all came or ``timeout`` (seconds;
        None: wait for all) passed, as Flower's does."""
        messages = list(messages)
        kinds = sorted({message.metadata.message_type for message in messages})
        mark("hub.push", messages=len(messages), kinds=kinds)
        waiting = set(self.push_messages(messages))
        mark("hub.pushed")
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        replies: list[Message] = []
        pause = POLL_SECONDS
        while waiting:
            pulled = list(self.pull_messages(waiting))
            for reply in pulled:
                mark("hub.received", node=reply.metadata.src_node_id)
            replies += pulled
            waiting -= {reply.metadata.reply_to_message_id for reply in pulled}
            if not waiting:
                break
            remaining = float("inf") if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(pause, remaining))
            if time.monotonic() - started > PROMPT_SECONDS:
                pause = min(pause * 1.25, MAX_POLL_SECONDS)
        return replies
