"""Prometheus metrics of the gateway (exposed at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STORED_INSTANCES = Counter(
    "fedgate_instances_stored_total", "Instances stored in the embedded store"
)
STORED_BYTES = Counter("fedgate_stow_received_bytes_total", "Bytes received by STOW-RS")
STOW_FAILURES = Counter(
    "fedgate_stow_failures_total", "Instances refused by STOW-RS, by failure reason", ["reason"]
)
REQUEST_LATENCY = Histogram(
    "fedgate_http_request_duration_seconds",
    "HTTP request latency by route and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
UPSTREAM_ERRORS = Counter(
    "fedgate_upstream_errors_total", "Failed requests to the upstream PACS, by kind", ["kind"]
)
FORWARDED_INSTANCES = Counter(
    "fedgate_forwarded_instances_total", "Instances forwarded to the upstream PACS"
)
QUEUE_DEPTH = Gauge("fedgate_jobs", "Jobs in the queue by state", ["state"])
JOB_WAIT_SECONDS = Histogram(
    "fedgate_job_wait_seconds",
    "From enqueued to started, per attempt",
    ["model"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
JOB_RUN_SECONDS = Histogram(
    "fedgate_job_run_seconds",
    "Duration of one attempt, inference included",
    ["model"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
# Disk: the filesystem that holds data_dir (store, queue, index) and what the store takes of it.
# Measured when Prometheus scrapes (Gauge.set_function, wired in gateway.app), so the numbers
# are never older than the scrape. ``free`` is what an unprivileged process may still write
# (statvfs f_bavail), ``used`` what is written; free / (free + used) is the share ``df`` shows.
DATA_DIR_FREE_BYTES = Gauge(
    "fedgate_data_dir_free_bytes", "Bytes still available on the filesystem of data_dir"
)
DATA_DIR_USED_BYTES = Gauge(
    "fedgate_data_dir_used_bytes", "Bytes used on the filesystem of data_dir (by anything)"
)
STORE_BYTES = Gauge(
    "fedgate_store_bytes", "Bytes of the instances held in the embedded store (its catalog)"
)
# Instances stored and acknowledged that the findings index, the stability ledger or the
# forwarder has not taken yet (gateway/store/redelivery.py): above 0 for more than seconds
# when their database is away; they are delivered again once it answers.
STORE_UNOBSERVED = Gauge(
    "fedgate_store_unobserved_instances",
    "Stored instances not yet taken by every observer (index, analysis scheduling, forwarder)",
)
# The findings index's columnar copy (gateway/index/columnar.py): 0 while it is built or cannot
# catch up, when the federated API's answers come from the index itself (same, slower).
INDEX_COPY_READY = Gauge(
    "fedgate_index_copy_ready",
    "1 when the findings index's columnar copy answers the federated API's queries",
)
