"""Webhooks without a daemon: signatures against the reference verifier, the config, the events
queued on disk, one command run."""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from structlog.testing import capture_logs

from hotfolder.config.load import parse_config
from hotfolder.config.webhooks import WebhookConfig, signing_key
from hotfolder.daemon import hookcall
from hotfolder.daemon.status import folder_counts
from hotfolder.errors import ConfigError
from hotfolder.job import events
from hotfolder.job.claim import Orphans

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, webhooks: object) -> dict:
    shutil.copy(ROOT / "config/workflows/sdxl_txt2img.json", tmp_path / "t.json")
    return {"workflows": {"sdxl": "t.json"}, "webhooks": webhooks,
            "folders": [{"name": "main", "root": "hot", "workflow": "sdxl"}]}


def _problems(tmp_path: Path, webhooks: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(tmp_path, webhooks), base=tmp_path)
    return "\n".join(info.value.problems)


@pytest.mark.parametrize("secret", ["whsec_" + base64.b64encode(b"\x00\xffkey-bytes").decode(),
                                    "a plain passphrase"])
def test_signature_verifies_with_the_standardwebhooks_library(secret):
    key = signing_key(secret)
    body = json.dumps({"type": "job.done", "data": {"job": "fox.txt", "é": 1}}).encode()
    headers = hookcall.headers(key, "msg_abc_done", body)
    # the library decodes a str secret as whsec_/base64; a plain secret is its UTF-8 bytes
    verifier = Webhook(secret if secret.startswith("whsec_") else secret.encode())
    assert verifier.verify(body, headers) == json.loads(body)
    assert headers["Content-Type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, {**headers, "webhook-id": "msg_other"})


def test_whsec_secrets_are_base64_after_the_prefix():
    assert signing_key("whsec_" + base64.b64encode(b"\x01\x02\x03").decode()) == b"\x01\x02\x03"
    assert signing_key("whsec-not-the-prefix") == b"whsec-not-the-prefix"
    with pytest.raises(ValueError, match="base64"):
        signing_key("whsec_not base64!")


def test_a_webhook_entry_parses_with_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "whsec_" + base64.b64encode(b"k" * 24).decode())
    config = parse_config(_config(tmp_path, [
        {"url": "https://user:pw-in-url@example.invalid/hook?token=t0ken",
         "secret": {"env": "HOOK_SECRET"}},
        {"exec": [sys.executable, "notify.py"], "events": ["job.failed"], "folders": ["main"],
         "give_up_hours": 1}]), base=tmp_path)
    url, cmd = config.webhooks
    assert (url.key, url.events, url.folders, url.timeout) == (b"k" * 24, events_all(), (), 10)
    assert url.give_up_hours == 24 and url.wants("main", "job.done")
    assert url.shown == "https://example.invalid/hook?***"  # no user, password or query
    assert "k" * 24 not in repr(url)
    assert (cmd.exec, cmd.timeout, cmd.give_up_hours) == ((sys.executable, "notify.py"), 60, 1)
    assert cmd.wants("main", "job.failed") and not cmd.wants("main", "job.done")
    assert not cmd.wants("other", "job.failed")


def events_all() -> tuple[str, ...]:
    return ("job.done", "job.failed")


def test_webhook_config_errors_name_the_key_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "s3cret-value")
    monkeypatch.delenv("NOT_SET", raising=False)
    text = _problems(tmp_path, [
        {"url": "ftp://example.invalid/x", "secret": {"env": "HOOK_SECRET"}},
        {"url": "http://example.invalid/a"},
        {"url": "http://example.invalid/b", "secret": {"env": "NOT_SET"}},
        {"url": "http://example.invalid/c", "secret": "plain text in the config"},
        {"url": "http://example.invalid/d", "secret": {"env": "HOOK_SECRET"}, "colour": 1,
         "events": ["job.started"], "folders": ["nope"], "timeout": "soon"},
        {"exec": "notify.sh --all"},
        {"exec": ["notify"], "secret": {"env": "HOOK_SECRET"}},
        {"secret": {"env": "HOOK_SECRET"}},
        {"url": "http://example.invalid/e", "secret": {"env": "HOOK_SECRET"},
         "max_pending": 0, "backoff_initial": -1},
        "http://example.invalid/f",
    ])
    assert "webhooks[0].url: expected an http:// or https:// URL, got 'ftp:" in text
    assert "webhooks[1].secret: expected a secret to sign with" in text
    assert "webhooks[2].secret: the environment variable NOT_SET is not set" in text
    assert "webhooks[3].secret: expected one of {env: NAME}" in text
    assert "webhooks[4].colour: unknown key" in text
    assert "webhooks[4].events: unknown events job.started" in text
    assert "webhooks[4].folders: unknown folders nope (known: main)" in text
    assert "webhooks[4].timeout: expected a number" in text
    assert "webhooks[5].exec: expected a command as a list of arguments" in text
    assert "webhooks[6].secret: unknown key" in text
    assert "webhooks[7].url: expected url" in text
    assert "webhooks[8].max_pending: must be at least 1" in text
    assert "webhooks[8].backoff_initial: must be at least" in text
    assert "webhooks[9]: expected a mapping" in text
    assert _problems(tmp_path, {"url": "x"}).startswith("webhooks: expected a list")
    bad = "whsec_???"
    monkeypatch.setenv("HOOK_SECRET", bad)
    assert "webhooks[0].secret: a whsec_ secret must be base64" in _problems(
        tmp_path, [{"url": "http://example.invalid/", "secret": {"env": "HOOK_SECRET"}}])


def _folder(tmp_path: Path):
    config = parse_config(_config(tmp_path, None), base=tmp_path)
    folder = config.folders[0]
    for path in folder.all_dirs():
        path.mkdir(parents=True, exist_ok=True)
    return folder


def test_events_are_queued_per_destination_with_a_stable_id_and_body(tmp_path):
    folder = _folder(tmp_path)
    hooks = (WebhookConfig(url="http://127.0.0.1:1/a", key=b"k"),
             WebhookConfig(url="http://127.0.0.1:1/b", key=b"k", events=("job.failed",)),
             WebhookConfig(exec=("true",), folders=("elsewhere",)))
    (folder.outbox / "fox_00001.png").write_bytes(b"x" * 7)
    data = {"job": "fox.txt", "folder": "main", "status": "done",
            **events.outputs(folder.outbox, [folder.outbox / "fox_00001.png"]),
            "sidecar": {"prompt": "a fox"}}
    assert events.record(folder, hooks, "job.done", "0123abcd", data) == 1
    assert events.record(folder, hooks, "job.done", "0123abcd", data) == 1  # a replay
    queued = events.pending(folder)
    assert [q.event_id for q in queued] == ["msg_0123abcd_done"]
    assert queued[0].ident == hooks[0].ident
    item = events.read_item(queued[0].path)
    assert item is not None
    body = json.loads(item["body"])
    assert set(body) == {"type", "timestamp", "data"} and body["type"] == "job.done"
    assert body["timestamp"].endswith("Z")
    assert body["data"]["outputs"] == [{"path": "fox_00001.png", "bytes": 7}]
    assert body["data"]["sidecar"] == {"prompt": "a fox"}
    assert events.record(folder, hooks, "job.failed", "0123abcd", {"job": "fox.txt"}) == 2
    assert len(events.pending(folder)) == 3
    assert all(n.startswith(".") for n in {p.name for p in folder.processing.iterdir()})
    # the queue is not a job: not counted, not adopted as an orphan
    assert folder_counts(folder)["running"] == 0
    assert Orphans(120).scan(folder, set(), at_start=True) == []


def test_the_queue_is_bounded_per_destination_and_says_so(tmp_path):
    folder = _folder(tmp_path)
    hook = WebhookConfig(url="http://127.0.0.1:1/", key=b"k", max_pending=2)
    with capture_logs() as logs:
        written = [events.record(folder, [hook], "job.done", f"job{i}", {"job": f"{i}.txt"})
                   for i in range(3)]
    assert written == [1, 1, 0]
    assert [e["event"] for e in logs] == ["webhook.queue_full"]
    assert logs[0]["max_pending"] == 2


def test_a_command_gets_the_event_on_stdin_and_in_its_environment(tmp_path):
    out = tmp_path / "got.json"
    script = ("import json, os, sys; body = sys.stdin.read(); open(sys.argv[1], 'w').write("
              "json.dumps({'stdin': body, 'env': {k: v for k, v in os.environ.items() "
              "if k.startswith('HOTFOLDER_')}}))")
    hook = WebhookConfig(exec=(sys.executable, "-c", script, str(out)), timeout=30)
    item = {"id": "msg_x_done", "type": "job.done", "job": "fox.txt", "folder": "main",
            "body": '{"type":"job.done"}'}
    assert hookcall.run(hook, item, lambda: False).ok
    got = json.loads(out.read_text())
    assert got["stdin"] == item["body"]
    assert got["env"] == {"HOTFOLDER_EVENT_TYPE": "job.done", "HOTFOLDER_EVENT_ID": "msg_x_done",
                          "HOTFOLDER_JOB": "fox.txt", "HOTFOLDER_FOLDER": "main",
                          "HOTFOLDER_EVENT": item["body"]}
    failing = WebhookConfig(exec=(sys.executable, "-c", "import sys; sys.exit('no luck')"))
    result = hookcall.run(failing, item, lambda: False)
    assert (result.ok, result.status, result.error) == (False, 1, "exit 1: no luck")
    stuck = WebhookConfig(exec=(sys.executable, "-c", "import time; time.sleep(600)"))
    result = hookcall.run(stuck, item, lambda: True)  # the daemon stops: killed at once
    assert not result.ok and result.error == "killed: the daemon is stopping"


def test_the_shipped_configs_commented_example_is_a_valid_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTFOLDER_WEBHOOK_SECRET", "any text will do")
    text = (ROOT / "config/hotfolder.yaml").read_text()
    lines = text[text.index("# webhooks:"):text.index("\nlog:")].strip().splitlines()
    example = yaml.safe_load("\n".join(line[2:] for line in lines))
    data = _config(tmp_path, example["webhooks"])
    data["folders"][0]["name"] = "sdxl"
    url, cmd = parse_config(data, base=tmp_path).webhooks
    assert url.folders == ("sdxl",) and cmd.exec[0] == "/usr/local/bin/on-job-end"
