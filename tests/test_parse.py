"""Job files into JobSpecs: each format, and the mistakes people make in them."""

from __future__ import annotations

import json

import pytest

from hotfolder.errors import JobError
from hotfolder.job.parse import parse_bytes


def test_txt_is_the_trimmed_prompt():
    spec = parse_bytes("fox.txt", b"  a red fox in snow\n\n")
    assert spec.kind == "prompt"
    assert spec.fields == {"prompt": "a red fox in snow"}


def test_txt_with_bom_is_fine():
    assert parse_bytes("a.txt", b"\xef\xbb\xbfhello").fields["prompt"] == "hello"


@pytest.mark.parametrize("body", [b"", b"   \n\t  "])
def test_empty_txt_fails(body):
    with pytest.raises(JobError, match="empty"):
        parse_bytes("a.txt", body)


def test_invalid_utf8_fails_clearly():
    with pytest.raises(JobError, match="not UTF-8"):
        parse_bytes("a.txt", b"caf\xe9")


def test_json_spec_fields_and_set():
    body = {"prompt": "p", "negative": "n", "seed": 7, "steps": 20, "cfg": 6.5, "width": 512,
            "height": 768, "batch_size": 2, "sampler": "euler", "scheduler": "karras",
            "denoise": 0.8, "workflow": "sdxl", "set": {"KSampler.steps": 30}}
    spec = parse_bytes("job.json", json.dumps(body).encode())
    assert spec.kind == "spec"
    assert spec.template == "sdxl"
    assert spec.sets == {"KSampler.steps": 30}
    assert spec.fields["seed"] == 7 and spec.fields["denoise"] == 0.8


def test_yaml_spec_with_random_seed():
    spec = parse_bytes("job.yaml", b"prompt: a cat\nseed: random\n")
    assert spec.fields == {"prompt": "a cat", "seed": "random"}


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(JobError, match=r"unknown field 'stepz' \(did you mean 'steps'\?\)"):
        parse_bytes("job.json", b'{"prompt": "x", "stepz": 3}')


@pytest.mark.parametrize(("body", "words"), [
    ('{"steps": "many"}', "steps: expected a whole number"),
    ('{"steps": true}', "steps: expected a whole number"),
    ('{"steps": 0}', "steps: must be at least 1"),
    ('{"seed": -1}', "seed: must be between"),
    ('{"seed": -1}', "for a random seed write seed: random"),
    ('{"seed": "lucky"}', "seed: expected a whole number or 'random'"),
    ('{"cfg": "7"}', "cfg: expected a number"),
    ('{"denoise": 2}', "denoise: must be between 0 and 1"),
    ('{"prompt": 5}', "prompt: expected a string"),
    ('{"set": ["KSampler.steps"]}', "set: expected a mapping"),
    ('{"set": {"steps": 3}}', "is not NODE.INPUT"),
    ('{"set": {"KSampler.steps": [1, 2]}}', "expected a text, number or true/false"),
    ('{"workflow": 3}', "workflow: expected a template name"),
])
def test_wrong_types_are_clear_errors(body, words):
    with pytest.raises(JobError) as info:
        parse_bytes("job.json", body.encode())
    assert words in info.value.message


@pytest.mark.parametrize(("body", "words"), [
    ("{", "invalid JSON at line 1"),
    ('{"a": 1, "a": 2}', "appears twice"),
    ('{"cfg": NaN}', "NaN is not a valid JSON number"),
    ("[1, 2]", "must be a mapping"),
    ('"text"', "must be a mapping"),
])
def test_bad_json(body, words):
    with pytest.raises(JobError) as info:
        parse_bytes("job.json", body.encode())
    assert words in info.value.message


def test_unsafe_yaml_tag_is_refused():
    with pytest.raises(JobError, match="the YAML is not valid at line 1, column 9: could not "
                                       "determine a constructor"):
        parse_bytes("job.yaml", b"prompt: !!python/object/apply:os.system ['true']\n")


@pytest.mark.parametrize(("body", "message"), [
    (b"prompt: a\nsteps: 4\nseed: a: b\n",
     "the YAML is not valid at line 3, column 8: mapping values are not allowed here"),
    (b"prompt: a\n---\nprompt: b\n",
     "the YAML is not valid at line 2, column 1: expected a single document in the stream but "
     "found another document"),
    (b'prompt: "a cat\n', "the YAML is not valid at line 2, column 1: found unexpected end of "
                           "stream (while scanning a quoted scalar)"),
])
def test_yaml_errors_are_one_line_with_line_and_column(body, message):
    with pytest.raises(JobError) as info:
        parse_bytes("job.yaml", body)
    assert info.value.message == message


@pytest.mark.parametrize("name", ["job.json", "job.yaml", "job.yml"])
@pytest.mark.parametrize("body", [b"", b" \n\t\n", b"\xef\xbb\xbf\n"])
def test_an_empty_job_file_says_it_is_empty(name, body):
    with pytest.raises(JobError) as info:
        parse_bytes(name, body)
    assert info.value.message == "the file is empty"


def test_api_workflow_is_recognised():
    wf = {"1": {"class_type": "EmptyImage", "inputs": {}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}
    spec = parse_bytes("wf.json", json.dumps(wf).encode())
    assert spec.kind == "workflow" and spec.workflow == wf


def test_gui_workflow_is_a_workflow_to_convert():
    gui = {"nodes": [{"id": 1, "type": "KSampler"}], "links": [], "version": 0.4}
    spec = parse_bytes("gui.json", json.dumps(gui).encode())
    assert spec.kind == "workflow" and spec.source_format == "gui" and spec.workflow == gui


def test_malformed_gui_workflow_fails_before_any_server_is_asked():
    gui = {"nodes": [{"id": 1}], "links": [], "version": 0.4}
    with pytest.raises(JobError, match=r"the GUI workflow is malformed: .*has no type") as info:
        parse_bytes("gui.json", json.dumps(gui).encode())
    assert info.value.kind == "invalid"
