"""An API token for a ComfyUI behind a proxy: from systemd credentials, sent on HTTP and WS."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from harness import wait_for

from hotfolder.complete import CompletionListener
from hotfolder.config import parse_config
from hotfolder.errors import ConfigError
from hotfolder.servers import ServerPool


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path.split("?")[0], self.headers.get("Authorization")))
        body = json.dumps({"exec_info": {"queue_remaining": 0}}).encode()
        self.send_response(200 if self.path == "/prompt" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _config(tmp_path, **server):
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {}}}))
    return parse_config({"servers": [{"url": "http://127.0.0.1:1", **server}],
                         "folders": [{"root": "hot", "workflow": "t.json"}]}, base=tmp_path)


def test_token_from_credentials_directory_is_sent_on_http_and_websocket(tmp_path,
                                                                       monkeypatch):
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "comfy-token").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    config = _config(tmp_path, token_credential="comfy-token")
    assert config.servers[0].token == "s3cret"
    assert "s3cret" not in repr(config.servers[0])  # never printed by accident

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        cfg = config.servers[0].__class__(url=url, name="proxy", token="s3cret")
        stop = threading.Event()
        pool = ServerPool([cfg], config.comfy, stop)
        assert pool.servers[0].client.queue_remaining() == 0
        listener = CompletionListener(url, name="proxy", stop=stop, token="s3cret")
        listener.start()
        wait_for(lambda: any(path == "/ws" for path, _ in _Recorder.seen),
                 what="the WebSocket attempt")
        stop.set()
    finally:
        server.shutdown()
        server.server_close()
    assert ("/prompt", "Bearer s3cret") in _Recorder.seen
    assert ("/ws", "Bearer s3cret") in _Recorder.seen


def test_token_credential_outside_systemd_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match=r"servers\[0\].token_credential: \$CREDENTIALS_DIR"):
        _config(tmp_path, token_credential="comfy-token")
    with pytest.raises(ConfigError, match=r"servers\[0\].token_file: cannot read"):
        _config(tmp_path, token_file=str(tmp_path / "missing"))
