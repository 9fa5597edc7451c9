"""The durable job queue and the study-stability ledger (SQLite or PostgreSQL).

A lower layer: it never imports the HTTP layer.
"""

from gateway.queue.database import Database
from gateway.queue.jobs import TERMINAL, Job, JobQueue, JobState
from gateway.queue.settings import QueueSettings
from gateway.queue.stability import StabilityLedger

__all__ = [
    "TERMINAL",
    "Database",
    "Job",
    "JobQueue",
    "JobState",
    "QueueSettings",
    "StabilityLedger",
]
