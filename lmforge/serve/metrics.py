"""`GET /metrics`: the server's counters, gauges and latency histograms in Prometheus' text format
(prometheus_client, one registry per app so that two servers in one process keep their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, scheduler):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("lmforge_requests", "Requests answered, by endpoint and outcome",
                                ["endpoint", "status"], registry=r)
        self.tokens_in = Counter("lmforge_prompt_tokens", "Prompt tokens read", registry=r)
        self.tokens_out = Counter("lmforge_generated_tokens", "Tokens generated", registry=r)
        self.first_token = Histogram("lmforge_time_to_first_token_seconds", "From a request's arrival to its first "
                                     "token", buckets=LATENCY, registry=r)
        self.per_token = Histogram("lmforge_inter_token_seconds", "Between one token of a request and its next",
                                   buckets=LATENCY, registry=r)
        Gauge("lmforge_queue_length", "Requests waiting to join the batch", registry=r).set_function(
            lambda: scheduler.queue_length)
        Gauge("lmforge_batch_size", "Requests decoding in the running batch", registry=r).set_function(
            lambda: scheduler.batch_size)

    def text(self) -> bytes:
        return generate_latest(self.registry)
