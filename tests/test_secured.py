"""ComfyUI behind TLS and an authenticating proxy; secrets never printed."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import pytest
from harness import HotFolder, make_config, wait_for
from proxy import Proxy, make_ca_and_cert

from hotfolder.config.load import parse_config
from hotfolder.errors import ConfigError

TOKEN = "tok-3f9a7c1e5d"  # a value no other text contains, to search every output for
PASSWORD = "pw-b81d44e2c9"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_ca_and_cert(tmp_path_factory.mktemp("tls"))


def _hot(tmp_path, url: str, **server: object) -> HotFolder:
    config = make_config(tmp_path, url)
    config["servers"] = [{"url": url, "name": "proxied", **server}]
    return HotFolder(base=tmp_path, server_url=url, config=config)


def _run_one(hot: HotFolder, name: str = "fox.txt") -> str:
    hot.start()
    hot.drop(name, "a fox behind a proxy")
    return hot.finished(name)


def test_tls_with_a_custom_ca_bundle_over_http_and_websocket(tmp_path, sim, certs):
    ca, cert, key = certs
    proxy = Proxy(sim.port, cert=(cert, key))
    hot = _hot(tmp_path, proxy.url, ca_bundle=str(ca))
    try:
        assert _run_one(hot) == "done"
        assert "server.websocket_unavailable" not in hot.log()  # wss:// worked too
        assert sim.stats()["websockets"] >= 1
    finally:
        hot.stop()
        proxy.close()


def test_tls_without_the_ca_waits_and_says_why(tmp_path, sim, certs):
    _, cert, key = certs
    proxy = Proxy(sim.port, cert=(cert, key))
    hot = _hot(tmp_path, proxy.url)
    try:
        hot.start()
        hot.drop("fox.txt", "never sent: the certificate is not trusted")
        wait_for(lambda: "TLS failed" in hot.log(), what="the TLS error in the log")
        time.sleep(0.5)
        assert not (hot.dir("failed") / "fox.txt").exists()  # the server's problem, not the job's
        assert sim.stats()["prompts_received"] == 0
    finally:
        hot.stop()
        proxy.close()


def test_tls_verification_off_works_and_is_logged(tmp_path, sim, certs):
    _, cert, key = certs
    proxy = Proxy(sim.port, cert=(cert, key))
    hot = _hot(tmp_path, proxy.url, verify=False)
    try:
        assert _run_one(hot) == "done"
        assert "server.tls_unverified" in hot.log()
    finally:
        hot.stop()
        proxy.close()


def test_bearer_token_from_env_on_http_and_websocket(tmp_path, sim, monkeypatch):
    monkeypatch.setenv("COMFY_TOKEN", TOKEN)
    proxy = Proxy(sim.port, accept={f"Bearer {TOKEN}"})
    hot = _hot(tmp_path, proxy.url, token={"env": "COMFY_TOKEN"})
    try:
        assert _run_one(hot) == "done"
        assert "server.websocket_unavailable" not in hot.log()
        assert proxy.refused == 0
    finally:
        hot.stop()
        proxy.close()


def test_basic_auth_from_a_file_and_a_credential_header(tmp_path, sim, monkeypatch):
    (tmp_path / "password").write_text(PASSWORD + "\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-key").write_text("key-77e1c0")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    pair = base64.b64encode(f"studio:{PASSWORD}".encode()).decode()
    proxy = Proxy(sim.port, accept={f"Basic {pair}"})
    hot = _hot(tmp_path, proxy.url,
               basic_auth={"user": "studio", "password": {"file": str(tmp_path / "password")}},
               headers={"X-Api-Key": {"credential": "api-key"}, "X-Team": "print"})
    try:
        assert _run_one(hot) == "done"
    finally:
        hot.stop()
        proxy.close()


def test_wrong_token_is_unauthorised_and_the_job_waits(tmp_path, sim, monkeypatch):
    monkeypatch.setenv("COMFY_TOKEN", "not-the-right-one")
    proxy = Proxy(sim.port, accept={f"Bearer {TOKEN}"})
    hot = _hot(tmp_path, proxy.url, token={"env": "COMFY_TOKEN"})
    try:
        hot.start()
        hot.drop("fox.txt", "waits for a valid token")
        wait_for(lambda: "unauthorised" in hot.log(), what="an unauthorised log line")
        time.sleep(0.5)
        assert not (hot.dir("failed") / "fox.txt").exists()
        assert sim.stats()["prompts_received"] == 0 and proxy.refused >= 1
    finally:
        hot.stop()
        proxy.close()


def test_secrets_never_appear_in_logs_errors_or_command_output(tmp_path, sim, monkeypatch):
    monkeypatch.setenv("COMFY_TOKEN", TOKEN)
    (tmp_path / "password").write_text(PASSWORD)
    proxy = Proxy(sim.port, accept={f"Bearer {TOKEN}"})
    hot = _hot(tmp_path, proxy.url, token={"env": "COMFY_TOKEN"},
               headers={"X-Password-Echo": {"file": str(tmp_path / "password")}})
    try:
        assert _run_one(hot) == "done"  # with log.level debug: urllib3 lines included
        hot.drop("bad.json", "{", stale=True)
        assert hot.finished("bad.json") == "failed"
        outputs = [hot.log()]
        for command in (["check"], ["status"], ["status", "--json"]):
            result = subprocess.run([sys.executable, "-m", "hotfolder", *command, "--config",
                                     str(hot.config_path)], capture_output=True, text=True,
                                    timeout=60, check=False, env={**os.environ})
            outputs += [result.stdout, result.stderr]
        for path in hot.root.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".txt"):
                outputs.append(path.read_text(errors="replace"))
        text = "\n".join(outputs)
        assert "proxied" in text  # the outputs are real, and mention the server
        assert TOKEN not in text and PASSWORD not in text
    finally:
        hot.stop()
        proxy.close()


def test_secret_sources_name_the_key_path(tmp_path, monkeypatch):
    template = tmp_path / "t.json"
    template.write_text('{"1": {"class_type": "SaveImage", "inputs": {}}}')

    def load(**server: object):
        return parse_config({"servers": [{"url": "https://x:1", **server}],
                             "folders": [{"root": "hot", "workflow": "t.json"}]}, base=tmp_path)

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    cases = [({"token": {"env": "NO_SUCH_TOKEN"}}, "servers[0].token: the environment variable"),
             ({"token": {"credential": "t"}}, "servers[0].token: $CREDENTIALS_DIRECTORY"),
             ({"token": "written-in-yaml"}, "servers[0].token: expected one of"),
             ({"ca_bundle": "missing.pem"}, "servers[0].ca_bundle: file not found"),
             ({"basic_auth": {"user": "u"}}, "servers[0].basic_auth.password: expected one of")]
    for server, words in cases:
        with pytest.raises(ConfigError) as info:
            load(**server)
        assert words in "\n".join(info.value.problems), (server, info.value.problems)


def test_a_server_that_never_answers_is_timed_out_and_the_job_waits(tmp_path, sim):
    sim.set_faults(slow_seconds=30)  # every answer hangs far past request_timeout
    config = make_config(tmp_path, sim.url)
    config["comfy"]["request_timeout"] = 0.5
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    try:
        hot.start()
        hot.drop("patient.txt", "the server hangs, then recovers")
        wait_for(lambda: "did not answer" in hot.log(), what="the timeout in the log")
        assert not (hot.dir("failed") / "patient.txt").exists()
        sim.set_faults(slow_seconds=0)
        assert hot.finished("patient.txt") == "done"
    finally:
        hot.stop()
