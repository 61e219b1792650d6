"""The collector's own Prometheus metrics (``GET /metrics``, prometheus-client).

- ``inferfleet_collector_documents_total{outcome, status}``: every answer to a
  result POST — ``created`` (201), ``duplicate`` (200), ``refused`` (4xx: the
  document or its credentials will never be accepted), ``unavailable`` (503);
- ``inferfleet_collector_results_total``: result rows stored;
- ``inferfleet_collector_ingest_seconds``: parse + validate + store time of
  each document whose body was read (refused ones included; histogram).

With several uvicorn workers (``agent collector serve --workers N``) each
worker is its own process: the parent points ``PROMETHEUS_MULTIPROC_DIR`` at
a fresh directory before starting them, the workers' values go there, and
``/metrics`` (whichever worker answers) sums them, as prometheus-client's
multiprocess mode does."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401  (re-exported)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.documents = Counter("inferfleet_collector_documents", "Answers to result documents, by outcome",
                                 ["outcome", "status"], registry=self.registry)
        self.results = Counter("inferfleet_collector_results", "Result rows stored", registry=self.registry)
        self.seconds = Histogram("inferfleet_collector_ingest_seconds",
                                 "Parse, validation and storage time of one document",
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                 registry=self.registry)

    def answered(self, status: int) -> None:
        outcome = {201: "created", 200: "duplicate", 503: "unavailable"}.get(status, "refused")
        self.documents.labels(outcome=outcome, status=str(status)).inc()

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
