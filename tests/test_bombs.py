"""Small inputs with huge costs: each is a clear job error naming the limit, found before the
work is done, within a memory bound measured here (tracemalloc's peak while it is parsed)."""

from __future__ import annotations

import io
import itertools
import json
import logging
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from hotfolder.config.fields import Limits
from hotfolder.credentials import register
from hotfolder.errors import JobError
from hotfolder.job.parse import parse_bytes
from hotfolder.logs import configure_logging

MEMORY_BOUND = 64 * 1024 * 1024  # bytes a hostile file may make the daemon allocate


def _laughs(levels: int, key: str = "count") -> bytes:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghijklmnop"
    for prev, name in itertools.pairwise(names[:levels]):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    lines.append(f"{key}: *{names[levels - 1]}")
    return "\n".join(lines).encode()


def _fan_out(levels: int = 10, width: int = 10) -> bytes:
    """Ten nested subgraphs of ten instances each: 7 KB that unfold to 10^11 nodes."""
    subgraphs = [{"id": f"sg{level}", "name": f"level {level}", "links": [],
                  "nodes": [{"id": i, "type": f"sg{level + 1}" if level + 1 < levels
                             else "KSampler"} for i in range(width)]}
                 for level in range(levels)]
    return json.dumps({"nodes": [{"id": i, "type": "sg0"} for i in range(width)], "links": [],
                       "version": 0.4, "definitions": {"subgraphs": subgraphs}}).encode()


def _nested(depth: int) -> bytes:
    subgraphs = [{"id": f"sg{d}", "name": f"level {d}", "links": [],
                  "nodes": [{"id": 1, "type": f"sg{d + 1}" if d + 1 < depth else "KSampler"}]}
                 for d in range(depth)]
    return json.dumps({"nodes": [{"id": 1, "type": "sg0"}], "links": [], "version": 0.4,
                       "definitions": {"subgraphs": subgraphs}}).encode()


def _yaml_api_workflow() -> bytes:
    """About 1 KB of YAML that unfolds into a multi-megabyte API prompt."""
    lines = ['t0: &t0 "' + "x" * 100 + '"']
    for i in range(1, 12):
        lines.append(f"t{i}: &t{i} [*t{i - 1}, *t{i - 1}, *t{i - 1}, *t{i - 1}]")
    lines.append('"1": {class_type: CLIPTextEncode, inputs: {text: *t11}}')
    return "\n".join(lines).encode()


CASES: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "alias bomb in count": ("bomb.yaml", lambda: _laughs(9), "unfold it to more than 100000"),
    "small alias bomb": ("small.yaml", lambda: _laughs(7, "prompt"),
                         "unfold it to more than 100000"),
    "YAML API workflow": ("wf.yaml", _yaml_api_workflow, "unfold it to more than 100000"),
    "alias containing itself": ("self.yaml", lambda: b"a: &a [*a]\nprompt: x\n",
                                "contains itself"),
    "base-60 number": ("b60.yaml", lambda: b"steps: " + b"1:" * 400_000 + b"1\n",
                       "characters (at most 100)"),
    "short base-60 number": ("b60s.yaml", lambda: b"steps: 1:30\n", "base-60"),
    "number of 5000 digits (YAML)": ("big.yaml", lambda: b"steps: " + b"9" * 5000,
                                     "characters (at most 100)"),
    "number of 5000 digits (JSON)": ("big.json", lambda: b'{"steps": ' + b"9" * 5000 + b"}",
                                     "more than 4300 digits"),
    "number of 5000 digits (JSONL)": ("big.jsonl",
                                      lambda: b'{"steps": ' + b"9" * 5000 + b"}\n",
                                      "more than 4300 digits"),
    "CSV cell over 128 KiB": ("big.csv", lambda: b"prompt\n" + b"x" * 140_000 + b"\n",
                              "a cell is longer than 131072 characters"),
    "deeply nested JSONL": ("deep.jsonl", lambda: b"[" * 100_000 + b"]" * 100_000 + b"\n",
                            "nested too deeply"),
    "GUI subgraph fan-out": ("fan.json", _fan_out, "limits.max_nodes"),
    "GUI subgraphs nested deep": ("deep.json", lambda: _nested(20), "limits.max_depth"),
    "API workflow of 3000 nodes": ("many.json", lambda: json.dumps({
        str(i): {"class_type": "Note", "inputs": {}} for i in range(3000)}).encode(),
        "limits.max_nodes"),
    "a huge unknown key": ("key.json", lambda: json.dumps({"k" * 500_000: 1}).encode(),
                           "unknown field"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bomb_is_a_clear_job_error_within_a_memory_bound(case):
    name, make, words = CASES[case]
    data = make()
    limits = Limits(max_job_bytes=8 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(JobError) as caught:
            parse_bytes(name, data, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = caught.value.message
    assert words in message, message
    assert len(message) < 1000, f"{len(message)} characters of message"
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.0f} MiB"
    assert "internal error" not in message


def test_a_yaml_date_stays_text_where_it_is_not_refused():
    spec = parse_bytes("d.yaml", b"prompt: x\nset: {KSampler.scheduler: 2024-01-01}\n")
    assert spec.sets == {"KSampler.scheduler": "2024-01-01"}
    with pytest.raises(JobError, match="timestamp values are not taken"):
        parse_bytes("d.yaml", b"prompt: !!timestamp 2024-01-01\n")


def test_tracebacks_in_the_log_carry_no_locals_and_no_secrets(restore_logging):
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    register("s3cret-token-value")
    big = "a local the log must not print " * 100  # noqa: F841 - shows up only as a local

    def fail(value: Any) -> None:
        raise RuntimeError(f"the server said s3cret-token-value was wrong ({value})")

    try:
        fail("x")
    except RuntimeError:
        structlog.get_logger().exception("job.internal_error")
    logging.getLogger().handlers[0].flush()
    line = stream.getvalue()
    assert "job.internal_error" in line and "RuntimeError" in line
    assert "s3cret-token-value" not in line
    assert "a local the log must not print" not in line


def test_every_bomb_fails_in_a_running_daemon_that_delivers_the_rest(hot):
    hot.config["folders"][0]["limits"] = {"max_job_bytes": 8 * 1024 * 1024}
    hot.start()
    names = {}
    for i, (case, (name, make, words)) in enumerate(CASES.items()):
        names[f"{i:02d}-{name}"] = (case, words)
        hot.drop(f"{i:02d}-{name}", make(), stale=True)
    for i in range(3):
        hot.drop(f"good{i}.txt", f"an ordinary prompt {i}")
    for name, (case, words) in names.items():
        assert hot.finished(name) == "failed", case
        error = hot.error(name)["error"]
        assert words in error and len(error) < 1000, (case, error[:300])
    for i in range(3):
        assert hot.finished(f"good{i}.txt") == "done"
    assert hot.proc.poll() is None
    assert len(hot.log()) < 2_000_000  # no value reprinted in full in the log
