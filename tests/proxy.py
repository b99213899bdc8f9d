"""A tiny TLS-terminating, auth-checking TCP proxy in front of the simulator, for tests.

It stands in for nginx/Caddy/Traefik: it checks the `Authorization` header of the first
request on each connection (HTTP and the WebSocket upgrade alike) and then pipes bytes both
ways, so everything after the check is the simulator's own protocol.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from pathlib import Path

UNAUTHORIZED = (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 12\r\nConnection: close\r\n\r\nunauthorised")


def make_ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=hotfolder test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


class Proxy:
    def __init__(self, upstream_port: int, *, cert: tuple[Path, Path] | None = None,
                 accept: set[str] | None = None) -> None:
        self.upstream_port = upstream_port
        self.accept = accept  # acceptable Authorization values; None: no check
        self.context: ssl.SSLContext | None = None
        if cert is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(str(cert[0]), str(cert[1]))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.refused = 0
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closing = True
        self.sock.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raw = conn
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            if self.accept is not None and _authorization(head) not in self.accept:
                self.refused += 1
                conn.sendall(UNAUTHORIZED)
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            upstream.sendall(head)
            threading.Thread(target=_pipe, args=(upstream, conn), daemon=True).start()
            _pipe(conn, upstream)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for sock in (conn, raw):
                with contextlib.suppress(OSError):
                    sock.close()


def _authorization(head: bytes) -> str | None:
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            return value.strip().decode()
    return None


def _pipe(source: socket.socket, dest: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            dest.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, dest):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
