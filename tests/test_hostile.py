"""Untrusted drops: every hostile file fails clearly (or is left alone), nothing escapes.

One daemon takes the whole corpus; files that would be huge are made by the test (a sparse
1 GiB file, 10,000-level nesting). Each case names the words its error file must contain.
"""

from __future__ import annotations

import json
import os

import pytest
from harness import ROOT, HotFolder, make_config, wait_for

from hotfolder.errors import JobError
from hotfolder.job.deliver import check_output_names

SDXL = json.loads((ROOT / "config/workflows/sdxl_txt2img.json").read_text())


def _raw(**changes: object) -> bytes:
    workflow = json.loads(json.dumps(SDXL))
    for node, inputs in changes.items():
        workflow[node.lstrip("n")]["inputs"].update(inputs)  # type: ignore[arg-type]
    return json.dumps(workflow).encode()


def _laughs() -> bytes:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    lines.append("prompt: *i")
    return "\n".join(lines).encode()


# name -> (content, words the error must contain)
FAILING: dict[str, tuple[bytes, str]] = {
    "empty.txt": (b"", "empty"),
    "blank.txt": (b"  \n\t \n", "empty"),
    "garbage.txt": (bytes(range(128, 256)) * 4, "not UTF-8"),
    "binary.txt": (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "NUL"),
    "latin1.txt": ("café crème".encode("latin-1"), "not UTF-8"),
    "long-prompt.txt": (b"x" * 25_000, "limits.max_prompt_chars"),
    "syntax.json": (b'{"prompt": "x",', "invalid JSON"),
    "top-list.json": (b"[1, 2, 3]", "must be a mapping"),
    "top-string.json": (b'"a fox"', "must be a mapping"),
    "deep-list.json": (b"[" * 10_000 + b"]" * 10_000, "invalid JSON"),
    "deep-object.json": (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "invalid JSON"),
    "huge-number.json": (b'{"prompt": "x", "steps": ' + b"9" * 5000 + b"}", "invalid JSON"),
    "nan.json": (b'{"prompt": "x", "cfg": NaN}', "NaN"),
    "infinity.json": (b'{"prompt": "x", "cfg": -Infinity}', "Infinity"),
    "duplicate-keys.json": (b'{"prompt": "a", "prompt": "b"}', "appears twice"),
    "wrong-types.json": (json.dumps({"prompt": 1, "steps": "x", "cfg": [], "width": True,
                                     "seed": -5, "denoise": "a", "batch_size": 1.5}).encode(),
                         "prompt: expected a string"),
    "unknown-field.json": (b'{"prompt": "x", "colour": "red"}', "unknown field 'colour'"),
    "negative-steps.json": (b'{"prompt": "x", "steps": -3}', "at least 1"),
    "absurd-size.json": (b'{"prompt": "x", "width": 100000}', "limits.max_side"),
    "absurd-batch.json": (b'{"prompt": "x", "batch_size": 100000}', "limits.max_batch"),
    "absurd-steps.json": (b'{"prompt": "x", "steps": 1000000}', "limits.max_steps"),
    "python-tag.yaml": (b"prompt: !!python/object/apply:os.system ['touch pwned']\n",
                        "YAML is not valid"),
    "billion-laughs.yaml": (_laughs(), "aliases (*name) unfold it to more than"),
    "two-documents.yaml": (b"prompt: a\n---\nprompt: b\n", "YAML is not valid"),
    "not-nodes.json": (b'{"1": {"class_type": "SaveImage"}, "2": "x"}', "unknown field"),
    "missing-link.json": (_raw(n8={"samples": ["99", 0]}), "linked to node 99"),
    "denied-class.json": (json.dumps({**SDXL, "10": {"class_type": "SaveAnimatedWEBP",
                                                     "inputs": {"images": ["8", 0]}}}).encode(),
                          "not allowed in this folder"),
    "set-not-allowed.json": (b'{"prompt": "x", "set": {"Load Checkpoint.ckpt_name": "y"}}',
                             "does not allow changing CheckpointLoaderSimple.ckpt_name"),
    "prefix-escape.json": (b'{"prompt": "x", "set": {"Save Image.filename_prefix": '
                           b'"../../escape"}}', "does not allow changing"),
    "template-escape.json": (b'{"prompt": "x", "workflow": "../../../etc/passwd"}',
                             "unknown workflow template"),
    "gui.json": (b'{"nodes": [{"id": 1}], "links": [], "version": 0.4}', "malformed"),
}
FINE = {"utf16.txt": "a fox in UTF-16".encode("utf-16"),
        "allowed-set.json": b'{"prompt": "x", "set": {"KSampler.steps": 3}}'}


@pytest.fixture
def corpus_hot(tmp_path, sim):
    config = make_config(tmp_path, sim.url, deny_classes=["SaveAnimated*"],
                         allow_set=["KSampler.*", "*.text"])
    config["folders"].append({"name": "prompts-only", "root": "hot2", "workflow": "sdxl",
                              "settle_seconds": 0.2, "accept_workflows": False})
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    yield hot
    hot.stop()


def test_hostile_corpus(corpus_hot, tmp_path):
    hot = corpus_hot
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("do not touch")
    hot.start()
    inbox = hot.dir("inbox")
    for name, (content, _) in FAILING.items():
        hot.drop(name, content, stale=True)
    for name, content in FINE.items():
        hot.drop(name, content)
    with open(inbox / "one-gib.txt", "wb") as fh:  # sparse: size is checked before reading
        fh.truncate(1 << 30)
    os.symlink(secret, inbox / "link.txt")
    os.link(secret, inbox / "hardlink.txt")
    os.mkfifo(inbox / "pipe.txt")  # opening it for reading would hang the daemon
    (inbox / "line\nbreak.txt").write_text("a name with a newline")
    (inbox / "bell\x07.txt").write_text("a name with a control character")
    (hot.base / "hot2" / "inbox").mkdir(parents=True, exist_ok=True)
    (hot.base / "hot2" / "inbox" / "raw.json").write_bytes(_raw())

    for name, (_, words) in FAILING.items():
        assert hot.finished(name) == "failed", name
        assert words in hot.error(name)["error"], (name, hot.error(name)["error"])
    assert hot.finished("one-gib.txt") == "failed"
    assert "limits.max_job_bytes" in hot.error("one-gib.txt")["error"]
    for name in FINE:
        assert hot.finished(name) == "done", (name, (hot.dir("failed") / name).exists())
    assert hot.sidecar("utf16")["prompt"] == "a fox in UTF-16"
    wait_for(lambda: (hot.base / "hot2" / "failed" / "raw.json").exists(), what="raw refused")
    refused = json.loads((hot.base / "hot2" / "failed" / "raw.error.json").read_text())
    assert "does not accept whole workflows" in refused["error"]

    # left alone: never followed, opened or moved, and said so once in the log
    for name in ("link.txt", "hardlink.txt", "pipe.txt", "line\nbreak.txt", "bell\x07.txt"):
        assert os.path.lexists(inbox / name), name
    assert secret.read_text() == "do not touch" and os.path.islink(inbox / "link.txt")
    log = hot.log()
    assert "symbolic link" in log and "hard link" in log and "not a regular file" in log
    assert "control characters" in log
    assert hot.proc.poll() is None, "the daemon died"

    # nothing written outside the hot folders' own directories
    allowed = {"hot", "hot2", "outside", "workflows", "hotfolder.yaml", "daemon.log"}
    assert {p.name for p in tmp_path.iterdir()} <= allowed
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


@pytest.mark.parametrize("output", [
    {"filename": "../../etc/passwd", "subfolder": ""},
    {"filename": "x.png", "subfolder": "../.."},
    {"filename": "/etc/passwd", "subfolder": ""},
    {"filename": "x.png", "subfolder": "/tmp"},
    {"filename": "x\x00.png", "subfolder": ""},
    {"filename": "x.png", "subfolder": "C:\\Windows"},
    {"filename": "..\\..\\boot.ini", "subfolder": ""},
])
def test_unsafe_output_names_from_the_server_are_refused(output):
    with pytest.raises(JobError, match="unsafe"):
        check_output_names([{**output, "type": "output", "node": "9", "kind": "images"}])


def test_safe_output_names_pass():
    check_output_names([{"filename": "fox_00001_.png", "subfolder": "hotfolder/a b",
                         "type": "output"}])


def test_view_answer_over_the_cap_is_cut_off_and_fails_the_job(tmp_path, sim):
    config = make_config(tmp_path, sim.url)
    config["comfy"]["max_output_bytes"] = 100  # every PNG is bigger than this
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    try:
        hot.start()
        hot.drop("big.txt", "an output bigger than the cap")
        assert hot.finished("big.txt") == "failed"
        assert "comfy.max_output_bytes" in hot.error("big.txt")["error"]
        assert not [p for p in hot.dir("outbox").iterdir()]
    finally:
        hot.stop()


def test_a_prompt_over_the_size_limit_is_not_sent(hot):
    hot.config["folders"][0]["limits"] = {"max_prompt_bytes": 500}  # SDXL's is bigger
    hot.start()
    hot.drop("big-prompt.txt", "a fox")
    assert hot.finished("big-prompt.txt") == "failed"
    assert "limits.max_prompt_bytes" in hot.error("big-prompt.txt")["error"]


def test_a_job_named_like_an_error_file_fails_plainly_and_can_be_retried(hot):
    from hotfolder.config.load import load_config
    from hotfolder.daemon.recent import recent_failed
    from hotfolder.web.actions import retry_failed

    hot.start()
    hot.drop("x.error.json", "{", stale=True)
    assert hot.finished("x.error.json") == "failed"
    failed = sorted(p.name for p in hot.dir("failed").iterdir())
    assert failed == ["x.error.error.json", "x.error.json"]
    folder = load_config(hot.config_path).folders[0]
    listed = recent_failed(folder, 10)
    assert len(listed) == 1, listed  # no phantom entry made of the job file itself
    assert listed[0]["file"] == "x.error.json" and "invalid JSON" in listed[0]["error"]
    hot.stop()
    retry_failed(folder, "x.error.json")
    assert (hot.dir("inbox") / "x.error.json").exists()
    assert not (hot.dir("failed") / "x.error.error.json").exists()


def test_names_the_daemon_makes_are_nfc(hot):
    import unicodedata

    hot.start()
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    hot.drop(f"{nfc}.txt", "typed on Windows")
    assert hot.finished(f"{nfc}.txt") == "done"
    hot.drop(f"{nfd}.txt", "typed on a Mac")
    assert hot.finished(f"{nfd}.txt") == "done"
    made = sorted(p.name for p in hot.dir("outbox").iterdir())
    assert made == sorted([f"{nfc}.json", f"{nfc}_00001.png", f"{nfc}-2.json",
                           f"{nfc}-2_00001.png"])
