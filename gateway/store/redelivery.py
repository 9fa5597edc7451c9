"""Delivering again what the store's observers missed.

An instance is acknowledged once it is on disk and in the catalog; the observers that follow
(the findings index, the stability ledger that schedules its analysis, the forwarder) are told
after that commit, from the catalog's observer outbox (:mod:`gateway.store.catalog`). When one
of them fails (its PostgreSQL restarting) or the process ends in between, the instances stay
in the outbox, and this loop hands them over again until every observer took them: nothing
acknowledged is left unindexed or unanalysed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio.to_thread
import structlog

from gateway.store.embedded import EmbeddedStore

log = structlog.get_logger(__name__)

#: How often the outbox is looked at; with the settle time of
#: :meth:`EmbeddedStore.deliver_unobserved` (10 s) a missed group is delivered within ~15 s of
#: its observers answering again.
INTERVAL_SECONDS = 5.0


async def redeliver_unobserved(
    stores: Sequence[EmbeddedStore], interval_seconds: float = INTERVAL_SECONDS
) -> None:
    """Run until cancelled: each store's :meth:`EmbeddedStore.deliver_unobserved`, in a thread."""
    while True:
        for store in stores:
            try:
                await anyio.to_thread.run_sync(store.deliver_unobserved)
            except Exception:  # the catalog busy or closing: the next round
                log.exception("store.redelivery_failed", store=str(store.layout.root))
        await asyncio.sleep(interval_seconds)
