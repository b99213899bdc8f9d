"""Counters, gauges and histograms in the Prometheus text format (version 0.0.4).

The daemon's metrics are a handful of series, so they are kept here in a few dozen lines rather
than through `prometheus_client`, whose global registry and own HTTP server this daemon would
not use. Counters and histograms are updated as jobs finish; gauges are read from the daemon's
state at scrape time, so they can never drift from it. Tests check the output with
`prometheus_client`'s own parser.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Labels = tuple[str, ...]

DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400)


@dataclass
class Family:
    """One metric: its samples as (name suffix, labels, value)."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labelnames: Labels = ()
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


class Counter:
    def __init__(self, name: str, help: str, labelnames: Labels) -> None:
        assert name.endswith("_total")
        self.name, self.help, self.labelnames = name, help, labelnames
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def ensure(self, *labels: str) -> None:
        """Show a series at 0 before its first event, so rate() and alerts see it."""
        with self._lock:
            self._values.setdefault(labels, 0.0)

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def family(self) -> Family:
        with self._lock:
            values = sorted(self._values.items())
        return Family(self.name, "counter", self.help, self.labelnames,
                      [("", dict(zip(self.labelnames, k, strict=True)), v) for k, v in values])


class Histogram:
    def __init__(self, name: str, help: str, labelnames: Labels,
                 buckets: Sequence[float]) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.buckets = tuple(sorted(buckets))
        self._series: dict[Labels, list[float]] = {}  # per-bucket counts, then sum, count
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        value = max(0.0, value)
        with self._lock:
            series = self._series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def family(self) -> Family:
        family = Family(self.name, "histogram", self.help, self.labelnames)
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for key, series in items:
            labels = dict(zip(self.labelnames, key, strict=True))
            for bound, count in zip(self.buckets, series, strict=False):
                family.samples.append(("_bucket", {**labels, "le": _number(bound)}, count))
            family.samples.append(("_bucket", {**labels, "le": "+Inf"}, series[-1]))
            family.samples.append(("_sum", labels, series[-2]))
            family.samples.append(("_count", labels, series[-1]))
        return family


def gauge(name: str, help: str, labelnames: Labels, values: Mapping[Any, float]) -> Family:
    """A gauge's samples, from label values (a tuple in `labelnames` order) to the value."""
    return Family(name, "gauge", help, labelnames,
                  [("", dict(zip(labelnames, k, strict=True)), float(v))
                   for k, v in values.items()])


def render(families: Iterable[Family]) -> str:
    """The text exposition format: HELP and TYPE lines, then one line per sample."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{family.name}{suffix}{{{pairs}}} {_number(value)}" if pairs
                         else f"{family.name}{suffix} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class JobMetrics:
    """What the daemon records as jobs finish; everything else is read at scrape time."""

    def __init__(self) -> None:
        self.jobs = Counter(
            "hotfolder_jobs_total", "Jobs this daemon finished since it started, by folder "
            "and outcome (done: moved to done/, failed: moved to failed/).", ("folder", "outcome"))
        self.failures = Counter(
            "hotfolder_job_failures_total", "Failed jobs by folder and kind of failure "
            "(invalid, rejected, execution_error, timeout, cancelled, ...).", ("folder", "kind"))
        self.duration = Histogram(
            "hotfolder_job_duration_seconds", "Seconds from a job's submission to ComfyUI "
            "until its outputs were in the outbox, for jobs done.", ("folder",),
            DURATION_BUCKETS)
        self.wait = Histogram(
            "hotfolder_job_queue_wait_seconds", "Seconds from a job file being seen in the "
            "inbox until its submission to ComfyUI.", ("folder",), WAIT_BUCKETS)

    def finished(self, folder: str, status: str, kind: str | None, *, seen_at: float | None,
                 submitted_at: float | None, now: float) -> None:
        if status not in ("done", "failed"):
            return  # left in processing/ for the next start: not finished
        self.jobs.inc(folder, status)
        if status == "failed":
            self.failures.inc(folder, kind or "unknown")
        if submitted_at is not None:
            if seen_at is not None:
                self.wait.observe(submitted_at - seen_at, folder)
            if status == "done":
                self.duration.observe(now - submitted_at, folder)

    def families(self, *, folders: Mapping[str, tuple[int, int]],
                 servers: Sequence[Mapping[str, Any]],
                 server_errors: Mapping[tuple[str, str, str], int],
                 healthy: bool) -> list[Family]:
        """All metrics: `folders` maps a name to (waiting, in flight); `servers` is the
        pool's description; `server_errors` counts (server, operation, kind)."""
        for name in folders:
            self.jobs.ensure(name, "done")
            self.jobs.ensure(name, "failed")
        up = {(str(s["name"]),): 1.0 if s.get("up") else 0.0 for s in servers}
        in_flight = {(str(s["name"]),): float(s.get("in_flight") or 0) for s in servers}
        queued = {(str(s["name"]),): float(s["queue_remaining"]) for s in servers
                  if isinstance(s.get("queue_remaining"), int)}
        errors = Family("hotfolder_server_errors_total", "counter",
                        "Failed submits and downloads by server, operation and kind "
                        "(unreachable, http_5xx, unauthorised, rejected, ...).",
                        ("server", "operation", "kind"),
                        [("", {"server": s, "operation": o, "kind": k}, float(n))
                         for (s, o, k), n in sorted(server_errors.items())])
        return [
            self.jobs.family(), self.failures.family(), self.duration.family(),
            self.wait.family(),
            gauge("hotfolder_jobs_waiting", "Job files waiting in the inbox.", ("folder",),
                  {(n,): w for n, (w, _) in folders.items()}),
            gauge("hotfolder_jobs_in_flight", "Jobs this daemon is working on (claimed, "
                  "not yet finished).", ("folder",), {(n,): f for n, (_, f) in folders.items()}),
            gauge("hotfolder_server_up", "1 while the ComfyUI server answers, 0 while it is "
                  "unreachable.", ("server",), up),
            gauge("hotfolder_server_in_flight", "Our prompts on the server.", ("server",),
                  in_flight),
            gauge("hotfolder_server_queue_remaining", "The server's own queue length, from "
                  "its WebSocket (all clients).", ("server",), queued),
            errors,
            gauge("hotfolder_healthy", "1 while the daemon's main loop and threads are "
                  "healthy.", (), {(): 1.0 if healthy else 0.0}),
        ]
