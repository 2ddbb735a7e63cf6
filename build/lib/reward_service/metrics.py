"""Prometheus metrics of the service (served at /metrics), one definition per series."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EPISODES = Counter("rss_episodes_accepted_total", "Episodes persisted and queued for scoring.", ["scorer"])
REJECTED = Counter("rss_requests_rejected_total", "Requests answered with a 4xx.", ["status"])
RESULTS = Counter("rss_results_total", "Result entries written, by scorer and outcome.", ["scorer", "outcome"])
SCORING_FAILURES = Counter("rss_scoring_failures_total", "Failed scoring attempts (retried or dead-lettered).",
                           ["scorer"])
SCORING_SECONDS = Histogram("rss_scoring_seconds", "Time to score one episode.", ["scorer"])
RATINGS = Counter("rss_ratings_total", "Ratings accepted, by task kind.", ["kind"])
REQUEST_SECONDS = Histogram("rss_request_seconds", "HTTP request latency by route.", ["method", "route", "status"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
