"""A server's client that counts its failed submits, downloads and uploads by kind, so that
/metrics can say what is going wrong with each server, not only that something is."""

from __future__ import annotations

import threading
from typing import Any

from hotfolder.comfy.client import ComfyClient
from hotfolder.errors import JobError, ServerError


class CountingClient(ComfyClient):
    """A server's client that counts failed submits and downloads by kind, for /metrics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: dict[tuple[str, str], int] = {}  # (operation, kind) -> count
        self._errors_lock = threading.Lock()

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().submit(*args, **kwargs)
        except (ServerError, JobError) as exc:
            self._count("submit", exc)
            raise

    def download(self, *args: Any, **kwargs: Any) -> int:
        try:
            return super().download(*args, **kwargs)
        except (ServerError, JobError) as exc:
            self._count("download", exc)
            raise

    def upload_image(self, *args: Any, **kwargs: Any) -> str:
        try:
            return super().upload_image(*args, **kwargs)
        except (ServerError, JobError) as exc:
            self._count("upload", exc)
            raise

    def upload_mask(self, *args: Any, **kwargs: Any) -> str:
        try:
            return super().upload_mask(*args, **kwargs)
        except (ServerError, JobError) as exc:
            self._count("upload", exc)
            raise

    def error_counts(self) -> dict[tuple[str, str], int]:
        with self._errors_lock:
            return dict(self.errors)

    def _count(self, operation: str, exc: ServerError | JobError) -> None:
        key = (operation, error_kind(exc))
        with self._errors_lock:
            self.errors[key] = self.errors.get(key, 0) + 1


def error_kind(exc: ServerError | JobError) -> str:
    """A short, stable label for an error: unreachable, http_5xx, unauthorised, rejected, …"""
    if isinstance(exc, JobError):
        status = exc.details.get("status")
        if exc.kind in ("download", "upload"):
            return "too_large" if status is None else f"http_{status}"
        return exc.kind
    if exc.status is None:
        return "unreachable"
    if exc.status in (401, 407):
        return "unauthorised"
    if exc.status == 403:
        return "forbidden"
    return "http_5xx" if exc.status >= 500 else f"http_{exc.status}"
