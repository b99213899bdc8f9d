"""Batch files parsed into runs: expansion order, seeds, typing of CSV cells, and errors."""

from __future__ import annotations

import json

import pytest

from hotfolder.config.fields import Limits
from hotfolder.errors import JobError
from hotfolder.job.parse import parse_bytes


def runs(name: str, text: str, **kw):
    spec = parse_bytes(name, text.encode(), **kw)
    assert spec.kind == "batch"
    return [(dict(r.fields), dict(r.sets), r.seed_offset) for r in spec.runs]


def test_count_with_a_seed_counts_up_and_without_one_offsets_the_default():
    assert [f["seed"] for f, _, _ in runs("a.json", '{"prompt": "x", "count": 3, "seed": 5}')] \
        == [5, 6, 7]
    assert [o for *_, o in runs("a.json", '{"prompt": "x", "count": 3}')] == [0, 1, 2]
    wrapped = runs("a.json", json.dumps({"prompt": "x", "count": 2, "seed": 2**64 - 1}))
    assert [f["seed"] for f, _, _ in wrapped] == [2**64 - 1, 0]


def test_order_is_prompts_then_matrix_then_count():
    got = runs("a.json", json.dumps({"prompts": ["a", "b"], "count": 2, "seed": 1,
                                     "matrix": {"steps": [3, 4], "KSampler.cfg": [9]}}))
    assert [(f["prompt"], f["steps"], s["KSampler.cfg"], f["seed"]) for f, s, _ in got] == [
        ("a", 3, 9, 1), ("a", 3, 9, 2), ("a", 4, 9, 1), ("a", 4, 9, 2),
        ("b", 3, 9, 1), ("b", 3, 9, 2), ("b", 4, 9, 1), ("b", 4, 9, 2)]


@pytest.mark.parametrize(("text", "words"), [
    ('{"prompt": "x", "count": 0}', "count: expected a whole number"),
    ('{"prompt": "x", "count": true}', "count: expected a whole number"),
    ('{"prompts": []}', "prompts: expected a non-empty list"),
    ('{"prompts": ["a", 3]}', "prompts[1]: expected a string"),
    ('{"prompt": "a", "prompts": ["b"]}', "both `prompt` and `prompts`"),
    ('{"prompt": "x", "matrix": {"steps": []}}', "matrix.steps: expected a non-empty list"),
    ('{"prompt": "x", "matrix": {"steps": [3, 0]}}', "matrix.steps[1]: must be at least 1"),
    ('{"prompt": "x", "matrix": {"colour": [1]}}', "neither a job field"),
    ('{"prompt": "x", "count": 2, "stepz": 3}', "unknown field 'stepz'"),
    ('{"prompt": "x", "count": 5000}', "5000 runs; this folder allows at most 1000"),
])
def test_spec_errors_say_what_to_change(text, words):
    with pytest.raises(JobError) as caught:
        parse_bytes("a.json", text.encode())
    assert words in caught.value.message


def test_the_cap_is_checked_before_expanding():
    with pytest.raises(JobError) as caught:
        parse_bytes("a.json", json.dumps({"prompt": "x", "count": 10**12,
                                          "matrix": {"steps": [1, 2]}}).encode(),
                    Limits(max_runs=10))
    assert caught.value.kind == "too_large" and caught.value.details["runs"] == 2 * 10**12


def test_csv_cells_are_typed_by_field_and_empty_cells_left_out():
    got = runs("a.csv", "prompt,steps,cfg,seed,Node.flag,Node.name,Node.f\n"
                        "a,3,6.5,random,true,x,1.5\n"
                        "b,,7,,,,\n")
    assert got[0][:2] == ({"prompt": "a", "steps": 3, "cfg": 6.5, "seed": "random"},
                          {"Node.flag": True, "Node.name": "x", "Node.f": 1.5})
    assert got[1][:2] == ({"prompt": "b", "cfg": 7.0}, {})


@pytest.mark.parametrize(("text", "words"), [
    ("", "the CSV file is empty"),
    ("prompt,colour\na,red\n", "'colour' is neither a job field"),
    ("prompt,prompt\na,b\n", "a column name appears twice"),
    ("prompt,steps\na,3,9\n", "CSV line 2: 3 cells but 2 columns"),
    ("prompt,steps\na,three\n", "CSV line 2: the job spec is invalid: steps: expected a whole"),
])
def test_csv_errors_name_the_line(text, words):
    with pytest.raises(JobError) as caught:
        parse_bytes("a.csv", text.encode())
    assert words in caught.value.message


def test_jsonl_and_txt_lines():
    assert [f["prompt"] for f, _, _ in runs("a.jsonl", '{"prompt": "a"}\n\n{"prompt": "b"}')] \
        == ["a", "b"]
    with pytest.raises(JobError, match="JSONL line 2: not valid JSON"):
        parse_bytes("a.jsonl", b'{"prompt": "a"}\n{nope\n')
    with pytest.raises(JobError, match="JSONL line 1: count, prompts and matrix"):
        parse_bytes("a.jsonl", b'{"prompt": "a", "count": 2}\n')
    assert [f["prompt"] for f, _, _ in runs("a.txt", "one\n# two\n\n three \n",
                                            txt_mode="lines")] == ["one", "three"]
    assert parse_bytes("a.txt", b"one\ntwo\n").kind == "prompt"  # whole file by default
