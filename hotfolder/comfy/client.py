"""HTTP side of one ComfyUI server, speaking the protocol exactly as the recorded captures show.

Every failure to get an answer (refused, timed out, 5xx) is a `ServerError`: the job is not
at fault and will be retried. A 400 is a `JobError` explained in the user's words. Only
`/history/{id}` is ever read, never the whole `/history`, which can hold 10,000 entries.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

import requests
import structlog
import urllib3

from hotfolder.comfy.explain import explain_rejection
from hotfolder.comfy.transport import Transport, failure_reason, json_or_none
from hotfolder.errors import JobError, Kind, ServerError

log = structlog.get_logger()



@dataclass(frozen=True)
class Submitted:
    prompt_id: str
    number: int | float | None


@dataclass(frozen=True)
class QueueState:
    running: frozenset[str]
    pending: frozenset[str]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


class ComfyClient(Transport):
    """One server's HTTP API. Safe to share between threads (one session per thread)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.jobs_api: bool | None = None  # GET /api/jobs/{id} answers (newer ComfyUI)


    # -- the API ------------------------------------------------------------------------------

    def submit(self, workflow: Mapping[str, Any], *, prompt_id: str,
               client_id: str, front: bool = False) -> Submitted:
        """POST /prompt with our own prompt_id, so the job can be found again after any crash.
        `front`: ahead of every prompt queued there (never of the one running)."""
        body: dict[str, Any] = {"prompt": workflow, "client_id": client_id,
                                "prompt_id": prompt_id}
        if front:
            body["front"] = True
        response = self._request("POST", "/prompt", json=body)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 403:
            # ComfyUI's Origin check answers 403 with an empty body; a proxy may refuse us too.
            # Not the job's fault: it waits until the server (or its proxy) lets us in.
            raise ServerError(f"ComfyUI at {self.url} refused POST /prompt with HTTP 403 (an "
                              "Origin/Host mismatch, or a proxy denying access)",
                              server=self.name, status=403)
        if response.status_code == 400 and isinstance(answer, Mapping):
            message, problems = explain_rejection(answer, workflow)
            raise JobError(message, kind=Kind.REJECTED,
                           details={"problems": problems, "comfyui": answer})
        if response.status_code != 200 or not isinstance(answer, Mapping):
            raise ServerError(f"ComfyUI at {self.url} answered POST /prompt with HTTP "
                              f"{response.status_code}: {response.text[:500]}",
                              server=self.name, status=response.status_code,
                              body=response.text[:2000])
        if answer.get("node_errors"):
            # ComfyUI dropped the invalid outputs and runs the rest: that is not what was asked
            message, problems = explain_rejection(answer, workflow)
            raise JobError(message, kind=Kind.REJECTED,
                           details={"problems": problems, "comfyui": answer,
                                    "partial_prompt_id": answer.get("prompt_id")})
        return Submitted(prompt_id=str(answer.get("prompt_id", prompt_id)),
                         number=answer.get("number"))

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished entry, or None while queued, running, unknown or forgotten."""
        answer = self._json("GET", f"/history/{quote(prompt_id, safe='')}")
        if isinstance(answer, Mapping):
            entry = answer.get(prompt_id)
            if isinstance(entry, dict):
                return entry
        return None

    def where(self, prompt_id: str) -> str:
        """Where the server has the prompt: "queued", "running", "done" or "unknown".

        Asked of the jobs API where the server has one (it tells "queued" from "never heard
        of it", which `/history/{id}` answers alike with `{}`); else of /queue and /history.
        An older ComfyUI answers `/api/jobs/…` with a 404 and an empty body: detected once."""
        if self.jobs_api is not False:
            response = self._request("GET", f"/api/jobs/{quote(prompt_id, safe='')}")
            answer = json_or_none(response)
            if response.status_code == 200 and isinstance(answer, Mapping) \
                    and isinstance(answer.get("status"), str):
                self.jobs_api = True
                return _JOB_STATUS.get(answer["status"], "done")
            if response.status_code == 404 and isinstance(answer, Mapping) and "error" in answer:
                self.jobs_api = True
                return "unknown"
            self.jobs_api = False
        if self.history(prompt_id) is not None:
            return "done"
        queue = self.queue()
        if prompt_id in queue.running:
            return "running"
        if prompt_id in queue.pending:
            return "queued"
        return "done" if self.history(prompt_id) is not None else "unknown"  # just finished?

    def queue(self) -> QueueState:
        answer = self._json("GET", "/queue")

        def ids(key: str) -> frozenset[str]:
            items = answer.get(key, []) if isinstance(answer, Mapping) else []
            return frozenset(str(item[1]) for item in items
                             if isinstance(item, list) and len(item) > 1)

        return QueueState(running=ids("queue_running"), pending=ids("queue_pending"))

    def queue_remaining(self) -> int:
        answer = self._json("GET", "/prompt")
        try:
            return int(answer["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(f"ComfyUI at {self.url}: unexpected /prompt answer {answer!r}",
                              server=self.name) from exc

    def object_info(self) -> dict[str, Any]:
        answer = self._json("GET", "/object_info")
        return answer if isinstance(answer, dict) else {}

    def cancel(self, prompt_id: str) -> None:
        """Take the prompt off the queue, or stop it if it runs: with the jobs API where the
        server has one (it does both, for this prompt only), else by deleting it from the queue
        and interrupting it (ComfyUI interrupts only the prompt named, if it is the one running).
        """
        if self.jobs_api is not False:
            response = self._request("POST", f"/api/jobs/{quote(prompt_id, safe='')}/cancel")
            if response.status_code == 200 and isinstance(json_or_none(response), Mapping):
                self.jobs_api = True
                return
            if response.status_code in (404, 405):
                self.jobs_api = False  # an older ComfyUI (404 or 405 to the newer routes)
        self.delete_queued(prompt_id)
        self.interrupt(prompt_id)

    def interrupt(self, prompt_id: str) -> None:
        """Interrupts only if this prompt is the one running (ComfyUI ignores it otherwise)."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    def delete_queued(self, prompt_id: str) -> None:
        self._request("POST", "/queue", json={"delete": [prompt_id]})

    def delete_history(self, prompt_id: str) -> None:
        self._request("POST", "/history", json={"delete": [prompt_id]})

    def download(self, output: Mapping[str, Any], sink: IO[bytes],
                 max_bytes: int | None = None,
                 cancelled: Callable[[], bool] | None = None) -> int:
        """Stream one output file from /view into `sink`; returns the byte count.

        An answer longer than `max_bytes` is cut off and fails the job: a server (or whatever
        answers in its name) must not be able to fill the disk.
        """
        params = {"filename": str(output.get("filename", "")),
                  "subfolder": str(output.get("subfolder", "")),
                  "type": str(output.get("type", "output"))}
        response = self._request("GET", "/view", params=params, stream=True)
        with response:
            if response.status_code != 200:
                raise JobError(f"ComfyUI could not send the output {params['filename']!r} "
                               f"(HTTP {response.status_code} from /view)", kind=Kind.DOWNLOAD,
                               details={"output": dict(output), "status": response.status_code})
            try:
                return self._drain(response, sink.write, limit=max_bytes,
                                   seconds=self.limits.download_seconds,
                                   what=f"the output {params['filename']!r}",
                                   key="comfy.max_output_bytes", too_large=JobError,
                                   cancelled=cancelled)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise ServerError(f"download of {params['filename']!r} from {self.url} broke "
                                  f"off ({failure_reason(exc)})", server=self.name) from exc

    def upload_image(self, data: bytes, *, name: str, subfolder: str = "") -> str:
        """POST /upload/image into the input folder; returns the name LoadImage takes.

        `overwrite` is never sent (off): a file of that name with other content is kept and the
        upload gets a free name (`name (1).png`), identical content gets the same name back.
        """
        return self._upload("/upload/image", data, name=name, subfolder=subfolder)

    def upload_mask(self, data: bytes, *, name: str, subfolder: str,
                    original: Mapping[str, str]) -> str:
        """POST /upload/mask: ComfyUI saves a copy of `original` (an image already in its
        input folder) whose alpha channel is the alpha of `data`, under `name`."""
        return self._upload("/upload/mask", data, name=name, subfolder=subfolder,
                            extra={"original_ref": json.dumps(dict(original))})

    def _upload(self, path: str, data: bytes, *, name: str, subfolder: str,
                extra: Mapping[str, str] | None = None) -> str:
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        fields = {"type": "input", "subfolder": subfolder, **(extra or {})}
        response = self._request("POST", path, files={"image": (name, data, mime)},
                                 data=fields)
        status = response.status_code
        if status == 403:  # the Origin check, or a proxy denying us: as for POST /prompt
            raise ServerError(f"ComfyUI at {self.url} refused POST {path} with HTTP 403 (an "
                              "Origin/Host mismatch, or a proxy denying access)",
                              server=self.name, status=403)
        if status == 413:
            raise JobError(f"the image {name!r} ({len(data)} bytes) is larger than ComfyUI at "
                           f"{self.url} accepts (its --max-upload-size, 100 MB by default)",
                           kind=Kind.TOO_LARGE, details={"status": status, "bytes": len(data)})
        answer: Any = None
        if status == 200:
            try:
                answer = response.json()
            except ValueError:
                answer = None
        uploaded = answer.get("name") if isinstance(answer, Mapping) else None
        if status != 200 or not isinstance(uploaded, str) or not uploaded:
            body = response.text[:500].strip()
            raise JobError(f"ComfyUI at {self.url} did not take the image {name!r}: POST {path} "
                           f"answered HTTP {status}{': ' + body if body else ''}",
                           kind=Kind.UPLOAD, details={"status": status, "body": body})
        folder = answer.get("subfolder") or ""
        return f"{folder}/{uploaded}" if isinstance(folder, str) and folder else uploaded

    def ping(self) -> bool:
        try:
            self.queue_remaining()
        except ServerError:
            return False
        return True


# the jobs API's statuses, as `where` reports them
_JOB_STATUS = {"pending": "queued", "in_progress": "running", "completed": "done",
               "failed": "done", "cancelled": "done"}
