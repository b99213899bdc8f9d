"""The Prometheus text format, checked with Prometheus' own Python parser."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from prometheus_client import REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from hotfolder.comfy.counting import error_kind
from hotfolder.errors import JobError, ServerError
from hotfolder.web.metrics import JobMetrics, Registry


def parse(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


class Gauges:
    def collect(self):
        up = GaugeMetricFamily("x_up", "Up.", labels=("server",))
        up.add_metric(("gpu1",), 1)
        up.add_metric(("gpu2",), 0)
        return [up, GaugeMetricFamily("x_healthy", "Healthy.", value=1)]


def test_counter_gauge_and_histogram_round_trip_through_the_parser():
    registry = Registry()
    counter = Counter("x_events_total", "Events.\nSecond line with a \\ backslash.", ("path",),
                      registry=registry)
    awkward = 'a "quoted" \\ back\nslash'
    counter.labels(awkward).inc()
    counter.labels(awkward).inc(2)
    counter.labels("idle")  # shown at 0 before its first event
    histogram = Histogram("x_seconds", "Durations.", ("folder",), buckets=(1, 5),
                          registry=registry)
    for value in (0.5, 3, 3, 100):
        histogram.labels("main").observe(value)
    registry.register(Gauges())
    text = generate_latest(registry).decode()
    families = parse(text)
    assert families["x_events"].type == "counter"
    assert families["x_events"].documentation == "Events.\nSecond line with a \\ backslash."
    values = {s.labels["path"]: s.value for s in families["x_events"].samples}
    assert values == {awkward: 3.0, "idle": 0.0}
    samples = {(s.name, s.labels.get("le")): s.value for s in families["x_seconds"].samples}
    assert samples[("x_seconds_bucket", "1")] == 1  # cumulative buckets
    assert samples[("x_seconds_bucket", "5")] == 3
    assert samples[("x_seconds_bucket", "+Inf")] == 4
    assert samples[("x_seconds_count", None)] == 4
    assert samples[("x_seconds_sum", None)] == 106.5
    assert {s.labels["server"]: s.value for s in families["x_up"].samples} == {"gpu1": 1,
                                                                                "gpu2": 0}
    assert families["x_healthy"].samples[0].value == 1
    assert "# TYPE x_events_total counter" in text  # the 0.0.4 format names counters in full


def test_job_metrics_count_outcomes_and_times():
    metrics = JobMetrics()
    metrics.finished("main", "done", None, seen_at=100.0, submitted_at=101.5, now=104.0)
    metrics.finished("main", "failed", "invalid", seen_at=100.0, submitted_at=None, now=100.2)
    metrics.finished("main", "failed", "timeout", seen_at=100.0, submitted_at=102.0, now=900.0)
    metrics.finished("main", "left", None, seen_at=100.0, submitted_at=101.0, now=102.0)
    servers = [{"name": "gpu1", "up": True, "in_flight": 1, "queue_remaining": 3},
               {"name": "gpu2", "up": False, "in_flight": 0, "queue_remaining": None}]
    families = parse(metrics.render(
        folders={"main": (4, 1), "idle": (0, 0)}, servers=servers,
        server_errors={("gpu2", "submit", "unreachable"): 2}, healthy=True,
        webhooks=({"ok": 3, "failed": 5, "gave_up": 1}, 4)))
    hooks = {s.labels["result"]: s.value for s in families["hotfolder_webhook_deliveries"].samples}
    assert hooks == {"ok": 3, "failed": 5, "gave_up": 1}
    assert families["hotfolder_webhook_pending"].samples[0].value == 4
    jobs = {(s.labels["folder"], s.labels["outcome"]): s.value
            for s in families["hotfolder_jobs"].samples}
    assert jobs == {("main", "done"): 1, ("main", "failed"): 2, ("idle", "done"): 0,
                    ("idle", "failed"): 0}
    kinds = {s.labels["kind"]: s.value for s in families["hotfolder_job_failures"].samples}
    assert kinds == {"invalid": 1, "timeout": 1}
    duration = {s.name: s.value for s in families["hotfolder_job_duration_seconds"].samples
                if "le" not in s.labels}
    assert duration == {"hotfolder_job_duration_seconds_sum": 2.5,
                        "hotfolder_job_duration_seconds_count": 1}
    wait = {s.name: s.value for s in families["hotfolder_job_queue_wait_seconds"].samples
            if "le" not in s.labels}
    assert wait["hotfolder_job_queue_wait_seconds_count"] == 2  # the two submitted
    assert {s.labels["folder"]: s.value for s in families["hotfolder_jobs_waiting"].samples} \
        == {"main": 4, "idle": 0}
    assert {s.labels["server"]: s.value for s in families["hotfolder_server_up"].samples} \
        == {"gpu1": 1, "gpu2": 0}
    assert [s.labels["server"] for s in
            families["hotfolder_server_queue_remaining"].samples] == ["gpu1"]
    errors = families["hotfolder_server_errors"].samples
    assert [(s.labels, s.value) for s in errors] == [
        ({"server": "gpu2", "operation": "submit", "kind": "unreachable"}, 2)]


FAMILIES = ["hotfolder_jobs", "hotfolder_job_failures", "hotfolder_job_duration_seconds",
            "hotfolder_job_queue_wait_seconds", "hotfolder_jobs_waiting",
            "hotfolder_jobs_in_flight", "hotfolder_server_up", "hotfolder_server_in_flight",
            "hotfolder_server_queue_remaining", "hotfolder_server_errors",
            "hotfolder_model_switches", "hotfolder_healthy",
            "hotfolder_webhook_deliveries", "hotfolder_webhook_pending"]


def test_each_job_metrics_has_its_own_series_and_no_others():
    first, second = JobMetrics(), JobMetrics()
    first.finished("main", "done", None, seen_at=1.0, submitted_at=2.0, now=3.0)
    first.finished("main", "failed", "timeout", seen_at=1.0, submitted_at=2.0, now=3.0)
    state = {"folders": {"main": (0, 0)}, "servers": [], "server_errors": {}, "healthy": True}
    text = first.render(**state)
    ones, twos = parse(text), parse(second.render(**state))
    assert list(ones) == list(twos) == FAMILIES  # no _created, nothing of the process
    assert "_created" not in text
    assert {s.value for s in ones["hotfolder_jobs"].samples} == {1}
    assert {s.value for s in twos["hotfolder_jobs"].samples} == {0}
    assert twos["hotfolder_job_duration_seconds"].samples == []
    assert REGISTRY.get_sample_value(
        "hotfolder_jobs_total", {"folder": "main", "outcome": "done"}) is None


def test_concurrent_scrapes_each_show_their_own_state():
    metrics = JobMetrics()

    def scrape(n: int) -> list[tuple[str, float]]:
        answers = []
        for _ in range(25):
            families = parse(metrics.render(
                folders={f"f{n}": (n, 0)}, servers=[], server_errors={}, healthy=True))
            answers += [(s.labels["folder"], s.value)
                        for s in families["hotfolder_jobs_waiting"].samples]
        return answers

    with ThreadPoolExecutor(4) as pool:
        for n, answers in enumerate(pool.map(scrape, range(8))):
            assert set(answers) == {(f"f{n}", n)}


def test_error_kinds():
    assert error_kind(ServerError("refused")) == "unreachable"
    assert error_kind(ServerError("x", status=503)) == "http_5xx"
    assert error_kind(ServerError("x", status=401)) == "unauthorised"
    assert error_kind(ServerError("x", status=403)) == "forbidden"
    assert error_kind(JobError("bad graph", kind="rejected")) == "rejected"
    assert error_kind(JobError("gone", kind="download", details={"status": 404})) == "http_404"
    assert error_kind(JobError("too big", kind="download")) == "too_large"
