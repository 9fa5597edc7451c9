"""Prometheus metrics of the inference service (``GET /metrics``, text exposition format).

One registry per application, so that several apps in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Stage durations reach minutes for large series on CPU.
_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.analyses = Counter(
            "fedgate_inference_analyses",
            "Analyses answered, by model and outcome (ok, permanent, transient).",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "fedgate_inference_stage_seconds",
            "Seconds per analysis stage (fetch, decode, preprocess, model, postprocess, "
            "sr_seg, store, total).",
            ["model", "stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "fedgate_inference_analyses_in_flight",
            "Analyses admitted (running or waiting for a slot).",
            registry=self.registry,
        )
        self.infer_requests = Counter(
            "fedgate_inference_oip_infer_requests",
            "Open Inference Protocol infer requests, by model and outcome.",
            ["model", "outcome"],
            registry=self.registry,
        )
