"""Prometheus metrics: defined once per process, exposed at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "invoiceiq_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "invoiceiq_http_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_OUTCOMES = Counter(
    "invoiceiq_outbox_outcomes_total", "Outbox rows handled, by outcome", ["topic", "outcome"]
)
OUTBOX_ROWS = Gauge("invoiceiq_outbox_rows", "Outbox rows by status (read at scrape)", ["status"])
