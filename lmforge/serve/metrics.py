"""`GET /metrics`: the server's counters, gauges and latency histograms in Prometheus' text format
(prometheus_client, one registry per app so that two servers in one process keep their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's metrics; `hub` (serve/models.py) has the models whose schedulers the gauges read."""

    def __init__(self, hub):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("lmforge_requests", "Requests answered, by endpoint and outcome",
                                ["endpoint", "status"], registry=r)
        self.tokens_in = Counter("lmforge_prompt_tokens", "Prompt tokens read", registry=r)
        self.tokens_out = Counter("lmforge_generated_tokens", "Tokens generated", registry=r)
        self.first_token = Histogram("lmforge_time_to_first_token_seconds", "From a request's arrival to its first "
                                     "token", buckets=LATENCY, registry=r)
        self.per_token = Histogram("lmforge_inter_token_seconds", "Between one token of a request and its next",
                                   buckets=LATENCY, registry=r)
        Gauge("lmforge_queue_length", "Requests waiting to join a batch", registry=r).set_function(
            lambda: sum(s.queue_length for s in hub.schedulers()))
        Gauge("lmforge_batch_size", "Requests decoding in the running batches", registry=r).set_function(
            lambda: sum(s.batch_size for s in hub.schedulers()))
        self.step = Gauge("lmforge_model_step", "Training step of the checkpoint each model serves", ["model"],
                          registry=r)
        self.reloads = Counter("lmforge_reloads", "Reloads of a model, by outcome (done, failed)", ["model", "outcome"],
                               registry=r)
        self.canary_accuracy = Gauge("lmforge_canary_accuracy", "A classifier's accuracy on the canary set, "
                                     "scored at start-up and after each reload", ["model"], registry=r)
        self.canary_perplexity = Gauge("lmforge_canary_perplexity", "A decoder's perplexity on the canary set, "
                                       "scored at start-up and after each reload", ["model"], registry=r)
        self.predicted = Counter("lmforge_predicted_labels", "Labels a classifier predicted at /v1/classify",
                                 ["model", "label"], registry=r)
        self.psi = Gauge("lmforge_prediction_psi", "Population stability index of the recent predicted labels "
                         "against those on the model's validation split", ["model"], registry=r)

    def text(self) -> bytes:
        return generate_latest(self.registry)
