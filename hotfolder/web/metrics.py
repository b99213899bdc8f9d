"""The daemon's Prometheus metrics, written by `prometheus_client`.

Each `JobMetrics` keeps its series in a registry of its own, never the library's global one:
that one also carries the library's process and GC collectors and whatever else the process
imports registers, and two daemons in one process (as in the tests) would count into the same
series. The daemon's own web server serves `/metrics`; the library's HTTP server is not used.

Counters and histograms are the library's, updated as jobs finish. Gauges (and the servers'
error counts, which the clients keep) are not stored here at all: a collector builds them from
the daemon's state passed in at scrape time, so they can never drift from it.

The series are a public interface (dashboards and alerts use them), so they stay those of the
earlier hand-written writer. The registry drops the `_created` samples the library adds to
counters and histograms, in its own `collect()` rather than with `disable_created_metrics()`,
which would change every registry in the process. It also writes whole bucket bounds as before
(`le="60"`, where the library writes `le="60.0"`): Prometheus 2 keeps the label as written, so
a new spelling would start new series and leave rules that match `le="60"` without data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400)


class Registry(CollectorRegistry):
    """A private registry whose exposition has no `_created` samples and writes whole bucket
    bounds without a decimal point."""

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():
            created, bucket = metric.name + "_created", metric.name + "_bucket"
            metric.samples = [
                s._replace(labels={**s.labels, "le": _bound(s.labels["le"])})
                if s.name == bucket and "le" in s.labels else s
                for s in metric.samples if s.name != created]
            yield metric


def _bound(le: str) -> str:
    value = float(le)
    return str(int(value)) if value.is_integer() else le


@dataclass(frozen=True)
class DaemonState:
    """What the daemon passes in at scrape time: `folders` maps a name to (waiting, in flight);
    `servers` is the pool's description; `server_errors` counts (server, operation, kind)."""

    folders: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    servers: Sequence[Mapping[str, Any]] = ()
    server_errors: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    healthy: bool = False
    # the webhook sender's attempts by result (ok, failed, gave_up), and events queued
    webhooks: tuple[Mapping[str, int], int] = field(default_factory=lambda: ({}, 0))


class StateCollector:
    """The series read from the daemon's state, for the scrape under way (`state`)."""

    def __init__(self) -> None:
        self.state: DaemonState | None = None

    def describe(self) -> list[Metric]:
        return self.families(DaemonState())  # the names, so the registry can refuse clashes

    def collect(self) -> list[Metric]:
        state = self.state
        return [] if state is None else self.families(state)

    @staticmethod
    def families(state: DaemonState) -> list[Metric]:
        waiting = GaugeMetricFamily("hotfolder_jobs_waiting", "Job files waiting in the inbox.",
                                    labels=("folder",))
        in_flight = GaugeMetricFamily("hotfolder_jobs_in_flight", "Jobs this daemon is working "
                                      "on (claimed, not yet finished).", labels=("folder",))
        for name, (w, f) in state.folders.items():
            waiting.add_metric((name,), w)
            in_flight.add_metric((name,), f)
        up = GaugeMetricFamily("hotfolder_server_up", "1 while the ComfyUI server answers, 0 "
                               "while it is unreachable.", labels=("server",))
        ours = GaugeMetricFamily("hotfolder_server_in_flight", "Our prompts on the server.",
                                 labels=("server",))
        queued = GaugeMetricFamily("hotfolder_server_queue_remaining", "The server's own queue "
                                   "length, from its WebSocket (all clients).", labels=("server",))
        for s in state.servers:
            name = str(s["name"])
            up.add_metric((name,), 1.0 if s.get("up") else 0.0)
            ours.add_metric((name,), float(s.get("in_flight") or 0))
            if isinstance(s.get("queue_remaining"), int):
                queued.add_metric((name,), float(s["queue_remaining"]))
        errors = CounterMetricFamily("hotfolder_server_errors_total", "Failed submits and "
                                     "downloads by server, operation and kind (unreachable, "
                                     "http_5xx, unauthorised, rejected, ...).",
                                     labels=("server", "operation", "kind"))
        for key, n in sorted(state.server_errors.items()):
            errors.add_metric(key, float(n))
        switches = CounterMetricFamily("hotfolder_model_switches_total", "Prompts sent to a "
                                       "server that had other models loaded (as far as known).",
                                       labels=("server",))
        for s in state.servers:
            switches.add_metric((str(s["name"]),), float(s.get("model_switches") or 0))
        healthy = GaugeMetricFamily("hotfolder_healthy", "1 while the daemon's main loop and "
                                    "threads are healthy.", value=1.0 if state.healthy else 0.0)
        results, pending = state.webhooks
        deliveries = CounterMetricFamily(
            "hotfolder_webhook_deliveries_total", "Webhook delivery attempts by result (ok, "
            "failed: tried again later, gave_up: an event dropped undelivered).",
            labels=("result",))
        for result in ("ok", "failed", "gave_up"):
            deliveries.add_metric((result,), float(results.get(result, 0)))
        queue = GaugeMetricFamily("hotfolder_webhook_pending", "Webhook events queued and not "
                                  "yet delivered (counted by destination).", value=pending)
        return [waiting, in_flight, up, ours, queued, errors, switches, healthy, deliveries,
                queue]


class JobMetrics:
    """What the daemon records as jobs finish; everything else is read at scrape time."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.jobs = Counter(
            "hotfolder_jobs_total", "Jobs this daemon finished since it started, by folder "
            "and outcome (done: moved to done/, failed: moved to failed/).", ("folder", "outcome"),
            registry=self.registry)
        self.failures = Counter(
            "hotfolder_job_failures_total", "Failed jobs by folder and kind of failure "
            "(invalid, rejected, execution_error, timeout, cancelled, ...).", ("folder", "kind"),
            registry=self.registry)
        self.duration = Histogram(
            "hotfolder_job_duration_seconds", "Seconds from a job's submission to ComfyUI "
            "until its outputs were in the outbox, for jobs done.", ("folder",),
            buckets=DURATION_BUCKETS, registry=self.registry)
        self.wait = Histogram(
            "hotfolder_job_queue_wait_seconds", "Seconds from a job file being seen in the "
            "inbox until its submission to ComfyUI.", ("folder",), buckets=WAIT_BUCKETS,
            registry=self.registry)
        self._state = StateCollector()
        self.registry.register(self._state)
        self._scrape_lock = threading.Lock()  # one scrape's state in the collector at a time

    def finished(self, folder: str, status: str, kind: str | None, *, seen_at: float | None,
                 submitted_at: float | None, now: float) -> None:
        if status not in ("done", "failed"):
            return  # left in processing/ for the next start: not finished
        self.jobs.labels(folder, status).inc()
        if status == "failed":
            self.failures.labels(folder, kind or "unknown").inc()
        if submitted_at is not None:
            if seen_at is not None:
                self.wait.labels(folder).observe(max(0.0, submitted_at - seen_at))
            if status == "done":
                self.duration.labels(folder).observe(max(0.0, now - submitted_at))

    def render(self, *, folders: Mapping[str, tuple[int, int]],
               servers: Sequence[Mapping[str, Any]],
               server_errors: Mapping[tuple[str, str, str], int], healthy: bool,
               webhooks: tuple[Mapping[str, int], int] = ({}, 0)) -> str:
        """The text exposition format (version 0.0.4), with the daemon's state at scrape time
        (see `DaemonState`)."""
        for name in folders:  # each folder's outcomes at 0 before its first job, for rate()
            self.jobs.labels(name, "done")
            self.jobs.labels(name, "failed")
        with self._scrape_lock:
            self._state.state = DaemonState(folders, servers, server_errors, healthy, webhooks)
            try:
                return generate_latest(self.registry).decode()
            finally:
                self._state.state = None
