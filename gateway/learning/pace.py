"""Flower's wait for a message's content, shortened for every fedgate process that pulls one.

A Flower 1.42 message travels as a tree of objects pulled one by one
(``flwr.supercore.inflatable.inflatable_utils.pull_objects``). When an object is not there yet
(its sender is still pushing it, or a SuperNode has announced a message whose content it is
still fetching), the puller backs off: 1 s first, doubling up to 10 s. On loopback the object
comes milliseconds later, but the waiter sleeps on: measured, a ClientApp task that starts just
as its SuperNode stores the message waited 3 s for content that was ready after 0.1 s.

:func:`quicken_object_pulls` makes the first retry 20 ms, doubling up to 0.5 s, and bounds the
wait by Flower's overall time limit (2 h) rather than by a count of tries. It changes the
defaults of those two Flower functions in the calling process only: the SuperNode
(:mod:`gateway.learning.supernode`), the ClientApp executor (:mod:`gateway.learning.executor`)
and the hub's ServerApp call it at start.
"""

from __future__ import annotations

__all__ = ["BACKOFF_CAP_SECONDS", "INITIAL_BACKOFF_SECONDS", "quicken_object_pulls"]

INITIAL_BACKOFF_SECONDS = 0.02
BACKOFF_CAP_SECONDS = 0.5


def quicken_object_pulls() -> None:
    """Shorter retries when pulling a message's objects (see the module's text)."""
    from flwr.supercore.inflatable import inflatable_utils

    for pull in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        defaults = pull.__kwdefaults__
        assert defaults is not None and "initial_backoff" in defaults, pull
        defaults["initial_backoff"] = INITIAL_BACKOFF_SECONDS
        defaults["backoff_cap"] = BACKOFF_CAP_SECONDS
        # None: as many tries as Flower's time limit (max_time) allows.
        defaults["max_tries_per_object"] = None
