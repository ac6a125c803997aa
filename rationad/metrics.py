"""Prometheus metrics, prefix ``rationad_``, low-cardinality labels only (Vector's naming: unit in the name)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info



class Metrics:
    """All metrics of one daemon, on their own registry (tests build as many as they like)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.build_info = Info("rationad_build", "Version, model and prompt version of this daemon", registry=r)
        self.records_received = Counter(
            "rationad_records_received_total", "Input records read from Kafka", ["topic"], registry=r
        )
        self.lines_parsed = Counter("rationad_lines_parsed_total", "Log lines parsed into sessions", registry=r)
        self.lines_repartitioned = Counter(
            "rationad_lines_repartitioned_total", "Lines produced to the repartition topic, keyed by session key",
            registry=r,
        )
        self.repartition_purges = Counter(
            "rationad_repartition_purges_total", "Deletions of committed records from the repartition topic "
            "(rationad.purge), by result: error means the topic keeps growing until one succeeds", ["result"],
            registry=r,
        )
        self.late_lines = Counter(
            "rationad_late_lines_total", "Lines judged in a window of their key's late lines (own_window) or taken "
            "as untimed (future_untimed)", ["action"], registry=r,
        )
        self.clock_steps = Counter(
            "rationad_source_clock_steps_total", "Sources whose clock went back by more than a session's close (every "
            "line late for 10 s): event time follows their clock from then on", registry=r,
        )
        self.clock_shifts = Counter(
            "rationad_source_clock_shifts_total", "Shifts taken for repartitioned sources whose stamps are a time zone "
            "off their records' Kafka timestamps (rationad.source_clocks)", registry=r,
        )
        self.consumer_lag = Gauge(
            "rationad_consumer_lag_records", "Records between the consumer position and the end of the partition",
            ["topic", "partition"], registry=r,
        )
        self.committed_lag = Gauge(
            "rationad_committed_lag_records",
            "Records between the group's committed offset and the end of the partition (what a restart re-reads; "
            "if it reaches the topic's retention, lines are lost)", ["topic", "partition"], registry=r,
        )
        self.committed_age = Gauge(
            "rationad_committed_age_seconds",
            "Seconds the group's committed offset has not moved while records wait past it (0 when none wait); "
            "records older than the topic's retention are deleted unjudged", ["topic", "partition"], registry=r,
        )
        self.sessions_open = Gauge("rationad_sessions_open", "Sessions currently open", registry=r)
        self.split_sessions = Counter(
            "rationad_split_sessions_total",
            "Sessions whose key was recently closed on another partition: the input is not keyed by session key, so "
            "sessions are judged as fragments (key the producer by session key)", registry=r,
        )
        self.sessions_open_bytes = Gauge(
            "rationad_sessions_open_bytes", "Estimated bytes held by open sessions over all partitions, and by the "
            "lines carried for the next revisions of keys closed by max_open", registry=r
        )
        self.model_blocked = Gauge(
            "rationad_model_blocked", "1 while the model is misconfigured or dead and consumption is paused", registry=r
        )
        self.produce_stuck = Gauge(
            "rationad_produce_stuck_seconds", "Age of the oldest send still waiting for its acknowledgement", registry=r
        )
        self.sessions_closed = Counter(
            "rationad_sessions_closed_total", "Sessions closed, by reason", ["reason"], registry=r
        )
        self.sessions_pending = Gauge(
            "rationad_sessions_pending", "Closed sessions waiting for a verdict or an acknowledgement", registry=r
        )
        self.batch_size = Histogram(
            "rationad_model_batch_size", "Sessions per model batch", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.model_request_duration = Histogram(
            "rationad_model_request_duration_seconds", "Model call duration by outcome", ["outcome"], registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.model_in_flight = Gauge("rationad_model_requests_in_flight", "Model calls in flight", registry=r)
        self.model_healthy = Gauge("rationad_model_healthy", "1 when the last model health check passed", registry=r)
        self.cache_requests = Counter(
            "rationad_cache_requests_total", "Verdict cache look-ups", ["result"], registry=r
        )
        self.cache_entries = Gauge("rationad_cache_entries", "Entries in the verdict cache", registry=r)
        self.events_produced = Counter(
            "rationad_events_produced_total", "Verdict events acknowledged by the broker", ["verdict"], registry=r
        )
        self.ungrounded_citations = Counter(
            "rationad_ungrounded_citations_total", "Rationale citations of lines not in the session", registry=r
        )
        # The denominator of the per-session rationale rates (the alerts on ungrounded citations and refuted
        # statements): the numerators count every judgement, cache hits included, which model batch sizes do not,
        # while batches count retries and rewrites (a rate of 1.0 read 10.0 or 0.5).
        self.sessions_judged = Counter(
            "rationad_sessions_judged_total", "Sessions and templates judged (one answer each: verdict cache hits "
            "included, retries and rewrites not)", registry=r
        )
        self.rationales_cut = Counter(
            "rationad_rationales_cut_total", "Rationales that ran past model.max_new_tokens: cut at their last "
            "complete sentence or clause (ending with ' …') and answered from there", registry=r
        )
        self.injection_spans = Counter(
            "rationad_injection_spans_total", "Spans of log lines that address the model (rationad.injection), "
            "masked (or withheld, a line with nothing else) before it read them, by family", ["family"], registry=r)
        self.rationale_problems = Counter(
            "rationad_rationale_problems_total", "Statements of rationales the session refutes (rationad.faithful), "
            "by kind: count, quote, meaning, severity, unsupported, neighbour, foreign, training_only, loop, and for "
            "HDFS role, tally, pair", ["kind"], registry=r)
        self.rationales_rewritten = Counter(
            "rationad_rationales_rewritten_total",
            "Rationales with a statement the session refutes, written again once: by which was served (second: it had "
            "fewer refuted statements; first: the first)", ["served"], registry=r)
        self.dlq_records = Counter(
            "rationad_dlq_records_total", "Records and sessions sent to the dead-letter topic", ["reason"], registry=r
        )
        self.end_to_end_latency = Histogram(
            "rationad_session_latency_seconds", "From a session's close to its event's acknowledgement",
            ["cache"], registry=r, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.errors = Counter(
            "rationad_errors_total", "Errors by stage and type", ["stage", "error_type"], registry=r
        )
        self.commits = Counter("rationad_offset_commits_total", "Offset commits", ["outcome"], registry=r)
        self.paused = Gauge("rationad_consumption_paused", "1 while consumption is paused by backpressure", registry=r)
        self.ready = Gauge("rationad_ready", "1 when joined, model healthy and not draining", registry=r)
        # judge.level = "template"
        self.templates_known = Gauge("rationad_templates", "Line templates held in memory, by verdict source",
                                     ["source"], registry=r)
        self.template_judgements = Counter(
            "rationad_template_judgements_total", "Templates sent to the model stage, by outcome "
            "(model, cached, failed)", ["outcome"], registry=r)
        self.windows_decided = Counter(
            "rationad_windows_decided_total", "Windows decided from their templates: at close (known) or after "
            "waiting for a template's verdict (waited)", ["how"], registry=r)
        self.windows_waiting = Gauge("rationad_windows_waiting", "Closed windows waiting for a template's verdict",
                                     registry=r)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Stop exporting a partition's lag and committed age (it was revoked: a frozen value here would keep an
        alert firing after its new owner moved the offset)."""
        for gauge in (self.consumer_lag, self.committed_lag, self.committed_age):
            try:
                gauge.remove(topic, str(partition))
            except KeyError:
                pass
