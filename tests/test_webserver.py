"""The page's HTTP server in-process on a real socket: path safety, auth, actions, thumbnails."""

from __future__ import annotations

import base64
import http.client
import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from hotfolder.config.load import parse_config
from hotfolder.config.model import Config
from hotfolder.daemon.loop import Daemon, ensure_folders
from hotfolder.daemon.status import collect
from hotfolder.web.server import WebServer
from hotfolder.web.thumbs import Thumbnails, safe_name

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Backend:
    """The daemon's side of the page, without a daemon."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.healthy = True

    def status_document(self) -> dict[str, Any]:
        return collect(self.config, probe=False, live={})

    def health(self) -> dict[str, Any]:
        return {"healthy": self.healthy}

    def metrics_text(self) -> str:
        return "# HELP up x\n# TYPE up gauge\nup 1\n"


def png(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Path:
    Image.new(mode, size, "orange" if mode != "1" else 1).save(path, "PNG")
    return path


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Backend]]]:
    servers: list[WebServer] = []

    def start(**http: Any) -> tuple[str, Backend]:
        shutil.copy(ROOT / "config/workflows/sdxl_txt2img.json", tmp_path / "t.json")
        config = parse_config({"workflows": {"sdxl": "t.json"},
                               "folders": [{"name": "main", "root": "hot", "workflow": "sdxl"}],
                               "http": {"listen": "127.0.0.1:0", **http}}, base=tmp_path)
        ensure_folders(config)
        backend = Backend(config)
        server = WebServer(backend).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}", backend

    yield start
    for server in servers:
        server.stop()


def raw_get(base: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A request with the target exactly as given (no client-side normalising of `..`)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"{host}:{port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_nothing_but_outbox_thumbnails_is_reachable(serve, tmp_path):
    base, _ = serve()
    hot = tmp_path / "hot"
    png(hot / "outbox" / "fox_00001.png")
    png(hot / "done" / "leak.png")
    outside = png(tmp_path / "outside.png")
    (hot / "done" / "job.txt").write_text("the job's own text")
    png(hot / "outbox" / ".hidden.png")
    os.symlink("../done/leak.png", hot / "outbox" / "link.png")
    os.symlink(outside, hot / "outbox" / "abs.png")
    os.symlink("fox_00001.png", hot / "outbox" / "inner.png")  # even one that stays inside
    os.symlink("..", hot / "outbox" / "up")
    os.mkfifo(hot / "outbox" / "fifo.png")
    (hot / "outbox" / "notes.txt").write_text("not an image")
    os.link(outside, hot / "outbox" / "hard.png")  # a hard link to a file from elsewhere

    status, body = raw_get(base, "/thumb/main/fox_00001.png")
    assert status == 200 and body[:3] == b"\xff\xd8\xff"  # a JPEG thumbnail
    attempts = [
        "/thumb/main/../done/leak.png", "/thumb/main/..%2fdone%2fleak.png",
        "/thumb/main/..%2Fdone%2Fleak.png", "/thumb/main/%2e%2e%2fdone%2fleak.png",
        "/thumb/main/%2e%2e/done/leak.png", "/thumb/main/..%5cdone%5cleak.png",
        "/thumb/main/%252e%252e%252fdone%252fleak.png", "/thumb/main/up%2fdone%2fleak.png",
        "/thumb/main/up/done/leak.png", "/thumb/main/link.png", "/thumb/main/abs.png",
        "/thumb/main/inner.png", "/thumb/main/.hidden.png", "/thumb/main/fifo.png",
        "/thumb/main/hard.png",
        "/thumb/main/notes.txt", "/thumb/main/fox_00001.png%00.png",
        "/thumb/main/%ff%fe.png", "/thumb/main/", "/thumb/main", "/thumb/..%2fhot/leak.png",
        "/thumb/%2e%2e/done/leak.png", "/thumb/main/%2Ftmp%2Foutside.png",
        f"/thumb/main/{'%2e%2e%2f' * 12}{str(outside).lstrip('/').replace('/', '%2f')}",
        "/../hotfolder.yaml", "/%2e%2e/t.json", "/t.json", "/hot/done/leak.png",
        "/hot/outbox/fox_00001.png", "/outbox/fox_00001.png", "//etc/passwd",
        "/api/../t.json", "/api/status/../../t.json",
    ]
    for target in attempts:
        status, body = raw_get(base, target)
        assert status in (400, 404), (target, status)
        assert PNG_MAGIC not in body and b"\xff\xd8\xff" not in body, target
        assert b"class_type" not in body and b"the job's own text" not in body, target
    status, _ = raw_get(base, "http://127.0.0.1/../t.json")  # absolute-form target
    assert status == 400


def test_thumbnails_are_scaled_down_and_cached(tmp_path):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    png(outbox / "big.png", (1024, 768))
    png(outbox / "alpha.png", (300, 600), "RGBA")
    thumbs = Thumbnails()
    body, kind = thumbs.get(outbox, "big.png")
    image = Image.open(io.BytesIO(body))
    assert (kind, image.format, image.size) == ("image/jpeg", "JPEG", (256, 192))
    assert thumbs.get(outbox, "big.png")[0] is body  # from the cache
    body, kind = thumbs.get(outbox, "alpha.png")
    assert kind == "image/png" and Image.open(io.BytesIO(body)).size == (128, 256)
    (outbox / "broken.png").write_bytes(PNG_MAGIC + b"garbage")
    assert thumbs.get(outbox, "broken.png") is None
    png(outbox / "huge.png", (9000, 9000), "1")  # small file, too many pixels to decode
    assert thumbs.get(outbox, "huge.png") is None
    time.sleep(0.01)
    png(outbox / "big.png", (512, 512))  # rewritten: the cache notices
    assert Image.open(io.BytesIO(thumbs.get(outbox, "big.png")[0])).size == (256, 256)


@pytest.mark.parametrize("name", ["", ".", "..", ".x.png", "a/b.png", "a\\b.png", "a\x00.png",
                                  "a\nb.png", "x" * 256])
def test_unsafe_names(name):
    assert not safe_name(name)


def test_page_and_api_on_loopback_refuse_other_host_names(serve):
    base, _ = serve()
    page = requests.get(base + "/", timeout=10)
    assert page.status_code == 200 and "<title>hotfolder</title>" in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert requests.get(base + "/api/status", timeout=10).json()["folders"][0]["name"] == "main"
    status, body = raw_get(base, "/api/status", {"Host": "attacker.example:8787"})
    assert status == 403 and b"loopback" in body  # DNS rebinding
    status, _ = raw_get(base, "/healthz", {"Host": "lb.internal"})
    assert status == 200  # health checks may use any name
    assert requests.post(base + "/api/status", timeout=10).status_code in (405, 501)


def test_healthz_follows_the_backend(serve):
    base, backend = serve()
    assert requests.get(base + "/healthz", timeout=10).status_code == 200
    backend.healthy = False
    answer = requests.get(base + "/healthz", timeout=10)
    assert answer.status_code == 503 and answer.json() == {"healthy": False}
    assert requests.head(base + "/healthz", timeout=10).status_code == 503


def test_token_guards_everything_but_healthz(serve, monkeypatch):
    monkeypatch.setenv("WEB_TOKEN", "s3cret-token-value")
    base, _ = serve(token={"env": "WEB_TOKEN"})
    for path in ("/", "/api/status", "/metrics", "/thumb/main/x.png"):
        answer = requests.get(base + path, timeout=10)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(base + "/healthz", timeout=10).status_code == 200
    bearer = {"Authorization": "Bearer s3cret-token-value"}
    assert requests.get(base + "/metrics", headers=bearer, timeout=10).text.startswith("# HELP")
    assert requests.get(base + "/?token=wrong", timeout=10).status_code == 401
    with requests.Session() as browser:  # the token once in the URL, then a cookie
        answer = browser.get(base + "/?token=s3cret-token-value", timeout=10)
        assert answer.status_code == 200 and answer.url == base + "/"
        cookie = answer.history[0].headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "s3cret-token-value" not in cookie
        assert browser.get(base + "/api/status", timeout=10).status_code == 200
    status, _ = raw_get(base, "/api/status", {"Host": "hotfolder.lan", **bearer})
    assert status == 200  # with auth, other host names are fine


def test_basic_auth(serve, tmp_path):
    (tmp_path / "pw").write_text("correct horse\n")
    base, _ = serve(listen="127.0.0.1:0",
                    basic_auth={"user": "studio", "password": {"file": str(tmp_path / "pw")}})
    answer = requests.get(base + "/", timeout=10)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(base + "/", auth=("studio", "wrong"), timeout=10).status_code == 401
    assert requests.get(base + "/", auth=("studio", "correct horse"), timeout=10).ok
    garbage = {"Authorization": "Basic %%%"}
    assert requests.get(base + "/", headers=garbage, timeout=10).status_code == 401
    token = base64.b64encode(b"studio:correct horse").decode()
    assert requests.get(base + "/metrics", headers={"Authorization": f"Basic {token}"},
                        timeout=10).ok


def _failed_job(tmp_path: Path, name: str = "boom.txt") -> Path:
    failed = tmp_path / "hot" / "failed"
    (failed / name).write_text("a prompt")
    (failed / f"{Path(name).stem}.error.json").write_text('{"error": "it broke"}')
    return failed / name


def _csrf(base: str, session: requests.Session) -> str:
    page = session.get(base + "/", timeout=10).text
    return page.split('name="hotfolder-csrf" content="')[1].split('"')[0]


def test_retry_moves_the_job_back_only_when_allowed_and_same_origin(serve, tmp_path):
    base, _ = serve(allow_actions=True)
    job = _failed_job(tmp_path)
    inbox = tmp_path / "hot" / "inbox"
    with requests.Session() as session:
        csrf = _csrf(base, session)

        def retry(body: Any, **headers: str) -> requests.Response:
            return session.post(base + "/api/retry", json=body, timeout=10,
                                headers={"X-Hotfolder-Csrf": csrf, **headers})

        good = {"folder": "main", "file": "boom.txt"}
        assert session.post(base + "/api/retry", json=good, timeout=10).status_code == 403
        assert retry(good, **{"X-Hotfolder-Csrf": "stale"}).status_code == 403
        assert retry(good, Origin="http://evil.example").status_code == 403
        assert retry(good, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
        form = session.post(base + "/api/retry", data=good, timeout=10,
                            headers={"X-Hotfolder-Csrf": csrf})
        assert form.status_code == 415
        for bad in ({"folder": "main", "file": "../failed/boom.txt"},
                    {"folder": "main", "file": "boom.error.json"},
                    {"folder": "other", "file": "boom.txt"}, {"folder": "main"}, ["x"]):
            assert retry(bad).status_code in (400, 404), bad
        assert job.exists()
        answer = retry(good, Origin=base)
        assert answer.status_code == 200 and answer.json()["inbox_name"] == "boom.txt"
        assert (inbox / "boom.txt").read_text() == "a prompt"
        assert not job.exists() and not (job.parent / "boom.error.json").exists()
        assert retry(good).status_code == 404  # already retried

        _failed_job(tmp_path)  # the same name again, while the first still waits
        assert retry(good).json()["inbox_name"] == "boom-2.txt"
        os.symlink("/etc/hostname", job.parent / "link.txt")
        assert retry({"folder": "main", "file": "link.txt"}).status_code == 404


def test_retry_is_refused_when_actions_are_off(serve, tmp_path):
    base, _ = serve()
    job = _failed_job(tmp_path)
    with requests.Session() as session:
        csrf = _csrf(base, session)
        answer = session.post(base + "/api/retry", json={"folder": "main", "file": "boom.txt"},
                              headers={"X-Hotfolder-Csrf": csrf}, timeout=10)
    assert answer.status_code == 403 and "allow_actions" in answer.json()["error"]
    assert job.exists()


def test_daemon_health_needs_a_recent_healthy_loop(tmp_path):
    shutil.copy(ROOT / "config/workflows/sdxl_txt2img.json", tmp_path / "t.json")
    config = parse_config({"workflows": {"sdxl": "t.json"},
                           "folders": [{"root": "hot", "workflow": "sdxl"}]}, base=tmp_path)
    daemon = Daemon(config)
    assert daemon.health()["state"] == "starting" and not daemon.health()["healthy"]
    daemon._loop_ok_at = time.monotonic()
    assert daemon.health()["healthy"] and daemon.health()["state"] == "ok"
    daemon._loop_ok_at = time.monotonic() - 600  # a wedged loop stops proving itself
    assert daemon.health()["state"] == "stalled" and not daemon.health()["healthy"]
    daemon.stop.set()
    daemon._loop_ok_at = time.monotonic()
    assert daemon.health()["state"] == "stopping"


def test_slow_clients_cost_a_connection_each_never_the_page(serve):
    import socket

    base, _ = serve()
    port = int(base.rsplit(":", 1)[1])
    slow = []
    try:
        for _ in range(40):  # more than the old server's 32 threads, each sending a byte
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"G")
            slow.append(sock)
        for _ in range(3):
            for sock in slow:
                sock.sendall(b"E")  # still sending, so never idle
            assert requests.get(base + "/healthz", timeout=5).status_code == 200
            assert requests.get(base + "/api/status", timeout=5).status_code == 200
            time.sleep(0.5)  # the slow clients' next byte comes a while later
    finally:
        for sock in slow:
            sock.close()
